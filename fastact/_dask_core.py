"""What ``fastact.dask``'s softmax family and cross-entropy share: inputs as dask
arrays, and the per-chunk ``(max, log-sum)`` partials with their exact merge (the
online-normalizer identity of ``fastact.dask``'s docstring)."""

from __future__ import annotations

import math

import dask.array as da
import numpy as np

from . import _api
from ._validate import dtypes

#: Rows of a chunk are processed in slabs of about this many bytes, so that the
#: shifted copy ``x - m`` stays in cache: the per-chunk partials then cost about
#: one read of the chunk.
_SLAB_BYTES = 1 << 20


# ----------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------

def _as_dask(x, what="x"):
    a = x if isinstance(x, da.Array) else da.asarray(np.asarray(x))
    dtypes(a.dtype, what)  # TypeError for complex/object, as in memory
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
