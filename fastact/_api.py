"""The public functions: validation, dtype/axis/layout normalisation — once, for
every backend — and the call into the chosen backend's row kernels.

Every function brings its input to "rows of the last axis": the reduced axes
are moved to the end and the array viewed as ``(n, k)``, C-contiguous, in the
compute dtype (a copy only when the layout or dtype requires one).  Backends
only ever see that; the contract is in ``_backends/numpy_ref.py``.  float16
and bfloat16 rows go to a backend that reads half rows itself (``HALF = True``:
the C kernels widen them in bounded blocks) in their own dtype, with ``out=``
of that dtype written directly; other backends get float32 rows.
"""

from __future__ import annotations

import math

import numpy as np

from . import _config, _transforms

#: The softmax family, in the order the package and ``fastact.dask`` list it.
__all__ = ["softmax", "log_softmax", "logsumexp", "softmax_backward", "log_softmax_backward",
           "softmax_cross_entropy", "softmax_cross_entropy_backward",
           "softmax_cross_entropy_with_grad"]

from ._validate import (Rows, Strided, asarray, check_ce, check_out, class_axis, dtypes,
                        kernel_dtype, loss_dtype, norm_axes, row_blocks, where_mask)

try:  # the C backend's common call, checked in C (csrc/fastpath.c): the result, or None
    from ._fastpath import call as _fast_c
except ImportError:  # pragma: no cover - not built (no NumPy headers at build time)
    def _fast_c(op, a, b, axis, out, backend):
        return None


# ----------------------------------------------------------------------------
# helpers shared by the row functions
# ----------------------------------------------------------------------------

def _nthreads():
    return _config.get_num_threads()


def _elementwise_result(x2, rows, rdtype, out):
    """Turn a ``(n, k)`` compute-dtype result into what the user gets back."""
    t = x2.reshape(rows.tshape)
    if out is not None:
        tv = rows.view(out)
        if not (tv.dtype == x2.dtype and np.shares_memory(tv, x2) and tv.flags.c_contiguous):
            tv[...] = t
        return out
    if rdtype != x2.dtype:
        t = t.astype(rdtype)
    return rows.unview(t)


def _row_out_buffer(out, rows, cdtype):
    """The ``(n, k)`` buffer the kernel writes: ``out`` itself when its layout allows."""
    if out is not None:
        tv = rows.view(out)
        if tv.dtype == cdtype and tv.flags.c_contiguous:
            return tv.reshape(rows.n, rows.k)
    return np.empty((rows.n, rows.k), cdtype)


def _row_map(pick, arrays, cdtype, rdtype, axis, where, out, backend, masked=True):
    """The shared path of the ``(n, k) -> (n, k)`` row functions: ``arrays`` (one
    input, or grad and y) of one shape, the kernel called with the mask when
    ``masked``, the result in the user's layout (or ``out``).  ``pick`` takes the
    op's entry from the kernel table of ``backend``, resolved after the checks
    (bad input is reported before a bad backend, and loads none)."""
    shape = arrays[0].shape
    axes = norm_axes(axis, len(shape))
    if out is not None:
        check_out(out, shape, rdtype)
    rows = Rows(shape, axes)
    w = where_mask(where, arrays[0]) if masked else None
    be = _config.resolve(backend)
    op = pick(be)
    if rows.n == 0 or rows.k == 0:
        return out if out is not None else np.empty(shape, rdtype)
    kdtype = kernel_dtype(be, cdtype, rdtype)
    # the strided kernels take float32/float64; half inputs take the row path
    st = Strided.plan(arrays[0], axes, op) if kdtype == cdtype else None
    if st is not None:
        args = [st.arr(a, cdtype) for a in arrays]
        if masked:
            args.append(None if w is None else st.arr(w, np.bool_))
        o = st.out_buffer(out, cdtype)
        op.strided(*args, o, st.outer, st.k, st.inner, _nthreads())
        return st.result(o, out, rdtype)
    mask = None if w is None else rows.rows(w, np.bool_)
    args = [rows.rows(a, kdtype) for a in arrays]
    if masked:
        args.append(mask)
    o2 = _row_out_buffer(out, rows, kdtype)
    op.rows(*args, o2, _nthreads())
    return _elementwise_result(o2, rows, rdtype, out)


