"""The public elementwise functions: the sigmoid family, the hidden-layer activations
and their vector-Jacobian products, and binary cross-entropy with logits.

Validation, dtypes and errors are those of the softmax family (``fastact._api``'s
helpers).  Kernels see flat 1-D C-contiguous arrays of the compute dtype: a
C-ordered input is viewed flat, a Fortran-ordered one is walked as its
transpose (also flat, no copy), any other layout is copied once; ``out`` is
written directly when its layout matches, else through a temporary.  The
kernel contract is in ``_backends/numpy_elementwise.py``.
"""

from __future__ import annotations

import math

import numpy as np

from . import _config
from ._validate import REDUCTIONS, asarray, check_out, dtypes, loss_dtype

_APPROXIMATE = ("none", "tanh")


def _kernels(backend):
    """The elementwise kernel table of ``backend`` (None: the current one; "auto" as
    for softmax, falling back to the next backend if the chosen one has no
    elementwise kernels)."""
    from ._backends import NAMES, kernels

    name = _config.resolve(backend).name
    try:
        return kernels(name, "elementwise")
    except RuntimeError:
        if _config.requested(backend) != "auto":
            raise
        for other in NAMES[NAMES.index(name) + 1:]:
            try:
                _config.resolve(other)
                return kernels(other, "elementwise")
            except RuntimeError:
                continue
        raise


# ----------------------------------------------------------------------------
# layout: flat views
# ----------------------------------------------------------------------------

def _flip(a):
    """Walk ``a`` as its transpose: True when it is Fortran- but not C-contiguous."""
    return a.ndim > 1 and a.flags.f_contiguous and not a.flags.c_contiguous


def _flat(a, flip, dtype):
    """``a`` (or its transpose) as a flat C-contiguous array of ``dtype`` (a copy only if needed)."""
    v = a.T if flip else a
    return np.ascontiguousarray(v, dtype=dtype).reshape(-1)


def _out_buffer(out, flip, dtype, n):
    """(flat buffer the kernel writes, whether it is ``out``'s own memory)."""
    if out is not None:
        v = out.T if flip else out
        if v.dtype == dtype and v.flags.c_contiguous:
            return v.reshape(-1), True
    return np.empty(n, dtype), False


def _result(buf, direct, out, shape, flip, rdtype):
    """What the user gets back from the flat result ``buf`` for an input of ``shape``."""
    if out is not None:
        if not direct:
            v = out.T if flip else out
            v[...] = buf.reshape(v.shape)
        return out
    r = buf.reshape(shape[::-1] if flip else shape)
    if r.dtype != rdtype:
        r = r.astype(rdtype)
    return r.T if flip else r


def _half_kernel_dtype(mod, name, cdtype, rdtype):
    """The dtype handed to kernel ``name`` of table ``mod``: a half result dtype itself
    when the kernel reads and writes half arrays (``mod.half`` lists it), else ``cdtype``."""
    if rdtype != cdtype and name in mod.half:
        return rdtype
    return cdtype


def _check_approximate(approximate):
    if approximate not in _APPROXIMATE:
        raise ValueError(f"fastact: approximate must be one of {_APPROXIMATE}, "
                         f"got {approximate!r}")
    return "gelu" if approximate == "none" else "gelu_tanh"


def _unary(op, x, out, backend):
    x = asarray(x)
    return _elementwise(op, "unary", (x,), dtypes(x.dtype), out, backend)


def _unary_backward(op, grad, s, out, backend, what="x"):
    grad = asarray(grad, "grad")
    s = asarray(s, what)
    if grad.shape != s.shape:
        raise ValueError(f"fastact: grad has shape {grad.shape} but {what} has shape {s.shape}")
    return _elementwise(op, "unary_backward", (grad, s),
                        dtypes(np.result_type(grad.dtype, s.dtype)), out, backend)


def _elementwise(op, kernel, arrays, dtypes_, out, backend):
    """Elementwise ``op`` by the table's ``kernel`` ("unary" or "unary_backward") on
    ``arrays`` (of one shape, the layout of the last one leads): flat views in,
    the result in the user's layout (or ``out``)."""
    cdtype, rdtype = dtypes_
    shape = arrays[-1].shape
    if out is not None:
        check_out(out, shape, rdtype)
    mod = _kernels(backend)
    if arrays[-1].size == 0:
        return out if out is not None else np.empty(shape, rdtype)
    flip = _flip(arrays[-1])
    kdtype = _half_kernel_dtype(mod, kernel, cdtype, rdtype)
    flat = [_flat(a, flip, kdtype) for a in arrays]
    buf, direct = _out_buffer(out, flip, kdtype, flat[-1].shape[0])
    fn = mod.unary if kernel == "unary" else mod.unary_backward
    fn(op, *flat, buf, _config.get_num_threads())
    return _result(buf, direct, out, shape, flip, rdtype)


