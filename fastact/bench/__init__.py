"""``fastact bench``: every op x every backend x every installed peer, on your machine.

What is timed
-------------
* **ops** — the table ``OPS`` (``cases.py``), one place for the CLI and the
  pytest-benchmark suite (``benchmarks/``): ``softmax``, ``log_softmax``,
  ``logsumexp``, ``softmax_backward``, ``log_softmax_backward``,
  ``cross_entropy`` (index targets, ``reduction="mean"``) and
  ``cross_entropy_with_grad`` (loss and d loss / d logits in one call); the
  sigmoid family and the hidden-layer activations (``relu``, ``tanh``,
  ``softsign``, ``gelu``, ``gelu_tanh`` = ``approximate="tanh"``, ``silu`` and
  their ``<name>_backward(grad, x)``) join as soon as ``fastact`` exports them.  All on ``(n, k)``
  arrays, the op along the last axis.
* **implementations** — every available fastact backend (``c``, ``numba``)
  and the NumPy reference (fastact with ``backend="numpy"``, the baseline of
  every speed-up), and the peers that import: SciPy (``scipy.special``),
  PyTorch (``torch.softmax``, ``torch._softmax_backward_data``,
  ``F.cross_entropy``, autograd for the fused forward+backward; zero-copy
  through ``torch.from_numpy``) and JAX (``jax.jit``, ``block_until_ready``).
* **modes** — ``out``: the result written into a preallocated array
  (fastact's ``out=``, torch's ``out=``); ``alloc``: the plain call, which
  allocates its result, as a NumPy user calls it.  ``cross_entropy`` returns
  a scalar and has only ``alloc``; SciPy and JAX have only ``alloc``.
* **copy** — ``np.copyto`` of an array of the op's main input (``(n, k)`` of
  the dtype: the same bytes read and written once), the physical floor.

Method
------
Before any timing, each implementation is called once per (op, dtype, mode)
on small inputs (``8x16`` if the run has shapes under 65536 elements,
``64x1024`` — the native backends' multi-threaded path — if it has larger
ones): those *first calls* (Numba compilation, done once and cached, library
loading, JAX tracing) are reported apart, and their results are checked
against the NumPy reference.  Then, per measurement: one call at the real
shape (its time is kept as ``first_call_s``; if it was short, one more sizes
the batches), then samples (calls batched so a sample lasts >= 0.2 ms) until
``min_time`` seconds have passed and ``min_repeats`` samples are taken, or
``max_time`` seconds (so a slow call cannot hold up the run); the median
per-call time is reported.  The garbage collector is paused while sampling.
``--quick`` times three of the standard shapes, only the ``out=`` calls, with
3 samples / 0.02 s (at most 0.1 s) per measurement.  Threads:
``fastact.set_num_threads(t)`` and ``torch.set_num_threads(t)`` for each
``--threads`` value (SciPy, the NumPy reference and the copy are
single-threaded; JAX uses its own pool, one thread when ``--threads 1``).

Derived numbers (``speedup_vs_numpy``, ``speedup_vs_best_peer``, ``copy_pct``):
see ``runner.py``.

JSON (``--json FILE``)
----------------------
One object, validated by the JSON Schema ``SCHEMA`` (``schema.py``; draft 2020-12;
``fastact bench --schema`` prints it; ``docs/bench-schema.json`` is a copy)::

    schema      "fastact-bench/1"
    created     ISO 8601 time;  command: the command line;  elapsed_s
    machine     cpu, cores, arch, platform, python, memory_bytes,
                simd_level, cpu_flags (all flags the OS reports)
    versions    fastact, numpy, numba, llvmlite, cffi, scipy, torch, jax, ...
    backends    name -> {available, reason?}
    peers       name -> {available, version?, reason?}
    settings    ops, shapes [[n, k]], dtypes, threads, backends, peers,
                quick, min_time_s, min_repeats, seed
    first_calls [{impl, backend, op, dtype, mode, seconds, agrees}]
    records     [{op, shape, dtype, threads, impl, backend, label, mode,
                  median_s, min_s, repeats, number, first_call_s, bytes,
                  copy_s, copy_pct, speedup_vs_numpy, speedup_vs_best_peer,
                  best_peer}]          (op "copy" for the copy floor)
    skipped     [{label, op, reason}];  notes: [str]

Layout
------
``cases.py`` the shapes, inputs and the case table ``OPS`` (adding a case: see
there); ``peers.py`` importing the peer libraries; ``timing.py`` ``measure``;
``config.py`` what a run is asked to do (``Config``, ``--quick``); ``runner.py``
the run and the derived numbers; ``machine.py`` the machine and versions;
``schema.py`` the JSON Schema; ``render.py`` the tables and the plot;
``command.py`` the command's options and ``run``.

Everything heavy (rich, matplotlib, SciPy, PyTorch, JAX) is imported inside
``run``, so ``import fastact`` stays light.
"""

from __future__ import annotations

from .cases import (DTYPES, MODES, OPS, PEERS, SHAPES, WARMUP_SHAPES, Inputs, Op, Peer,
                    available_ops, fmt_shape, parse_shape, parse_shapes, warmup_shapes)
from .command import add_arguments, run
from .config import QUICK, QUICK_TEXT, Config, config_from_args
from .machine import backend_info, machine_info, versions
from .peers import LoadedPeer, load_peer
from .render import (fmt_pct, fmt_ratio, fmt_time, headline, plot, render_markdown,
                     render_rich, table_rows)
from .runner import derive, plan, run_bench
from .schema import SCHEMA, SCHEMA_ID
from .timing import Timing, measure

__all__ = [
    "DTYPES", "MODES", "OPS", "PEERS", "SHAPES", "WARMUP_SHAPES", "Inputs", "Op", "Peer",
    "available_ops", "fmt_shape", "parse_shape", "parse_shapes", "warmup_shapes",
    "add_arguments", "run",
    "QUICK", "QUICK_TEXT", "Config", "config_from_args",
    "backend_info", "machine_info", "versions",
    "LoadedPeer", "load_peer",
    "fmt_pct", "fmt_ratio", "fmt_time", "headline", "plot", "render_markdown", "render_rich",
    "table_rows",
    "derive", "plan", "run_bench",
    "SCHEMA", "SCHEMA_ID",
    "Timing", "measure",
]
