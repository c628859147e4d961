"""The NumPy reference backend: the truth every other backend is tested against.

Backend contract (the same for ``numpy_ref``, ``numba_kernels`` and
``c_kernels``).  The validation layer in ``fastact._api`` guarantees, before a
kernel is called:

* every array argument is C-contiguous, 2-D ``(n, k)`` for row data and 1-D
  ``(n,)`` for per-row data, with ``n >= 1`` and ``k >= 1``;
* float arrays are all ``float32`` or all ``float64`` (the compute dtype);
  masks are ``bool`` ``(n, k)``; targets are ``int64`` ``(n,)``;
* ``out`` has the right shape and dtype and may be the very same array as an
  input (in place): a kernel reads ``x[i, j]`` before it writes
  ``out[i, j]``;
* cross-entropy targets were checked with ``check_targets`` first.

Kernels return ``None`` and write only into the arrays they are given; they
allocate nothing that the caller must free.  Threads: the caller passes
``nthreads``; a backend may ignore it.

Row kernels
-----------
``softmax_rows(x, mask, out, nthreads)``
    ``out = exp(x - m) / sum(exp(x - m))`` per row, ``m`` the row max over the
    selected entries.  Masked-out entries (``mask[i, j] == False``) get exactly
    0 and never reach max or sum; a row with nothing selected gives all 0.
``log_softmax_rows(x, mask, out, nthreads)``
    ``out = (x - m) - log(sum(exp(x - m)))``; masked entries ``-inf``; a row with
    nothing selected gives all ``-inf``.
``logsumexp_rows(x, b, mask, out, sign, nthreads)``
    ``out[i] = log|sum_j b[i, j] exp(x[i, j])|`` over selected entries;
    ``b`` may be ``None`` (all ones); entries with ``b == 0`` take no part
    (as in SciPy).  ``sign`` is ``None`` or ``(n,)`` of the compute dtype and
    receives the sign of the sum (0 for an empty or zero sum, whose log is
    ``-inf``).  With ``sign is None`` a negative sum gives NaN.
``softmax_backward_rows(grad, y, out, nthreads)``
    ``out = y * (grad - sum(grad * y))``.
``log_softmax_backward_rows(grad, y, mask, out, nthreads)``
    ``out = grad - exp(y) * sum(grad)``, the sum over selected entries; masked
    entries and rows with nothing selected get 0.
``check_targets(target, k, ignore_index)``
    The position of the first target outside ``[0, k)`` that is not
    ``ignore_index``, or -1.
``cross_entropy_index_rows(x, target, weight, ignore_index, label_smoothing,
z_loss, a, b, g, row_scale, loss, grad, nthreads)``
    Index targets.  ``weight`` is ``(k,)`` or ``None`` (all ones).  Per row
    ``i`` not ignored, with ``lse`` its logsumexp, ``eps = label_smoothing``,
    ``w_t = weight[target[i]]``::

        ce   = (1-eps) w_t (lse - x_t) + eps/k sum_c w_c (lse - x_c)
        loss[i] = a * ce + b * z_loss * lse**2
        grad[i, c] = g * r_i * ( a * ((1-eps) w_t (p_c - [c == t])
                                      + eps/k (W p_c - w_c))
                               + b * 2 z_loss lse p_c )

    with ``p = softmax(x[i])``, ``W = sum(w)``, ``r_i = row_scale[i]`` (1 when
    ``row_scale`` is ``None``).  Ignored rows get loss 0 and gradient 0.
    ``loss`` and ``grad`` may each be ``None`` (not wanted); ``grad`` may be
    ``x`` itself.  ``a``, ``b``, ``g`` are Python floats.
``cross_entropy_prob_rows(x, target, weight, label_smoothing, z_loss, a, b, g,
row_scale, loss, grad, nthreads)``
    Probability targets ``(n, k)``; ``q = target (1-eps) + eps/k``::

        loss[i] = a * sum_c w_c q_c (lse - x_c) + b * z_loss * lse**2
        grad[i, c] = g * r_i * (a * (p_c sum_k w_k q_k - w_c q_c)
                                + b * 2 z_loss lse p_c)

Transforms of the logits (``scale=``, ``softcap=``, ``bias=``)
---------------------------------------------------------------
Not kernels (yet): their definition, which the API's block layer
(``fastact._transforms``) applies to bounded blocks of rows before it calls the
row kernels above on ``z``.  ``transform`` writes ``z = x * scale``, then
``z = softcap * tanh(z / softcap)``; ``bias_mask`` the entries that take part
(``where`` and ``bias != -inf``), after which ``z += bias``; ``transform_grad``
writes ``dz/dx``.  A backend whose kernels later apply the transform in their
own passes must give the same ``z`` (same operations, same order, in the
compute dtype).

Elementwise kernels (sigmoid family, activations, binary cross-entropy) are a
backend's second part, with their own contract: ``numpy_elementwise``.

The reference computes in the compute dtype (a float32 input stays float32, as
a NumPy user would write it) with NumPy's pairwise sums.
"""

