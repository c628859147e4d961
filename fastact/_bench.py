"""``fastact bench``: every op x every backend x every installed peer, on your machine.

What is timed
-------------
* **ops** — the table ``OPS`` below, one place for the CLI and the
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

Derived numbers (per record, same op/shape/dtype/threads):
``speedup_vs_numpy = t(NumPy reference, same mode) / t``;
``speedup_vs_best_peer = t(best peer) / t``, the best peer being the fastest
of SciPy/PyTorch/JAX called in the same mode if it offers it, else in its
``alloc`` mode (the fastest way it can be called);
``copy_pct = t(copy) / t * 100`` (% of the copy bandwidth reached; above 100
for ops that write little, logsumexp and the losses, since a copy also writes).

JSON (``--json FILE``)
----------------------
One object, validated by the JSON Schema ``SCHEMA`` below (draft 2020-12;
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

Adding a case
-------------
Add an ``Op(...)`` to ``OPS``: the fastact function's name, the inputs it takes
(attributes of ``Inputs``), how to make its ``out=`` buffer, and for each peer
the modes it offers and a factory ``(peer, inputs, mode) -> callable``.  The
CLI, the JSON, the plot and ``benchmarks/`` pick it up.

Everything heavy (rich, matplotlib, SciPy, PyTorch, JAX) is imported inside
``run``, so ``import fastact`` stays light.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

# ----------------------------------------------------------------------------
# The case table (shared with benchmarks/)
# ----------------------------------------------------------------------------

#: The standard shapes ``(rows, classes)``: many short rows, a 1k classifier, a
#: 32k and a 128k (Llama-3) vocabulary, a 512-wide layer, and the small calls
#: of training loops and per-sample code (where the per-call overhead counts).
SHAPES = ((65536, 10), (4096, 1000), (512, 32000), (64, 128256), (8192, 512),
          (8, 10), (64, 100), (256, 256))

#: The peers, in the order they are shown.
PEERS = ("scipy", "torch", "jax")

MODES = ("out", "alloc")

#: Inputs of the first calls (compile/load), before any timing: a small one for
#: runs with small shapes, a larger one (taking the native backends'
#: multi-threaded paths, which Numba compiles apart) for runs with large shapes.
WARMUP_SHAPES = ((8, 16), (64, 1024))


def warmup_shapes(shapes):
    """The warm-up inputs for a run over ``shapes``: those of the size classes it has."""
    small, large = WARMUP_SHAPES
    n_large = math.prod(large)
    out = []
    if any(math.prod(s) < n_large for s in shapes):
        out.append(small)
    if any(math.prod(s) >= n_large for s in shapes):
        out.append(large)
    return out


class Inputs:
    """The arrays for one ``(n, k)`` shape and dtype, made on first use and kept.

    ``x`` logits ~ N(0, 2^2); ``target`` int64 in ``[0, k)``; ``grad`` ~ N(0, 1);
    ``y_softmax`` / ``y_log_softmax`` the reference's outputs for ``x``;
    ``prob`` uniform in ``(0, 1)`` (binary targets).  ``torch(name)`` and
    ``jax(name)`` give the same data as a zero-copy tensor / a device array.
    """

    def __init__(self, shape, dtype, seed=0):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = _np_dtype(dtype)
        self.seed = seed
        self._cache = {}

    @property
    def nbytes(self):
        return math.prod(self.shape) * self.dtype.itemsize

    def _rng(self, salt):
        return np.random.default_rng([self.seed, salt])

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        cache = self.__dict__["_cache"]
        if name not in cache:
            cache[name] = self._make(name)
        return cache[name]

    def _make(self, name):
        import fastact

        n, k = self.shape
        # half dtypes: drawn in float32 and rounded (the generators make float32/64 only)
        gdt = self.dtype if self.dtype.itemsize >= 4 else np.dtype(np.float32)
        if name == "x":
            x = self._rng(1).standard_normal(self.shape, dtype=gdt) * gdt.type(2)
            return x.astype(self.dtype, copy=False)
        if name == "grad":
            return self._rng(2).standard_normal(self.shape, dtype=gdt).astype(self.dtype, copy=False)
        if name == "target":
            return self._rng(3).integers(0, k, n, dtype=np.int64)
        if name == "prob":
            return self._rng(4).random(self.shape, dtype=gdt).astype(self.dtype, copy=False)
        if name == "y_softmax":
            return fastact.softmax(self.x, backend="numpy")
        if name == "y_log_softmax":
            return fastact.log_softmax(self.x, backend="numpy")
        if name == "xt":  # x's bytes laid out (k, n): reduced over axis 0, rows of k again
            return np.ascontiguousarray(self.x.T)
        if name == "y_sigmoid":
            return fastact.sigmoid(self.x, backend="numpy")
        raise AttributeError(name)

    def torch(self, name):
        key = "torch:" + name
        if key not in self._cache:
            self._cache[key] = _torch_tensor(getattr(self, name))
        return self._cache[key]

    def jax(self, name):
        key = "jax:" + name
        if key not in self._cache:
            import jax.numpy as jnp

            self._cache[key] = jnp.asarray(getattr(self, name))
        return self._cache[key]


#: --dtype choices; the half ones compute in float32 (bfloat16 needs ml_dtypes).
DTYPES = ("float32", "float64", "float16", "bfloat16")


def _np_dtype(name):
    """The NumPy dtype of a --dtype name (bfloat16: ml_dtypes')."""
    if str(name) == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _torch_tensor(a):
    """A zero-copy tensor of NumPy array ``a`` (bfloat16: through an int16 view)."""
    import torch

    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _out_like_x(inp):
    return np.empty(inp.shape, inp.dtype)


def _out_rows(inp):
    return np.empty(inp.shape[0], inp.dtype)


def _out_like_xt(inp):
    return np.empty(inp.shape[::-1], inp.dtype)


def _torch_axis0(fname, rows_out=False):
    """``torch.<fname>(xt, 0[, out=])``: the same op over the first dim of ``xt``."""
    def make(P, inp, mode):
        f = getattr(P.torch, fname)
        x = inp.torch("xt")
        if mode == "out":
            o = P.torch.empty(inp.shape[:1] if rows_out else inp.shape[::-1], dtype=x.dtype)
            return lambda: f(x, 0, out=o)
        return lambda: f(x, 0)
    return Peer(MODES, make)


def _scipy_axis0(fname):
    def make(P, inp, mode):
        f = getattr(P.special, fname)
        x = inp.xt
        return lambda: f(x, axis=0)
    return Peer(("alloc",), make)


@dataclass(frozen=True)
class Peer:
    """How a peer library computes an op: the modes it offers and a factory
    ``make(peer, inputs, mode) -> zero-argument callable``."""

    modes: tuple
    make: Callable


@dataclass(frozen=True)
class Op:
    """One benchmark case: ``fastact.<func>(*<args>, [out=], backend=)``."""

    name: str
    family: str
    func: str
    args: tuple
    out: Callable | None  # inputs -> the out= buffer; None: no out= variant
    peers: Mapping[str, Peer] = field(default_factory=dict)
    what: str = ""
    kwargs: Mapping = field(default_factory=dict)  # extra keywords, e.g. approximate="tanh"
    #: (inputs, backend) -> callable, for ops that are not ``fastact.<func>(...)``
    #: (the ``fastact.torch`` autograd round trips); ``func`` then names a module
    #: that must import
    call: Callable | None = None

    @property
    def modes(self):
        return MODES if self.out is not None else ("alloc",)

    def available(self):
        import fastact

        if self.call is not None:
            try:
                importlib.import_module(self.func)
            except Exception:
                return False
            return True
        return hasattr(fastact, self.func)

    def fastact_call(self, inputs, backend, mode):
        """A zero-argument callable running this op on ``backend`` in ``mode``."""
        import fastact

        if self.call is not None:
            return self.call(inputs, backend)

        f = getattr(fastact, self.func)
        args = tuple(getattr(inputs, a) for a in self.args)
        kw = dict(self.kwargs)
        if mode == "out":
            out = self.out(inputs)
            return lambda: f(*args, out=out, backend=backend, **kw)
        return lambda: f(*args, backend=backend, **kw)

    def peer_call(self, peer_name, peer, inputs, mode):
        spec = self.peers.get(peer_name)
        if spec is None or mode not in spec.modes:
            return None
        return spec.make(peer, inputs, mode)


# --- peer factories ---------------------------------------------------------

def _scipy(fname):
    def make(P, inp, mode):
        f = getattr(P.special, fname)
        x = inp.x
        return lambda: f(x, axis=-1)
    return Peer(("alloc",), make)


def _torch_rowwise(fname, rows_out=False):
    """``torch.<fname>(x, -1[, out=])`` (softmax, log_softmax, logsumexp)."""
    def make(P, inp, mode):
        f = getattr(P.torch, fname)
        x = inp.torch("x")
        if mode == "out":
            o = P.torch.empty(inp.shape[:1] if rows_out else inp.shape, dtype=x.dtype)
            return lambda: f(x, -1, out=o)
        return lambda: f(x, -1)
    return Peer(MODES, make)


def _torch_backward(fname, y, out_kw):
    """``torch._softmax_backward_data`` / ``_log_softmax_backward_data``: the
    kernels torch's autograd runs for these ops."""
    def make(P, inp, mode):
        f = getattr(P.torch, fname)
        g, yt = inp.torch("grad"), inp.torch(y)
        if mode == "out":
            o = P.torch.empty_like(g)
            return lambda: f(g, yt, -1, yt.dtype, **{out_kw: o})
        return lambda: f(g, yt, -1, yt.dtype)
    return Peer(MODES, make)


def _torch_cross_entropy(P, inp, mode):
    x, t = inp.torch("x"), inp.torch("target")
    F = P.F
    return lambda: F.cross_entropy(x, t)


def _torch_cross_entropy_with_grad(P, inp, mode):
    # autograd, as a training loop gets the gradient: forward, then d loss / d logits
    x = _torch_tensor(inp.x).requires_grad_(True)
    t = inp.torch("target")
    F, grad = P.F, P.torch.autograd.grad

    def call():
        loss = F.cross_entropy(x, t)
        (g,) = grad(loss, x)
        return loss.detach(), g
    return call


def _torch_elementwise(fname, *args):
    def make(P, inp, mode):
        f = P.resolve(fname)
        a = tuple(inp.torch(n) for n in args)
        if mode == "out":
            o = P.torch.empty(inp.shape, dtype=a[0].dtype)
            return lambda: f(*a, out=o)
        return lambda: f(*a)
    return Peer(MODES, make)


def _torch_bce(with_grad):
    def make(P, inp, mode):
        F = P.F
        t = inp.torch("prob")
        if not with_grad:
            x = inp.torch("x")
            return lambda: F.binary_cross_entropy_with_logits(x, t)
        x = _torch_tensor(inp.x).requires_grad_(True)

        def call():
            loss = F.binary_cross_entropy_with_logits(x, t)
            (g,) = P.torch.autograd.grad(loss, x)
            return loss.detach(), g
        return call
    return Peer(("alloc",), make)


def _jax(key, build, *args):
    """``jax.jit(build(jax))(*args)``, blocked until ready."""
    def make(P, inp, mode):
        f = P.jit(key, build)
        a = tuple(inp.jax(n) for n in args)
        block = P.jax.block_until_ready
        return lambda: block(f(*a))
    return Peer(("alloc",), make)


def _jax_ce(jax):
    jnp = jax.numpy

    def ce(x, t):
        lp = jax.nn.log_softmax(x, axis=-1)
        return -jnp.mean(jnp.take_along_axis(lp, t[:, None], axis=-1))
    return ce


_JAX = {
    "softmax": _jax("softmax", lambda jax: lambda x: jax.nn.softmax(x, axis=-1), "x"),
    "log_softmax": _jax("log_softmax", lambda jax: lambda x: jax.nn.log_softmax(x, axis=-1), "x"),
    "logsumexp": _jax("logsumexp", lambda jax: lambda x: jax.nn.logsumexp(x, axis=-1), "x"),
    # what jax.grad of softmax / log_softmax computes, given the saved output
    "softmax_backward": _jax(
        "softmax_backward",
        lambda jax: lambda g, y: y * (g - (g * y).sum(-1, keepdims=True)), "grad", "y_softmax"),
    "log_softmax_backward": _jax(
        "log_softmax_backward",
        lambda jax: lambda g, y: g - jax.numpy.exp(y) * g.sum(-1, keepdims=True),
        "grad", "y_log_softmax"),
    "cross_entropy": _jax("cross_entropy", _jax_ce, "x", "target"),
    "cross_entropy_with_grad": _jax(
        "cross_entropy_with_grad", lambda jax: jax.value_and_grad(_jax_ce(jax)), "x", "target"),
}


def _op(name, family, func, args, out, what, kwargs=None, **peers):
    peers = {k: v for k, v in peers.items() if v is not None}
    if name in _JAX:
        peers["jax"] = _JAX[name]
    return Op(name, family, func, tuple(args), out, peers, what, dict(kwargs or {}))



def _scipy_elementwise(fname):
    def make(P, inp, mode):
        f = getattr(P.special, fname)
        x = inp.x
        return lambda: f(x)
    return Peer(("alloc",), make)


def _torch_log_sigmoid(P, inp, mode):
    f, x = P.F.logsigmoid, inp.torch("x")
    return lambda: f(x)


def _torch_sigmoid_backward(P, inp, mode):
    # the kernel torch's autograd runs for sigmoid
    f = P.torch.ops.aten.sigmoid_backward
    g, y = inp.torch("grad"), inp.torch("y_sigmoid")
    if mode == "out":
        o, fo = P.torch.empty_like(g), f.grad_input
        return lambda: fo(g, y, grad_input=o)
    return lambda: f(g, y)


def _torch_unary(fname, out=True, **kw):
    """``<fname>(x[, out=], **kw)`` (``fname`` dotted from ``torch``, e.g. ``torch._C._nn.gelu``,
    the kernel ``F.gelu`` runs, which takes ``out=``)."""
    def make(P, inp, mode):
        f, x = P.resolve(fname), inp.torch("x")
        if mode == "out":
            o = P.torch.empty_like(x)
            return lambda: f(x, out=o, **kw)
        return lambda: f(x, **kw)
    return Peer(MODES if out else ("alloc",), make)


def _torch_act_backward(name, **kw):
    """The kernel torch's autograd runs for ``<name>_backward(grad, x)``:
    ``aten.<name>_backward`` (``threshold_backward`` for relu; ``tanh_backward`` from
    the saved output ``tanh(x)``, made before timing, as autograd saves it)."""
    def make(P, inp, mode):
        A = P.torch.ops.aten
        g, x = inp.torch("grad"), inp.torch("x")
        if name == "relu":
            f, args = A.threshold_backward, (g, x, 0.0)
        elif name == "tanh":
            f, args = A.tanh_backward, (g, P.torch.tanh(x))
        else:
            f, args = getattr(A, name + "_backward"), (g, x)
        if mode == "out":
            o, fo = P.torch.empty_like(g), f.grad_input
            return lambda: fo(*args, grad_input=o, **kw)
        return lambda: f(*args, **kw)
    return Peer(MODES, make)


def _torch_softsign_backward(P, inp, mode):
    # F.softsign is composite (x / (1 + |x|)): no backward kernel; its derivative in torch ops
    g, x = inp.torch("grad"), inp.torch("x")
    return lambda: g / (x.abs() + 1).square()


def _acts():
    """relu, tanh, softsign, gelu, gelu_tanh, silu and their ``<name>_backward(grad, x)``."""
    fwd = {"relu": ("relu", "max(x, 0)", _torch_unary("torch.relu", out=False), {}),
           "tanh": ("tanh", "tanh(x)", _torch_unary("torch.tanh"), {}),
           "softsign": ("softsign", "x / (1 + |x|)",
                        _torch_unary("torch.nn.functional.softsign", out=False), {}),
           "gelu": ("gelu", "x Phi(x) (erf)", _torch_unary("torch._C._nn.gelu"), {}),
           "gelu_tanh": ("gelu", "gelu, approximate='tanh'",
                         _torch_unary("torch._C._nn.gelu", approximate="tanh"),
                         {"approximate": "tanh"}),
           "silu": ("silu", "x sigmoid(x)", _torch_unary("torch._C._nn.silu"), {})}
    ops = []
    for name, (func, what, peer, kw) in fwd.items():
        ops.append(_op(name, "activation", func, ["x"], _out_like_x, what, kwargs=kw, torch=peer))
    for name, (func, what, _, kw) in fwd.items():
        if name == "softsign":
            tp = Peer(("alloc",), _torch_softsign_backward)
        elif name == "gelu_tanh":
            tp = _torch_act_backward("gelu", approximate="tanh")
        else:
            tp = _torch_act_backward(name)
        ops.append(_op(name + "_backward", "activation", func + "_backward", ["grad", "x"],
                       _out_like_x, f"grad * d/dx [{what}]", kwargs=kw, torch=tp))
    return ops


#: Every case, in the order shown.  The sigmoid family is offered as soon as
#: ``fastact`` exports its functions (``Op.available``).
def _on_backend(backend, f):
    """``f()`` with ``backend`` as the current backend (the context variable that
    ``fastact.use_backend`` sets, without the context manager's cost per call)."""
    from . import _config

    var = _config._override

    def call():
        tok = var.set(backend)
        try:
            return f()
        finally:
            var.reset(tok)
    return call


def _autograd_round_trip(fname, torch_fname, target):
    """Forward and backward through ``fastact.torch.<fname>`` (an autograd round
    trip as a training step makes it: the result, then d/dx by ``autograd.grad``);
    the torch peer runs ``torch.nn.functional.<torch_fname>`` the same way."""

    def step(torch, f, x, inp):
        if target:
            t = inp.torch("target")

            def run():
                loss = f(x, t)
                (g,) = torch.autograd.grad(loss, x)
                return loss.detach(), g
        else:
            g0 = inp.torch("grad")

            def run():
                y = f(x, dim=-1)
                (g,) = torch.autograd.grad(y, x, g0)
                return y.detach(), g
        return run

    def fastact_side(inp, backend):
        import torch

        import fastact.torch as ft

        x = torch.from_numpy(inp.x).requires_grad_(True)
        return _on_backend(backend, step(torch, getattr(ft, fname), x, inp))

    def torch_side(P, inp, mode):
        x = P.torch.from_numpy(inp.x).requires_grad_(True)
        return step(P.torch, getattr(P.F, torch_fname), x, inp)

    return fastact_side, Peer(("alloc",), torch_side)


def _torch_op(name, fname, what, target=False):
    call, peer = _autograd_round_trip(fname, fname, target)
    return Op(name, "torch", "fastact.torch", ("x",), None, {"torch": peer}, what, {}, call)


OPS = {op.name: op for op in (
    _op("softmax", "softmax", "softmax", ["x"], _out_like_x, "softmax(x) over the last axis",
        scipy=_scipy("softmax"), torch=_torch_rowwise("softmax")),
    _op("log_softmax", "softmax", "log_softmax", ["x"], _out_like_x, "log_softmax(x)",
        scipy=_scipy("log_softmax"), torch=_torch_rowwise("log_softmax")),
    _op("logsumexp", "softmax", "logsumexp", ["x"], _out_rows, "logsumexp(x) per row",
        scipy=_scipy("logsumexp"), torch=_torch_rowwise("logsumexp", rows_out=True)),
    _op("softmax_axis0", "softmax", "softmax", ["xt"], _out_like_xt,
        "softmax over axis 0 of the (k, n) array of the same bytes (no transposing copy)",
        kwargs={"axis": 0}, scipy=_scipy_axis0("softmax"), torch=_torch_axis0("softmax")),
    _op("log_softmax_axis0", "softmax", "log_softmax", ["xt"], _out_like_xt,
        "log_softmax over axis 0 of the (k, n) array", kwargs={"axis": 0},
        scipy=_scipy_axis0("log_softmax"), torch=_torch_axis0("log_softmax")),
    _op("logsumexp_axis0", "softmax", "logsumexp", ["xt"], _out_rows,
        "logsumexp over axis 0 of the (k, n) array", kwargs={"axis": 0},
        scipy=_scipy_axis0("logsumexp"), torch=_torch_axis0("logsumexp", rows_out=True)),
    _op("softmax_backward", "softmax", "softmax_backward", ["grad", "y_softmax"], _out_like_x,
        "y * (grad - sum(grad * y)), y = softmax(x)",
        torch=_torch_backward("_softmax_backward_data", "y_softmax", "grad_input")),
    _op("log_softmax_backward", "softmax", "log_softmax_backward", ["grad", "y_log_softmax"],
        _out_like_x, "grad - exp(y) * sum(grad), y = log_softmax(x)",
        torch=_torch_backward("_log_softmax_backward_data", "y_log_softmax", "out")),
    _op("cross_entropy", "softmax", "softmax_cross_entropy", ["x", "target"], None,
        "mean cross-entropy, int64 index targets (loss only)",
        torch=Peer(("alloc",), _torch_cross_entropy)),
    _op("cross_entropy_with_grad", "softmax", "softmax_cross_entropy_with_grad",
        ["x", "target"], _out_like_x, "(loss, d loss / d logits) in one call; torch: autograd",
        torch=Peer(("alloc",), _torch_cross_entropy_with_grad)),
    _op("sigmoid", "sigmoid", "sigmoid", ["x"], _out_like_x, "1 / (1 + exp(-x))",
        scipy=_scipy_elementwise("expit"), torch=_torch_elementwise("torch.sigmoid", "x")),
    _op("log_sigmoid", "sigmoid", "log_sigmoid", ["x"], _out_like_x, "log(sigmoid(x))",
        scipy=_scipy_elementwise("log_expit"), torch=Peer(("alloc",), _torch_log_sigmoid)),
    _op("sigmoid_backward", "sigmoid", "sigmoid_backward", ["grad", "y_sigmoid"], _out_like_x,
        "grad * y * (1 - y), y = sigmoid(x)",
        torch=Peer(MODES, _torch_sigmoid_backward)),
    _op("sigmoid_bce", "sigmoid", "sigmoid_binary_cross_entropy", ["x", "prob"], None,
        "mean binary cross-entropy with logits (loss only)", torch=_torch_bce(False)),
    _op("sigmoid_bce_with_grad", "sigmoid", "sigmoid_binary_cross_entropy_with_grad",
        ["x", "prob"], _out_like_x, "(loss, d loss / d logits) in one call; torch: autograd",
        torch=_torch_bce(True)),
    *_acts(),
    _torch_op("torch_softmax_fwd_bwd", "softmax",
              "fastact.torch.softmax forward + backward (autograd) vs torch's"),
    _torch_op("torch_log_softmax_fwd_bwd", "log_softmax",
              "fastact.torch.log_softmax forward + backward (autograd) vs torch's"),
    _torch_op("torch_cross_entropy_fwd_bwd", "cross_entropy",
              "fastact.torch.cross_entropy forward + backward (autograd) vs torch's", target=True),
)}


def available_ops():
    """The names of the ops this version of fastact can run, in table order."""
    return [name for name, op in OPS.items() if op.available()]


# ----------------------------------------------------------------------------
# Peers
# ----------------------------------------------------------------------------

class LoadedPeer:
    """A peer library, imported: ``available``, ``version`` or ``reason``."""

    def __init__(self, name):
        self.name = name
        self.available = False
        self.version = None
        self.reason = None
        self._jit = {}

    def resolve(self, dotted):
        obj = {"torch": self.torch}[dotted.split(".")[0]]
        for part in dotted.split(".")[1:]:
            obj = getattr(obj, part)
        return obj

    def jit(self, key, build):
        if key not in self._jit:
            self._jit[key] = self.jax.jit(build(self.jax))
        return self._jit[key]

    def set_threads(self, n):
        """Use ``n`` threads (``None``: back to what the library had at load)."""
        if self.name == "torch":
            self.torch.set_num_threads(self._threads0 if n is None else n)


def load_peer(name, threads=(), dtypes=()):
    """Import peer ``name``; never raises (the reason is kept instead)."""
    p = LoadedPeer(name)
    try:
        if name == "scipy":
            import scipy
            import scipy.special

            p.special = scipy.special
            p.version = scipy.__version__
        elif name == "torch":
            import torch
            import torch.nn.functional as F

            p.torch, p.F = torch, F
            p._threads0 = torch.get_num_threads()
            p.version = torch.__version__
        elif name == "jax":
            if "jax" not in sys.modules and set(threads) == {1}:
                # XLA's CPU thread pool is fixed when JAX starts: one thread if asked.
                os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                                                   "intra_op_parallelism_threads=1")
            import jax

            if np.dtype(np.float64) in [np.dtype(d) for d in dtypes]:
                jax.config.update("jax_enable_x64", True)
            p.jax = jax
            p.version = jax.__version__
        else:
            raise ValueError(f"unknown peer {name!r}; expected one of {list(PEERS)}")
        p.available = True
    except ImportError as e:
        p.reason = f"not installed ({e})"
    except Exception as e:  # a broken install must not stop the benchmark
        p.reason = f"{type(e).__name__}: {e}"
    return p