# ----------------------------------------------------------------------------
# the common call: a fast path
# ----------------------------------------------------------------------------
# A C-contiguous float32/float64 ndarray (or float16/bfloat16 for a backend that
# reads half rows) reduced over its last axis, no mask, and an ``out`` (if any)
# of the same kind goes straight to the backend's kernel: a few attribute
# checks instead of the general path's axis, layout and dtype normalisation
# (which costs several microseconds, more than the kernel itself on a small
# array).  Anything else returns None and takes
# the general path, which validates it and raises on bad input.

_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)
_F16 = np.dtype(np.float16)


def _fast_in(x, axis, be=None):
    """``(n, k)`` when ``x`` is the common case over ``axis``, else None.  Half
    dtypes are common only for a backend ``be`` that reads half rows itself."""
    if type(x) is not np.ndarray or type(axis) is not int:
        return None
    dt = x.dtype
    nd = x.ndim
    if dt is not _F32 and dt is not _F64:
        if not ((dt == _F16 or dt.name == "bfloat16") and be.half):
            return None
    if nd == 0 or (axis != -1 and axis != nd - 1):
        return None
    size = x.size
    if size == 0 or not x.flags.c_contiguous:
        return None
    k = x.shape[-1]
    return size // k, k


def _fast_out(out, x):
    """A fresh result like ``x``, ``out`` if it fits the common case, else None."""
    if out is None:
        return np.empty_like(x)
    if type(out) is np.ndarray and out.dtype is x.dtype and out.shape == x.shape:
        f = out.flags
        if f.c_contiguous and f.writeable:
            return out
    return None


def _fast_pair(be, kernel, grad, y, axis, out, masked):
    """The backward functions' common call: grad and y alike (shape, dtype, layout)."""
    nk = _fast_in(y, axis, be)
    if (nk is None or type(grad) is not np.ndarray or grad.dtype is not y.dtype
            or grad.shape != y.shape or not grad.flags.c_contiguous):
        return None
    o = _fast_out(out, y)
    if o is None:
        return None
    if y.ndim != 2 and not be.nd_rows:
        grad, y, o2 = grad.reshape(nk), y.reshape(nk), o.reshape(nk)
    else:
        o2 = o
    if masked:
        kernel(grad, y, None, o2, _config.get_num_threads())
    else:
        kernel(grad, y, o2, _config.get_num_threads())
    return o


def _softmax_op(t):
    return t.softmax


def _log_softmax_op(t):
    return t.log_softmax


def _softmax_like(pick, x, axis, where, out, backend):
    """softmax / log_softmax (``pick``: the op's entry of a kernel table): the
    common call straight to the row kernel, anything else through ``_row_map``."""
    if where is None:
        be = _config.current(backend)
        op = pick(be)
        nk = _fast_in(x, axis, be)
        if nk is not None:
            o = _fast_out(out, x)
            if o is not None:
                if x.ndim == 2 or be.nd_rows:
                    op.rows(x, None, o, _config.get_num_threads())
                else:
                    op.rows(x.reshape(nk), None, o.reshape(nk), _config.get_num_threads())
                return o
    x = asarray(x)
    cdtype, rdtype = dtypes(x.dtype)
    return _row_map(pick, (x,), cdtype, rdtype, axis, where, out, backend)


# ----------------------------------------------------------------------------
# public: forward
# ----------------------------------------------------------------------------

def _transformed(pick, x, axis, where, bias, scale, softcap, out, backend):
    """softmax / log_softmax of ``z`` (``fastact._transforms``)."""
    x = asarray(x)
    cdtype, rdtype = dtypes(x.dtype)
    xf = _transforms.of(bias, scale, softcap, x, cdtype)
    return xf.row_map(pick(_config.current(backend)), x, cdtype, rdtype, axis, where, out)


def softmax(x, axis=-1, *, where=None, bias=None, scale=None, softcap=None, out=None,
            backend=None):
    """``exp(z - max) / sum(exp(z - max))`` along ``axis`` (int, tuple or None), with
    ``z = x`` or, with transforms, ``softcap * tanh(x * scale / softcap) + bias``
    (``docs/transforms.md``).

    ``where`` (bool, broadcastable to ``x``) selects the entries that take
    part, and so does a ``bias`` that is not ``-inf``; the others get exactly 0,
    and a row with nothing selected is all 0.
    """
    if bias is None and scale is None and softcap is None:
        if where is None:
            r = _fast_c(0, x, None, axis, out, backend)
            if r is not None:
                return r
        return _softmax_like(_softmax_op, x, axis, where, out, backend)
    return _transformed(_softmax_op, x, axis, where, bias, scale, softcap, out, backend)