from __future__ import annotations

import numpy as np

NAME = "numpy"


def _row_max(x, mask):
    """Max over selected entries; NaN if any selected entry is NaN; -inf for none."""
    if mask is None:
        m = np.max(x, axis=1)  # propagates NaN
    else:
        m = np.max(np.where(mask, x, -np.inf), axis=1)
    return m


def _shifted(x, mask):
    """(x - m) with masked entries at -inf; m per row; rows with m == -inf get shift 0."""
    m = _row_max(x, mask)
    # A row whose max is -inf (all -inf or nothing selected): shift by 0 would
    # make exp(-inf) = 0 and sum 0; the callers decide what that row means.
    shift = np.where(np.isneginf(m), x.dtype.type(0), m)
    with np.errstate(invalid="ignore", over="ignore"):
        z = x - shift[:, None]
        if mask is not None:
            z = np.where(mask, z, -np.inf)
    return z, m


def _finish(y, m, mask, fill):
    """Rows whose max is not finite, then the mask.

    Max +inf (inf - inf) or NaN: the selected entries are NaN; max -inf with
    something selected (all selected are -inf, 0/0): NaN too; masked-out
    entries and rows with nothing selected get ``fill`` (0 or -inf).
    """
    bad = ~np.isfinite(m)
    if mask is not None:
        bad &= mask.any(axis=1)
    if bad.any():
        y[bad] = np.nan
    if mask is not None:
        y[~mask] = fill
    return y


def softmax_rows(x, mask, out, nthreads=1):
    z, m = _shifted(x, mask)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        e = np.exp(z)
        s = np.sum(e, axis=1)
        y = e / s[:, None]
    out[...] = _finish(y, m, mask, 0.0)


def _log_sum(z, w=None):
    """``log(sum_j w_j exp(z_j))`` per row, for ``z = x - max`` (masked entries
    ``-inf``; ``w`` None for all ones), accurate near 0 (SPEC: "results near zero
    keep their relative accuracy", as SciPy's logsumexp): the terms at the max
    (``z == 0``, ties included) are summed apart, ``c = sum w_j`` over them, the
    others into ``r``, and ``log(c + r) = log(c) + log1p(r / c)``.  Returns
    ``(log|c + r|, sign(c + r))``; rows whose max is not finite are the caller's.
    """
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        top = z == 0
        e = np.exp(np.where(top, -np.inf, z))
        if w is None:
            c = np.sum(top, axis=1).astype(z.dtype)
        else:
            c = np.sum(np.where(top, w, 0), axis=1).astype(z.dtype)
            e = np.where(np.isneginf(z), 0, e * w)  # w may be inf/NaN where z is -inf
        r = np.sum(e, axis=1)
        t = r / c
        sgn = np.sign(c) * np.sign(t + 1)
        t = np.where(t < -1, -t - 2, t)
        ls = np.log(np.abs(c)) + np.log1p(t)
        # c == 0 (weights of the ties cancel): the sum is r alone
        zc = c == 0
        if zc.any():
            ls = np.where(zc, np.log(np.abs(r)), ls)
            sgn = np.where(zc, np.sign(r), sgn)
    return ls, sgn


def log_softmax_rows(x, mask, out, nthreads=1):
    z, m = _shifted(x, mask)
    ls, _ = _log_sum(z)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        y = z - ls[:, None]
    out[...] = _finish(y, m, mask, -np.inf)


