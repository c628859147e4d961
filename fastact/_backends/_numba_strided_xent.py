"""Numba kernels of softmax cross entropy over the middle axis of C-contiguous
``(outer, k, inner)`` logits, the classes reduced where they lie (issue 18):
column blocks as ``_numba_strided`` (its docstring), the numerics of
``_numba_xent``'s tile path (``_ce_index_loss``, ``_ce_index_coefs``) and rows.

Per-row data (index targets, ``row_scale``, ``loss``) are flat
``(outer * inner)`` arrays; probability targets and ``grad`` are
``(outer, k, inner)`` like the logits.  ``grad`` may be the logits (in place):
a block's losses, and the logits they read at the targets, are taken before
its gradient is written.
"""

from __future__ import annotations

import numpy as np

from ._numba_math import _inline, _log_sum, _to
from ._numba_strided import _col_exp_sum, _col_load_max, _col_specials, _tile_at
from ._numba_xent import _ce_index_coefs, _ce_index_loss


@_inline
def _col_fill(gf, base, inner, k, v):
    """Column ``base`` of the flat gradient (elements ``inner`` apart) = v."""
    fv = _to(gf, v)
    for j in range(k):
        gf[base + j * inner] = fv


@_inline
def _col_grad(buf, gf, base, inner, k, tw, W, cp, cw, w, smooth, tf, one_m_eps, eps_k, kind):
    """The block's gradient ``e cp - wq cw`` (``e`` the exps in ``buf``), per
    column factors ``cp``, ``cw``: index targets (``tf`` None) wq = w_j, or
    nothing without smoothing; probability targets wq = (t (1-eps) + eps/k)
    w_j.  Then the columns of ``kind`` 1 (special) NaN, 2 (ignored) 0."""
    for j in range(k):
        bj = buf[j * W:j * W + tw]
        gs = gf[base + j * inner:base + j * inner + tw]
        wj = w[j]
        if tf is not None:
            ts = tf[base + j * inner:base + j * inner + tw]
            for r in range(tw):
                wq = (ts[r] * one_m_eps + eps_k) * wj
                gs[r] = bj[r] * cp[r] - wq * cw[r]
        elif smooth:
            for r in range(tw):
                gs[r] = bj[r] * cp[r] - wj * cw[r]
        else:
            for r in range(tw):
                gs[r] = bj[r] * cp[r]
    for r in range(tw):
        if kind[r]:
            _col_fill(gf, base + r, inner, k, 0.0 if kind[r] == 2 else np.nan)


@_inline
def _col_flag(flag, tw, spec, nspec):
    """flag[r] = 1 for the columns spec[:nspec] (special), 0 (ordinary) elsewhere."""
    for r in range(tw):
        flag[r] = 0
    for q in range(nspec):
        flag[spec[q]] = 1


def ce_index_strided_kernel(x, target, w, ignore_index, sc, row_scale, loss, grad, W, p0, p1):
    """Index cross entropy over axis 1 of the (outer, k, inner) logits, work
    items [p0, p1) -> 0 (``_numba_xent``'s conventions: ``sc``, None for an
    output not wanted)."""
    wsum, eps, z_loss, a, b = sc[0], sc[1], sc[2], sc[3], sc[4]
    k, inner = x.shape[1], x.shape[2]
    xf = x.reshape(-1)
    buf = np.empty(k * W, x.dtype)
    mrow, sb, rb = np.empty(W, x.dtype), np.empty(W, x.dtype), np.empty(W, x.dtype)
    cp, cw, ct = np.empty(W, x.dtype), np.empty(W, x.dtype), np.empty(W, x.dtype)
    s, rs, sw = np.empty(W, np.float64), np.empty(W, np.float64), np.empty(W, np.float64)
    spec = np.empty(W, np.int64)
    m2 = np.empty(2 * W, x.dtype)
    kind = np.empty(W, np.int64)   # 0: an ordinary column, 1: special (NaN), 2: ignored (0)
    smooth = eps != 0.0
    zero = _to(x, 0.0)
    for p in range(p0, p1):
        o, i0, tw = _tile_at(p, inner, W)
        base = o * k * inner + i0
        q0 = o * inner + i0
        _col_load_max(xf, None, base, inner, k, tw, W, buf, mrow, m2)
        if smooth:      # sum_c w_c (m - x_c), before buf turns into exps
            for r in range(tw):
                sw[r] = 0.0
            for j in range(k):
                bj = buf[j * W:j * W + tw]
                wj = np.float64(w[j])
                for r in range(tw):
                    sw[r] += wj * (np.float64(mrow[r]) - np.float64(bj[r]))
        tot = _col_exp_sum(buf, mrow, s, rs, sb, rb, k, tw, W, grad is not None)
        _col_flag(kind, tw, spec, 0 if tot == tot else _col_specials(mrow, s, tw, spec))
        for r in range(tw):
            i = q0 + r
            t = target[i]
            if t == ignore_index:   # before the special test, as the rows
                kind[r] = 2
            if kind[r]:
                if loss is not None:
                    loss[i] = 0.0 if kind[r] == 2 else np.nan
                continue
            logs = _log_sum(s[r], rs[r])
            m = mrow[r]
            if loss is not None:
                loss[i] = _ce_index_loss(m, xf[base + t * inner + r], w[t], logs, sw[r], wsum,
                                         eps, k, z_loss, a, b)
            if grad is not None:
                cp[r], cw[r], ct[r] = _ce_index_coefs(x, i, np.float64(w[t]), s[r],
                                                      np.float64(m) + logs, row_scale, sc)
        if grad is None:
            continue
        gf = grad.reshape(-1)
        _col_grad(buf, gf, base, inner, k, tw, W, cp, cw, w, smooth, None, zero, zero, kind)
        for r in range(tw):
            if not kind[r]:
                gf[base + target[q0 + r] * inner + r] -= ct[r]
    return 0