# ----------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------

@dataclass
class Timing:
    median_s: float
    min_s: float
    repeats: int
    number: int
    first_call_s: float


#: A sample batches calls until it lasts at least this long (timer resolution).
_MIN_SAMPLE_S = 2e-4


def measure(fn, min_time=0.25, min_repeats=5, max_time=2.0, max_repeats=1000):
    """Median seconds per call of ``fn()``: a first call (kept apart; if it was short,
    a second to size the batches), then samples until both ``min_time`` seconds and
    ``min_repeats`` samples are reached — or ``max_time`` seconds (at least one sample),
    so that a slow call does not hold up the run."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    est = first
    if est < _MIN_SAMPLE_S:  # short: time a second call to size the batches
        t0 = time.perf_counter()
        fn()
        est = time.perf_counter() - t0
    number = 1 if est >= _MIN_SAMPLE_S else min(10000, int(_MIN_SAMPLE_S / max(est, 1e-9)) + 1)
    samples = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            samples.append((time.perf_counter() - t0) / number)
            n, elapsed = len(samples), time.perf_counter() - start
            if (n >= min_repeats and elapsed >= min_time) or elapsed >= max_time \
                    or n >= max_repeats:
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return Timing(statistics.median(samples), min(samples), len(samples), number, first)


def _copy_call(inp):
    src = inp.x
    dst = np.empty_like(src)
    return lambda: np.copyto(dst, src)


# ----------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------

@dataclass
class Config:
    ops: list
    shapes: list
    dtypes: list
    threads: list
    backends: list
    peers: list
    quick: bool = False
    modes: tuple = MODES
    min_time: float = 0.25
    min_repeats: int = 5
    max_time: float = 2.0
    seed: int = 0
    command: str = "fastact bench"


#: What ``--quick`` changes (printed with the results).
QUICK = dict(min_time=0.02, min_repeats=3, max_time=0.1, modes=("out",),
             shapes=((65536, 10), (4096, 1000), (64, 128256)))
QUICK_TEXT = ("--quick: every op, backend and peer, but three of the standard shapes "
              "(unless --shapes), only the out= calls (the 'alloc' column stays empty where "
              "out= exists), and each measurement stops after 3 samples and ~0.02 s, or 0.1 s "
              "(default: the eight standard shapes, both modes, 5 samples and ~0.25 s, or 2 s)")


def parse_shape(text):
    parts = text.lower().replace("×", "x").replace("*", "x").split("x")
    try:
        n, k = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"shape {text!r} is not ROWSxCLASSES (e.g. 4096x1000)") from None
    if n < 1 or k < 1:
        raise ValueError(f"shape {text!r} must have positive sizes")
    return (n, k)


def parse_shapes(text):
    """``"standard,100x7"`` -> the standard shapes then (100, 7)."""
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if item in ("standard", "std", "default"):
            out.extend(SHAPES)
        else:
            out.append(parse_shape(item))
    if not out:
        raise ValueError("no shapes given")
    return list(dict.fromkeys(out))


def _csv(text):
    return [t.strip() for t in text.split(",") if t.strip()]


def fmt_shape(shape):
    return "x".join(str(s) for s in shape)


# ----------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------

def _label(impl, backend):
    return backend if impl == "fastact" else impl


def _impls(cfg, peers):
    """``(impl, backend_or_None, peer_or_None)`` in measurement order: fastact
    backends (the NumPy reference last), then the peers."""
    out = [("fastact", b, None) for b in cfg.backends]
    out += [(name, None, peers[name]) for name in cfg.peers if peers[name].available]
    return out


def _modes(op, impl, wanted=MODES):
    """The modes to time ``impl`` in: those of ``wanted`` it offers, else the one it has."""
    if impl == "fastact":
        have = op.modes
    else:
        spec = op.peers.get(impl)
        have = spec.modes if spec is not None else ()
    return tuple(m for m in have if m in wanted) or have[:1]


def _calls(cfg, impls):
    """``(opname, op, impl, backend, peer, mode)`` for each call the run makes on one
    input: every op of ``cfg``, by every implementation, in each mode it is timed in."""
    for opname in cfg.ops:
        op = OPS[opname]
        for impl, b, p in impls:
            for mode in _modes(op, impl, cfg.modes):
                yield opname, op, impl, b, p, mode


def _make_call(op, impl, backend, peer, inputs, mode):
    if impl == "fastact":
        return op.fastact_call(inputs, backend, mode)
    return op.peer_call(impl, peer, inputs, mode)


def _to_numpy(r):
    if isinstance(r, tuple):
        return tuple(_to_numpy(v) for v in r)
    if hasattr(r, "detach"):
        r = r.detach()
        if r.dtype.is_floating_point and r.element_size() == 2:  # no .numpy() for bfloat16
            r = r.float()
        r = r.numpy()
    return np.asarray(r, dtype=np.float64)


def _agrees(a, b, dtype):
    a, b = _to_numpy(a), _to_numpy(b)
    if isinstance(a, tuple) or isinstance(b, tuple):
        if not (isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b)):
            return False
        return all(_agrees(u, v, dtype) for u, v in zip(a, b))
    dt = _np_dtype(dtype)
    # half dtypes: results rounded to 11 (float16) / 8 (bfloat16) bits, by different
    # routes (torch's own kernels, the reference in float32): a few units of the last bit
    tol = {4: 1e-4, 8: 1e-9}.get(dt.itemsize, 4e-3 if dt == np.float16 else 3e-2)
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=tol, atol=tol, equal_nan=True))


def plan(cfg, peers):
    """Everything the run will time, for the progress bar: a list of task labels."""
    impls = _impls(cfg, peers)
    tasks = []
    for dt in cfg.dtypes:
        for wshape in warmup_shapes(cfg.shapes):
            for opname, op, impl, b, p, mode in _calls(cfg, impls):
                tasks.append(("first", dt, wshape, opname, impl, b, mode))
    for t in cfg.threads:
        for dt in cfg.dtypes:
            for shape in cfg.shapes:
                tasks.append(("copy", t, dt, shape))
                for opname, op, impl, b, p, mode in _calls(cfg, impls):
                    tasks.append(("time", t, dt, shape, opname, impl, b, mode))
    return tasks


def run_bench(cfg, peers, progress=None):
    """Run the benchmark; returns the JSON-ready result (see the module docstring).

    ``progress(description)`` is called before each task of ``plan(cfg, peers)``.
    """
    import fastact

    step = progress or (lambda desc: None)
    impls = _impls(cfg, peers)
    first_calls, records, skipped = [], [], []
    broken = set()  # (label, op): failed once, not tried again
    t_start = time.perf_counter()
    old_threads = fastact.get_num_threads()

    def skip(label, opname, err):
        broken.add((label, opname))
        first_line = (str(err).strip().splitlines() or [""])[0]
        skipped.append({"label": label, "op": opname,
                        "reason": f"{type(err).__name__}: {first_line}"})

    def each_call(inputs, describe, work):
        """``work(call, opname)`` for each call of the run on ``inputs`` (the progress
        step ``describe(opname, label, mode)`` first), yielding ``(opname, impl, backend,
        label, mode, work's result)``; an op that fails once for an implementation is
        skipped for it from then on."""
        for opname, op, impl, b, p, mode in _calls(cfg, impls):
            label = _label(impl, b)
            step(describe(opname, label, mode))
            if (label, opname) in broken:
                continue
            try:
                got = work(_make_call(op, impl, b, p, inputs, mode), opname)
            except Exception as e:
                skip(label, opname, e)
                continue
            yield opname, impl, b, label, mode, got

    def timed(fn, opname):
        return measure(fn, cfg.min_time, cfg.min_repeats, cfg.max_time)

    try:
        # First calls: compile / load / trace, on small inputs, with the most threads asked
        # for (so the multi-threaded variants compile too); checked against the reference.
        fastact.set_num_threads(max(cfg.threads))
        for p in peers.values():
            if p.available:
                p.set_threads(max(cfg.threads))
        for dt in cfg.dtypes:
            for wshape in warmup_shapes(cfg.shapes):
                small = Inputs(wshape, dt, cfg.seed)
                refs = {o: OPS[o].fastact_call(small, "numpy", "alloc")() for o in cfg.ops}

                def first_call(fn, opname):
                    t0 = time.perf_counter()
                    r = fn()
                    sec = time.perf_counter() - t0
                    return sec, _agrees(r, refs[opname], dt)

                def first_step(opname, label, mode):
                    return f"first call {fmt_shape(wshape)} {label} {opname} [{mode}]"

                for opname, impl, b, label, mode, (sec, ok) in each_call(small, first_step,
                                                                         first_call):
                    first_calls.append({"impl": impl, "backend": b, "label": label,
                                        "op": opname, "dtype": dt, "mode": mode,
                                        "shape": list(wshape), "seconds": sec,
                                        "agrees": ok})

        for t in cfg.threads:
            fastact.set_num_threads(t)
            for p in peers.values():
                if p.available:
                    p.set_threads(t)
            for dt in cfg.dtypes:
                for shape in cfg.shapes:
                    inputs = Inputs(shape, dt, cfg.seed)
                    step(f"copy {fmt_shape(shape)} {dt}")
                    tm = measure(_copy_call(inputs), cfg.min_time, cfg.min_repeats,
                                 cfg.max_time)
                    records.append(_record("copy", shape, dt, t, "copy", None, "alloc",
                                           tm, inputs.nbytes))

                    def timing_step(opname, label, mode):
                        return f"{opname} {fmt_shape(shape)} {label} [{mode}]"

                    for opname, impl, b, label, mode, tm in each_call(inputs, timing_step,
                                                                      timed):
                        records.append(_record(opname, shape, dt, t, impl, b, mode,
                                               tm, inputs.nbytes))
                    del inputs
                    gc.collect()
    finally:
        fastact.set_num_threads(old_threads)
        for p in peers.values():
            if p.available:
                p.set_threads(None)

    _derive(records)
    notes = []
    if cfg.quick:
        notes.append(QUICK_TEXT)
    for fc in first_calls:
        if not fc["agrees"]:
            notes.append(f"{fc['label']} {fc['op']} [{fc['mode']}] {fc['dtype']}: result differs "
                         f"from the NumPy reference on the first-call input")
    if "jax" in peers and peers["jax"].available and set(cfg.threads) != {1}:
        notes.append("JAX runs on its own thread pool (all cores); --threads does not change it")
    return {
        "schema": SCHEMA_ID,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": cfg.command,
        "elapsed_s": time.perf_counter() - t_start,
        "machine": machine_info(),
        "versions": versions(),
        "backends": backend_info(),
        "peers": {name: _peer_info(p) for name, p in peers.items()},
        "settings": {
            "ops": list(cfg.ops), "shapes": [list(s) for s in cfg.shapes],
            "dtypes": list(cfg.dtypes), "threads": list(cfg.threads),
            "backends": list(cfg.backends),
            "peers": [n for n in cfg.peers if peers[n].available],
            "quick": cfg.quick, "modes": list(cfg.modes), "min_time_s": cfg.min_time, "min_repeats": cfg.min_repeats,
            "max_time_s": cfg.max_time, "seed": cfg.seed,
        },
        "first_calls": first_calls,
        "records": records,
        "skipped": skipped,
        "notes": notes,
    }


def _record(op, shape, dt, threads, impl, backend, mode, tm, nbytes):
    return {
        "op": op, "shape": list(shape), "dtype": dt, "threads": threads,
        "impl": impl, "backend": backend, "label": _label(impl, backend), "mode": mode,
        "median_s": tm.median_s, "min_s": tm.min_s, "repeats": tm.repeats,
        "number": tm.number, "first_call_s": tm.first_call_s, "bytes": nbytes,
        "copy_s": None, "copy_pct": None, "speedup_vs_numpy": None,
        "speedup_vs_best_peer": None, "best_peer": None,
    }


def _derive(records):
    """Fill in copy_pct and the speed-ups (see the module docstring)."""
    by_case = {}
    for r in records:
        by_case.setdefault((tuple(r["shape"]), r["dtype"], r["threads"]), []).append(r)
    for rs in by_case.values():
        copy = next((r["median_s"] for r in rs if r["op"] == "copy"), None)
        ops = {}
        for r in rs:
            if r["op"] != "copy":
                ops.setdefault(r["op"], []).append(r)
        for op_rs in ops.values():
            times = {(r["label"], r["mode"]): r["median_s"] for r in op_rs}
            peer_labels = {r["label"] for r in op_rs if r["impl"] in PEERS}

            def same_mode(label, mode):
                """``label``'s time in ``mode``, else in the mode it was timed in."""
                if (label, mode) in times:
                    return times[(label, mode)]
                other = [times[(label, m)] for m in MODES if (label, m) in times]
                return min(other) if other else None

            def best_peer(mode):
                cands = [(same_mode(lab, mode), lab) for lab in peer_labels]
                cands = [c for c in cands if c[0] is not None]
                return min(cands) if cands else None

            for r in op_rs:
                t = r["median_s"]
                if copy is not None:
                    r["copy_s"] = copy
                    r["copy_pct"] = copy / t * 100.0
                ref = same_mode("numpy", r["mode"])
                if ref is not None:
                    r["speedup_vs_numpy"] = ref / t
                bp = best_peer(r["mode"])
                if bp is not None:
                    r["speedup_vs_best_peer"] = bp[0] / t
                    r["best_peer"] = bp[1]


# ----------------------------------------------------------------------------
# Machine and versions
# ----------------------------------------------------------------------------

def machine_info():
    from ._info import cpu_flags, cpu_name, simd_level

    flags = cpu_flags()
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        mem = None
    from ._config import _cpu_count

    return {
        "cpu": cpu_name(),
        "cores": _cpu_count(),
        "arch": platform.machine(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "memory_bytes": mem,
        "simd_level": simd_level(flags),
        "cpu_flags": sorted(flags),
    }


def versions():
    from importlib import metadata

    from . import __version__

    out = {"fastact": __version__}
    for dist in ("numpy", "numba", "llvmlite", "cffi", "scipy", "torch", "jax", "jaxlib",
                 "rich", "matplotlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def backend_info():
    from . import _backends

    out = {}
    for name in _backends.NAMES:
        why = _backends.why_unavailable(name)
        out[name] = {"available": why is None}
        if why is not None:
            out[name]["reason"] = why
    return out


def _peer_info(p):
    d = {"available": p.available}
    if p.version is not None:
        d["version"] = p.version
    if p.reason is not None:
        d["reason"] = p.reason
    return d


# ----------------------------------------------------------------------------
# The JSON schema of ``--json`` (docs/bench-schema.json is a copy of it)
# ----------------------------------------------------------------------------

SCHEMA_ID = "fastact-bench/1"

_NUM = {"type": "number"}
_POS = {"type": "number", "exclusiveMinimum": 0}
_STR = {"type": "string"}
_OPT_NUM = {"type": ["number", "null"]}
_OPT_STR = {"type": ["string", "null"]}
_SHAPE = {"type": "array", "items": {"type": "integer", "minimum": 1},
          "minItems": 2, "maxItems": 2}
_DTYPE = {"enum": list(DTYPES)}
_MODE = {"enum": list(MODES)}
_AVAIL = {"type": "object", "required": ["available"],
          "properties": {"available": {"type": "boolean"}, "version": _STR, "reason": _STR}}


def _obj(props, required=None, extra=False):
    return {"type": "object", "properties": props,
            "required": list(props) if required is None else required,
            "additionalProperties": extra}


SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "fastact bench results",
    "description": (
        "Output of `fastact bench --json FILE`. Times are seconds per call (median of "
        "the samples). mode 'out': the result written into a preallocated array; "
        "'alloc': the plain call, allocating its result. speedup_vs_numpy = "
        "t(NumPy reference, same mode) / t; speedup_vs_best_peer = t(fastest peer, same "
        "mode if it has it, else alloc) / t; copy_pct = t(np.copyto of the op's (n, k) "
        "input) / t * 100."),
    "type": "object",
    "required": ["schema", "created", "command", "elapsed_s", "machine", "versions",
                 "backends", "peers", "settings", "first_calls", "records", "skipped", "notes"],
    "additionalProperties": False,
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "created": {"type": "string", "description": "ISO 8601 local time of the run"},
        "command": {"type": "string", "description": "the command line that made this file"},
        "elapsed_s": _NUM,
        "machine": _obj({
            "cpu": _STR,
            "cores": {"type": "integer", "minimum": 1,
                      "description": "CPUs this process may run on"},
            "arch": _STR, "platform": _STR, "python": _STR,
            "memory_bytes": {"type": ["integer", "null"]},
            "simd_level": {"type": "string",
                           "description": "widest vector extension the CPU reports"},
            "cpu_flags": {"type": "array", "items": _STR},
        }),
        "versions": {"type": "object", "required": ["fastact", "numpy"],
                     "additionalProperties": _OPT_STR,
                     "description": "installed version of each package, null if absent"},
        "backends": {"type": "object", "additionalProperties": _AVAIL,
                     "description": "fastact backend -> available (reason if not)"},
        "peers": {"type": "object", "additionalProperties": _AVAIL,
                  "description": "peer library -> available, version (reason if not)"},
        "settings": _obj({
            "ops": {"type": "array", "items": _STR, "minItems": 1},
            "shapes": {"type": "array", "items": _SHAPE, "minItems": 1},
            "dtypes": {"type": "array", "items": _DTYPE, "minItems": 1},
            "threads": {"type": "array", "items": {"type": "integer", "minimum": 1},
                        "minItems": 1},
            "backends": {"type": "array", "items": _STR, "minItems": 1},
            "peers": {"type": "array", "items": {"enum": list(PEERS)}},
            "quick": {"type": "boolean"},
            "modes": {"type": "array", "items": _MODE, "minItems": 1,
                      "description": "modes timed where an implementation offers them"},
            "min_time_s": _NUM,
            "min_repeats": {"type": "integer", "minimum": 1},
            "max_time_s": _NUM,
            "seed": {"type": "integer"},
        }),
        "first_calls": {
            "type": "array",
            "description": ("the first calls of each implementation per op, dtype and mode, "
                            "on an 8x16 input if the run has shapes under 65536 elements and "
                            "a 64x1024 one if it has larger shapes: Numba compilation "
                            "(serial and multi-threaded variants), library loading, JAX "
                            "tracing; excluded from the records' times"),
            "items": _obj({
                "impl": _STR, "backend": _OPT_STR, "label": _STR, "op": _STR,
                "dtype": _DTYPE, "mode": _MODE, "shape": _SHAPE, "seconds": _POS,
                "agrees": {"type": "boolean",
                           "description": "result equals the NumPy reference's"},
            }),
        },
        "records": {
            "type": "array",
            "description": "one record per measurement",
            "items": _obj({
                "op": {"type": "string", "description": "an op of the case table, or 'copy'"},
                "shape": _SHAPE, "dtype": _DTYPE,
                "threads": {"type": "integer", "minimum": 1},
                "impl": {"enum": ["fastact", "copy"] + list(PEERS)},
                "backend": {"type": ["string", "null"],
                            "description": "fastact backend (numpy = the reference)"},
                "label": {"type": "string", "description": "backend name, or peer name"},
                "mode": _MODE,
                "median_s": _POS, "min_s": _POS,
                "repeats": {"type": "integer", "minimum": 1},
                "number": {"type": "integer", "minimum": 1,
                           "description": "calls per timed sample"},
                "first_call_s": _POS,
                "bytes": {"type": "integer", "minimum": 0,
                          "description": "bytes of the op's main (n, k) input"},
                "copy_s": _OPT_NUM, "copy_pct": _OPT_NUM,
                "speedup_vs_numpy": _OPT_NUM, "speedup_vs_best_peer": _OPT_NUM,
                "best_peer": _OPT_STR,
            }),
        },
        "skipped": {"type": "array", "items": _obj({"label": _STR, "op": _STR, "reason": _STR})},
        "notes": {"type": "array", "items": _STR},
    },
}


# ----------------------------------------------------------------------------
# Presentation: tables (rich, or markdown), plot
# ----------------------------------------------------------------------------

def fmt_time(s):
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.3g} µs"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    return f"{s:.3g} s"


