"""Transforms of the logits inside the softmax family: ``scale=``, ``softcap=``, ``bias=``.

``z = x * scale``, then ``z = softcap * tanh(z / softcap)``, then ``z = z + bias``;
the op then acts on ``z`` as it does on ``x`` without them, and an entry whose
bias is ``-inf`` is masked as ``where=False`` (``docs/transforms.md``).  The
definition is ``numpy_ref.transform`` / ``transform_grad`` / ``bias_mask``.

This is the one layer that gives every backend the feature (phase 1): rows are
taken in blocks of at most ``BLOCK_BYTES`` of the compute dtype (at least one
row), ``z`` (and the block's mask) is computed into scratch buffers reused from
block to block, read from the input where it lies (any layout, any axes; no
copy of the input), and the backend's existing row kernel runs on the block
through its kernel table; backwards multiply the block's result by ``dz/dx``.
float16/bfloat16 inputs compute in float32 scratch and are rounded once, when
the block's result is stored.  With ``out=``, nothing of the input's size is
allocated.  Calls without a transform never come here (``fastact._api`` checks
for the three keywords before anything else).

Phase 2 (the kernels applying the transform in their own passes) replaces the
body of a ``Transform`` method for a backend whose table says so; the
validation, the blocks and the result handling stay.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from . import _config
from ._validate import Rows, asarray, check_out, norm_axes, where_mask

#: Bytes of the compute dtype per block of rows (a row longer than that is one block).
BLOCK_BYTES = 256 << 10


def _ref():
    """``numpy_ref``, where the transforms are defined (imported on first use: ``import
    fastact`` loads no backend module)."""
    from ._backends import numpy_ref
    return numpy_ref


def _scalar(v, what, cdtype, positive=False):
    """``v`` as a Python float after SPEC's checks: a finite real scalar (finite in
    the compute dtype too), > 0 (and not 0 in the compute dtype) if ``positive``."""
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"fastact: {what} must be a real scalar (a Python or NumPy "
                        f"float), got {type(v).__name__}")
    f = float(v)
    with np.errstate(over="ignore", under="ignore"):
        c = float(cdtype.type(f))
    if not (math.isfinite(f) and math.isfinite(c)):
        raise ValueError(f"fastact: {what} must be finite (in {cdtype}), got {v!r}")
    if positive and not c > 0:
        raise ValueError(f"fastact: {what} must be > 0 (in {cdtype}), got {v!r}")
    return f


def check_scalars(scale, softcap, cdtype):
    """``(scale, softcap)`` checked (``TypeError``/``ValueError`` naming the argument),
    as Python floats or None, for a computation in ``cdtype``."""
    return (_scalar(scale, "scale", np.dtype(cdtype)),
            _scalar(softcap, "softcap", np.dtype(cdtype), positive=True))


def _bias_view(bias, shape):
    """``bias`` checked and broadcast to ``shape`` (a view, its own dtype)."""
    b = asarray(bias, "bias")
    try:
        return np.broadcast_to(b, shape)
    except ValueError:
        raise ValueError(f"fastact: bias of shape {b.shape} does not broadcast to the "
                         f"input's shape {tuple(shape)}") from None


def rows_per_block(k, itemsize):
    """Rows of length ``k`` in a block of ``BLOCK_BYTES`` (at least one)."""
    return max(1, BLOCK_BYTES // itemsize // max(k, 1))


def blocks(outer, n, k, itemsize):
    """``(index, r0, r1)`` triples covering the ``n`` rows of an array whose kept
    axes have shape ``outer``: ``index`` selects the block in the array viewed with
    the reduced axes last (``Rows.view``), ``r0:r1`` its rows in C order; at most
    ``BLOCK_BYTES`` per block (at least one row).  A block fixes the leading kept
    axes and takes a range of the next one, so its rows are consecutive."""
    per = rows_per_block(k, itemsize)
    if n <= per:
        yield (...,), 0, n
        return
    j, s = len(outer), 1  # the trailing kept axes outer[j:] (s rows) fit in a block
    while j > 0 and s * outer[j - 1] <= per:
        j -= 1
        s *= outer[j]
    d = j - 1  # the axis taken in ranges (n > per: not all axes fit)
    step = per // s
    for i, pre in enumerate(np.ndindex(*outer[:d])):
        base = i * outer[d]
        for c0 in range(0, outer[d], step):
            c1 = min(outer[d], c0 + step)
            yield pre + (slice(c0, c1), ...), (base + c0) * s, (base + c1) * s


class _Rows:
    """One array read block by block as ``(m, k)`` C-contiguous rows of the compute
    dtype: a slice of the array itself when its view is such rows, else a copy
    into a scratch buffer reused from block to block."""

    def __init__(self, view, cdtype, n, k, per):
        self.view = view
        self.flat = (view.reshape(n, k) if view.dtype == cdtype and view.flags.c_contiguous
                     else None)
        self.scratch = None if self.flat is not None else np.empty(per * k, cdtype)
        self.k = k

    def buffer(self, r0, r1):
        """Rows ``r0:r1``: the array's own, or the scratch (contents undefined)."""
        if self.flat is not None:
            return self.flat[r0:r1]
        return self.scratch[:(r1 - r0) * self.k].reshape(r1 - r0, self.k)

    def block(self, idx, r0, r1):
        """Rows ``r0:r1`` (block ``idx``) with the array's values."""
        b = self.buffer(r0, r1)
        if self.flat is None:
            v = self.view[idx]
            np.copyto(b.reshape(v.shape), v, casting="unsafe")
        return b