def ce_prob_strided_kernel(x, target, w, sc, row_scale, loss, grad, W, p0, p1):
    """Probability-target cross entropy over axis 1 of the (outer, k, inner)
    logits and targets, work items [p0, p1) -> 0 (as ``ce_prob_kernel``)."""
    eps, z_loss, a, b, g = sc[1], sc[2], sc[3], sc[4], sc[5]
    k, inner = x.shape[1], x.shape[2]
    xf, tf = x.reshape(-1), target.reshape(-1)
    one_m_eps = _to(x, 1.0 - eps)
    eps_k = _to(x, eps / k)
    buf = np.empty(k * W, x.dtype)
    mrow, sb, rb = np.empty(W, x.dtype), np.empty(W, x.dtype), np.empty(W, x.dtype)
    cp, cw = np.empty(W, x.dtype), np.empty(W, x.dtype)
    s, rs = np.empty(W, np.float64), np.empty(W, np.float64)
    sq, sa = np.empty(W, np.float64), np.empty(W, np.float64)
    spec = np.empty(W, np.int64)
    m2 = np.empty(2 * W, x.dtype)
    nanc = np.empty(W, np.int64)   # 1: a special column (NaN loss and gradient)
    for p in range(p0, p1):
        o, i0, tw = _tile_at(p, inner, W)
        base = o * k * inner + i0
        q0 = o * inner + i0
        _col_load_max(xf, None, base, inner, k, tw, W, buf, mrow, m2)
        # sum_c wq_c and sum_c wq_c (m - x_c), wq = (t (1-eps) + eps/k) w, in float64
        for r in range(tw):
            sq[r] = 0.0
            sa[r] = 0.0
        for j in range(k):
            bj = buf[j * W:j * W + tw]
            ts = tf[base + j * inner:base + j * inner + tw]
            wj = w[j]
            for r in range(tw):
                wq = (ts[r] * one_m_eps + eps_k) * wj
                sq[r] += wq
                sa[r] += np.float64(wq) * (np.float64(mrow[r]) - np.float64(bj[r]))
        tot = _col_exp_sum(buf, mrow, s, rs, sb, rb, k, tw, W, grad is not None)
        _col_flag(nanc, tw, spec, 0 if tot == tot else _col_specials(mrow, s, tw, spec))
        for r in range(tw):
            i = q0 + r
            if nanc[r]:
                if loss is not None:
                    loss[i] = np.nan
                continue
            logs = _log_sum(s[r], rs[r])
            lse = np.float64(mrow[r]) + logs
            if loss is not None:
                val = a * (sa[r] + logs * sq[r])
                if z_loss != 0.0:
                    val += b * z_loss * lse * lse
                loss[i] = val
            if grad is not None:
                rsc = g * (1.0 if row_scale is None else row_scale[i])
                c1 = a * sq[r]
                if z_loss != 0.0:
                    c1 += 2.0 * b * z_loss * lse
                cp[r] = _to(x, rsc * c1 / s[r])
                cw[r] = _to(x, rsc * a)
        if grad is None:
            continue
        _col_grad(buf, grad.reshape(-1), base, inner, k, tw, W, cp, cw, w, True, tf, one_m_eps,
                  eps_k, nanc)
    return 0