def fmt_ratio(r):
    if r is None:
        return "-"
    return f"{r:.2f}x" if r < 100 else f"{r:.0f}x"


def fmt_pct(p):
    return "-" if p is None else f"{p:.0f}%"


def _shown_backends(result):
    bs = result["settings"]["backends"]
    native = [b for b in bs if b != "numpy"]
    return native or bs


def _primary(rs, label, op):
    """The record the table shows for ``label``: fastact and the reference with
    ``out=`` when the op has it; a peer called the fastest way it offers."""
    mine = [r for r in rs if r["label"] == label and r["op"] == op]
    if not mine:
        return None
    if label in PEERS:
        return min(mine, key=lambda r: r["median_s"])
    return next((r for r in mine if r["mode"] == "out"), mine[0])


def _alloc(rs, label, op):
    return next((r for r in rs if r["label"] == label and r["op"] == op
                 and r["mode"] == "alloc"), None)


def _groups(result):
    """Records grouped per (dtype, threads), then per shape: {(dt, t): {shape: [records]}}."""
    out = {}
    for r in result["records"]:
        out.setdefault((r["dtype"], r["threads"]), {}).setdefault(tuple(r["shape"]), []).append(r)
    return out


def table_rows(result):
    """The summary table as plain cells: per (dtype, threads) a list of row dicts."""
    tables = {}
    shown = _shown_backends(result)
    ops = result["settings"]["ops"]
    for key, by_shape in _groups(result).items():
        rows = []
        for op in ops:
            for shape, rs in by_shape.items():
                copy = next((r for r in rs if r["op"] == "copy"), None)
                ref = _primary(rs, "numpy", op)
                peer = None
                for name in PEERS:
                    pr = _primary(rs, name, op)
                    if pr is not None and (peer is None or pr["median_s"] < peer["median_s"]):
                        peer = pr
                if ref is None and peer is None and not any(
                        _primary(rs, b, op) for b in shown):
                    continue
                for i, b in enumerate(shown):
                    r = _primary(rs, b, op) or {}
                    a = _alloc(rs, b, op)
                    rows.append({
                        "op": op, "shape": fmt_shape(shape), "first": i == 0,
                        "copy": copy["median_s"] if copy else None,
                        "numpy": ref["median_s"] if ref else None,
                        "peer": peer["label"] if peer else None,
                        "peer_s": peer["median_s"] if peer else None,
                        "backend": b if r else f"{b} (skipped)",
                        "out": r["median_s"] if r.get("mode") == "out" else None,
                        "alloc": a["median_s"] if a else None,
                        "x_numpy": r.get("speedup_vs_numpy"),
                        "x_peer": r.get("speedup_vs_best_peer"),
                        "copy_pct": r.get("copy_pct"),
                    })
        tables[key] = rows
    return tables


