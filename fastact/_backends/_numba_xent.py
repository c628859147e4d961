"""Numba kernels of softmax cross entropy: integer targets (rows and, for short
rows, transposed tiles) and probability targets.

Conventions of the kernels here: an output or option array that is not wanted
is None (``row_scale``, ``loss``, ``grad``; Numba compiles the variant without
it), and the scalar options travel as one tuple ``sc = (wsum, eps, z_loss, a,
b, g)`` (``wsum``: the sum of the class weights, ``eps``: label smoothing, the
loss ``a * ce + b * z_loss * lse**2``, ``g``: the gradient's scale; a float64
array on the parallel path, where Numba's parfors take no tuple in a tuple).
"""

from __future__ import annotations

import numpy as np

from ._numba_intrinsics import _row
from ._numba_math import _expn, _finite, _inline, _jit, _jit_poly, _log_sum, _sub_add, _to
from ._numba_rows import (_BLOCK, ROWS, TILES, _row_max, _same, _tile_exp_sum, _tile_is_special,
                          _tile_load_max, _tile_scratch)

@_jit
def _check_targets(target, k, ignore_index):
    for i in range(target.shape[0]):
        t = target[i]
        if (t < 0 or t >= k) and t != ignore_index:
            return i
    return -1


@_inline
def _ce_exp_pass(xr, wr, m, out_r, store, smooth):
    """exp(x - m) -> out_r (if ``store``); returns (sum exp, the same over
    x < m only (for ``_log_sum``), sum_c w_c (m - x_c)) in float64.

    Each x is read before its slot is written: out_r may be xr.  The last
    sum is taken in float64: m - x_c overflows float32 near -+finfo.max.
    """
    k = xr.shape[0]
    s = 0.0
    r = 0.0
    a = 0.0
    zero = _to(xr, 0.0)
    for b0 in range(0, k, _BLOCK):
        xb = xr[b0:b0 + _BLOCK]
        nb = xb.shape[0]
        sb = _to(xr, 0.0)
        rb = _to(xr, 0.0)
        ab = 0.0
        if store:
            ob = out_r[b0:b0 + _BLOCK]
            if smooth:
                wb = wr[b0:b0 + _BLOCK]
                for j in range(nb):
                    xj = xb[j]
                    d = xj - m
                    e = _expn(d)
                    ab += np.float64(wb[j]) * (np.float64(m) - np.float64(xj))
                    ob[j] = e
                    sb += e
                    rb += e if d < 0 else zero
            else:
                for j in range(nb):
                    d = xb[j] - m
                    e = _expn(d)
                    ob[j] = e
                    sb += e
                    rb += e if d < 0 else zero
        else:
            for j in range(nb):
                d = xb[j] - m
                e = _expn(d)
                sb += e
                rb += e if d < 0 else zero
            if smooth:
                wb = wr[b0:b0 + _BLOCK]
                for j in range(nb):
                    ab += np.float64(wb[j]) * (np.float64(m) - np.float64(xb[j]))
        s += sb
        r += rb
        a += ab
    return s, r, a


@_jit_poly
def _ce_index_loss(m, x_t, w_t, logs, sw, wsum, eps, k, z_loss, a, b):
    """One row's loss, in the compute dtype and in the reference's order of
    operations (so that it overflows where the reference does)."""
    ls = _to(m, logs)
    ce = (_to(m, 1.0) - _to(m, eps)) * w_t * _sub_add(m, x_t, ls)
    if eps != 0.0:
        ce = ce + _to(m, (eps / k) * (sw + wsum * logs))
    val = _to(m, a) * ce
    if z_loss != 0.0:
        lse = m + ls
        val = val + _to(m, b) * _to(m, z_loss) * lse * lse
    return val



@_inline
def _ce_fill(loss, grad, i, v):
    """Row ``i`` without terms: loss ``v`` and every gradient entry ``v`` (0 for
    an ignored target, NaN for a row whose max is not finite)."""
    if loss is not None:
        loss[i] = v
    if grad is not None:
        gr = _row(grad, i)
        fv = _to(gr, v)
        for j in range(gr.shape[0]):
            gr[j] = fv