def log_softmax(x, axis=-1, *, where=None, bias=None, scale=None, softcap=None, out=None,
                backend=None):
    """``(z - max) - log(sum(exp(z - max)))`` along ``axis`` (``z`` as in ``softmax``);
    masked entries ``-inf``."""
    if bias is None and scale is None and softcap is None:
        if where is None:
            r = _fast_c(1, x, None, axis, out, backend)
            if r is not None:
                return r
        return _softmax_like(_log_softmax_op, x, axis, where, out, backend)
    return _transformed(_log_softmax_op, x, axis, where, bias, scale, softcap, out, backend)


def logsumexp(x, axis=-1, *, b=None, keepdims=False, return_sign=False, where=None,
              bias=None, scale=None, softcap=None, out=None, backend=None):
    """``log(sum(b * exp(z)))`` along ``axis`` without overflow (SciPy's ``b`` and
    ``return_sign``; ``z`` as in ``softmax``); ``-inf`` over an empty axis or a
    fully masked row."""
    plain = bias is None and scale is None and softcap is None
    if (plain and b is None and where is None and out is None and not keepdims
            and not return_sign):
        be = _config.current(backend)
        nk = _fast_in(x, axis, be)
        if nk is not None:
            r = np.empty(x.shape[:-1], x.dtype)
            be.logsumexp.rows(x.reshape(nk), None, None, r.reshape(nk[0]), None,
                              _config.get_num_threads())
            return r if r.ndim else r[()]
    x = asarray(x)
    b_dtype = None
    if b is not None:
        bw = asarray(b, "b")
        b_dtype = bw.dtype
        # NEP 50: a Python scalar b is "weak" and does not promote x (as SciPy)
        weak = isinstance(b, (bool, int, float)) and not isinstance(b, np.generic)
        cdtype, rdtype = dtypes(np.result_type(x.dtype, b if weak else bw.dtype))
        b = bw
        if b.shape != x.shape:
            # x and b broadcast together, and the broadcast result is reduced (as SciPy)
            try:
                shape = np.broadcast_shapes(x.shape, b.shape)
            except ValueError:
                raise ValueError(f"fastact: b of shape {b.shape} does not broadcast with "
                                 f"the input's shape {x.shape}") from None
            x = np.broadcast_to(x, shape)
            b = np.broadcast_to(b, shape)
    else:
        cdtype, rdtype = dtypes(x.dtype)
    xf = None if plain else _transforms.of(bias, scale, softcap, x, cdtype)
    axes = norm_axes(axis, x.ndim)
    rows = Rows(x.shape, axes)
    if keepdims:
        rshape = tuple(1 if a in axes else s for a, s in enumerate(x.shape))
    else:
        rshape = rows.outer
    if out is not None:
        check_out(out, rshape, rdtype)
    w = where_mask(where, x)
    be = _config.resolve(backend)
    n = rows.n
    kdtype = kernel_dtype(be, cdtype, rdtype)
    if xf is not None or (b_dtype is not None and b_dtype != kdtype and kdtype != cdtype):
        kdtype = cdtype  # b of another dtype (or a Python scalar): not rounded to x's
    # the strided kernels take float32/float64; half inputs take the row path
    st = (Strided.plan(x, axes, be.logsumexp) if n and rows.k and kdtype == cdtype
          and xf is None else None)
    if st is not None:
        return _logsumexp_strided(st, be, x, b, w, cdtype, rdtype, keepdims, return_sign, out)
    mask = None if w is None or xf is not None else rows.rows(w, np.bool_)
    if out is not None and out.dtype == kdtype and out.flags.c_contiguous:
        r = out.reshape(n)
    else:
        r = np.empty(n, kdtype)
    sign = np.empty(n, kdtype) if return_sign else None
    if n:
        if rows.k == 0:
            r[...] = -np.inf
            if sign is not None:
                sign[...] = 0
        elif xf is not None:  # z block by block, from x where it lies
            xf.logsumexp_rows(be, x, b, w, rows, cdtype, r, sign)
        else:
            x2 = rows.rows(x, kdtype)
            b2 = rows.rows(b, kdtype) if b is not None else None
            be.logsumexp.rows(x2, b2, mask, r, sign, _nthreads())
    if out is not None:
        if not np.shares_memory(out, r):
            out[...] = r.reshape(rshape)
        res = out
    else:
        res = r.reshape(rshape)
        if rdtype != res.dtype:
            res = res.astype(rdtype)
        if res.ndim == 0:
            res = res[()]
    if return_sign:
        s = sign.reshape(rshape)
        if rdtype != s.dtype:
            s = s.astype(rdtype)
        if s.ndim == 0:
            s = s[()]
        return res, s
    return res


