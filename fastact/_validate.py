"""The validation layer: dtypes, axes, layouts and the checks of SPEC.md, once for
every public module (``_api``, ``_api_elementwise``, ``dask``).

Everything here raises the user's error (``TypeError``, ``ValueError``,
``AxisError``) naming the problem, before any kernel runs or any ``out`` is
written; and maps an array onto the layouts the kernels take: ``Rows`` (the
reduced axes last, ``(n, k)`` C-contiguous rows) and ``Strided`` (one axis
reduced where it lies, ``(outer, k, inner)``).
"""

from __future__ import annotations

import math
import operator

import numpy as np

try:
    from numpy.exceptions import AxisError
except ImportError:  # pragma: no cover - numpy < 1.25
    AxisError = np.AxisError

REDUCTIONS = ("mean", "sum", "none")


# ----------------------------------------------------------------------------
# dtypes
# ----------------------------------------------------------------------------

def dtypes(dt, what="x"):
    """(compute dtype, result dtype) for an input dtype, per SPEC's dtype policy."""
    dt = np.dtype(dt)
    if dt == np.float32 or dt == np.float64:
        return dt, dt
    if dt == np.float16 or dt.name == "bfloat16":
        return np.dtype(np.float32), dt
    if dt.kind in "biu":
        return np.dtype(np.float64), np.dtype(np.float64)
    if dt.kind == "f":  # longdouble: computed and returned in float64
        return np.dtype(np.float64), np.dtype(np.float64)
    raise TypeError(f"fastact: {what} has unsupported dtype {dt} (expected a real floating, "
                    f"integer or bool array)")


def asarray(x, what="x"):
    a = np.asarray(x)
    dtypes(a.dtype, what)  # raises TypeError for complex/object/str
    return a


def loss_dtype(cdtype, rdtype):
    return np.dtype(np.float32) if rdtype != cdtype else rdtype


def kernel_dtype(be, cdtype, rdtype):
    """The dtype of the rows handed to backend ``be``: a half result dtype itself
    when the backend reads and writes half rows (widening inside its kernels, in
    bounded blocks: ``half`` in its kernel table), else the compute dtype."""
    if rdtype != cdtype and be.half:
        return rdtype
    return cdtype


# ----------------------------------------------------------------------------
# axes and layout
# ----------------------------------------------------------------------------