# ----------------------------------------------------------------------------
# public: the sigmoid family and the hidden-layer activations
# ----------------------------------------------------------------------------

def _activation(op, doc, backward_doc):
    """The public function of elementwise ``op`` and its vector-Jacobian product
    (given ``x``): ``f(x, *, out=None, backend=None)`` and
    ``f_backward(grad, x, *, out=None, backend=None)``."""
    def forward(x, *, out=None, backend=None):
        return _unary(op, x, out, backend)

    def backward(grad, x, *, out=None, backend=None):
        return _unary_backward(op, grad, x, out, backend)

    for f, name, d in ((forward, op, doc), (backward, op + "_backward", backward_doc)):
        f.__name__ = f.__qualname__ = name
        f.__doc__ = d
    return forward, backward


def sigmoid(x, *, out=None, backend=None):
    """``1 / (1 + exp(-x))`` elementwise; no overflow for any input (``exp(-|x|)`` only)."""
    return _unary("sigmoid", x, out, backend)


def sigmoid_backward(grad, y, *, out=None, backend=None):
    """Vector-Jacobian product of sigmoid given ``y = sigmoid(x)``: ``grad * (1 - y) * y``."""
    return _unary_backward("sigmoid", grad, y, out, backend, what="y")


log_sigmoid, log_sigmoid_backward = _activation(
    "log_sigmoid",
    """``log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|))``: exact for large ``|x|``.""",
    """Vector-Jacobian product of log_sigmoid at ``x``: ``grad * sigmoid(-x)``.""")
relu, relu_backward = _activation(
    "relu",
    """``max(x, 0)`` elementwise (NaN stays NaN).""",
    """``grad`` where ``x > 0``, else 0 (as PyTorch: NaN ``x`` passes ``grad``).""")
tanh, tanh_backward = _activation(
    "tanh",
    """``tanh(x)`` elementwise.""",
    """``grad * (1 - tanh(x)**2)``, computed as ``4t / (1 + t)**2``, ``t = exp(-2|x|)``.""")
softsign, softsign_backward = _activation(
    "softsign",
    """``x / (1 + |x|)`` elementwise.""",
    """``grad / (1 + |x|)**2``.""")
silu, silu_backward = _activation(
    "silu",
    """``x * sigmoid(x)`` (a.k.a. swish) elementwise.""",
    """``grad * sigmoid(x) * (1 + x * sigmoid(-x))``.""")


def gelu(x, approximate="none", *, out=None, backend=None):
    """``x * Phi(x)`` (``approximate="none"``, via erfc) or PyTorch's tanh approximation
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x**3)))`` (``approximate="tanh"``)."""
    return _unary(_check_approximate(approximate), x, out, backend)


def gelu_backward(grad, x, approximate="none", *, out=None, backend=None):
    """``grad * gelu'(x)`` for the same ``approximate`` as the forward."""
    return _unary_backward(_check_approximate(approximate), grad, x, out, backend)


# ----------------------------------------------------------------------------
# public: binary cross-entropy with logits
# ----------------------------------------------------------------------------

