"""The benchmark cases, shared with ``fastact bench``: one table, in
``fastact/bench/cases.py`` (``OPS``, ``SHAPES``, ``Inputs``), so that the CLI (which
ships in the package) and this suite time exactly the same calls.

To add a case, add an ``Op`` to ``fastact.bench.OPS``; both pick it up.
"""

from __future__ import annotations

import os

import pytest

import fastact
from fastact.bench import (  # noqa: F401  (re-exported)
    MODES,
    OPS,
    PEERS,
    SHAPES,
    Inputs,
    available_ops,
    fmt_shape,
    load_peer,
    parse_shapes,
)


def selected_ops():
    """``FASTACT_BENCH_OPS`` (comma-separated) or every op this fastact has."""
    env = os.environ.get("FASTACT_BENCH_OPS")
    ops = [o.strip() for o in env.split(",")] if env else available_ops()
    unknown = [o for o in ops if o not in OPS]
    if unknown:
        raise ValueError(f"FASTACT_BENCH_OPS: unknown ops {unknown}; expected some of {list(OPS)}")
    return ops


def selected_shapes():
    """``FASTACT_BENCH_SHAPES`` (e.g. ``4096x1000,standard``) or the standard shapes."""
    env = os.environ.get("FASTACT_BENCH_SHAPES")
    return parse_shapes(env) if env else list(SHAPES)


def selected_dtypes():
    env = os.environ.get("FASTACT_BENCH_DTYPES", "float32")
    return [d.strip() for d in env.split(",") if d.strip()]


_peers = {}
_inputs = {}


def peer(name):
    """The imported peer, at fastact's thread count (``pytest.skip`` if not installed)."""
    if name not in _peers:
        p = load_peer(name, [fastact.get_num_threads()], selected_dtypes())
        if p.available:
            p.set_threads(fastact.get_num_threads())
        _peers[name] = p
    p = _peers[name]
    if not p.available:
        pytest.skip(f"{name}: {p.reason}")
    return p


def inputs(shape, dtype):
    """One ``Inputs`` per (shape, dtype), kept while that shape's benchmarks run."""
    key = (shape, dtype)
    if key not in _inputs:
        _inputs.clear()  # the big shapes hold hundreds of MB: keep one at a time
        _inputs[key] = Inputs(shape, dtype)
    return _inputs[key]