def norm_axes(axis, ndim):
    """Normalise ``axis`` (int, tuple of ints, None) to a sorted tuple of axes."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (tuple, list)):
        raw = list(axis)
    else:
        raw = [axis]
    out = []
    for a in raw:
        try:
            a = operator.index(a)
        except TypeError:
            raise TypeError(f"fastact: axis must be an int, a tuple of ints or None, got {axis!r}") from None
        if ndim == 0 and a in (0, -1):
            continue  # a 0-d array is one row of one element (as PyTorch)
        if not -ndim <= a < ndim:
            raise AxisError(a, ndim)
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"fastact: repeated axis in {axis!r}")
    return tuple(sorted(out))


class Rows:
    """How an array of ``shape`` maps onto ``(n, k)`` rows for the reduced ``axes``."""

    __slots__ = ("shape", "axes", "perm", "inv", "tshape", "outer", "n", "k", "identity")

    def __init__(self, shape, axes):
        nd = len(shape)
        keep = [a for a in range(nd) if a not in axes]
        self.shape = tuple(shape)
        self.axes = axes
        self.perm = tuple(keep) + tuple(axes)
        self.inv = tuple(np.argsort(self.perm)) if nd else ()
        self.tshape = tuple(shape[a] for a in self.perm)
        self.outer = tuple(shape[a] for a in keep)
        self.n = math.prod(self.outer)
        self.k = math.prod(shape[a] for a in axes)
        self.identity = self.perm == tuple(range(nd))

    def view(self, a):
        """``a`` (of ``shape``) with the reduced axes last."""
        return a if self.identity else a.transpose(self.perm)

    def rows(self, a, dtype):
        """``a`` as C-contiguous ``(n, k)`` rows of ``dtype``, copied only if needed."""
        return np.ascontiguousarray(self.view(a), dtype=dtype).reshape(self.n, self.k)

    def unview(self, t):
        """Inverse of ``view`` for an array of ``tshape``."""
        return t if self.identity else t.transpose(self.inv)


class Strided:
    """One reduced axis that a backend with strided kernels (C, Numba) reduces where
    it lies, without moving it last: the arrays C-contiguous in the view ``perm``
    of their axes (identity for C order, reversed for Fortran order), the axis at
    position ``q`` of that view, i.e. an ``(outer, k, inner)`` array reduced over
    ``k`` (``csrc/strided.c``, ``_backends/_numba_strided.py``)."""

    __slots__ = ("perm", "inv", "vshape", "outer", "k", "inner", "kept_perm", "kept_inv",
                 "kept_vshape", "axis", "identity")

    def __init__(self, shape, perm, axis):
        self.perm = perm
        self.inv = tuple(np.argsort(perm))
        self.axis = axis
        self.vshape = tuple(shape[a] for a in perm)
        q = perm.index(axis)
        self.outer = math.prod(self.vshape[:q])
        self.k = self.vshape[q]
        self.inner = math.prod(self.vshape[q + 1:])
        kept = [a for a in range(len(shape)) if a != axis]
        vkept = [a for a in perm if a != axis]
        self.kept_perm = tuple(kept.index(a) for a in vkept)
        self.kept_inv = tuple(np.argsort(self.kept_perm)) if vkept else ()
        self.kept_vshape = tuple(shape[a] for a in vkept)
        self.identity = perm == tuple(range(len(shape)))

    @classmethod
    def plan(cls, x, axes, op):
        """A plan when the backend has the strided form of ``op`` (a ``RowOp`` of
        its kernel table) and ``x`` (an ndarray) is C- or Fortran-contiguous,
        reduced over one axis that the row path would have to copy; else None
        (the row path)."""
        if len(axes) != 1 or op.strided is None:
            return None
        nd = x.ndim
        if x.flags.c_contiguous:
            if axes[0] == nd - 1:
                return None  # rows already
            perm = tuple(range(nd))
        elif x.flags.f_contiguous:
            if nd == 2 and axes[0] == 0:
                return None  # rows already (the transposed view is C-contiguous)
            perm = tuple(range(nd - 1, -1, -1))
        else:
            return None
        return cls(x.shape, perm, axes[0])

    def arr(self, a, dtype):
        """``a`` (of the input's shape) in the view, C-contiguous, copied only if needed."""
        return np.ascontiguousarray(a if self.identity else a.transpose(self.perm), dtype=dtype)

    def out_buffer(self, out, dtype):
        """The view-layout buffer the kernel writes: ``out`` itself when its layout allows."""
        if out is not None:
            ov = out if self.identity else out.transpose(self.perm)
            if ov.dtype == dtype and ov.flags.c_contiguous:
                return ov
        return np.empty(self.vshape, dtype)

    def result(self, o, out, rdtype):
        """The user's result from the view-layout buffer ``o``."""
        if out is not None:
            ov = out if self.identity else out.transpose(self.perm)
            if not (ov.dtype == o.dtype and ov.flags.c_contiguous and np.shares_memory(ov, o)):
                ov[...] = o
            return out
        if rdtype != o.dtype:
            o = o.astype(rdtype)
        return o if self.identity else o.transpose(self.inv)


def check_out(out, shape, dtype, what="out"):
    if not isinstance(out, np.ndarray):
        raise TypeError(f"fastact: {what} must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"fastact: {what} has shape {out.shape}, expected {tuple(shape)}")
    if out.dtype != dtype:
        raise ValueError(f"fastact: {what} has dtype {out.dtype}, expected {np.dtype(dtype)}")
    if not out.flags.writeable:
        raise ValueError(f"fastact: {what} is read-only")


# ----------------------------------------------------------------------------
# masks, cross-entropy arguments, blocks
# ----------------------------------------------------------------------------

def where_mask(where, x):
    """``where`` checked and broadcast to ``x``'s shape (a view), or None."""
    if where is None:
        return None
    w = np.asarray(where)
    if w.dtype != np.bool_:
        raise TypeError(f"fastact: where must be a boolean array, got dtype {w.dtype}")
    try:
        return np.broadcast_to(w, x.shape)
    except ValueError:
        raise ValueError(f"fastact: where of shape {np.shape(where)} does not broadcast to "
                         f"the input's shape {x.shape}") from None


def class_axis(axis, ndim):
    """The class axis as a non-negative int (``AxisError`` when out of range)."""
    try:
        a = operator.index(axis)
    except TypeError:
        raise TypeError(f"fastact: axis must be an int, got {axis!r}") from None
    if not -ndim <= a < ndim:
        raise AxisError(a, ndim)
    return a % ndim


def check_ce(x, t, weight, reduction, label_smoothing, z_loss, axis=-1):
    """The cross-entropy checks of SPEC.md on array-likes with ``shape``/``dtype``
    (NumPy or dask), classes on ``axis``: ``(cdtype, rdtype, index_targets,
    label_smoothing, z_loss)``."""
    if x.ndim < 1:
        raise ValueError(f"fastact: logits must have a class axis, got shape {x.shape}")
    axis = class_axis(axis, x.ndim)
    cdtype, rdtype = dtypes(x.dtype, "logits")
    if reduction not in REDUCTIONS:
        raise ValueError(f"fastact: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    label_smoothing = float(label_smoothing)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"fastact: label_smoothing must be in [0, 1], got {label_smoothing}")
    z_loss = float(z_loss)
    if not z_loss >= 0.0:
        raise ValueError(f"fastact: z_loss must be >= 0, got {z_loss}")
    lead = x.shape[:axis] + x.shape[axis + 1:]
    if t.dtype.kind in "iu":
        index = True
        if t.shape != lead:
            raise ValueError(f"fastact: index target has shape {t.shape}, expected {lead} "
                             f"for logits of shape {x.shape}")
    elif t.dtype.kind == "f" or t.dtype.name == "bfloat16":
        index = False
        if t.shape != x.shape:
            raise ValueError(f"fastact: probability target has shape {t.shape}, expected "
                             f"the logits' shape {x.shape}")
    else:
        raise TypeError(f"fastact: target must hold integer class indices or float "
                        f"probabilities, got dtype {t.dtype}")
    if weight is not None:
        dtypes(weight.dtype, "weight")
        if weight.shape != (x.shape[axis],):
            raise ValueError(f"fastact: weight has shape {weight.shape}, expected "
                             f"({x.shape[axis]},) for logits of shape {x.shape}")
    return cdtype, rdtype, index, label_smoothing, z_loss


def row_blocks(n, k, elems=1 << 20):
    """Slices of at most ~``elems`` elements (at least 256 rows) covering ``n`` rows."""
    step = max(256, elems // max(k, 1))
    if n <= step:
        return (slice(0, n),)  # the common case, without a generator's cost
    return [slice(i, min(n, i + step)) for i in range(0, n, step)]