def logsumexp_rows(x, b, mask, out, sign, nthreads=1):
    if b is not None:
        nz = b != 0
        mask = nz if mask is None else (mask & nz)
    z, m = _shifted(x, mask)
    ls, sgn = _log_sum(z, b)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if sign is None:
            ls = np.where(sgn < 0, np.nan, ls)
        r = ls + np.where(np.isneginf(m), 0, m)
    r = np.where(np.isneginf(m), -np.inf, r)
    r = np.where(np.isposinf(m), np.inf, r)
    if sign is not None:
        sgn = np.where(np.isneginf(m), 0, sgn)
        if b is not None:
            # A +inf entry: the sign is that of its weight (sum of the weights
            # of the +inf entries, as exp(inf) dominates everything else).
            posm = np.isposinf(m)
            if posm.any():
                inf_w = np.sum(np.where(mask & np.isposinf(x), b, 0), axis=1)
                sgn = np.where(posm, np.sign(inf_w), sgn)
                r = np.where(posm & (inf_w == 0), np.nan, r)
        else:
            sgn = np.where(np.isposinf(m), 1, sgn)
        sgn = np.where(np.isnan(r), np.nan, sgn)
        sign[...] = sgn
    elif b is not None:
        posm = np.isposinf(m)
        if posm.any():
            inf_w = np.sum(np.where(mask & np.isposinf(x), b, 0), axis=1)
            r = np.where(posm & (inf_w <= 0), np.nan, r)
    out[...] = r


def softmax_backward_rows(grad, y, out, nthreads=1):
    d = np.sum(grad * y, axis=1)
    out[...] = y * (grad - d[:, None])


def log_softmax_backward_rows(grad, y, mask, out, nthreads=1):
    if mask is None:
        s = np.sum(grad, axis=1)
        out[...] = grad - np.exp(y) * s[:, None]
    else:
        g = np.where(mask, grad, 0)
        s = np.sum(g, axis=1)
        with np.errstate(invalid="ignore"):
            r = g - np.exp(np.where(mask, y, -np.inf)) * s[:, None]
        out[...] = np.where(mask, r, 0)


def check_targets(target, k, ignore_index):
    bad = ((target < 0) | (target >= k)) & (target != ignore_index)
    idx = np.flatnonzero(bad)
    return int(idx[0]) if idx.size else -1


def _lse_and_p(x):
    z, m = _shifted(x, None)
    logs, _ = _log_sum(z)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        e = np.exp(z)
        s = np.sum(e, axis=1)
        lse = np.where(np.isneginf(m), m, m + logs)
        p = e / s[:, None]
    # neg_z: (m - x) >= 0, the stable form of lse - x = (m - x) + log(s)
    return lse, logs, p, m


def cross_entropy_index_rows(x, target, weight, ignore_index, label_smoothing,
                             z_loss, a, b, g, row_scale, loss, grad, nthreads=1):
    n, k = x.shape
    dt = x.dtype.type
    valid = target != ignore_index
    t = np.where(valid, target, 0)
    w = np.ones(k, dtype=x.dtype) if weight is None else weight
    lse, logs, p, m = _lse_and_p(x)
    eps = dt(label_smoothing)
    rows = np.arange(n)
    w_t = w[t]
    with np.errstate(invalid="ignore", over="ignore"):
        # lse - x_c computed as (m - x_c) + log(s): no cancellation for large |x|.
        d = (m[:, None] - x) + logs[:, None]
        d_t = d[rows, t]
        ce = (1 - eps) * w_t * d_t
        if label_smoothing != 0:
            # the smoothing term in float64 (at least): m - x_c overflows
            # float32 for logits near -+finfo.max where the term is finite
            d2 = (m.astype(np.float64)[:, None] - x) + logs.astype(np.float64)[:, None]
            ce = ce + (np.float64(eps) / k * np.sum(w * d2, axis=1)).astype(dt)
        if loss is not None:
            val = dt(a) * ce
            if z_loss != 0:
                val = val + dt(b) * dt(z_loss) * lse * lse
            loss[...] = np.where(valid, val, 0)
        if grad is not None:
            gr = (1 - eps) * w_t[:, None] * p
            gr[rows, t] -= (1 - eps) * w_t
            if label_smoothing != 0:
                gr += (eps / k) * (np.sum(w) * p - w)
            gr *= dt(a)
            if z_loss != 0:
                gr += dt(b) * 2 * dt(z_loss) * lse[:, None] * p
            r = dt(g) if row_scale is None else dt(g) * row_scale[:, None]
            gr *= r
            gr[~valid] = 0
            grad[...] = gr