class _Out(_Rows):
    """The result written block by block into ``target`` (viewed with the reduced
    axes last): the kernel writes into it directly when it is C-contiguous rows of
    the compute dtype, else into scratch (``buffer``) copied (rounded once, for half
    dtypes) into the target by ``store``."""

    def __init__(self, target, rows, cdtype, per):
        super().__init__(rows.view(target), cdtype, rows.n, rows.k, per)

    def store(self, idx, b):
        if self.flat is None:
            v = self.view[idx]
            np.copyto(v, b.reshape(v.shape), casting="unsafe")


def _own_rows(a, cdtype, k):
    """``a`` as ``(n, k)`` C-contiguous rows of ``cdtype`` without a copy, or None."""
    if (isinstance(a, np.ndarray) and a.dtype == cdtype and a.flags.c_contiguous
            and a.size % max(k, 1) == 0):
        return a.reshape(-1, k)
    return None


def _times(ob, db, shape2):
    """``ob *= dz/dx`` (``db``: a block, or the constant ``scale``; 1 is skipped)."""
    if isinstance(db, float):
        if db != 1.0:
            np.multiply(ob, db, out=ob)
    else:
        np.multiply(ob, db.reshape(shape2), out=ob)


class Transform:
    """Validated ``scale``, ``softcap`` and ``bias`` of one call, and the block
    loops that run a backend's row kernels on ``z``."""

    __slots__ = ("scale", "softcap", "bias", "bv")

    def __init__(self, scale, softcap, bias):
        self.scale, self.softcap, self.bias = scale, softcap, bias
        self.bv = None

    @classmethod
    def of(cls, bias, scale, softcap, shape, cdtype):
        """None without any transform, else the checked transform for an input of
        ``shape`` computed in ``cdtype`` (errors name the argument)."""
        if bias is None and scale is None and softcap is None:
            return None
        scale, softcap = check_scalars(scale, softcap, cdtype)
        b = None if bias is None else _bias_view(bias, shape)
        return cls(scale, softcap, b)

    def z_block(self, xv, idx, z, cdtype):
        """``z`` of block ``idx`` of ``xv`` into scratch ``z`` (flat), as ``(m, k)`` rows
        (the bias added: where it is -inf the result is -inf or NaN, masked)."""
        v = xv[idx]
        zb = z[:v.size].reshape(v.shape)
        _ref().transform(v, self.scale, self.softcap, zb)
        if self.bias is not None:
            with np.errstate(invalid="ignore", over="ignore"):
                np.add(zb, self.bv[idx], out=zb, dtype=cdtype)
        return zb

    def mask_block(self, idx, wv, mscr):
        """The block's mask (``where`` and ``bias != -inf``) into scratch, or None."""
        if self.bias is None and wv is None:
            return None
        v = self.bv[idx] if self.bias is not None else wv[idx]
        mb = mscr[:v.size].reshape(v.shape)
        return _ref().bias_mask(None if self.bias is None else self.bv[idx],
                         None if wv is None else wv[idx], mb)

    def grad_block(self, xv, idx, dscr, cdtype):
        """``dz/dx`` of block ``idx`` (a Python float when it is the constant ``scale``)."""
        if self.softcap is None:
            return _ref().transform_grad(None, self.scale, None, None)
        v = xv[idx]
        return _ref().transform_grad(v, self.scale, self.softcap, dscr[:v.size].reshape(v.shape))

    def _native(self, w, rows):
        """The backend's transformed kernel (``scale`` only, in C) can take this
        call: no softcap, no mask (``where`` or bias), the reduced axes last (the
        arrays must still be rows of the compute dtype)."""
        return (self.softcap is None and self.scale is not None and self.bias is None
                and w is None and rows.identity)

    def _prepare(self, rows, cdtype):
        """Per call: the bias viewed like the input, the rows per block."""
        self.bv = None if self.bias is None else rows.view(self.bias)
        return min(rows.n, rows_per_block(rows.k, cdtype.itemsize))

    # -- softmax, log_softmax -------------------------------------------------

    def row_map(self, op, x, cdtype, rdtype, axis, where, out):
        """softmax / log_softmax (``op``: the kernel table's entry) of ``z``."""
        axes = norm_axes(axis, x.ndim)
        if out is not None:
            check_out(out, x.shape, rdtype)
        w = where_mask(where, x)
        rows = Rows(x.shape, axes)
        if rows.n == 0 or rows.k == 0:
            return out if out is not None else np.empty(x.shape, rdtype)
        res = out if out is not None else rows.unview(np.empty(rows.tshape, rdtype))
        if op.transformed is not None and self._native(w, rows):  # in the kernels' blocks
            x2, o2 = _own_rows(x, cdtype, rows.k), _own_rows(res, cdtype, rows.k)
            if x2 is not None and o2 is not None:
                op.transformed(self.scale, x2, o2, _config.get_num_threads())
                return res
        per = self._prepare(rows, cdtype)
        o = _Out(res, rows, cdtype, per)
        xv, wv = rows.view(x), None if w is None else rows.view(w)
        z = np.empty(per * rows.k, cdtype)
        m = np.empty(per * rows.k, np.bool_) if (w is not None or self.bias is not None) else None
        nt = _config.get_num_threads()
        for idx, r0, r1 in blocks(rows.outer, rows.n, rows.k, cdtype.itemsize):
            zb = self.z_block(xv, idx, z, cdtype)
            mb = self.mask_block(idx, wv, m)
            shape2 = (r1 - r0, rows.k)
            ob = o.buffer(r0, r1)
            op.rows(zb.reshape(shape2), None if mb is None else mb.reshape(shape2), ob, nt)
            o.store(idx, ob)
        return res

    # -- logsumexp -------------------------------------------------------------

    def logsumexp_rows(self, be, x, b, w, rows, cdtype, r, sign):
        """``be.logsumexp.rows`` over ``z`` of ``x`` (of ``rows``' shape; ``b``, ``w``
        broadcast to it or None), into ``r`` and ``sign`` (``(n,)``, ``cdtype``)."""
        k = rows.k
        if be.logsumexp.transformed is not None and self._native(w, rows):
            x2 = _own_rows(x, cdtype, k)
            b2 = None if b is None else _own_rows(b, cdtype, k)
            if x2 is not None and (b is None or b2 is not None):
                be.logsumexp.transformed(self.scale, x2, b2, r, sign, _config.get_num_threads())
                return
        per = self._prepare(rows, cdtype)
        xv, wv = rows.view(x), None if w is None else rows.view(w)
        bw = None if b is None else _Rows(rows.view(b), cdtype, rows.n, k, per)
        z = np.empty(per * k, cdtype)
        m = np.empty(per * k, np.bool_) if (w is not None or self.bias is not None) else None
        nt = _config.get_num_threads()
        for idx, r0, r1 in blocks(rows.outer, rows.n, k, cdtype.itemsize):
            shape2 = (r1 - r0, k)
            zb = self.z_block(xv, idx, z, cdtype).reshape(shape2)
            mb = self.mask_block(idx, wv, m)
            be.logsumexp.rows(zb, None if bw is None else bw.block(idx, r0, r1),
                              None if mb is None else mb.reshape(shape2), r[r0:r1],
                              None if sign is None else sign[r0:r1], nt)

    # -- backwards -------------------------------------------------------------

    def backward(self, op, grad, y, x, cdtype, rdtype, axis, where, out, masked):
        """``op`` (softmax_backward / log_softmax_backward: the VJP w.r.t. ``z``) times
        ``dz/dx``, block by block; ``masked``: ``op`` takes the mask (``where`` and the
        bias's -inf entries)."""
        shape = y.shape
        axes = norm_axes(axis, len(shape))
        if x is None:
            if self.softcap is not None:
                raise ValueError("fastact: softcap= needs x= (the logits the forward pass "
                                 "took): the derivative of tanh is not a function of y")
        else:
            x = asarray(x, "x")
            if x.shape != shape:
                raise ValueError(f"fastact: x has shape {x.shape} but y has shape {shape}")
        if out is not None:
            check_out(out, shape, rdtype)
        w = where_mask(where, y) if masked else None
        rows = Rows(shape, axes)
        if rows.n == 0 or rows.k == 0:
            return out if out is not None else np.empty(shape, rdtype)
        k = rows.k
        res = out if out is not None else rows.unview(np.empty(rows.tshape, rdtype))
        if op.transformed is not None and self._native(w, rows):
            g2, y2, o2 = (_own_rows(a, cdtype, k) for a in (grad, y, res))
            if g2 is not None and y2 is not None and o2 is not None:
                op.transformed(self.scale, g2, y2, o2, _config.get_num_threads())
                return res
        per = self._prepare(rows, cdtype)
        gr = _Rows(rows.view(grad), cdtype, rows.n, k, per)
        yr = _Rows(rows.view(y), cdtype, rows.n, k, per)
        o = _Out(res, rows, cdtype, per)
        xv = None if x is None else rows.view(x)
        wv = None if w is None else rows.view(w)
        d = np.empty(per * k, cdtype) if self.softcap is not None else None
        m = (np.empty(per * k, np.bool_) if masked and (w is not None or self.bias is not None)
             else None)
        nt = _config.get_num_threads()
        for idx, r0, r1 in blocks(rows.outer, rows.n, k, cdtype.itemsize):
            shape2 = (r1 - r0, k)
            # dz/dx before the kernel writes: out may be x itself
            db = self.grad_block(xv, idx, d, cdtype)
            gb, yb = gr.block(idx, r0, r1), yr.block(idx, r0, r1)
            ob = o.buffer(r0, r1)
            if masked:
                mb = self.mask_block(idx, wv, m)
                op.rows(gb, yb, None if mb is None else mb.reshape(shape2), ob, nt)
            else:
                op.rows(gb, yb, ob, nt)
            _times(ob, db, shape2)
            o.store(idx, ob)
        return res

    # -- cross-entropy ---------------------------------------------------------

    def cross_entropy(self, ce, want_loss, want_grad, out, g=1.0, row_scale=None):
        """``(loss, dlogits)`` of ``fastact._api._CE`` ``ce`` on ``z`` of its logits
        (either None when not wanted); the gradient w.r.t. the raw logits, in their
        shape (C order) or ``out`` (which may be the logits)."""
        x, cdtype = ce.x, ce.cdtype
        if want_grad and out is not None:
            check_out(out, x.shape, ce.rdtype)
        rows = Rows(x.shape, (ce.axis,))
        n, k = rows.n, rows.k
        res = None
        if want_grad:
            res = out if out is not None else np.empty(x.shape, ce.rdtype)
        if n == 0 or k == 0:
            if res is not None:
                res[...] = 0
            return (ce._reduce(np.zeros(n, cdtype), 0.0) if want_loss else None), res
        op = ce.be.cross_entropy_index if ce.index else ce.be.cross_entropy_prob
        extra = (ce.ignore_index,) if ce.index else ()
        if op.transformed is not None and self._native(None, rows):
            x2 = _own_rows(x, cdtype, k)
            t2 = ce.t2 if ce.index else _own_rows(ce.t, cdtype, k)
            g2 = _own_rows(res, cdtype, k) if want_grad else None
            if x2 is not None and t2 is not None and (g2 is not None or not want_grad):
                loss = np.empty(n, cdtype) if want_loss else None
                op.transformed(self.scale, x2, t2, ce.weight, *extra,
                               ce.label_smoothing, ce.z_loss, ce.a, ce.b, float(g), row_scale,
                               loss, g2, _config.get_num_threads())
                if not want_loss:
                    return None, res
                full = loss if ce.reduction == "none" else None
                return ce._reduce(full, float(loss.sum(dtype=np.float64))), res
        per = self._prepare(rows, cdtype)
        xv = rows.view(x)
        o = _Out(res, rows, cdtype, per) if want_grad else None
        tr = None if ce.index else _Rows(rows.view(ce.t), cdtype, n, k, per)
        full = np.empty(n, cdtype) if want_loss and ce.reduction == "none" else None
        lbuf = np.empty(per, cdtype) if want_loss and full is None else None
        z = np.empty(per * k, cdtype)
        d = np.empty(per * k, cdtype) if want_grad and self.softcap is not None else None
        total = 0.0
        nt = _config.get_num_threads()
        for idx, r0, r1 in blocks(rows.outer, n, k, cdtype.itemsize):
            shape2 = (r1 - r0, k)
            db = self.grad_block(xv, idx, d, cdtype) if want_grad else None  # before out=x is written
            zb = self.z_block(xv, idx, z, cdtype).reshape(shape2)
            tb = ce.t2[r0:r1] if ce.index else tr.block(idx, r0, r1)
            lb = None if not want_loss else (full[r0:r1] if full is not None else lbuf[:r1 - r0])
            ob = o.buffer(r0, r1) if want_grad else None
            op.rows(zb, tb, ce.weight, *extra, ce.label_smoothing, ce.z_loss, ce.a, ce.b,
                    float(g), None if row_scale is None else row_scale[r0:r1], lb, ob, nt)
            if want_grad:
                _times(ob, db, shape2)
                o.store(idx, ob)
            if lbuf is not None:
                total += float(lb.sum(dtype=np.float64))
        return (ce._reduce(full, total) if want_loss else None), res


def of(bias, scale, softcap, x, cdtype):
    """``Transform.of`` for array ``x`` (None without any transform)."""
    return Transform.of(bias, scale, softcap, np.shape(x), np.dtype(cdtype))