def headline(result):
    """Per shown backend and (dtype, threads): geometric means and ranges of the
    table's ratios over every op and shape."""
    out = []
    for (dt, t), rows in table_rows(result).items():
        for b in _shown_backends(result):
            mine = [r for r in rows if r["backend"] == b]
            line = {"dtype": dt, "threads": t, "backend": b}
            for key in ("x_numpy", "x_peer"):
                v = [r[key] for r in mine if r[key]]
                if v:
                    line[key] = (math.exp(sum(math.log(x) for x in v) / len(v)), min(v), max(v))
            out.append(line)
    return out


def _headline_text(result):
    lines = []
    for h in headline(result):
        parts = []
        if "x_numpy" in h:
            g, lo, hi = h["x_numpy"]
            parts.append(f"{g:.2f}x the NumPy reference (range {lo:.2f}-{hi:.2f}x)")
        if "x_peer" in h:
            g, lo, hi = h["x_peer"]
            parts.append(f"{g:.2f}x the best installed peer ({lo:.2f}-{hi:.2f}x)")
        if parts:
            lines.append(f"fastact[{h['backend']}], {h['dtype']}, {h['threads']} thread(s): "
                         f"geometric mean " + "; ".join(parts))
    return lines


_FOOTNOTE = (
    "Times: median per call. 'out=' = result written into a preallocated array; 'alloc' = "
    "the plain call, allocating its result (as a NumPy user calls it). Ratios use the "
    "out= time (ops that return only a loss: the plain call), against the NumPy reference "
    "(fastact backend=\"numpy\", also out=) and the fastest installed peer called the "
    "fastest way it offers (torch with out= where it has one; SciPy and JAX allocate). "
    "% copy = time of np.copyto of the (n, k) input / op time (over 100% for ops that "
    "write little, such as logsumexp and the loss: a copy writes as much as it reads).")


