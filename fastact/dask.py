"""fastact on ``dask.array``: the softmax family for logits larger than one machine.

The same functions as ``fastact`` (same signatures, same semantics, SPEC.md),
taking dask arrays (NumPy arrays are wrapped) and returning lazy dask arrays;
``"mean"``/``"sum"`` losses are 0-d dask arrays.  Inside each block the work is
done by fastact's kernels (``backend=`` is forwarded to them); nothing runs
until the caller computes, and a task holds at most a few blocks.

The reduced axis (the class axis) may be split across chunks.  Each chunk then
contributes, per row, its max ``m_i`` and ``s_i = log(sum(exp(x - m_i)))``
(fastact's ``logsumexp`` of the chunk shifted by its max), and the partials
merge associatively -- the online-normalizer identity, in float64::

    M = max_i m_i          S = log(sum_i exp(m_i - M + s_i))

as a dask tree reduction (no rechunking of the class axis).  Every result is
then elementwise given ``(M, S)``: ``log_softmax = (x - M) - S`` (the stable
form of SPEC.md, never ``x - logsumexp``), ``softmax = exp(log_softmax)``,
cross-entropy ``(M - x_t) + S``, its gradient through ``p = exp((x - M) - S)``.
Special values follow SPEC.md: a NaN in any chunk makes ``M`` NaN, a ``+inf``
makes it ``+inf``, an all ``-inf`` chunk contributes nothing, and a row that is
all ``-inf`` has ``M = -inf``.  When the reduced axes are one chunk, the
in-memory kernels run on each block directly.
"""

from __future__ import annotations

import math

import dask.array as da
import numpy as np

from . import _api
from ._api import _axes, _check_ce, _dtypes, _loss_dtype, _Rows

__all__ = [
    "softmax",
    "log_softmax",
    "logsumexp",
    "softmax_backward",
    "log_softmax_backward",
    "softmax_cross_entropy",
    "softmax_cross_entropy_backward",
    "softmax_cross_entropy_with_grad",
]

#: Rows of a chunk are processed in slabs of about this many bytes, so that the
#: shifted copy ``x - m`` stays in cache: the per-chunk partials then cost about
#: one read of the chunk.
_SLAB_BYTES = 1 << 20


# ----------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------

def _as_dask(x, what="x"):
    a = x if isinstance(x, da.Array) else da.asarray(np.asarray(x))
    _dtypes(a.dtype, what)  # TypeError for complex/object, as in memory
    return a


def _no_out(out):
    if out is not None:
        raise TypeError("fastact.dask: out= is not supported (dask arrays are immutable); "
                        "use the returned array")


def _broadcast_like(a, x, what):
    """``a`` (NumPy or dask, broadcastable to ``x``) as a dask array chunked like ``x``."""
    a = a if isinstance(a, da.Array) else da.asarray(np.asarray(a))
    try:
        np.broadcast_shapes(a.shape, x.shape)
        if len(a.shape) > x.ndim:
            raise ValueError
    except ValueError:
        raise ValueError(f"fastact: {what} of shape {a.shape} does not broadcast to the "
                         f"input's shape {x.shape}") from None
    a = a.reshape((1,) * (x.ndim - a.ndim) + a.shape)
    chunks = tuple((1,) if a.shape[d] == 1 and x.shape[d] != 1 else x.chunks[d]
                   for d in range(x.ndim))
    return da.broadcast_to(a.rechunk(chunks), x.shape, chunks=x.chunks)


def _mask(where, x):
    if where is None:
        return None
    w = where if isinstance(where, da.Array) else np.asarray(where)
    if w.dtype != np.bool_:
        raise TypeError(f"fastact: where must be a boolean array, got dtype {w.dtype}")
    return _broadcast_like(w, x, "where")


def _split(x, axes):
    """True when some reduced axis spans more than one chunk."""
    return any(x.numblocks[a] > 1 for a in axes)


def _meta(ndim, dtype):
    return np.empty((0,) * ndim, dtype)


# ----------------------------------------------------------------------------
# per-chunk partials and their exact merge
# ----------------------------------------------------------------------------

def _shift(m):
    """The shift the partial sums below are taken about: the max, or 0 if not finite."""
    return np.where(np.isfinite(m), m, 0.0)