class _BCE:
    """Validated binary cross-entropy arguments, as flat arrays for the kernels."""

    def __init__(self, logits, target, weight, pos_weight, reduction, backend):
        x = asarray(logits, "logits")
        cdtype, rdtype = dtypes(x.dtype, "logits")
        if reduction not in REDUCTIONS:
            raise ValueError(f"fastact: reduction must be one of {REDUCTIONS}, got {reduction!r}")
        t = asarray(target, "target")
        if t.shape != x.shape:
            raise ValueError(f"fastact: target has shape {t.shape}, expected the logits' "
                             f"shape {x.shape}")
        self.x, self.shape = x, x.shape
        self.n = x.size
        self.cdtype, self.rdtype = cdtype, rdtype
        self.ldtype = loss_dtype(cdtype, rdtype)
        self.reduction = reduction
        self.w = self._periodic(weight, "weight")
        self.pw = self._periodic(pos_weight, "pos_weight")
        self.mod = _kernels(backend)
        self.x1 = np.ascontiguousarray(x, dtype=cdtype).reshape(-1)
        self.t1 = np.ascontiguousarray(t, dtype=cdtype).reshape(-1)

    def _periodic(self, a, what):
        """``a`` (broadcastable to the logits) as a 1-D array whose element ``i % len``
        belongs to flat element ``i``: length 1, the last axis, or every element."""
        if a is None:
            return None
        a = asarray(a, what)
        shape = self.shape
        try:
            ok = np.broadcast_shapes(a.shape, shape) == shape
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"fastact: {what} of shape {a.shape} does not broadcast to the "
                             f"logits' shape {shape}")
        if a.size == 1:
            return np.ascontiguousarray(a, dtype=self.cdtype).reshape(1)
        lead = a.shape[:-1]
        if all(d == 1 for d in lead) and a.shape[-1] == shape[-1]:
            return np.ascontiguousarray(a, dtype=self.cdtype).reshape(-1)
        return np.ascontiguousarray(np.broadcast_to(a, shape), dtype=self.cdtype).reshape(-1)

    def scale(self, grad_loss):
        """(scalar factor of the gradient, per-element factor or None)."""
        g = np.asarray(grad_loss)
        a = 1.0 / self.n if self.reduction == "mean" and self.n else 1.0
        if g.ndim == 0:
            return float(g) * a, None
        if self.reduction != "none":
            raise ValueError(f"fastact: grad_loss must be a scalar for reduction="
                             f"{self.reduction!r}, got shape {g.shape}")
        try:
            gb = np.broadcast_to(g, self.shape)
        except ValueError:
            raise ValueError(f"fastact: grad_loss has shape {g.shape}, expected the logits' "
                             f"shape {self.shape}") from None
        return a, np.ascontiguousarray(gb, dtype=self.cdtype).reshape(-1)

    def grad_buffer(self, out):
        if out is not None:
            check_out(out, self.shape, self.rdtype)
            if out.dtype == self.cdtype and out.flags.c_contiguous:
                return out.reshape(-1), True
        return np.empty(self.n, self.cdtype), False

    def compute(self, want_loss, grad, c=1.0, gscale=None):
        """Run the kernel; return the user's loss (None if not wanted)."""
        full = None
        if want_loss and self.reduction == "none":
            full = np.empty(self.n, self.cdtype)
        total = 0.0
        if self.n:
            total = self.mod.bce(self.x1, self.t1, self.w, self.pw, float(c), gscale, full,
                                 grad, _config.get_num_threads())
        if not want_loss:
            return None
        if full is not None:
            r = full.reshape(self.shape)
            return r.astype(self.ldtype) if r.dtype != self.ldtype else r
        if self.reduction == "mean":
            total = total / self.n if self.n else math.nan
        return self.ldtype.type(total)

    def result(self, buf, direct, out):
        if out is not None:
            if not direct:
                out[...] = buf.reshape(self.shape)
            return out
        r = buf.reshape(self.shape)
        return r.astype(self.rdtype) if r.dtype != self.rdtype else r


def sigmoid_binary_cross_entropy(logits, target, *, weight=None, pos_weight=None,
                                 reduction="mean", backend=None):
    """Binary cross-entropy of ``sigmoid(logits)`` against ``target`` (same shape, values in
    [0, 1]: multi-label targets welcome); equals
    ``torch.nn.functional.binary_cross_entropy_with_logits``.

    ``weight`` and ``pos_weight`` broadcast to the logits (``pos_weight`` typically
    ``(C,)``, one per class of the last axis); ``"mean"`` divides by the number of
    elements, ``"none"`` returns the logits' shape.
    """
    b = _BCE(logits, target, weight, pos_weight, reduction, backend)
    return b.compute(True, None)


def sigmoid_binary_cross_entropy_backward(logits, target, grad_loss=1.0, *, weight=None,
                                          pos_weight=None, reduction="mean", out=None,
                                          backend=None):
    """``d loss / d logits`` scaled by ``grad_loss`` (a scalar, or for ``"none"`` an array
    broadcastable to the logits): ``w * (lw * sigmoid(x) - pos_weight * t)``,
    ``lw = 1 + (pos_weight - 1) t``."""
    b = _BCE(logits, target, weight, pos_weight, reduction, backend)
    c, gscale = b.scale(grad_loss)
    buf, direct = b.grad_buffer(out)
    b.compute(False, buf, c, gscale)
    return b.result(buf, direct, out)


def sigmoid_binary_cross_entropy_with_grad(logits, target, *, weight=None, pos_weight=None,
                                           reduction="mean", out=None, backend=None):
    """``(loss, dlogits)`` in one pass; ``out=logits`` overwrites the logits with their
    gradient."""
    b = _BCE(logits, target, weight, pos_weight, reduction, backend)
    c, _ = b.scale(1.0)
    buf, direct = b.grad_buffer(out)
    loss = b.compute(True, buf, c)
    return loss, b.result(buf, direct, out)
