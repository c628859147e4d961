"""``scale=`` inside the C backend (csrc/transform.c, issue 21 phase 2).

Calls with ``scale`` only (no softcap, bias or where) over rows of the compute
dtype go to the C kernels' transformed entries.  They must take that path, and
give exactly what the Python block layer (fastact/_transforms.py, the same
kernels on ``x * scale`` computed by NumPy) gives: every op, tile / mid / long
rows, special values, in place, threads.  (tests/test_transforms.py checks both
against float64 truths and torch.)
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import fastact
from fastact import _config

C = pytest.importorskip("fastact._backends.c_kernels")

OPS = ("softmax", "log_softmax", "logsumexp", "softmax_backward", "log_softmax_backward",
       "cross_entropy_index", "cross_entropy_prob")


def _table(transformed):
    """The C table with its transformed kernels spied on (calls counted), or removed."""
    calls = []
    t = C.KERNELS
    ops = {}
    for name in OPS:
        op = getattr(t, name)
        if transformed:
            def spy(*a, _f=op.transformed, _n=name, **kw):
                calls.append(_n)
                return _f(*a, **kw)
            ops[name] = dataclasses.replace(op, transformed=spy)
        else:
            ops[name] = dataclasses.replace(op, transformed=None)
    return dataclasses.replace(t, **ops), calls


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    old = fastact.get_num_threads()
    fastact.set_num_threads(request.param)
    yield request.param
    fastact.set_num_threads(old)


def _both(monkeypatch, fn):
    """``fn()`` through the transformed kernels (asserting they ran) and through
    the Python block layer."""
    spied, calls = _table(True)
    plain, _ = _table(False)
    monkeypatch.setattr(_config, "current", lambda name=None: spied)
    got = fn()
    assert calls, "the transformed kernel was not called"
    monkeypatch.setattr(_config, "current", lambda name=None: plain)
    want = fn()
    monkeypatch.undo()
    return got, want


def _x(shape, dtype, seed=0):
    g = np.random.default_rng(seed)
    x = (g.standard_normal(shape) * 6).astype(dtype)
    if shape[0] > 6:
        x[1, 0] = np.inf
        x[2, :] = -np.inf
        x[3, 1] = np.nan
        x[4, 0] = np.finfo(dtype).max
        x[5, 2] = -np.inf
    return x


SHAPES = [(300, 10), (40, 300), (9, 5000), (7, 70001)]
SCALES = [2.5, -0.75, 0.0, 1.0, 1e-30]


def _eq(a, b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("scale", SCALES)
def test_forward(monkeypatch, threads, dtype, shape, scale):
    x = _x(shape, dtype)
    b = np.abs(_x(shape, dtype, 1))
    for fn in (fastact.softmax, fastact.log_softmax):
        _eq(*_both(monkeypatch, lambda: fn(x, scale=scale)))
    _eq(*_both(monkeypatch, lambda: fastact.logsumexp(x, scale=scale)))
    got, want = _both(monkeypatch, lambda: fastact.logsumexp(x, b=b, scale=scale,
                                                                return_sign=True))
    _eq(got[0], want[0])
    _eq(got[1], want[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_in_place_results(monkeypatch, threads, dtype, shape):
    x = _x(shape, dtype)
    for fn in (fastact.softmax, fastact.log_softmax):
        def run():
            y = x.copy()
            fn(y, scale=1.7, out=y)
            return y
        _eq(*_both(monkeypatch, run))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("scale", [2.5, -0.75, 0.0])
def test_backward(monkeypatch, threads, dtype, shape, scale):
    x = _x(shape, dtype)
    x[~np.isfinite(x)] = 0
    g = _x(shape, dtype, 2)
    g[~np.isfinite(g)] = 1
    y = fastact.softmax(x, scale=scale, backend="c")
    ly = fastact.log_softmax(x, scale=scale, backend="c")
    _eq(*_both(monkeypatch, lambda: fastact.softmax_backward(g, y, scale=scale)))
    _eq(*_both(monkeypatch, lambda: fastact.log_softmax_backward(g, ly, scale=scale)))

    def into_grad():
        gg = g.copy()
        fastact.softmax_backward(gg, y, scale=scale, out=gg)
        return gg
    _eq(*_both(monkeypatch, into_grad))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kw", [{}, {"label_smoothing": 0.1, "z_loss": 1e-3},
                                {"reduction": "none", "ignore_index": 2},
                                {"reduction": "sum", "weight": True}],
                         ids=["plain", "smooth_zloss", "none_ignore", "sum_weight"])
def test_cross_entropy(monkeypatch, threads, dtype, shape, kw):
    x = _x(shape, dtype)
    x[~np.isfinite(x)] = -3
    n, k = shape
    t = np.random.default_rng(3).integers(0, k, n)
    p = np.random.default_rng(4).random(shape).astype(dtype)
    p /= p.sum(-1, keepdims=True)
    kw = dict(kw)
    if kw.pop("weight", False):
        kw["weight"] = np.random.default_rng(5).random(k).astype(dtype) + 0.5
    for tgt in (t, p):
        kwt = {a: v for a, v in kw.items() if tgt is t or a != "ignore_index"}
        (gl, gg), (wl, wg) = _both(monkeypatch, lambda: fastact.softmax_cross_entropy_with_grad(
            x, tgt, scale=0.6, **kwt))
        _eq(gg, wg)
        if kwt.get("reduction") == "none":
            _eq(gl, wl)
        else:  # a sum over blocks of another size: the same to rounding
            np.testing.assert_allclose(gl, wl, rtol=1e-12 if dtype == np.float64 else 1e-5)
        lo, _ = _both(monkeypatch, lambda: fastact.softmax_cross_entropy(x, tgt, scale=0.6, **kwt))
        np.testing.assert_allclose(lo, wl, rtol=1e-12 if dtype == np.float64 else 1e-5)

        def into_logits():
            y = x.copy()
            fastact.softmax_cross_entropy_with_grad(y, tgt, scale=0.6, out=y, **kwt)
            return y
        _eq(*_both(monkeypatch, into_logits))


def test_other_calls_keep_the_block_layer(monkeypatch):
    """softcap, bias, where, a non-last axis and half dtypes do not reach the
    transformed kernels (and still answer)."""
    spied, calls = _table(True)
    monkeypatch.setattr(_config, "current", lambda name=None: spied)
    x = _x((20, 30), np.float32)
    fastact.softmax(x, scale=2.0, softcap=3.0)
    fastact.softmax(x, scale=2.0, bias=np.zeros(30, np.float32))
    fastact.softmax(x, scale=2.0, where=np.ones((20, 30), bool))
    fastact.softmax(x, scale=2.0, axis=0)
    fastact.softmax(np.asfortranarray(x), scale=2.0)
    fastact.softmax(np.ones((20, 30), np.float16), scale=2.0)
    assert calls == []
    fastact.softmax(x, scale=2.0)
    assert calls == ["softmax"]