def _logsumexp_strided(st, be, x, b, w, cdtype, rdtype, keepdims, return_sign, out):
    """logsumexp over one axis where it lies (the backend's strided kernel)."""
    ov = None
    if out is not None:
        ov = np.squeeze(out, axis=st.axis) if keepdims else out
        ov = ov.transpose(st.kept_perm)
    if ov is not None and ov.dtype == cdtype and ov.flags.c_contiguous:
        r = ov
    else:
        r = np.empty(st.kept_vshape, cdtype)
    sign = np.empty(st.kept_vshape, cdtype) if return_sign else None
    be.logsumexp.strided(st.arr(x, cdtype), None if b is None else st.arr(b, cdtype),
                         None if w is None else st.arr(w, np.bool_), r, sign,
                         st.outer, st.k, st.inner, _nthreads())

    def user(a):  # view layout -> the user's axes (a view), dtype, keepdims, 0-d
        a = a.transpose(st.kept_inv)
        if keepdims:
            a = np.expand_dims(a, st.axis)
        if rdtype != cdtype:
            a = a.astype(rdtype)
        return a[()] if a.ndim == 0 else a

    if out is not None:
        if not np.shares_memory(ov, r):
            ov[...] = r
        res = out
    else:
        res = user(r)
    return (res, user(sign)) if return_sign else res


# ----------------------------------------------------------------------------
# public: backward
# ----------------------------------------------------------------------------

def _pair(grad, y):
    grad = asarray(grad, "grad")
    y = asarray(y, "y")
    if grad.shape != y.shape:
        raise ValueError(f"fastact: grad has shape {grad.shape} but y has shape {y.shape}")
    cdtype, rdtype = dtypes(np.result_type(grad.dtype, y.dtype))
    return grad, y, cdtype, rdtype


def _softmax_backward_op(t):
    return t.softmax_backward


def _log_softmax_backward_op(t):
    return t.log_softmax_backward


def softmax_backward(grad, y, axis=-1, *, scale=None, softcap=None, x=None, out=None,
                     backend=None):
    """Vector-Jacobian product of softmax given ``y = softmax(x)``:
    ``y * (grad - sum(grad * y))``.  Masked entries (``y == 0``) get 0.

    With the forward's ``scale``/``softcap``, d loss / d ``x`` (the raw logits):
    that times ``dz/dx = scale / cosh(x * scale / softcap)**2`` (``scale`` without
    softcap); ``softcap`` needs ``x``.  The gradient w.r.t. a bias is the result
    without ``scale``/``softcap``, summed over the axes the bias was broadcast along.
    """
    if scale is not None or softcap is not None:
        grad, y, cdtype, rdtype = _pair(grad, y)
        xf = _transforms.of(None, scale, softcap, y, cdtype)
        return xf.backward(_config.current(backend).softmax_backward, grad, y, x, cdtype,
                           rdtype, axis, None, out, False)
    r = _fast_c(2, grad, y, axis, out, backend)
    if r is not None:
        return r
    be = _config.current(backend)
    r = _fast_pair(be, be.softmax_backward.rows, grad, y, axis, out, False)
    if r is not None:
        return r
    grad, y, cdtype, rdtype = _pair(grad, y)
    return _row_map(_softmax_backward_op, (grad, y), cdtype, rdtype, axis, None, out, backend,
                    masked=False)