def cross_entropy_prob_rows(x, target, weight, label_smoothing, z_loss, a, b, g,
                            row_scale, loss, grad, nthreads=1):
    n, k = x.shape
    dt = x.dtype.type
    eps = dt(label_smoothing)
    q = target * (1 - eps) + eps / k if label_smoothing != 0 else target
    wq = q if weight is None else q * weight
    lse, logs, p, m = _lse_and_p(x)
    with np.errstate(invalid="ignore", over="ignore"):
        if loss is not None:
            # in float64 (at least), as in cross_entropy_index_rows
            d = (m.astype(np.float64)[:, None] - x) + logs.astype(np.float64)[:, None]
            val = (np.float64(a) * np.sum(wq * d, axis=1)).astype(dt)
            if z_loss != 0:
                val = val + dt(b) * dt(z_loss) * lse * lse
            loss[...] = val
        if grad is not None:
            gr = p * np.sum(wq, axis=1)[:, None] - wq
            gr *= dt(a)
            if z_loss != 0:
                gr += dt(b) * 2 * dt(z_loss) * lse[:, None] * p
            r = dt(g) if row_scale is None else dt(g) * row_scale[:, None]
            gr *= r
            grad[...] = gr


# ----------------------------------------------------------------------------
# transforms of the logits (see the module docstring)
# ----------------------------------------------------------------------------

def transform(x, scale, softcap, out):
    """``z = softcap * tanh(x * scale / softcap)`` into ``out`` (x's shape, the compute
    dtype; ``x`` may be ``out``): ``x * scale`` first (IEEE: ``0 * inf`` is NaN),
    then the cap, which maps ``+-inf`` to ``+-softcap``.  ``scale``/``softcap`` None:
    that step is left out.  Each operation rounds in ``out``'s dtype, as torch
    composing ``x * scale``, ``/ softcap``, ``tanh``, ``* softcap`` would."""
    with np.errstate(invalid="ignore", over="ignore"):
        if scale is not None:
            np.multiply(x, scale, out=out, dtype=out.dtype)
        elif x is not out:
            np.copyto(out, x, casting="same_kind")
        if softcap is not None:
            np.divide(out, softcap, out=out)
            np.tanh(out, out=out)
            np.multiply(out, softcap, out=out)
    return out


def transform_grad(x, scale, softcap, out):
    """``dz/dx`` of ``transform`` into ``out``: ``scale`` without softcap (a Python
    float is returned then, ``out`` untouched), else ``scale / cosh(u)**2`` with
    ``u = x * scale / softcap`` (``1 - tanh(u)**2`` cancels for large |u|; cosh
    overflowing gives the right 0).  Where ``u`` is NaN (NaN logits, or ``0 * inf``)
    ``dz/dx`` is 0: such an entry is either masked, where the gradient must be 0,
    or in a NaN row, whose gradient w.r.t. ``z`` is NaN already (and NaN * 0 is NaN)."""
    s = 1.0 if scale is None else scale
    if softcap is None:
        return s
    with np.errstate(invalid="ignore", over="ignore"):
        np.multiply(x, s, out=out, dtype=out.dtype)
        np.divide(out, softcap, out=out)
        np.cosh(out, out=out)
        np.square(out, out=out)
        np.divide(s, out, out=out)
    out[np.isnan(out)] = 0
    return out


def bias_mask(bias, where, out):
    """The entries that take part into ``out`` (bool): ``bias != -inf`` (a ``-inf``
    bias masks an entry exactly as ``where=False``) and ``where``; either may be
    None (not both)."""
    if bias is None:
        np.copyto(out, where)
        return out
    np.not_equal(bias, -np.inf, out=out)
    if where is not None:
        np.logical_and(out, where, out=out)
    return out


from .table import RowKernels  # noqa: E402  (beside its one use)

#: The table the API calls (``fastact._backends.table``).
KERNELS = RowKernels.of(NAME, softmax_rows, log_softmax_rows, logsumexp_rows, softmax_backward_rows,
                        log_softmax_backward_rows, cross_entropy_index_rows,
                        cross_entropy_prob_rows, check_targets)
