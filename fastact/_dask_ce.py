"""``fastact.dask``'s cross-entropy: per-chunk partials of the loss terms merged
exactly when the class axis spans chunks, the in-memory kernels per block when
it does not (see ``fastact.dask``'s docstring for the identity)."""

from __future__ import annotations

import math

import dask.array as da
import numpy as np

from . import _api
from ._dask_core import (_as_dask, _max_logsum_rows, _merge_max_logsum, _meta, _no_out,
                         _reduce_fields, _shift)
from ._validate import check_ce, class_axis, loss_dtype


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
                 z_loss, backend, axis=-1):
        x = _as_dask(logits, "logits")
        t = target if isinstance(target, da.Array) else np.asarray(target)
        w = None
        if weight is not None:
            w = weight if isinstance(weight, da.Array) else np.asarray(weight)
        (self.cdtype, self.rdtype, self.index, self.label_smoothing,
         self.z_loss) = check_ce(x, t, w, reduction, label_smoothing, z_loss, axis)
        # classes on another axis (PyTorch's (N, C, d1, ...)): the graph below works on
        # the lazy view with the class axis last; gradients are moved back (``user``)
        self.axis = class_axis(axis, x.ndim)
        if self.axis != x.ndim - 1:
            x = da.moveaxis(x, self.axis, -1)
            if not self.index:
                t = da.moveaxis(_as_dask_any(t), self.axis, -1)
        self.ldtype = loss_dtype(self.cdtype, self.rdtype)
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

    def user(self, grad):
        """A gradient of the class-last view in the logits' own axes."""
        return grad if self.axis == grad.ndim - 1 else da.moveaxis(grad, -1, self.axis)

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


def softmax_cross_entropy(logits, target, *, axis=-1, weight=None, ignore_index=-100,
                          reduction="mean", label_smoothing=0.0, z_loss=0.0, backend=None):
    """Cross-entropy of ``softmax(logits)`` (classes on ``axis``, by default the last,
    which may span several chunks) against index targets (the logits' shape without
    ``axis``) or probabilities (the logits' shape), as ``fastact.softmax_cross_entropy``;
    ``"mean"``/``"sum"`` give a 0-d dask array."""
    ce = _CEArgs(logits, target, weight, ignore_index, reduction, label_smoothing, z_loss,
                 backend, axis)
    if _fast(ce):
        return _fast_loss(ce, _fast_rows(ce))
    _, rows, tot = _ce_graph(ce)
    return _ce_loss(ce, rows, tot, ce.z_loss)


def softmax_cross_entropy_backward(logits, target, grad_loss=1.0, *, axis=-1, weight=None,
                                   ignore_index=-100, reduction="mean", label_smoothing=0.0,
                                   z_loss=0.0, out=None, backend=None):
    """``d loss / d logits`` scaled by ``grad_loss`` (scalar, or of the loss's shape for
    "none"), in the logits' shape."""
    _no_out(out)
    ce = _CEArgs(logits, target, weight, ignore_index, reduction, label_smoothing, z_loss,
                 backend, axis)
    if _fast(ce):
        return ce.user(_fast_backward(ce, grad_loss))
    fields, _, tot = _ce_graph(ce)
    return ce.user(_ce_grad(ce, fields, tot, grad_loss))


def softmax_cross_entropy_with_grad(logits, target, *, axis=-1, weight=None, ignore_index=-100,
                                    reduction="mean", label_smoothing=0.0, z_loss=0.0,
                                    out=None, backend=None):
    """``(loss, dlogits)``, sharing one pass for the per-row statistics; compute both
    together (``dask.compute(loss, grad)``) to read the logits twice, not three times."""
    _no_out(out)
    ce = _CEArgs(logits, target, weight, ignore_index, reduction, label_smoothing, z_loss,
                 backend, axis)
    if _fast(ce):
        loss, grad = _fast_with_grad(ce)
    else:
        fields, rows, tot = _ce_graph(ce)
        loss, grad = _ce_loss(ce, rows, tot, ce.z_loss), _ce_grad(ce, fields, tot, 1.0)
    return loss, ce.user(grad)