def log_softmax_backward(grad, y, axis=-1, *, where=None, bias=None, scale=None, softcap=None,
                         x=None, out=None, backend=None):
    """Vector-Jacobian product of log_softmax given ``y = log_softmax(x)``:
    ``grad - exp(y) * sum(grad)``; zero at masked entries and on fully masked rows.

    The mask is ``where`` and, when the forward took ``bias=``, the bias's ``-inf``
    entries: pass the same ``bias`` (only its mask is used) or fold it into
    ``where``.  ``scale``/``softcap``/``x`` as in ``softmax_backward``.
    """
    if bias is not None or scale is not None or softcap is not None:
        grad, y, cdtype, rdtype = _pair(grad, y)
        xf = _transforms.of(bias, scale, softcap, y, cdtype)
        return xf.backward(_config.current(backend).log_softmax_backward, grad, y, x, cdtype,
                           rdtype, axis, where, out, True)
    if where is None:
        r = _fast_c(3, grad, y, axis, out, backend)
        if r is not None:
            return r
        be = _config.current(backend)
        r = _fast_pair(be, be.log_softmax_backward.rows, grad, y, axis, out, True)
        if r is not None:
            return r
    grad, y, cdtype, rdtype = _pair(grad, y)
    return _row_map(_log_softmax_backward_op, (grad, y), cdtype, rdtype, axis, where, out,
                    backend)


# ----------------------------------------------------------------------------
# public: cross-entropy
# ----------------------------------------------------------------------------

