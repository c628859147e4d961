"""Numba kernels of softmax, log_softmax and logsumexp: the tile kernels of
short rows, the row drivers (serial, and parallel over blocks of rows) and
logsumexp's rows.  Row pieces: ``_numba_rows``.
"""

from __future__ import annotations

import numpy as np

from ._numba_intrinsics import _maximum, _row, _store_fence
from ._numba_math import _exp, _inline, _jit, _log_sum, _sign, _sub_sub, _to
from ._numba_rows import (_BLOCK, ONLINE, PIPED, ROWS, TILES, _exp_sum, _log_softmax_row,
                          _log_softmax_row_online, _log_softmax_rows_piped, _row_max,
                          _same, _softmax_row, _softmax_row_nt, _softmax_rows_piped,
                          _tile_any_special, _tile_is_special, _tile_load_sums,
                          _tile_scratch)

# ----------------------------------------------------------------------------
# short rows: transposed tiles
# ----------------------------------------------------------------------------

@_inline
def _softmax_tiles(x, mask, out, r0, r1, T):
    k = x.shape[1]
    xf = x.reshape(-1)
    of = out.reshape(-1)
    buf, mrow, srow, spec = _tile_scratch(x, T)
    one = _to(x, 1.0)
    for i0 in range(r0, r1, T):
        tw = min(T, r1 - i0)
        base = i0 * k
        _tile_load_sums(xf, mask, base, k, tw, T, buf, mrow, srow, None, True)
        for r in range(tw):
            srow[r] = one / srow[r]
        nspec = 0
        if not _tile_any_special(mrow, srow, tw):
            for r in range(tw):
                inv = srow[r]
                ob = of[base + r * k:base + r * k + k]
                for j in range(k):
                    ob[j] = buf[j * T + r] * inv
        else:
            for r in range(tw):
                inv = srow[r]
                if _tile_is_special(mrow[r], inv):
                    spec[nspec] = i0 + r
                    nspec += 1
                    continue
                ob = of[base + r * k:base + r * k + k]
                for j in range(k):
                    ob[j] = buf[j * T + r] * inv
        # rare rows (inf, NaN, nothing selected) by the row path, outside the hot loop
        for q in range(nspec):
            i = spec[q]
            if mask is None:
                _softmax_row(_row(x, i), None, _row(out, i))
            else:
                _softmax_row(_row(x, i), _row(mask, i), _row(out, i))


@_inline
def _log_softmax_tiles(x, mask, out, r0, r1, T):
    k = x.shape[1]
    xf = x.reshape(-1)
    of = out.reshape(-1)
    buf, mrow, srow, spec = _tile_scratch(x, T)
    rrow = np.empty(T, x.dtype)
    for i0 in range(r0, r1, T):
        tw = min(T, r1 - i0)
        base = i0 * k
        _tile_load_sums(xf, mask, base, k, tw, T, buf, mrow, srow, rrow, False)
        for r in range(tw):
            # log of the sum, vectorised over the tile (kept in srow); specials: NaN
            srow[r] = _to(x, _log_sum(np.float64(srow[r]), np.float64(rrow[r])))
        nspec = 0
        if not _tile_any_special(mrow, srow, tw):
            for r in range(tw):
                m = mrow[r]
                ls = srow[r]
                ob = of[base + r * k:base + r * k + k]
                if mask is None:    # x itself, read along the row (out may be x)
                    xb = xf[base + r * k:base + r * k + k]
                    for j in range(k):
                        ob[j] = _sub_sub(xb[j], m, ls)
                else:
                    for j in range(k):
                        ob[j] = _sub_sub(buf[j * T + r], m, ls)
        else:
            for r in range(tw):
                m = mrow[r]
                ls = srow[r]
                if _tile_is_special(m, ls):
                    spec[nspec] = i0 + r
                    nspec += 1
                    continue
                ob = of[base + r * k:base + r * k + k]
                for j in range(k):
                    ob[j] = _sub_sub(buf[j * T + r], m, ls)
        for q in range(nspec):
            i = spec[q]
            if mask is None:
                _log_softmax_row(_row(x, i), None, _row(out, i))
            else:
                _log_softmax_row(_row(x, i), _row(mask, i), _row(out, i))


