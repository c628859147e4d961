"""The case table, shared by ``fastact bench`` and the pytest-benchmark suite
(``benchmarks/``): the standard shapes, the inputs (``Inputs``), and ``OPS``, one
``Op`` per timed call with the way each peer library computes it (``Peer``).

Adding a case
-------------
Add an ``Op(...)`` to ``OPS``: the fastact function's name, the inputs it takes
(attributes of ``Inputs``), how to make its ``out=`` buffer, and for each peer
the modes it offers and a factory ``(peer, inputs, mode) -> callable``.  The
CLI, the JSON, the plot and ``benchmarks/`` pick it up.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np


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
        self.dtype = np_dtype(dtype)
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


def np_dtype(name):
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


def _on_backend(backend, f):
    """``f()`` with ``backend`` as the current backend (the context variable that
    ``fastact.use_backend`` sets, without the context manager's cost per call)."""
    from .. import _config

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


#: Every case, in the order shown.  The sigmoid family is offered as soon as
#: ``fastact`` exports its functions (``Op.available``).
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


def fmt_shape(shape):
    return "x".join(str(s) for s in shape)