class _CE:
    """Validated cross-entropy arguments, as flat rows for the kernels.

    ``mode``: "rows" (classes on the last axis: ``(n, k)`` rows), "strided"
    (classes on another axis, the backend's strided kernels on the logits
    where they lie, C-contiguous ``(outer, k, inner)``), "moved" (another axis
    on a backend without those: the class axis moved last, a copy).  Per-row
    data (index targets, ``grad_loss``, the loss) are always the C-order
    flattening of ``lead``, the logits' shape without the class axis.
    """

    def __init__(self, logits, target, weight, ignore_index, reduction, label_smoothing,
                 z_loss, backend, axis=-1, scale=None, softcap=None):
        x = asarray(logits, "logits")
        t = np.asarray(target)
        if weight is not None:
            weight = asarray(weight, "weight")
        (cdtype, rdtype, self.index, label_smoothing,
         z_loss) = check_ce(x, t, weight, reduction, label_smoothing, z_loss, axis)
        ax = class_axis(axis, x.ndim)
        k = x.shape[ax]
        lead = x.shape[:ax] + x.shape[ax + 1:]
        if weight is not None:
            weight = np.ascontiguousarray(weight, dtype=cdtype)
        self.x, self.k, self.lead, self.axis = x, k, lead, ax
        self.n = math.prod(lead)
        self.cdtype, self.rdtype = cdtype, rdtype
        self.ldtype = loss_dtype(cdtype, rdtype)
        self.weight = weight
        self.ignore_index = int(ignore_index)
        self.reduction = reduction
        self.label_smoothing = label_smoothing
        self.z_loss = z_loss
        self.be = _config.resolve(backend)
        #: scale/softcap: the block layer reads x and t where they lie (mode "transform")
        self.xf = _transforms.of(None, scale, softcap, x, cdtype)
        if self.xf is not None:
            self.mode, self.kdtype, self.t = "transform", cdtype, t
            self._targets(t, k)
            return
        kdtype = kernel_dtype(self.be, cdtype, rdtype)
        if not self.index and t.dtype != kdtype:
            kdtype = cdtype  # probabilities of another dtype: computed from float32 rows
        self.kdtype = kdtype
        self.outer = math.prod(x.shape[:ax])
        self.inner = math.prod(x.shape[ax + 1:])
        if self.inner == 1:
            self.mode = "rows"
        elif kdtype == cdtype and self.be.cross_entropy_index.strided is not None:
            self.mode = "strided"  # (the strided kernels take float32/float64)
        else:
            self.mode = "moved"
        if self.mode == "moved":
            x = np.moveaxis(x, ax, -1)
            if not self.index:
                t = np.moveaxis(t, ax, -1)
        if self.mode == "strided":
            self.x2 = np.ascontiguousarray(x, dtype=kdtype).reshape(self.outer, k, self.inner)
        else:
            self.x2 = np.ascontiguousarray(x, dtype=kdtype).reshape(self.n, k)
        self._targets(t, k)

    def _targets(self, t, k):
        """Index targets flat and checked; probability targets as rows like ``x2``."""
        if self.index:
            self.t2 = np.ascontiguousarray(t, dtype=np.int64).reshape(self.n)
            if self.n:
                bad = self.be.check_targets(self.t2, k, self.ignore_index)
                if bad >= 0:
                    raise IndexError(f"fastact: target {int(self.t2[bad])} is out of bounds for "
                                     f"{k} classes (at flat row {bad}; ignore_index is "
                                     f"{self.ignore_index})")
        elif self.mode != "transform":
            self.t2 = np.ascontiguousarray(t, dtype=self.kdtype).reshape(self.x2.shape)
        self._factors()

    def _factors(self):
        """``a`` scales the cross-entropy term, ``b`` the z-loss term (the kernels' contract)."""
        self.a = self.b = 1.0
        self.empty_mean = False
        if self.reduction != "mean":
            return
        if self.index:
            n_valid, den = 0, 0.0
            for sl in row_blocks(self.n, 1):  # bounded temporaries, whatever n is
                tb = self.t2[sl]
                valid = tb != self.ignore_index
                c = int(np.count_nonzero(valid))
                n_valid += c
                if self.weight is not None and c:
                    den += float(self.weight[tb[valid]].sum(dtype=np.float64))
            if self.weight is None:
                den = float(n_valid)
        else:
            n_valid = self.n
            den = float(self.n)
        self.empty_mean = n_valid == 0
        self.a = 1.0 / den if den != 0 else math.nan
        self.b = 1.0 / n_valid if n_valid else math.nan

    def row_scale(self, grad_loss):
        g = np.asarray(grad_loss)
        if g.ndim == 0:
            return float(g), None
        if self.reduction != "none":
            raise ValueError(f"fastact: grad_loss must be a scalar for reduction="
                             f"{self.reduction!r}, got shape {g.shape}")
        if g.shape != self.lead:
            raise ValueError(f"fastact: grad_loss has shape {g.shape}, expected {self.lead}")
        return 1.0, np.ascontiguousarray(g, dtype=self.cdtype).reshape(self.n)

    def grad_buffer(self, out):
        """The buffer the kernel writes the gradient to, of ``x2``'s shape: ``out``
        itself when its layout allows."""
        if out is not None:
            check_out(out, self.x.shape, self.rdtype)
            if self.mode != "moved" and out.dtype == self.kdtype and out.flags.c_contiguous:
                return out.reshape(self.x2.shape)
        return np.empty(self.x2.shape, self.kdtype)

    def _blocks(self):
        """(slice of x2, slice of the per-row data) pairs of bounded size: blocks
        of rows, or of outer indices in "strided" mode."""
        if self.mode != "strided":
            for sl in row_blocks(self.n, self.k):
                yield sl, sl
            return
        per = self.k * self.inner
        step = max(1, (1 << 20) // max(per, 1))
        for o in range(0, self.outer, step):
            o1 = min(self.outer, o + step)
            yield slice(o, o1), slice(o * self.inner, o1 * self.inner)

    def compute(self, want_loss, grad, g=1.0, row_scale=None):
        """Run the kernel over blocks of rows; return the user's loss (None if not wanted).

        Blocks keep the per-row loss buffer bounded: with ``out=`` given, a call
        allocates nothing that grows with the input (but the loss itself for
        ``reduction="none"``).
        """
        n, k = self.n, self.k
        if n == 0 or k == 0:
            if grad is not None:
                grad[...] = 0
            return self._reduce(np.zeros(n, self.cdtype), 0.0) if want_loss else None
        strided = self.mode == "strided"
        op = self.be.cross_entropy_index if self.index else self.be.cross_entropy_prob
        kern = op.strided if strided else op.rows
        extra = (self.ignore_index,) if self.index else ()
        full = np.empty(n, self.cdtype) if want_loss and self.reduction == "none" else None
        buf = None
        total = 0.0
        nt = _nthreads()
        for xs, rs in self._blocks():
            m = rs.stop - rs.start
            if not want_loss:
                lb = None
            elif full is not None:
                lb = full[rs]
            else:
                if buf is None:
                    buf = np.empty(m, self.cdtype)
                lb = buf[:m]
            shape = (xs.stop - xs.start, k, self.inner) if strided else ()
            kern(self.x2[xs], self.t2[rs] if self.index else self.t2[xs], self.weight, *extra,
                 self.label_smoothing, self.z_loss, self.a, self.b, float(g),
                 None if row_scale is None else row_scale[rs], lb,
                 None if grad is None else grad[xs], *shape, nt)
            if lb is not None and full is None:
                total += float(lb.sum(dtype=np.float64))
        return self._reduce(full, total) if want_loss else None

    def _reduce(self, full, total):
        """The user's loss: the per-row array for "none", else a NumPy scalar."""
        if self.reduction == "none":
            r = full.reshape(self.lead)
            return r.astype(self.ldtype) if r.dtype != self.ldtype else r
        if self.reduction == "mean" and self.empty_mean:
            total = math.nan
        return self.ldtype.type(total)


def softmax_cross_entropy(logits, target, *, axis=-1, weight=None, ignore_index=-100,
                          reduction="mean", label_smoothing=0.0, z_loss=0.0, scale=None,
                          softcap=None, backend=None):
    """Cross-entropy of ``softmax(logits)`` (classes on ``axis``, by default the last)
    against index targets (the logits' shape without ``axis``) or probability
    targets (the logits' shape); equals ``torch.nn.functional.cross_entropy``
    (``axis=1``: its ``(N, C, d1, ...)`` layout), plus PaLM's ``z_loss * logsumexp**2``.
    ``scale``/``softcap``: of ``softcap * tanh(logits * scale / softcap)`` instead."""
    ce = _CE(logits, target, weight, ignore_index, reduction, label_smoothing, z_loss, backend,
             axis, scale, softcap)
    if ce.xf is not None:
        return ce.xf.cross_entropy(ce, True, False, None)[0]
    return ce.compute(True, None)


def softmax_cross_entropy_backward(logits, target, grad_loss=1.0, *, axis=-1, weight=None,
                                   ignore_index=-100, reduction="mean", label_smoothing=0.0,
                                   z_loss=0.0, scale=None, softcap=None, out=None, backend=None):
    """``d loss / d logits`` scaled by ``grad_loss`` (scalar, or of the loss's shape
    for "none"), in the logits' shape (w.r.t. the raw logits with ``scale``/``softcap``)."""
    ce = _CE(logits, target, weight, ignore_index, reduction, label_smoothing, z_loss, backend,
             axis, scale, softcap)
    g, rs = ce.row_scale(grad_loss)
    if ce.xf is not None:
        return ce.xf.cross_entropy(ce, False, True, out, g, rs)[1]
    buf = ce.grad_buffer(out)
    ce.compute(False, buf, g, rs)
    return _ce_grad_result(ce, buf, out)


def softmax_cross_entropy_with_grad(logits, target, *, axis=-1, weight=None, ignore_index=-100,
                                    reduction="mean", label_smoothing=0.0, z_loss=0.0,
                                    scale=None, softcap=None, out=None, backend=None):
    """``(loss, dlogits)`` in one fused pass; ``out=logits`` overwrites the logits
    with their gradient (w.r.t. the raw logits with ``scale``/``softcap``)."""
    ce = _CE(logits, target, weight, ignore_index, reduction, label_smoothing, z_loss, backend,
             axis, scale, softcap)
    if ce.xf is not None:
        return ce.xf.cross_entropy(ce, True, True, out)
    buf = ce.grad_buffer(out)
    loss = ce.compute(True, buf)
    return loss, _ce_grad_result(ce, buf, out)


def _ce_grad_result(ce, buf, out):
    if ce.mode == "moved":  # back to the logits' axes, in their shape and C order
        res = out if out is not None else np.empty(ce.x.shape, ce.rdtype)
        mv = np.moveaxis(res, ce.axis, -1)
        mv[...] = buf.reshape(mv.shape)
        return res
    if out is not None:
        if not np.shares_memory(out, buf):
            out[...] = buf.reshape(out.shape)
        return out
    r = buf.reshape(ce.x.shape)
    return r.astype(ce.rdtype) if ce.rdtype != r.dtype else r