# ----------------------------------------------------------------------------
# softmax / log_softmax kernels
# ----------------------------------------------------------------------------

# The kernels below are templates: ``numba_kernels`` compiles a copy of one per
# value of the constants it reads (``_numba_math._specialise``; Numba prunes the
# branches of the other values), on its first call, each cached on disk apart.
#: The constants: log_softmax (1) or softmax (0), the path, streamed (no
#: mask), in place (``out`` is ``x``).
LOG, PATH, NT, SAME = 0, ROWS, 0, 0


def softmax_kernel(x, mask, out, T, r0, r1):
    """Softmax or log_softmax of rows [r0, r1) -> 0; 1, doing nothing, if
    ``out`` is ``x`` and not SAME (the caller runs the in-place kernel, which
    reads and writes through ``out``'s view: one pointer for LLVM).  The
    branches on the constants are here, in the template, where Numba prunes
    them before it inlines the row functions."""
    if PATH == TILES:
        if LOG:
            _log_softmax_tiles(x, mask, out, r0, r1, T)
        else:
            _softmax_tiles(x, mask, out, r0, r1, T)
        return 0
    if not SAME:
        if _same(x, out):
            return 1
    if PATH == PIPED:             # no mask, rows up to _ONLINE
        if r1 <= r0:
            return 0
        if LOG:
            _log_softmax_rows_piped(out if SAME else x, out, r0, r1, NT)
        else:
            tmp = np.empty(x.shape[1] if NT else 0, x.dtype)
            _softmax_rows_piped(out if SAME else x, out, r0, r1, tmp, NT)
    elif PATH == ONLINE:          # log_softmax, rows over _ONLINE
        for i in range(r0, r1):
            orow = _row(out, i)
            if mask is None:
                _log_softmax_row_online(orow if SAME else _row(x, i), None, orow, NT)
            else:
                _log_softmax_row_online(orow if SAME else _row(x, i), _row(mask, i), orow, NT)
        if NT:
            _store_fence()
    elif NT:                      # softmax, no mask, rows over _ONLINE
        tmp = np.empty(x.shape[1], x.dtype)
        for i in range(r0, r1):
            orow = _row(out, i)
            _softmax_row_nt(orow if SAME else _row(x, i), orow, tmp)
        _store_fence()
    elif mask is None:            # softmax, rows over _ONLINE
        for i in range(r0, r1):
            orow = _row(out, i)
            _softmax_row(orow if SAME else _row(x, i), None, orow)
    else:                         # masked rows (log_softmax's: up to _ONLINE)
        for i in range(r0, r1):
            orow = _row(out, i)
            if LOG:
                _log_softmax_row(orow if SAME else _row(x, i), _row(mask, i), orow)
            else:
                _softmax_row(orow if SAME else _row(x, i), _row(mask, i), orow)
    return 0


# ----------------------------------------------------------------------------
# logsumexp
# ----------------------------------------------------------------------------

@_inline
def _lse_row_max(xr, b, i, mr):
    """Max over the entries that take part: selected and (with b) b != 0."""
    if b is None:
        return _row_max(xr, mr)
    br = _row(b, i)
    m = _to(xr, -np.inf)
    ninf = _to(xr, -np.inf)
    if mr is None:
        for j in range(xr.shape[0]):
            v = xr[j] if br[j] != 0 else ninf
            m = _maximum(m, v)
    else:
        for j in range(xr.shape[0]):
            v = xr[j] if (mr[j] and br[j] != 0) else ninf
            m = _maximum(m, v)
    return m


