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

import dask.array as da
import numpy as np

from . import _api
from ._dask_ce import (softmax_cross_entropy, softmax_cross_entropy_backward,  # noqa: F401
                       softmax_cross_entropy_with_grad)
from ._dask_core import (_as_dask, _broadcast_like, _mask, _max_logsum_rows, _merge_max_logsum,
                         _meta, _no_out, _reduce_fields, _split)
from ._validate import Rows, dtypes, norm_axes

__all__ = list(_api.__all__)  # the same functions as fastact's softmax family

def _merge_ms_rows(p):
    M, S = _merge_max_logsum(p[0], p[1])
    return np.stack([M, S])


def _ms_block(x, mask, *, axes, cdtype, backend):
    """Partial ``[m, s]`` of one block: shape ``(2, *x.shape)`` with ``axes`` -> 1."""
    rows = Rows(x.shape, axes)
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
    cdtype, rdtype = dtypes(x.dtype)
    axes = norm_axes(axis, x.ndim)
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
    cdtype, rdtype = dtypes(np.result_type(grad.dtype, y.dtype))
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
    axes = norm_axes(axis, y.ndim)
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
    axes = norm_axes(axis, y.ndim)
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
        dtypes(b.dtype, "b")
        cdtype, rdtype = dtypes(np.result_type(x.dtype, b.dtype))
        b = _broadcast_like(b, x, "b")
    else:
        cdtype, rdtype = dtypes(x.dtype)
    axes = norm_axes(axis, x.ndim)
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