def _first_call_title(result):
    shapes = [fmt_shape(s) for s in warmup_shapes(result["settings"]["shapes"])]
    total = sum(f["seconds"] for f in result["first_calls"])
    return (f"first calls, before timing: Numba compilation (once: cached for later runs), "
            f"library loading — {total:.1f} s in all (sum over the {' and '.join(shapes)} "
            f"inputs; not in the times above)")


def _first_call_rows(result):
    """{(label, dtype): {op: seconds}}: the first calls of an op summed over the
    warm-up inputs and modes — what compiling and loading cost before timing."""
    out = {}
    for fc in result["first_calls"]:
        d = out.setdefault((fc["label"], fc["dtype"]), {})
        d[fc["op"]] = d.get(fc["op"], 0.0) + fc["seconds"]
    return out


def render_rich(result, console):
    from rich import box
    from rich.table import Table
    from rich.text import Text

    def ratio(v):
        if v is None:
            return Text("-")
        style = "bold green" if v >= 1.05 else ("red" if v < 0.95 else "")
        return Text(fmt_ratio(v), style=style)

    m = result["machine"]
    console.print(Text(f"fastact bench  {m['cpu']}, {m['cores']} cores, {m['simd_level']}; "
                       f"{_versions_line(result)}", style="bold"))
    for (dt, t), rows in table_rows(result).items():
        tb = Table(title=f"{dt}, {t} thread(s)", box=box.SIMPLE_HEAD, header_style="bold",
                   title_style="bold", pad_edge=False)
        for name, just in (("op", "left"), ("shape", "left"), ("copy", "right"),
                           ("NumPy ref", "right"), ("best peer", "right"),
                           ("fastact", "left"), ("out=", "right"), ("alloc", "right"),
                           ("vs NumPy", "right"), ("vs peer", "right"), ("% copy", "right")):
            tb.add_column(name, justify=just, no_wrap=True)
        prev_op = None
        for i, r in enumerate(rows):
            if prev_op is not None and r["op"] != prev_op and r["first"]:
                tb.add_section()
            new_op = r["op"] != prev_op
            prev_op = r["op"]
            first = r["first"]
            tb.add_row(
                r["op"] if new_op else "",
                r["shape"] if first else "",
                fmt_time(r["copy"]) if first else "",
                fmt_time(r["numpy"]) if first else "",
                (f"{r['peer']} {fmt_time(r['peer_s'])}" if r["peer"] else "-") if first else "",
                r["backend"], fmt_time(r["out"]), fmt_time(r["alloc"]),
                ratio(r["x_numpy"]), ratio(r["x_peer"]), fmt_pct(r["copy_pct"]))
        console.print(tb)
    console.print(Text(_FOOTNOTE, style="dim"))
    _render_first_calls_rich(result, console)
    for line in _headline_text(result):
        console.print(Text(line, style="bold"))
    for line in _skipped_lines(result):
        console.print(Text(f"skipped: {line}", style="yellow"))
    for n in result["notes"]:
        console.print(Text(f"note: {n}", style="yellow"))