@_jit
def _lse_row(xr, b, i, mr):
    """(log|sum|, sign) of one row, as numpy_ref.logsumexp_rows with sign wanted;
    ``b`` (2-D, row ``i`` taken) None: no b."""
    m = _lse_row_max(xr, b, i, mr)
    if m == -np.inf:
        return -np.inf, 0.0
    if m != m:
        return np.nan, np.nan
    if m == np.inf:
        if b is None:
            return np.inf, 1.0
        br = _row(b, i)
        w = 0.0
        for j in range(xr.shape[0]):
            if xr[j] == np.inf and (mr is None or mr[j]):
                w += br[j]
        # the +inf entries dominate: the sign is that of their total weight
        return (np.nan if w == 0 else np.inf), _sign(w)
    if b is None:
        s, r = _exp_sum(xr, mr, m)
        return _log_sum(s, r) + m, _sign(s)
    # as numpy_ref._log_sum: c = sum of b at the max, r = sum of b exp(x - m)
    # below it; log|c + r| = log|c| + log1p(r / c)
    br = _row(b, i)
    c = 0.0
    r = 0.0
    k = xr.shape[0]
    zero = _to(xr, 0.0)
    for b0 in range(0, k, _BLOCK):
        xb = xr[b0:b0 + _BLOCK]
        bb = br[b0:b0 + _BLOCK]
        cb = _to(xr, 0.0)
        rb = _to(xr, 0.0)
        if mr is None:
            for j in range(xb.shape[0]):
                bj = bb[j]
                d = xb[j] - m
                e = _exp(d) * bj
                cb += bj if d == 0 else zero
                rb += e if (bj != 0 and d < 0) else zero
        else:
            mb = mr[b0:b0 + _BLOCK]
            for j in range(xb.shape[0]):
                bj = bb[j]
                d = xb[j] - m
                e = _exp(d) * bj
                sel = mb[j] and bj != 0
                cb += bj if (sel and d == 0) else zero
                rb += e if (sel and d < 0) else zero
        c += cb
        r += rb
    if c == 0:                 # the weights at the max cancel: the sum is r alone
        return np.log(abs(r)) + m, _sign(r)
    t = r / c
    sg = _sign(c) * _sign(t + 1.0)
    t = -t - 2.0 if t < -1.0 else t
    return np.log(abs(c)) + _log_sum(1.0 + t, t) + m, sg


@_inline
def _lse_range(x, b, mask, out, sign, r0, r1):
    for i in range(r0, r1):
        if mask is None:
            r, sg = _lse_row(_row(x, i), b, i, None)
        else:
            r, sg = _lse_row(_row(x, i), b, i, _row(mask, i))
        if sign is not None:
            if r != r:
                sg = np.nan
            sign[i] = sg
        else:
            # without sign: a negative sum (or a +inf entry of negative weight) is NaN
            if sg < 0:
                r = np.nan
        out[i] = r


@_inline
def _lse_tiles(x, mask, out, r0, r1, T):
    """logsumexp of short rows without b: the tile path."""
    k = x.shape[1]
    xf = x.reshape(-1)
    buf, mrow, srow, spec = _tile_scratch(x, T)
    rrow = np.empty(T, x.dtype)
    lrow = np.empty(T, np.float64)
    for i0 in range(r0, r1, T):
        tw = min(T, r1 - i0)
        base = i0 * k
        _tile_load_sums(xf, mask, base, k, tw, T, buf, mrow, srow, rrow, False)
        for r in range(tw):
            lrow[r] = _log_sum(np.float64(srow[r]), np.float64(rrow[r])) + mrow[r]
        nspec = 0
        for r in range(tw):
            if _tile_is_special(mrow[r], srow[r]):
                spec[nspec] = i0 + r
                nspec += 1
            else:
                out[i0 + r] = lrow[r]
        for q in range(nspec):
            _lse_range(x, None, mask, out, None, spec[q], spec[q] + 1)


def lse_kernel(x, b, mask, out, sign, T, r0, r1):
    """logsumexp of rows [r0, r1) -> 0, PATH TILES (no b) or ROWS."""
    if PATH == TILES:
        if sign is not None:
            for i in range(r0, r1):
                sign[i] = 1.0
        _lse_tiles(x, mask, out, r0, r1, T)
        if sign is not None:
            for i in range(r0, r1):
                if out[i] == -np.inf:
                    sign[i] = 0.0
                elif out[i] != out[i]:
                    sign[i] = np.nan
    else:
        _lse_range(x, b, mask, out, sign, r0, r1)
    return 0