def _max_logsum_rows(x2, mask2, backend, wts=None):
    """Per row of ``(n, k)``: the max ``m`` over selected entries (NaN-propagating,
    ``-inf`` for none), ``log(sum(exp(x - c)))`` by fastact's logsumexp, ``c`` the
    shift (``m``, or 0 where ``m`` is not finite), and -- given weights ``wts``,
    ``(k,)`` or ``(n, k)`` -- ``D = sum(wts * (c - x))``, else None."""
    n, k = x2.shape
    m = np.full(n, -np.inf)
    s = np.full(n, -np.inf)
    D = None if wts is None else np.zeros(n)
    if n == 0 or k == 0:
        return m, s, D
    step = max(1, _SLAB_BYTES // (k * x2.itemsize))
    buf = np.empty((min(step, n), k), x2.dtype)  # reused: no page faults per slab
    with np.errstate(all="ignore"):
        for r0 in range(0, n, step):
            sl = slice(r0, r0 + step)
            xs = x2[sl]
            ms = None if mask2 is None else mask2[sl]
            mx = xs.max(axis=1) if ms is None else np.where(ms, xs, -np.inf).max(axis=1)
            z = np.subtract(xs, _shift(mx).astype(xs.dtype)[:, None], out=buf[:len(xs)])
            s[sl] = _api.logsumexp(z, axis=1, where=ms, backend=backend)
            m[sl] = mx
            if wts is not None:  # the slab z is still in cache
                D[sl] = -(z @ wts if wts.ndim == 1 else np.einsum("ij,ij->i", z, wts[sl]))
    return m, s, D


def _merge_max_logsum(m, s):
    """``(M, S)`` from partials ``(m_i, s_i)`` on the last axis (float64).  ``S`` is
    ``-inf`` when ``M`` is ``-inf`` (nothing to sum) and NaN when ``M`` is NaN/+inf."""
    with np.errstate(all="ignore"):
        M = np.max(m, axis=-1)
        fin = np.isfinite(M)
        Mf = np.where(fin, M, 0.0)
        S = np.log(np.sum(np.exp((m - Mf[..., None]) + s), axis=-1))
    S = np.where(fin, S, np.where(np.isneginf(M), -np.inf, np.nan))
    return M, S


def _fields_rowwise(rowfn, p, axis, keepdims):
    """Apply ``rowfn`` (fields ``(F, ..., K)`` -> ``(F, ...)``) over the ``axis`` of a
    partial array ``p`` whose axis 0 holds the fields (dask reduction protocol)."""
    axis = tuple(a % p.ndim for a in (axis if isinstance(axis, tuple) else (axis,)))
    keep = [a for a in range(p.ndim) if a not in axis]
    t = p.transpose(keep + list(axis))
    kshape = t.shape[:len(keep)]
    r = rowfn(t.reshape(kshape + (math.prod(t.shape[len(keep):]),)))
    return np.expand_dims(r, axis) if keepdims else r


def _identity(p, axis=None, keepdims=True):
    return p


def _reduce_fields(partial, axes, rowfn, keepdims=False):
    """Tree-reduce a partial array (fields on axis 0) over ``axes`` of the data."""
    ax = tuple(a + 1 for a in axes)
    f = _Partial(rowfn)
    ndim = partial.ndim - (0 if keepdims else len(ax))
    return da.reduction(partial, chunk=_identity, combine=f, aggregate=f, axis=ax,
                        keepdims=keepdims, dtype=np.float64, concatenate=True,
                        meta=_meta(ndim, np.float64))


class _Partial:
    """A picklable ``(p, axis, keepdims)`` combiner for ``da.reduction``."""

    def __init__(self, rowfn):
        self.rowfn = rowfn

    def __call__(self, p, axis=None, keepdims=False):
        return _fields_rowwise(self.rowfn, p, axis, keepdims)


def _merge_ms_rows(p):
    M, S = _merge_max_logsum(p[0], p[1])
    return np.stack([M, S])


def _ms_block(x, mask, *, axes, cdtype, backend):
    """Partial ``[m, s]`` of one block: shape ``(2, *x.shape)`` with ``axes`` -> 1."""
    rows = _Rows(x.shape, axes)
    m, s, _ = _max_logsum_rows(rows.rows(x, cdtype),
                               None if mask is None else rows.rows(mask, np.bool_), backend)
    kshape = tuple(1 if a in axes else n for a, n in enumerate(x.shape))
    return np.stack([m, s]).reshape((2,) + kshape)


def _stats(x, mask, axes, cdtype, backend):
    """Per-row ``[M, S]`` over ``axes``: a dask array ``(2, *kept shape)``."""
    ind = tuple(range(x.ndim))
    args = [x, ind] + ([mask, ind] if mask is not None else [])
    fn = _ms_block if mask is not None else _ms_block_nomask
    partial = da.blockwise(fn, (x.ndim,) + ind, *args, new_axes={x.ndim: 2},
                           adjust_chunks={a: 1 for a in axes}, dtype=np.float64,
                           meta=_meta(x.ndim + 1, np.float64),
                           axes=axes, cdtype=cdtype, backend=backend)
    return _reduce_fields(partial, axes, _merge_ms_rows)


def _ms_block_nomask(x, **kw):
    return _ms_block(x, None, **kw)


# ----------------------------------------------------------------------------
# softmax, log_softmax
# ----------------------------------------------------------------------------

def _softmax_block(x, stats, mask=None, *, axes, cdtype, rdtype, log):
    M = np.expand_dims(stats[0], axes).astype(cdtype)
    S = np.expand_dims(stats[1], axes).astype(cdtype)
    with np.errstate(all="ignore"):
        y = np.asarray(x, dtype=cdtype) - M
        y -= S
        if not log:
            np.exp(y, out=y)
    if mask is not None:
        y = np.where(mask, y, -np.inf if log else 0.0).astype(cdtype, copy=False)
    return y.astype(rdtype, copy=False)


def _inmemory_block(x, mask=None, *, fn, axes, backend):
    return fn(x, axis=axes, where=mask, backend=backend)


def _softmax_like(x, axis, where, out, backend, log):
    _no_out(out)
    x = _as_dask(x)
    cdtype, rdtype = _dtypes(x.dtype)
    axes = _axes(axis, x.ndim)
    mask = _mask(where, x)
    ind = tuple(range(x.ndim))
    margs = [mask, ind] if mask is not None else []
    if not _split(x, axes) or x.size == 0:
        fn = _api.log_softmax if log else _api.softmax
        return da.blockwise(_inmemory_block, ind, x, ind, *margs, dtype=rdtype,
                            meta=_meta(x.ndim, rdtype), fn=fn, axes=axes, backend=backend)
    stats = _stats(x, mask, axes, cdtype, backend)
    sind = (x.ndim,) + tuple(a for a in ind if a not in axes)
    return da.blockwise(_softmax_block, ind, x, ind, stats, sind, *margs, dtype=rdtype,
                        meta=_meta(x.ndim, rdtype), concatenate=True, axes=axes,
                        cdtype=cdtype, rdtype=rdtype, log=log)


def softmax(x, axis=-1, *, where=None, out=None, backend=None):
    """``exp(x - max) / sum(exp(x - max))`` along ``axis`` of a dask array (lazy);
    the reduced axes may span several chunks."""
    return _softmax_like(x, axis, where, out, backend, log=False)


def log_softmax(x, axis=-1, *, where=None, out=None, backend=None):
    """``(x - max) - log(sum(exp(x - max)))`` along ``axis`` of a dask array (lazy)."""
    return _softmax_like(x, axis, where, out, backend, log=True)


# ----------------------------------------------------------------------------
# softmax_backward, log_softmax_backward
# ----------------------------------------------------------------------------
# One row sum each (sum(grad * y), sum(grad)); over split axes it is a dask sum
# in float64, and the rest is elementwise.

def _backward_pair(grad, y):
    grad, y = _as_dask(grad, "grad"), _as_dask(y, "y")
    if grad.shape != y.shape:
        raise ValueError(f"fastact: grad has shape {grad.shape} but y has shape {y.shape}")
    cdtype, rdtype = _dtypes(np.result_type(grad.dtype, y.dtype))
    if grad.chunks != y.chunks:
        grad = grad.rechunk(y.chunks)
    return grad, y, cdtype, rdtype


def _backward_inmemory(grad, y, mask=None, *, fn, axes, backend):
    kw = {} if mask is None else dict(where=mask)
    return fn(grad, y, axis=axes, backend=backend, **kw)


def softmax_backward(grad, y, axis=-1, *, out=None, backend=None):
    """Vector-Jacobian product of softmax given ``y = softmax(x)`` (dask arrays):
    ``y * (grad - sum(grad * y))``."""
    _no_out(out)
    grad, y, cdtype, rdtype = _backward_pair(grad, y)
    axes = _axes(axis, y.ndim)
    ind = tuple(range(y.ndim))
    if not _split(y, axes) or y.size == 0:
        return da.blockwise(_backward_inmemory, ind, grad, ind, y, ind, dtype=rdtype,
                            meta=_meta(y.ndim, rdtype), fn=_api.softmax_backward, axes=axes,
                            backend=backend)
    g, yc = grad.astype(cdtype), y.astype(cdtype)
    d = (g * yc).sum(axis=axes, keepdims=True, dtype=np.float64).astype(cdtype)
    return (yc * (g - d)).astype(rdtype)


def log_softmax_backward(grad, y, axis=-1, *, where=None, out=None, backend=None):
    """Vector-Jacobian product of log_softmax given ``y = log_softmax(x)`` (dask
    arrays): ``grad - exp(y) * sum(grad)``; zero at masked entries."""
    _no_out(out)
    grad, y, cdtype, rdtype = _backward_pair(grad, y)
    axes = _axes(axis, y.ndim)
    mask = _mask(where, y)
    ind = tuple(range(y.ndim))
    if not _split(y, axes) or y.size == 0:
        margs = [mask, ind] if mask is not None else []
        return da.blockwise(_backward_inmemory, ind, grad, ind, y, ind, *margs, dtype=rdtype,
                            meta=_meta(y.ndim, rdtype), fn=_api.log_softmax_backward,
                            axes=axes, backend=backend)
    g, yc = grad.astype(cdtype), y.astype(cdtype)
    if mask is not None:
        g = da.where(mask, g, cdtype.type(0))
        yc = da.where(mask, yc, cdtype.type(-np.inf))
    s = g.sum(axis=axes, keepdims=True, dtype=np.float64).astype(cdtype)
    r = g - da.exp(yc) * s
    if mask is not None:
        r = da.where(mask, r, cdtype.type(0))
    return r.astype(rdtype)


# ----------------------------------------------------------------------------
# logsumexp
# ----------------------------------------------------------------------------
# Partials: [lse, sign, any NaN, sum of b over +inf entries, any +inf] per row
# of a chunk.  The last three are only filled in for rows whose lse is NaN or
# +inf (rare), so the common case is one fastact logsumexp per chunk.

def _lse_block(x, b=None, mask=None, *, axes, backend):
    lse, sign = _api.logsumexp(x, axis=axes, b=b, keepdims=True, return_sign=True,
                               where=mask, backend=backend)
    lse = np.asarray(lse, np.float64)
    sign = np.asarray(sign, np.float64)
    nan = np.zeros_like(lse)
    infw = np.zeros_like(lse)
    anyinf = np.zeros_like(lse)
    if np.any(np.isnan(lse) | np.isposinf(lse)):
        sel = np.ones(x.shape, bool) if mask is None else np.asarray(mask, bool)
        if b is not None:
            sel = sel & (b != 0)
        with np.errstate(all="ignore"):
            nan = np.any(np.isnan(x) & sel, axis=axes, keepdims=True).astype(np.float64)
            pinf = np.isposinf(x) & sel
            anyinf = np.any(pinf, axis=axes, keepdims=True).astype(np.float64)
            wts = np.ones(x.shape) if b is None else np.asarray(b, np.float64)
            infw = np.sum(np.where(pinf, wts, 0.0), axis=axes, keepdims=True)
        sign = np.where(np.isfinite(lse), sign, 0.0)
    return np.stack([lse, sign, nan, infw, anyinf])


def _lse_block_x(x, **kw):
    return _lse_block(x, None, None, **kw)


def _lse_block_xb(x, b, **kw):
    return _lse_block(x, b, None, **kw)


def _lse_block_xm(x, mask, **kw):
    return _lse_block(x, None, mask, **kw)


def _merge_lse_rows(p):
    lse, sign, nan, infw, anyinf = p
    with np.errstate(all="ignore"):
        live = (sign != 0) & np.isfinite(lse)
        M = np.max(np.where(live, lse, -np.inf), axis=-1)
        Mf = np.where(np.isfinite(M), M, 0.0)
        tot = np.sum(np.where(live, sign * np.exp(lse - Mf[..., None]), 0.0), axis=-1)
        r = np.where(tot == 0, -np.inf, np.log(np.abs(tot)) + Mf)
    s = np.sign(tot)
    nan = np.any(nan != 0, axis=-1)
    anyinf = np.any(anyinf != 0, axis=-1)
    infw = np.sum(infw, axis=-1)
    r = np.where(anyinf, np.where(infw == 0, np.nan, np.inf), r)
    s = np.where(anyinf, np.sign(infw), s)
    r = np.where(nan, np.nan, r)
    s = np.where(nan | np.isnan(r), np.nan, s)
    return np.stack([r, s, nan, infw, anyinf]).astype(np.float64)


def _lse_value(f, *, signed, rdtype):
    r, s = f[0], f[1]
    if not signed:
        r = np.where(s < 0, np.nan, r)  # a negative sum has no real log
    return r.astype(rdtype)


def _lse_sign(f, *, rdtype):
    return f[1].astype(rdtype)


def logsumexp(x, axis=-1, *, b=None, keepdims=False, return_sign=False, where=None,
              out=None, backend=None):
    """``log(sum(b * exp(x)))`` along ``axis`` of a dask array (lazy), SciPy's ``b``
    and ``return_sign``; per-chunk results merged exactly over split axes."""
    _no_out(out)
    x = _as_dask(x)
    if b is not None:
        b = b if isinstance(b, da.Array) else np.asarray(b)
        _dtypes(b.dtype, "b")
        cdtype, rdtype = _dtypes(np.result_type(x.dtype, b.dtype))
        b = _broadcast_like(b, x, "b")
    else:
        cdtype, rdtype = _dtypes(x.dtype)
    axes = _axes(axis, x.ndim)
    mask = _mask(where, x)
    ind = tuple(range(x.ndim))
    args = [x, ind]
    if b is not None and mask is not None:
        fn = _lse_block
        args += [b, ind, mask, ind]
    elif b is not None:
        fn = _lse_block_xb
        args += [b, ind]
    elif mask is not None:
        fn = _lse_block_xm
        args += [mask, ind]
    else:
        fn = _lse_block_x
    partial = da.blockwise(fn, (x.ndim,) + ind, *args, new_axes={x.ndim: 5},
                           adjust_chunks={a: 1 for a in axes}, dtype=np.float64,
                           meta=_meta(x.ndim + 1, np.float64), axes=axes, backend=backend)
    f = _reduce_fields(partial, axes, _merge_lse_rows, keepdims=keepdims)
    oind = tuple(range(f.ndim - 1))
    res = da.blockwise(_lse_value, oind, f, (f.ndim - 1,) + oind, dtype=rdtype,
                       meta=_meta(f.ndim - 1, rdtype), concatenate=True,
                       signed=return_sign or b is None, rdtype=rdtype)
    if not return_sign:
        return res
    sgn = da.blockwise(_lse_sign, oind, f, (f.ndim - 1,) + oind, dtype=rdtype,
                       meta=_meta(f.ndim - 1, rdtype), concatenate=True, rdtype=rdtype)
    return res, sgn


# ----------------------------------------------------------------------------
# cross-entropy
# ----------------------------------------------------------------------------
# Per chunk of classes and per row, float64 partials about the chunk's shift
# c_i (its max if finite, else 0):
#   index targets: [m, s, x_t, w_t, D = sum_c w_c (c_i - x_c), W = sum_c w_c]
#     (x_t, w_t are 0 unless the chunk holds the row's target)
#   prob targets:  [m, s, Q = sum_c wq_c, D = sum_c wq_c (c_i - x_c)]
# Merged: D = sum_i D_i + (C - c_i) W_i, so that, with (M, S) merged as above,
#   sum_c w_c (lse - x_c) = sum_c w_c ((M - x_c) + S) = D + S W   (no cancellation).
# Per row (index):  ce = (1-eps) w_t ((M - x_t) + S) + eps/k (D + S W),  z = lse**2.
# Reductions work on per-row [ce, z, w_t, valid] summed in float64.

class _CEArgs:
    """Validated cross-entropy arguments as dask arrays (the checks of ``fastact._api._CE``)."""

    def __init__(self, logits, target, weight, ignore_index, reduction, label_smoothing,
                 z_loss, backend):
        x = _as_dask(logits, "logits")
        t = target if isinstance(target, da.Array) else np.asarray(target)
        w = None
        if weight is not None:
            w = weight if isinstance(weight, da.Array) else np.asarray(weight)
        (self.cdtype, self.rdtype, self.index, self.label_smoothing,
         self.z_loss) = _check_ce(x, t, w, reduction, label_smoothing, z_loss)
        self.ldtype = _loss_dtype(self.cdtype, self.rdtype)
        self.k = x.shape[-1]
        self.lead = x.shape[:-1]
        if self.index:
            t = _as_dask_any(t).rechunk(x.chunks[:-1])
        else:
            t = _as_dask_any(t).rechunk(x.chunks)
        if w is not None:
            weight = _as_dask_any(w).astype(self.cdtype).rechunk((x.chunks[-1],))
        self.x, self.t, self.weight = x, t, weight
        self.ignore_index = int(ignore_index)
        self.reduction = reduction
        self.backend = backend
        self.nl = x.ndim - 1
        self.lind = tuple(range(self.nl))      # lead (row) indices
        self.cind = self.nl                    # class index
        self.find = self.nl + 1                # field index
        self.xind = self.lind + (self.cind,)

    @property
    def split(self):
        return self.x.numblocks[-1] > 1

    def opts(self):
        return dict(k=self.k, ignore_index=self.ignore_index, eps=self.label_smoothing,
                    z=self.z_loss, cdtype=self.cdtype)

    def class_args(self):
        """blockwise (array, index) pairs every class block needs: weight, column offset."""
        # a block of class numbers: its first entry is the block's column offset
        offs = da.arange(self.k, dtype=np.int64, chunks=(self.x.chunks[-1],))
        w = self.weight if self.weight is not None else da.ones(
            self.k, dtype=self.cdtype, chunks=(self.x.chunks[-1],))
        return [w, (self.cind,), offs, (self.cind,)]

    def grad_scale(self, grad_loss):
        """``grad_loss`` as a per-row dask array chunked like the rows."""
        g = grad_loss if isinstance(grad_loss, da.Array) else np.asarray(grad_loss)
        if g.ndim != 0:
            if self.reduction != "none":
                raise ValueError(f"fastact: grad_loss must be a scalar for reduction="
                                 f"{self.reduction!r}, got shape {g.shape}")
            if g.shape != self.lead:
                raise ValueError(f"fastact: grad_loss has shape {g.shape}, expected {self.lead}")
        g = _as_dask_any(g).astype(np.float64)
        return da.broadcast_to(g, self.lead, chunks=self.x.chunks[:-1]) if g.ndim == 0 \
            else g.rechunk(self.x.chunks[:-1])


def _as_dask_any(a):
    return a if isinstance(a, da.Array) else da.asarray(a)


def _check_targets(t, k, ignore_index):
    bad = ((t < 0) | (t >= k)) & (t != ignore_index)
    if bad.any():
        v = int(t[np.flatnonzero(bad)[0]])
        raise IndexError(f"fastact: target {v} is out of bounds for {k} classes "
                         f"(ignore_index is {ignore_index})")


def _offset(cols):
    return int(cols[0]) if len(cols) else 0


def _rows2(x, cdtype):
    return np.ascontiguousarray(x, dtype=cdtype).reshape(-1, x.shape[-1])


def _ce_index_partial(x, t, w, off, *, k, ignore_index, eps, z, cdtype, backend):
    x2 = _rows2(x, cdtype)
    n, kb = x2.shape
    t1 = np.asarray(t, np.int64).reshape(-1)
    _check_targets(t1, k, ignore_index)
    m, s, D = _max_logsum_rows(x2, None, backend, w if eps != 0 else None)
    local = t1 - _offset(off)
    here = (local >= 0) & (local < kb) & (t1 != ignore_index)
    li = np.where(here, local, 0)
    xt = np.where(here, x2[np.arange(n), li] if kb else 0.0, 0.0).astype(np.float64)
    wt = np.where(here, w[li] if kb else 0.0, 0.0).astype(np.float64)
    D = np.zeros(n) if D is None else D
    W = np.full(n, float(np.sum(w, dtype=np.float64)))
    return np.stack([m, s, xt, wt, D, W]).reshape((6,) + x.shape[:-1] + (1,))


def _merge_ce_index_rows(p):
    m, s, xt, wt, D, W = p
    M, S = _merge_max_logsum(m, s)
    with np.errstate(all="ignore"):
        D = np.sum(D + (_shift(M)[..., None] - _shift(m)) * W, axis=-1)
    return np.stack([M, S, xt.sum(-1), wt.sum(-1), D, W.sum(-1)])


def _ce_prob_partial(x, q, w, off, *, k, ignore_index, eps, z, cdtype, backend):
    x2 = _rows2(x, cdtype)
    n, kb = x2.shape
    q2 = _rows2(q, cdtype)
    if eps != 0:
        q2 = q2 * cdtype.type(1 - eps) + cdtype.type(eps / k)
    wq = q2 * w
    m, s, D = _max_logsum_rows(x2, None, backend, wq)
    Q = np.sum(wq, axis=1, dtype=np.float64)
    return np.stack([m, s, Q, D]).reshape((4,) + x.shape[:-1] + (1,))


def _merge_ce_prob_rows(p):
    m, s, Q, D = p
    M, S = _merge_max_logsum(m, s)
    with np.errstate(all="ignore"):
        D = np.sum(D + (_shift(M)[..., None] - _shift(m)) * Q, axis=-1)
    return np.stack([M, S, Q.sum(-1), D])


def _ce_row_terms(f, t=None, *, index, k, ignore_index, eps, z, cdtype):
    """Per row ``[ce, lse**2, w_t, valid]`` (0 on ignored rows) from merged fields."""
    M, S = f[0], f[1]
    with np.errstate(all="ignore"):
        lse = np.where(np.isneginf(M), M, M + S)
        if index:
            xt, wt, D, W = f[2], f[3], f[4], f[5]
            valid = np.asarray(t) != ignore_index
            ce = (1 - eps) * wt * ((M - xt) + S)
            if eps != 0:
                ce = ce + (eps / k) * (D + S * W)
        else:
            Q, D = f[2], f[3]
            valid = np.ones(M.shape, bool)
            wt = np.ones(M.shape)
            ce = D + S * Q
        zz = lse * lse
    return np.stack([np.where(valid, ce, 0.0), np.where(valid, zz, 0.0),
                     np.where(valid, wt, 0.0), valid.astype(np.float64)])


def _ce_scales(tot, *, reduction, z):
    """``(a, b)``: the factors of the ce and z-loss terms (SPEC's denominators)."""
    if reduction != "mean":
        return 1.0, 1.0
    den, nv = float(tot[2]), float(tot[3])
    a = 1.0 / den if den != 0 else math.nan
    b = 1.0 / nv if nv else math.nan
    return a, b


def _ce_total(tot, *, reduction, z, ldtype):
    tot = np.asarray(tot, np.float64)
    a, b = _ce_scales(tot, reduction=reduction, z=z)
    with np.errstate(all="ignore"):
        v = a * tot[0] + (b * z * tot[1] if z != 0 else 0.0)
    if reduction == "mean" and tot[3] == 0:
        v = math.nan
    return ldtype.type(v)


def _ce_none(r, *, z, ldtype):
    return (r[0] + z * r[1] if z != 0 else r[0]).astype(ldtype)


def _ce_index_grad_block(x, t, w, off, f, tot, g, *, k, ignore_index, eps, z, cdtype,
                         reduction, rdtype):
    shape = x.shape
    x2 = _rows2(x, cdtype)
    n, kb = x2.shape
    t1 = np.asarray(t, np.int64).reshape(-1)
    fr = f.reshape(f.shape[0], -1)
    M, S, wt, W = fr[0], fr[1], fr[3], fr[5]
    a, b = _ce_scales(np.asarray(tot), reduction=reduction, z=z)
    valid = t1 != ignore_index
    ct = cdtype.type
    with np.errstate(all="ignore"):
        p = x2 - M.astype(cdtype)[:, None]
        p -= S.astype(cdtype)[:, None]
        np.exp(p, out=p)
        gr = p * ct(1 - eps) * wt.astype(cdtype)[:, None]
        local = t1 - _offset(off)
        here = np.flatnonzero((local >= 0) & (local < kb) & valid)
        gr[here, local[here]] -= ct(1 - eps) * wt[here].astype(cdtype)
        if eps != 0:
            gr += ct(eps / k) * (W.astype(cdtype)[:, None] * p - w[None, :])
        gr *= ct(a)
        if z != 0:
            lse = np.where(np.isneginf(M), M, M + S)
            gr += (ct(b * 2 * z) * lse.astype(cdtype))[:, None] * p
        gr *= np.asarray(g, np.float64).reshape(-1).astype(cdtype)[:, None]
    gr[~valid] = 0
    return gr.reshape(shape).astype(rdtype, copy=False)


def _ce_prob_grad_block(x, q, w, off, f, tot, g, *, k, ignore_index, eps, z, cdtype,
                        reduction, rdtype):
    shape = x.shape
    x2 = _rows2(x, cdtype)
    q2 = _rows2(q, cdtype)
    if eps != 0:
        q2 = q2 * cdtype.type(1 - eps) + cdtype.type(eps / k)
    wq = q2 * w
    fr = f.reshape(f.shape[0], -1)
    M, S, Q = fr[0], fr[1], fr[2]
    n = x2.shape[0]
    a, b = _ce_scales(np.asarray(tot), reduction=reduction, z=z)
    ct = cdtype.type
    with np.errstate(all="ignore"):
        p = x2 - M.astype(cdtype)[:, None]
        p -= S.astype(cdtype)[:, None]
        np.exp(p, out=p)
        gr = p * Q.astype(cdtype)[:, None] - wq
        gr *= ct(a)
        if z != 0:
            lse = np.where(np.isneginf(M), M, M + S)
            gr += (ct(b * 2 * z) * lse.astype(cdtype))[:, None] * p
        gr *= np.asarray(g, np.float64).reshape(n).astype(cdtype)[:, None]
    return gr.reshape(shape).astype(rdtype, copy=False)


def _ce_graph(ce):
    """(merged per-row fields, per-row terms, their float64 totals) as dask arrays."""
    x, t = ce.x, ce.t
    lind, xind, find = ce.lind, ce.xind, ce.find
    nf = 6 if ce.index else 4
    fn = _ce_index_partial if ce.index else _ce_prob_partial
    tind = lind if ce.index else xind
    partial = da.blockwise(fn, (find,) + xind, x, xind, t, tind, *ce.class_args(),
                           new_axes={find: nf}, adjust_chunks={ce.cind: 1},
                           dtype=np.float64, meta=_meta(x.ndim + 1, np.float64),
                           backend=ce.backend, **ce.opts())
    merge = _merge_ce_index_rows if ce.index else _merge_ce_prob_rows
    fields = _reduce_fields(partial, (ce.cind,), merge)
    targs = [ce.t, lind] if ce.index else []
    rows = da.blockwise(_ce_row_terms, (find,) + lind, fields, (find,) + lind, *targs,
                        dtype=np.float64, meta=_meta(ce.nl + 1, np.float64),
                        concatenate=True, index=ce.index, **ce.opts())
    tot = rows.sum(axis=tuple(range(1, ce.nl + 1)), dtype=np.float64) if ce.nl else rows
    return fields, rows, tot


def _ce_loss(ce, rows, tot, z):
    """The user's loss from per-row ``[ce, lse**2, w_t, valid]`` and their totals."""
    if ce.reduction == "none":
        return da.blockwise(_ce_none, ce.lind, rows, (ce.find,) + ce.lind, dtype=ce.ldtype,
                            meta=_meta(ce.nl, ce.ldtype), concatenate=True, z=z,
                            ldtype=ce.ldtype)
    return da.blockwise(_ce_total, (), tot, (0,), dtype=ce.ldtype, meta=_meta(0, ce.ldtype),
                        concatenate=True, reduction=ce.reduction, z=z, ldtype=ce.ldtype)


def _ce_grad(ce, fields, tot, grad_loss):
    g = ce.grad_scale(grad_loss)
    fn = _ce_index_grad_block if ce.index else _ce_prob_grad_block
    tind = ce.lind if ce.index else ce.xind
    q = ce.find + 1
    return da.blockwise(fn, ce.xind, ce.x, ce.xind, ce.t, tind, *ce.class_args(),
                        fields, (ce.find,) + ce.lind, tot, (q,), g, ce.lind,
                        dtype=ce.rdtype, meta=_meta(ce.x.ndim, ce.rdtype), concatenate=True,
                        reduction=ce.reduction, rdtype=ce.rdtype, **ce.opts())


# --- class axis in one chunk: fastact's fused cross-entropy kernels per block ---
# The in-memory kernels give per-row ``ce + z lse**2`` and its gradient with unit
# factors; a "mean" needs one factor for both terms, which holds unless index
# targets are weighted *and* z_loss is on (the general path above covers that).
# The factor depends on the targets only, so the fused loss-and-gradient pass
# over the logits is a single one.

def _fast(ce):
    return not ce.split and not (ce.index and ce.weight is not None and ce.z_loss != 0
                                 and ce.reduction == "mean")


def _inmemory_kw(ce):
    return dict(ignore_index=ce.ignore_index, label_smoothing=ce.label_smoothing,
                z_loss=ce.z_loss, backend=ce.backend, weighted=ce.weight is not None)


def _inmemory(fn, x, t, w, *args, reduction, kw):
    kw = dict(kw)
    weighted = kw.pop("weighted")
    return fn(x, t, *args, weight=w if weighted else None, reduction=reduction, **kw)


def _den_rows(t, w, *, index, ignore_index):
    """Per row ``[0, 0, w_t, valid]``: the "mean" denominators, from the targets alone."""
    if not index:
        n = t.shape[:-1]
        return np.stack([np.zeros(n), np.zeros(n), np.ones(n), np.ones(n)])
    t = np.asarray(t, np.int64)
    valid = t != ignore_index
    inb = valid & (t >= 0) & (t < len(w))
    wt = np.where(inb, np.asarray(w, np.float64)[np.where(inb, t, 0)], 0.0)
    return np.stack([np.zeros(t.shape), np.zeros(t.shape), wt, valid.astype(np.float64)])


def _den(ce):
    w = ce.class_args()[0]
    tind = ce.lind if ce.index else ce.xind
    rows = da.blockwise(_den_rows, (ce.find,) + ce.lind, ce.t, tind, w, (ce.cind,),
                        new_axes={ce.find: 4}, dtype=np.float64,
                        meta=_meta(ce.nl + 1, np.float64), concatenate=True, index=ce.index,
                        ignore_index=ce.ignore_index)
    return rows.sum(axis=tuple(range(1, ce.nl + 1)), dtype=np.float64) if ce.nl else rows


def _fast_loss_rows(x, t, w, *, index, kw):
    loss = _inmemory(_api.softmax_cross_entropy, x, t, w, reduction="none", kw=kw)
    return np.concatenate([np.asarray(loss, np.float64)[None],
                           _den_rows(t, w, index=index, ignore_index=kw["ignore_index"])[1:]])


def _fast_grad(x, t, w, den, g, *, reduction, z, kw):
    a, _ = _ce_scales(np.asarray(den), reduction=reduction, z=z)
    return _inmemory(_api.softmax_cross_entropy_backward, x, t, w,
                     np.asarray(g, np.float64) * a, reduction="none", kw=kw)


def _fast_loss_and_grad(x, t, w, den, *, index, reduction, z, kw):
    loss, grad = _inmemory(_api.softmax_cross_entropy_with_grad, x, t, w, reduction="none",
                           kw=kw)
    a, _ = _ce_scales(np.asarray(den), reduction=reduction, z=z)
    if a != 1.0 and grad.size:
        with np.errstate(all="ignore"):
            grad *= grad.dtype.type(a)
    rows = np.concatenate([np.asarray(loss, np.float64)[None],
                           _den_rows(t, w, index=index, ignore_index=kw["ignore_index"])[1:]])
    return rows, grad


def _pick(blocks, i):
    while isinstance(blocks, list):  # contracted class axis: a list of one block
        blocks = blocks[0]
    return blocks[i]


def _fast_rows(ce):
    tind = ce.lind if ce.index else ce.xind
    w = ce.class_args()[0]
    return da.blockwise(_fast_loss_rows, (ce.find,) + ce.lind, ce.x, ce.xind, ce.t, tind,
                        w, (ce.cind,), new_axes={ce.find: 4}, dtype=np.float64,
                        meta=_meta(ce.nl + 1, np.float64), concatenate=True, index=ce.index,
                        kw=_inmemory_kw(ce))


def _fast_loss(ce, rows):
    tot = rows.sum(axis=tuple(range(1, ce.nl + 1)), dtype=np.float64) if ce.nl else rows
    return _ce_loss(ce, rows, tot, 0.0)  # the kernels' rows already hold z * lse**2


def _fast_backward(ce, grad_loss):
    g = ce.grad_scale(grad_loss)
    tind = ce.lind if ce.index else ce.xind
    w = ce.class_args()[0]
    return da.blockwise(_fast_grad, ce.xind, ce.x, ce.xind, ce.t, tind, w, (ce.cind,),
                        _den(ce), (ce.find,), g, ce.lind, dtype=ce.rdtype,
                        meta=_meta(ce.x.ndim, ce.rdtype), concatenate=True,
                        reduction=ce.reduction, z=ce.z_loss, kw=_inmemory_kw(ce))


def _fast_with_grad(ce):
    tind = ce.lind if ce.index else ce.xind
    w = ce.class_args()[0]
    # one task per block returns (rows, grad); two getitem layers split the pair
    pair = da.blockwise(_fast_loss_and_grad, ce.xind, ce.x, ce.xind, ce.t, tind, w,
                        (ce.cind,), _den(ce), (ce.find,), dtype=ce.rdtype,
                        meta=_meta(ce.x.ndim, ce.rdtype), concatenate=True, index=ce.index,
                        reduction=ce.reduction, z=ce.z_loss, kw=_inmemory_kw(ce))
    grad = da.blockwise(_pick, ce.xind, pair, ce.xind, dtype=ce.rdtype,
                        meta=_meta(ce.x.ndim, ce.rdtype), i=1)
    rows = da.blockwise(_pick, (ce.find,) + ce.lind, pair, ce.xind, new_axes={ce.find: 4},
                        dtype=np.float64, meta=_meta(ce.nl + 1, np.float64),
                        concatenate=False, i=0)
    return _fast_loss(ce, rows), grad


def softmax_cross_entropy(logits, target, *, weight=None, ignore_index=-100, reduction="mean",
                          label_smoothing=0.0, z_loss=0.0, backend=None):
    """Cross-entropy of ``softmax(logits)`` (classes on the last axis, which may span
    several chunks) against index targets ``(...)`` or probabilities ``(..., C)``, as
    ``fastact.softmax_cross_entropy``; ``"mean"``/``"sum"`` give a 0-d dask array."""
    ce = _CEArgs(logits, target, weight, ignore_index, reduction, label_smoothing, z_loss,
                 backend)
    if _fast(ce):
        return _fast_loss(ce, _fast_rows(ce))
    _, rows, tot = _ce_graph(ce)
    return _ce_loss(ce, rows, tot, ce.z_loss)


def softmax_cross_entropy_backward(logits, target, grad_loss=1.0, *, weight=None,
                                   ignore_index=-100, reduction="mean", label_smoothing=0.0,
                                   z_loss=0.0, out=None, backend=None):
    """``d loss / d logits`` scaled by ``grad_loss`` (scalar, or ``(...)`` for "none")."""
    _no_out(out)
    ce = _CEArgs(logits, target, weight, ignore_index, reduction, label_smoothing, z_loss,
                 backend)
    if _fast(ce):
        return _fast_backward(ce, grad_loss)
    fields, _, tot = _ce_graph(ce)
    return _ce_grad(ce, fields, tot, grad_loss)


def softmax_cross_entropy_with_grad(logits, target, *, weight=None, ignore_index=-100,
                                    reduction="mean", label_smoothing=0.0, z_loss=0.0,
                                    out=None, backend=None):
    """``(loss, dlogits)``, sharing one pass for the per-row statistics; compute both
    together (``dask.compute(loss, grad)``) to read the logits twice, not three times."""
    _no_out(out)
    ce = _CEArgs(logits, target, weight, ignore_index, reduction, label_smoothing, z_loss,
                 backend)
    if _fast(ce):
        return _fast_with_grad(ce)
    fields, rows, tot = _ce_graph(ce)
    return _ce_loss(ce, rows, tot, ce.z_loss), _ce_grad(ce, fields, tot, 1.0)