def _render_first_calls_rich(result, console):
    from rich import box
    from rich.table import Table

    rows = _first_call_rows(result)
    if not rows:
        return
    tb = Table(title=_first_call_title(result),
               box=box.SIMPLE_HEAD, title_style="bold", pad_edge=False)
    header, body = _first_call_table(result)
    for i, h in enumerate(header):
        tb.add_column(h, justify="left" if i == 0 else "right")
    for row in body:
        tb.add_row(*row)
    console.print(tb)


def _first_call_table(result):
    """(header, rows): one row per op, one column per implementation (and dtype)."""
    fc = _first_call_rows(result)
    cols = list(fc)
    multi = len({dt for _, dt in cols}) > 1
    header = ["op"] + [f"{lab} {dt}" if multi else lab for lab, dt in cols]
    body = [[op] + [fmt_time(fc[c].get(op)) for c in cols] for op in result["settings"]["ops"]]
    return header, body


def _skipped_lines(result):
    """One line per (implementation, reason): the ops it could not run."""
    groups = {}
    for s in result["skipped"]:
        groups.setdefault((s["label"], s["reason"]), []).append(s["op"])
    return [f"{label} on {', '.join(ops)}: {reason}" for (label, reason), ops in groups.items()]


def _versions_line(result):
    v = result["versions"]
    keys = ["fastact", "numpy", "numba", "scipy", "torch", "jax"]
    return ", ".join(f"{k} {v[k]}" for k in keys if v.get(k))