@_inline
def _ce_index_coefs(x, i, w_t, s, lse, row_scale, sc):
    """Row ``i``'s gradient ``e_j cp - w_j cw`` (``cw`` with smoothing only),
    less ``ct`` at the target: (cp, cw, ct) in x's dtype, ``s`` the exp-sum
    and ``e_j`` the exps."""
    wsum, eps, z_loss, a, b, g = sc[0], sc[1], sc[2], sc[3], sc[4], sc[5]
    k = x.shape[1]
    r = g * (1.0 if row_scale is None else row_scale[i])
    c1 = a * ((1.0 - eps) * w_t + (eps / k) * wsum)
    if z_loss != 0.0:
        c1 += 2.0 * b * z_loss * lse
    return _to(x, r * c1 / s), _to(x, r * a * eps / k), _to(x, r * a * (1.0 - eps) * w_t)


@_inline
def _ce_index_tiles(x, target, w, ignore_index, sc, row_scale, loss, grad, r0, r1, T):
    """Index cross entropy for short rows: transposed tiles (see _softmax_tiles)."""
    wsum, eps, z_loss, a, b, g = sc[0], sc[1], sc[2], sc[3], sc[4], sc[5]
    k = x.shape[1]
    xf = x.reshape(-1)
    buf, mrow, srow, _ = _tile_scratch(x, T)
    rrow = np.empty(T, x.dtype)
    lrow = np.empty(T, np.float64)
    arow = np.empty(T, np.float64)
    smooth = eps != 0.0
    for i0 in range(r0, r1, T):
        tw = min(T, r1 - i0)
        base = i0 * k
        _tile_load_max(xf, None, base, k, tw, T, buf, mrow)
        # sum_c w_c (m - x_c), before buf turns into exps
        if smooth:
            for r in range(tw):
                arow[r] = 0.0
            for j in range(k):
                bj = buf[j * T:j * T + T]
                wj = w[j]
                for r in range(tw):
                    arow[r] += np.float64(wj) * (np.float64(mrow[r]) - np.float64(bj[r]))
        _tile_exp_sum(buf, mrow, srow, rrow, k, tw, T, grad is not None)
        for r in range(tw):
            lrow[r] = _log_sum(np.float64(srow[r]), np.float64(rrow[r]))
        for r in range(tw):
            i = i0 + r
            t = target[i]
            m = mrow[r]
            s = srow[r]
            if t == ignore_index:
                _ce_fill(loss, grad, i, 0.0)
                continue
            if _tile_is_special(m, s):     # the row path would find a max not finite
                _ce_fill(loss, grad, i, np.nan)
                continue
            logs = lrow[r]
            if loss is not None:
                loss[i] = _ce_index_loss(m, xf[base + r * k + t], w[t], logs, arow[r], wsum,
                                         eps, k, z_loss, a, b)
            if grad is not None:
                cp, cw, ct = _ce_index_coefs(x, i, np.float64(w[t]), s, np.float64(m) + logs,
                                             row_scale, sc)
                gb = _row(grad, i)
                if smooth:
                    for j in range(k):
                        gb[j] = buf[j * T + r] * cp - w[j] * cw
                else:
                    for j in range(k):
                        gb[j] = buf[j * T + r] * cp
                gb[t] -= ct


#: The constants of a kernel (set by ``_numba_math._specialise``): the path
#: (index targets: TILES or ROWS), in place (``grad`` is ``x``).
PATH, SAME = ROWS, 0


def ce_index_kernel(x, target, w, ignore_index, sc, row_scale, loss, grad, T, r0, r1):
    """Index cross entropy of rows [r0, r1) -> 0; 1, doing nothing, if ``grad``
    is ``x`` and not SAME (see ``_numba_softmax``)."""
    if PATH == TILES:
        _ce_index_tiles(x, target, w, ignore_index, sc, row_scale, loss, grad, r0, r1, T)
        return 0
    if not SAME:
        if grad is not None:
            if _same(x, grad):
                return 1
    wsum, eps, z_loss, a, b, g = sc[0], sc[1], sc[2], sc[3], sc[4], sc[5]
    k = x.shape[1]
    smooth = eps != 0.0
    for i in range(r0, r1):
        t = target[i]
        xr = _row(x, i)
        if t == ignore_index:
            _ce_fill(loss, grad, i, 0.0)
            continue
        m = _row_max(xr, None)
        if not _finite(m):
            _ce_fill(loss, grad, i, np.nan)
            continue
        x_t = xr[t]   # before the exp pass: grad may be x
        if grad is None:
            s, sr, sw = _ce_exp_pass(xr, w, m, xr, False, smooth)
        else:       # in place through grad's view: x may be read-only only when it is not grad
            gi = _row(grad, i)
            s, sr, sw = _ce_exp_pass(gi if SAME else xr, w, m, gi, True, smooth)
        logs = _log_sum(s, sr)
        if loss is not None:
            loss[i] = _ce_index_loss(m, x_t, w[t], logs, sw, wsum, eps, k, z_loss, a, b)
        if grad is not None:
            cp, cw, ct = _ce_index_coefs(x, i, np.float64(w[t]), s, np.float64(m) + logs,
                                         row_scale, sc)
            gr = _row(grad, i)
            if smooth:
                for j in range(k):
                    gr[j] = gr[j] * cp - w[j] * cw
            else:
                for j in range(k):
                    gr[j] = gr[j] * cp
            gr[t] -= ct
    return 0