def render_markdown(result):
    """The summary as a markdown table with machine, versions and command under it."""
    out = []
    shown = _shown_backends(result)
    for (dt, t), rows in table_rows(result).items():
        # one row per (op, shape), a column group per fastact backend
        out.append(f"**{dt}, {t} thread(s)** — times with `out=`; 'vs' = speed-up\n")
        head = ["op", "shape", "NumPy ref", "best peer"]
        for b in shown:
            head += [f"fastact[{b}]", "vs NumPy", "vs peer", "% copy"]
        out.append("| " + " | ".join(head) + " |")
        out.append("|---|---|" + "--:|" * (len(head) - 2))
        prev = None
        for i in range(0, len(rows), len(shown)):
            group = rows[i:i + len(shown)]
            r0 = group[0]
            cells = [f"**{r0['op']}**" if r0["op"] != prev else "", r0["shape"],
                     fmt_time(r0["numpy"]),
                     f"{r0['peer']} {fmt_time(r0['peer_s'])}" if r0["peer"] else "-"]
            for r in group:
                cells += [fmt_time(r["out"] if r["out"] is not None else r["alloc"]),
                          f"**{fmt_ratio(r['x_numpy'])}**" if r["x_numpy"] else "-",
                          fmt_ratio(r["x_peer"]), fmt_pct(r["copy_pct"])]
            out.append("| " + " | ".join(cells) + " |")
            prev = r0["op"]
        out.append("")
    if result["first_calls"]:
        header, body = _first_call_table(result)
        out.append(_first_call_title(result)[0].upper() + _first_call_title(result)[1:] + ":\n")
        out.append("| " + " | ".join(header) + " |")
        out.append("|---|" + "--:|" * (len(header) - 1))
        for row in body:
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    for line in _headline_text(result):
        out.append(f"- {line}")
    if _headline_text(result):
        out.append("")
    m = result["machine"]
    out.append(_FOOTNOTE + " The allocating calls' times are in the terminal table and "
               "the JSON.\n")
    out.append(f"Command: `{result['command']}` ({result['elapsed_s']:.0f} s).  ")
    out.append(f"Machine: {m['cpu']}, {m['cores']} cores, {m['arch']}, SIMD {m['simd_level']}, "
               f"{m['platform']}, Python {m['python']}.  ")
    out.append(f"Versions: {_versions_line(result)}.  ")
    avail = [b for b, d in result["backends"].items() if d["available"]]
    out.append(f"Backends available: {', '.join(avail)}.")
    for line in _skipped_lines(result):
        out.append(f"Skipped: {line}.  ")
    for n in result["notes"]:
        out.append(f"Note: {n}.")
    return "\n".join(out) + "\n"