@_inline
def _ce_prob_pass(xr, tr, w, m, out_r, store, one_m_eps, eps_k):
    """exp(x - m) -> out_r (if ``store``, x read first); returns float64
    (sum exp, the same over x < m only (for ``_log_sum``), sum_c wq_c,
    sum_c wq_c (m - x_c)), wq = (t (1-eps) + eps/k) w."""
    k = xr.shape[0]
    s = 0.0
    sr = 0.0
    sq = 0.0
    sa = 0.0
    zero = _to(xr, 0.0)
    for b0 in range(0, k, _BLOCK):
        xb = xr[b0:b0 + _BLOCK]
        tb = tr[b0:b0 + _BLOCK]
        wb = w[b0:b0 + _BLOCK]
        ob = out_r[b0:b0 + _BLOCK]
        nb = xb.shape[0]
        sb = _to(xr, 0.0)
        rb = _to(xr, 0.0)
        qb = _to(xr, 0.0)
        ab = 0.0
        for j in range(nb):
            xj = xb[j]
            d = xj - m
            e = _expn(d)
            if store:
                ob[j] = e
            sb += e
            rb += e if d < 0 else zero
            wq = (tb[j] * one_m_eps + eps_k) * wb[j]
            qb += wq
            ab += np.float64(wq) * (np.float64(m) - np.float64(xj))   # float64: see _ce_exp_pass
        s += sb
        sr += rb
        sq += qb
        sa += ab
    return s, sr, sq, sa


def ce_prob_kernel(x, target, w, sc, row_scale, loss, grad, r0, r1):
    """Probability-target cross entropy of rows [r0, r1) -> 0 (or 1: as
    ``ce_index_kernel``)."""
    if not SAME:
        if grad is not None:
            if _same(x, grad):
                return 1
    eps, z_loss, a, b, g = sc[1], sc[2], sc[3], sc[4], sc[5]
    k = x.shape[1]
    one_m_eps = _to(x, 1.0 - eps)
    eps_k = _to(x, eps / k)
    for i in range(r0, r1):
        xr = _row(x, i)
        tr = _row(target, i)
        m = _row_max(xr, None)
        if not _finite(m):
            _ce_fill(loss, grad, i, np.nan)
            continue
        if grad is None:
            s, sr, sq, sa = _ce_prob_pass(xr, tr, w, m, xr, False, one_m_eps, eps_k)
        else:
            gi = _row(grad, i)
            s, sr, sq, sa = _ce_prob_pass(gi if SAME else xr, tr, w, m, gi, True, one_m_eps,
                                          eps_k)
        logs = _log_sum(s, sr)
        lse = np.float64(m) + logs
        if loss is not None:
            val = a * (sa + logs * sq)
            if z_loss != 0.0:
                val += b * z_loss * lse * lse
            loss[i] = val
        if grad is not None:
            rs = g * (1.0 if row_scale is None else row_scale[i])
            c1 = a * sq
            if z_loss != 0.0:
                c1 += 2.0 * b * z_loss * lse
            cp = _to(x, rs * c1 / s)
            cw = _to(x, rs * a)
            gr = _row(grad, i)
            for j in range(k):
                wq = (tr[j] * one_m_eps + eps_k) * w[j]
                gr[j] = gr[j] * cp - wq * cw
    return 0