def plot(result, path):
    """Speed-up over the NumPy reference, one panel per op, grouped bars per shape."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    groups = _groups(result)
    if not groups:
        raise ValueError("nothing was measured: no plot")
    (dt, t), by_shape = next(iter(groups.items()))
    ops = result["settings"]["ops"]
    labels = [b for b in _shown_backends(result) if b != "numpy"]
    labels += [p for p in result["settings"]["peers"]]
    labels = [lab for lab in labels
              if any(r["label"] == lab for rs in by_shape.values() for r in rs)]
    shapes = list(by_shape)
    ncols = min(4, len(ops))
    nrows = math.ceil(len(ops) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.8 * ncols, 3.4 * nrows + 0.8),
                             squeeze=False, sharey=True)
    colors = {"c": "#1b7837", "numba": "#5aae61", "numpy": "#999999", "scipy": "#2166ac",
              "torch": "#d6604d", "jax": "#8073ac"}
    width = 0.8 / max(1, len(labels))
    all_vals = []
    for ax, op in zip(axes.flat, ops):
        for j, lab in enumerate(labels):
            xs, vs = [], []
            for i, s in enumerate(shapes):
                r = _primary(by_shape[s], lab, op)
                if r is not None and r["speedup_vs_numpy"]:
                    xs.append(i + (j - (len(labels) - 1) / 2) * width)
                    vs.append(r["speedup_vs_numpy"])
            if not vs:
                continue
            all_vals += vs
            name = f"fastact[{lab}]" if lab not in PEERS else lab
            bars = ax.bar(xs, vs, width=width * 0.95, color=colors.get(lab), label=name)
            if len(shapes) * len(labels) <= 24:
                ax.bar_label(bars, labels=[f"{v:.1f}" if v >= 1 else f"{v:.2g}" for v in vs],
                             fontsize=6.5, padding=1)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_yscale("log")
        ax.set_title(op, fontsize=11, fontweight="bold")
        ax.set_xticks(range(len(shapes)))
        ax.set_xticklabels([fmt_shape(s) for s in shapes], rotation=30, ha="right", fontsize=8)
        ax.grid(axis="y", which="both", alpha=0.3)
    for ax in list(axes.flat)[len(ops):]:
        ax.set_visible(False)
    if all_vals:
        lo, hi = min(all_vals + [1.0]), max(all_vals + [1.0])
        axes[0, 0].set_ylim(lo / 1.6, hi * 1.8)
    for ax in axes[:, 0]:
        ax.set_ylabel("speed-up over NumPy (x)")
    handles, names = [], []
    for ax in axes.flat:
        for h, n in zip(*ax.get_legend_handles_labels()):
            if n not in names:
                handles.append(h)
                names.append(n)
    fig.legend(handles, names, loc="upper center", ncol=len(names), frameon=False,
               bbox_to_anchor=(0.5, 0.995))
    m = result["machine"]
    fig.suptitle(f"fastact bench: speed-up over the NumPy reference (higher is better; 1 = "
                 f"NumPy), {dt}, {t} thread(s) — {m['cpu']}, {m['cores']} cores",
                 y=0.935, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.91))
    fig.savefig(path, dpi=130)
    plt.close(fig)


# ----------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------

def add_arguments(p):
    """The options of ``fastact bench`` (``p``: an argparse (sub)parser)."""
    p.description = ("Time every fastact op, backend and installed peer (NumPy reference, "
                     "SciPy, PyTorch, JAX) on standard shapes, beside a memory copy of the "
                     "same bytes; print a table of times and speed-ups.")
    p.add_argument("--ops", default="all",
                   help="comma-separated ops (default: all): " + ", ".join(OPS))
    p.add_argument("--backends", default="all",
                   help="fastact backends, comma-separated (default: all available; the "
                        "NumPy reference is always timed, as the baseline)")
    p.add_argument("--peers", default="all",
                   help="peers to compare with: scipy,torch,jax, 'all' (the installed ones, "
                        "default) or 'none'")
    p.add_argument("--shapes", default=None,
                   help="ROWSxCLASSES list, e.g. '1024x50257,standard' ('standard' = "
                        + ", ".join(fmt_shape(s) for s in SHAPES) + "; the default; --quick: "
                        + ", ".join(fmt_shape(s) for s in QUICK["shapes"]) + ")")
    p.add_argument("--dtype", default="float32",
                   help="float32 (default), float64, float16, bfloat16 (ml_dtypes) or a "
                        "list such as 'float32,float16'; half dtypes are computed in float32 "
                        "and every peer gets tensors of the same dtype")
    p.add_argument("--threads", default=None,
                   help="thread counts, e.g. '1,2' (default: fastact's, all cores)")
    p.add_argument("--quick", action="store_true",
                   help="fewer samples per measurement: the whole run in well under a minute")
    p.add_argument("--modes", default=None,
                   help="out (result into a preallocated array), alloc (the plain call), or "
                        "'out,alloc' (default; --quick: out)")
    p.add_argument("--min-time", type=float, default=None,
                   help="seconds of sampling per measurement (default 0.25; --quick 0.02)")
    p.add_argument("--repeats", type=int, default=None,
                   help="minimum samples per measurement (default 5; --quick 3)")
    p.add_argument("--json", metavar="FILE", help="write every measurement as JSON "
                   "(schema: fastact bench --schema)")
    p.add_argument("--plot", metavar="FILE.png", help="write a PNG of the speed-ups (matplotlib)")
    p.add_argument("--markdown", metavar="FILE", help="write the table as markdown")
    p.add_argument("--schema", action="store_true", help="print the JSON schema and exit")
    p.add_argument("--from-json", metavar="FILE",
                   help="measure nothing: show (and --plot / --markdown) a saved --json run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)


def _config_from_args(args):
    import fastact

    avail_ops = available_ops()
    ops = avail_ops if args.ops == "all" else _csv(args.ops)
    for o in ops:
        if o not in OPS:
            raise ValueError(f"unknown op {o!r}; expected some of {', '.join(OPS)}")
        if o not in avail_ops:
            raise ValueError(f"op {o!r} needs fastact.{OPS[o].func}, which this version lacks")
    avail = fastact.available_backends()
    if args.backends == "all":
        backends = list(avail)
    else:
        backends = _csv(args.backends)
        from . import _backends

        for b in backends:
            if b not in _backends.NAMES:
                raise ValueError(f"unknown backend {b!r}; expected some of "
                                 f"{', '.join(_backends.NAMES)}")
            if b not in avail:
                raise ValueError(f"backend {b!r} is not available: "
                                 f"{_backends.why_unavailable(b)}")
    if "numpy" not in backends:
        backends.append("numpy")  # the baseline of every speed-up
    backends = sorted(dict.fromkeys(backends), key=("c", "numba", "numpy").index)
    if args.peers == "all":
        peers = list(PEERS)
    elif args.peers == "none":
        peers = []
    else:
        peers = _csv(args.peers)
        for p in peers:
            if p not in PEERS:
                raise ValueError(f"unknown peer {p!r}; expected some of {', '.join(PEERS)}")
    dtypes = []
    for d in _csv(args.dtype):
        if d not in DTYPES:
            raise ValueError(f"--dtype must be some of {', '.join(DTYPES)}, got {d!r}")
        if d == "bfloat16":
            try:
                import ml_dtypes  # noqa: F401
            except ImportError:
                raise ValueError("--dtype bfloat16 needs the ml_dtypes package") from None
        dtypes.append(d)
    if args.threads is None:
        threads = [fastact.get_num_threads()]
    else:
        try:
            threads = [int(t) for t in _csv(args.threads)]
        except ValueError:
            raise ValueError(f"--threads must be integers, got {args.threads!r}") from None
        if not threads or min(threads) < 1:
            raise ValueError(f"--threads must be positive integers, got {args.threads!r}")
    if args.shapes is not None:
        shapes = parse_shapes(args.shapes)
    else:
        shapes = list(QUICK["shapes"] if args.quick else SHAPES)
    cfg = Config(ops=ops, shapes=shapes, dtypes=dtypes or ["float32"],
                 threads=threads, backends=backends, peers=peers, quick=args.quick,
                 seed=args.seed)
    if args.quick:
        cfg.min_time, cfg.min_repeats = QUICK["min_time"], QUICK["min_repeats"]
        cfg.max_time = QUICK["max_time"]
        cfg.modes = QUICK["modes"]
    if args.modes is not None:
        modes = _csv(args.modes)
        for m in modes:
            if m not in MODES:
                raise ValueError(f"--modes must be out and/or alloc, got {m!r}")
        cfg.modes = tuple(m for m in MODES if m in modes)
    if args.min_time is not None:
        cfg.min_time = max(0.0, args.min_time)
    if args.repeats is not None:
        cfg.min_repeats = max(1, args.repeats)
    return cfg


def run(args):
    """``fastact bench``: returns the exit code."""
    if args.schema:
        print(json.dumps(SCHEMA, indent=2))
        return 0
    if args.from_json:
        return _from_json(args)
    try:
        cfg = _config_from_args(args)
    except ValueError as e:
        print(f"fastact bench: error: {e}", file=sys.stderr)
        return 2
    cfg.command = _reconstruct_command(args)
    try:
        from rich.console import Console
    except ImportError:
        Console = None
        print("fastact bench: rich is not installed (pip install 'fastact[bench]'); "
              "plain output", file=sys.stderr)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("fastact bench: error: --plot needs matplotlib (pip install "
                  "'fastact[bench]')", file=sys.stderr)
            return 2

    err = Console(stderr=True) if Console else None
    out = None
    if Console:
        out = Console() if sys.stdout.isatty() else Console(width=160)
    if err:
        with err.status("loading peers ..."):
            peers = {n: load_peer(n, cfg.threads, cfg.dtypes) for n in cfg.peers}
    else:
        peers = {n: load_peer(n, cfg.threads, cfg.dtypes) for n in cfg.peers}
    loaded = [n for n, p in peers.items() if p.available]
    missing = [f"{n} ({p.reason})" for n, p in peers.items() if not p.available]
    msg = (f"backends: {', '.join(cfg.backends)}; peers: {', '.join(loaded) or 'none'}"
           + (f"; not installed: {', '.join(n for n, p in peers.items() if not p.available)}"
              if missing else "")
           + f"; threads {','.join(map(str, cfg.threads))}; {','.join(cfg.dtypes)}")
    print(msg, file=sys.stderr)
    if cfg.quick:
        print(QUICK_TEXT, file=sys.stderr)

    tasks = plan(cfg, peers)
    show_progress = err is not None and err.is_terminal and not args.no_progress
    if show_progress:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        with Progress(TextColumn("[progress.description]{task.description:<48}"), BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                      console=err, transient=True) as prog:
            tid = prog.add_task("starting", total=len(tasks))
            state = {"n": 0}

            def step(desc):
                if state["n"]:
                    prog.advance(tid)
                state["n"] += 1
                prog.update(tid, description=desc)

            try:
                result = run_bench(cfg, peers, step)
            except KeyboardInterrupt:
                prog.stop()
                print("fastact bench: interrupted", file=sys.stderr)
                return 130
            prog.advance(tid)
    else:
        try:
            result = run_bench(cfg, peers)
        except KeyboardInterrupt:
            print("fastact bench: interrupted", file=sys.stderr)
            return 130

    if out is not None:
        render_rich(result, out)
    else:
        print(render_markdown(result))
    print(f"{len(result['records'])} measurements in {result['elapsed_s']:.1f} s",
          file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(render_markdown(result))
        print(f"wrote {args.markdown}", file=sys.stderr)
    if args.plot:
        try:
            plot(result, args.plot)
            print(f"wrote {args.plot}", file=sys.stderr)
        except ValueError as e:
            print(f"fastact bench: {e}", file=sys.stderr)
    return 0


def _from_json(args):
    """Render a saved run: the same table, markdown and plot, no measurement."""
    try:
        with open(args.from_json) as f:
            result = json.load(f)
    except (OSError, ValueError) as e:
        print(f"fastact bench: error: cannot read {args.from_json}: {e}", file=sys.stderr)
        return 2
    if not isinstance(result, dict) or result.get("schema") != SCHEMA_ID:
        print(f"fastact bench: error: {args.from_json} is not a {SCHEMA_ID} file",
              file=sys.stderr)
        return 2
    try:
        from rich.console import Console
    except ImportError:
        print(render_markdown(result))
    else:
        render_rich(result, Console() if sys.stdout.isatty() else Console(width=160))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(render_markdown(result))
    if args.plot:
        plot(result, args.plot)
    return 0


def _reconstruct_command(args):
    """The command line, as typed when run from a shell; rebuilt from ``args`` otherwise."""
    argv = sys.argv[1:]
    if "bench" in argv and os.path.basename(sys.argv[0]) in ("fastact", "__main__.py"):
        return "fastact " + " ".join(argv[argv.index("bench"):])
    parts = ["fastact bench"]
    for name in ("ops", "backends", "peers", "shapes", "dtype", "threads"):
        v = getattr(args, name)
        default = {"ops": "all", "backends": "all", "peers": "all", "shapes": None,
                   "dtype": "float32", "threads": None}[name]
        if v != default:
            parts.append(f"--{name} {v}")
    if args.quick:
        parts.append("--quick")
    if args.modes is not None:
        parts.append(f"--modes {args.modes}")
    return " ".join(parts)
