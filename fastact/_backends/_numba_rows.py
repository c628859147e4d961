"""Row pieces of the Numba row kernels: functions over one row (a 1-D
C-contiguous view) and over a transposed tile of short rows, inlined into the
kernels of ``_numba_softmax``, ``_numba_backward`` and ``_numba_xent``.  How
they are fast: ``numba_kernels``' docstring.
"""

from __future__ import annotations

import math

import numpy as np

from ._numba_intrinsics import _maximum, _nt_scale, _nt_sub_sub, _row, _store_fence
from ._numba_math import _expn, _finite, _inline, _jit, _log_sum, _sub_sub, _to

#: Elements summed in the working dtype before the block sum goes to float64.
_BLOCK = 512
#: Rows shorter than this take the transposed-tile path.
_TILE_K = 40
#: log_softmax rows longer than this compute max and sum in one pass over
#: memory, chunk by chunk (online softmax); shorter rows are in L1 anyway and
#: the plain passes win.
_ONLINE = 4096
#: Elements per chunk of those rows (float32 512x32000: 512 and 1024 4.2 ms,
#: 2048 4.8 ms, 4096 5.4 ms, 8192 7.1 ms; 64x128256 about the same).
_CHUNK = 1024


#: Paths of a row kernel, chosen in Python (``numba_kernels``) and compiled one
#: by one: rows one at a time (the masked rows and, for softmax, the long ones),
#: transposed tiles (short rows), unmasked rows pipelined (up to ``_ONLINE``),
#: log_softmax's long rows in one pass (online).
ROWS, TILES, PIPED, ONLINE = 0, 1, 2, 3


@_inline
def _same(a, b):
    """``a`` and ``b`` start at the same address (``out is x``, in place).

    In place, the row functions get the same view (of ``out``, so that a
    read-only input types as such) twice so that LLVM sees one pointer: with
    two it checks for overlap at run time, finds it and runs the scalar loop.
    """
    return a.ctypes.data == b.ctypes.data


# ----------------------------------------------------------------------------
# row pieces (1-D C-contiguous views of one row)
# ----------------------------------------------------------------------------

@_inline
def _max_with(xr, mr, m):
    """max(m, max of the selected entries); NaN if one is NaN."""
    if mr is None:
        for j in range(xr.shape[0]):
            m = _maximum(m, xr[j])
    else:
        ninf = _to(xr, -np.inf)
        for j in range(xr.shape[0]):
            v = xr[j] if mr[j] else ninf
            m = _maximum(m, v)
    return m


@_inline
def _row_max(xr, mr):
    """Max over the selected entries; NaN if one is NaN; -inf if none."""
    return _max_with(xr, mr, _to(xr, -np.inf))


@_jit
def _fill_special(mr, out_r, fill):
    """A row whose max is not finite: NaN where selected, ``fill`` elsewhere."""
    nan = _to(out_r, np.nan)
    if mr is None:
        for j in range(out_r.shape[0]):
            out_r[j] = nan
    else:
        f = _to(out_r, fill)
        for j in range(out_r.shape[0]):
            out_r[j] = nan if mr[j] else f


@_inline
def _exp_sum(xr, mr, m):
    """(sum exp(x - m), the same over x < m only) over the selected entries,
    in float64 (the second for ``_log_sum``)."""
    k = xr.shape[0]
    s = 0.0
    r = 0.0
    zero = _to(xr, 0.0)
    for b0 in range(0, k, _BLOCK):
        xb = xr[b0:b0 + _BLOCK]
        sb = _to(xr, 0.0)
        rb = _to(xr, 0.0)
        if mr is None:
            for j in range(xb.shape[0]):
                d = xb[j] - m
                e = _expn(d)
                sb += e
                rb += e if d < 0 else zero
        else:
            mb = mr[b0:b0 + _BLOCK]
            for j in range(xb.shape[0]):
                d = xb[j] - m
                e = _expn(d)
                e = e if mb[j] else zero
                sb += e
                rb += e if d < 0 else zero
        s += sb
        r += rb
    return s, r


@_inline
def _exp_store_sum(xr, mr, m, out_r):
    """out_r = exp(x - m) (0 where not selected); returns the sum in float64."""
    k = xr.shape[0]
    s = 0.0
    for b0 in range(0, k, _BLOCK):
        xb = xr[b0:b0 + _BLOCK]
        ob = out_r[b0:b0 + _BLOCK]
        nb = xb.shape[0]
        sb = _to(xr, 0.0)
        if mr is None:
            for j in range(nb):
                e = _expn(xb[j] - m)
                ob[j] = e
                sb += e
        else:
            mb = mr[b0:b0 + _BLOCK]
            zero = _to(xr, 0.0)
            for j in range(nb):
                e = _expn(xb[j] - m)
                e = e if mb[j] else zero
                ob[j] = e
                sb += e
        s += sb
    return s


# Unmasked rows whose max is not finite (NaN, +inf, or all -inf) must come
# out NaN.  Their row functions get there through the arithmetic (a NaN scale
# or shift), not through an early exit or a call to _fill_special: in a loop
# over rows either one keeps Numba from pruning the reference counting of the
# row views, and each such atomic op also drains the pending non-temporal
# stores (float32 8192x512 log_softmax: 5.2x the time of a copy against 2.0x).

@_inline
def _nan_unless(fin, v):
    return v if fin else _to(v, np.nan)


@_inline
def _softmax_row(xr, mr, out_r):
    m = _row_max(xr, mr)
    if mr is not None and not _finite(m):
        _fill_special(mr, out_r, 0.0)
        return
    s = _exp_store_sum(xr, mr, m, out_r)
    inv = _nan_unless(_finite(m), _to(xr, 1.0 / s))
    for j in range(out_r.shape[0]):
        out_r[j] *= inv


@_inline
def _log_write(xr, mr, m, ls, out_r):
    """out_r = (x - m) - ls where selected, -inf elsewhere (out_r may be xr)."""
    k = xr.shape[0]
    ninf = _to(xr, -np.inf)
    for b0 in range(0, k, _BLOCK):
        xb = xr[b0:b0 + _BLOCK]
        ob = out_r[b0:b0 + _BLOCK]
        nb = xb.shape[0]
        if mr is None:
            for j in range(nb):
                ob[j] = _sub_sub(xb[j], m, ls)
        else:
            mb = mr[b0:b0 + _BLOCK]
            for j in range(nb):
                v = _sub_sub(xb[j], m, ls)
                ob[j] = v if mb[j] else ninf


@_inline
def _softmax_row_nt(xr, out_r, tmp):
    """Softmax of an unmasked row streamed to memory: the exps go to ``tmp``
    (a scratch row), then ``tmp / sum`` to ``out_r`` with non-temporal
    stores, so that ``out_r`` is written once and never read."""
    m = _row_max(xr, None)
    t = tmp[:xr.shape[0]]
    inv = _nan_unless(_finite(m), _to(xr, 1.0 / _exp_store_sum(xr, None, m, t)))
    _nt_scale(t, out_r, inv, inv)


@_inline
def _log_finish_unmasked(xr, m, s, r, out_r, nt):
    """``_log_finish`` without a mask (its own function: the pipelined rows
    inline this alone)."""
    fin = _finite(m)
    ls = _to(xr, _log_sum(s, r)) if fin else _to(xr, 0.0)
    if nt:
        _nt_sub_sub(xr, out_r, _nan_unless(fin, m), ls)
    else:
        _log_write(xr, None, _nan_unless(fin, m), ls, out_r)


@_inline
def _log_finish(xr, mr, m, s, r, out_r, nt):
    """out_r = x - m - log(s) (``_log_sum(s, r)``), or the special row if
    ``m`` is not finite; ``nt``: streamed to memory (no mask)."""
    if mr is None:
        _log_finish_unmasked(xr, m, s, r, out_r, nt)
    elif not _finite(m):
        _fill_special(mr, out_r, -np.inf)
    else:
        _log_write(xr, mr, m, _to(xr, _log_sum(s, r)), out_r)


@_inline
def _log_softmax_row(xr, mr, out_r):
    m = _row_max(xr, mr)
    s, r = _exp_sum(xr, mr, m) if _finite(m) else (0.0, 0.0)
    _log_finish(xr, mr, m, s, r, out_r, False)


# Unmasked rows, pipelined: one loop computes row i's exps (from L1, where the
# previous loop brought it) and row i + 1's max (from memory), so the loads
# of the next row overlap this row's arithmetic (float32 1 thread, 4096x1000
# log_softmax: 1.62x the time of a copy against 1.97x for max, then exps).

@_inline
def _exp_sum_next_max(xr, m, xn, orow):
    """(float64 sum of exp(xr - m), stored into ``orow`` unless it is None;
    the same over xr < m only (0 when stored: softmax needs no log); max of
    ``xn``, a row as long as ``xr``), in one pass of blocks."""
    k = xr.shape[0]
    s = 0.0
    r = 0.0
    mx = _to(xr, -np.inf)
    for b0 in range(0, k, _BLOCK):
        b1 = min(b0 + _BLOCK, k)
        sb, rb, mx = _online_exp_sum_max(xr[b0:b1], None, m, xn[b0:b1], None, mx,
                                         _sl(orow, b0, b1))
        s += sb
        r += rb
    return s, r, mx


@_inline
def _softmax_rows_piped(src, out, r0, r1, tmp, nt):
    """``nt``: the exps go to ``tmp``, then ``tmp / sum`` is streamed to out."""
    m = _row_max(_row(src, r0), None)
    for i in range(r0, r1):
        xr = _row(src, i)
        orow = _row(out, i)
        xn = _row(src, min(i + 1, r1 - 1))
        if nt:
            t = tmp[:xr.shape[0]]
            s, _, mn = _exp_sum_next_max(xr, m, xn, t)
            inv = _nan_unless(_finite(m), _to(xr, 1.0 / s))
            _nt_scale(t, orow, inv, inv)
        else:
            s, _, mn = _exp_sum_next_max(xr, m, xn, orow)
            inv = _nan_unless(_finite(m), _to(xr, 1.0 / s))
            for j in range(orow.shape[0]):
                orow[j] *= inv
        m = mn
    if nt:
        _store_fence()


@_inline
def _log_softmax_rows_piped(src, out, r0, r1, nt):
    m = _row_max(_row(src, r0), None)
    for i in range(r0, r1):
        xr = _row(src, i)
        s, r, mn = _exp_sum_next_max(xr, m, _row(src, min(i + 1, r1 - 1)), None)
        _log_finish_unmasked(xr, m, s, r, _row(out, i), nt)
        m = mn
    if nt:
        _store_fence()


# long log_softmax rows (k > _ONLINE): max and sum in one pass

@_inline
def _sl(a, lo, hi):
    return None if a is None else a[lo:hi]


@_inline
def _online_exp_sum_max(xc, mc, m, xn, mn, mx, oc=None):
    """(sum exp(xc - m) over the selected entries of xc in the working dtype,
    the same over xc < m only (for ``_log_sum``), max(mx, selected entries of
    xn)); xn is no longer than xc.  One loop does all, so the next chunk
    streams in from memory while this one's exps are computed.  ``oc`` (no
    mask; softmax, which takes no log): the exps are also stored there, and
    the second sum is 0."""
    n2 = xn.shape[0]
    sb = _to(xc, 0.0)
    rb = _to(xc, 0.0)
    zero = _to(xc, 0.0)
    if mc is None and oc is not None:
        for j in range(n2):
            e = _expn(xc[j] - m)
            oc[j] = e
            sb += e
            mx = _maximum(mx, xn[j])
        for j in range(n2, xc.shape[0]):
            e = _expn(xc[j] - m)
            oc[j] = e
            sb += e
    elif mc is None:
        for j in range(n2):
            d = xc[j] - m
            e = _expn(d)
            sb += e
            rb += e if d < 0 else zero
            mx = _maximum(mx, xn[j])
        for j in range(n2, xc.shape[0]):
            d = xc[j] - m
            e = _expn(d)
            sb += e
            rb += e if d < 0 else zero
    else:
        ninf = _to(xc, -np.inf)
        for j in range(n2):
            d = xc[j] - m
            e = _expn(d)
            e = e if mc[j] else zero
            sb += e
            rb += e if d < 0 else zero
            v = xn[j] if mn[j] else ninf
            mx = _maximum(mx, v)
        for j in range(n2, xc.shape[0]):
            d = xc[j] - m
            e = _expn(d)
            e = e if mc[j] else zero
            sb += e
            rb += e if d < 0 else zero
    return sb, rb, mx


@_inline
def _online_max_sum(xr, mr):
    """(max, sum exp(x - max), the same over x < max only) of the selected
    entries in one pass over memory.

    Chunks of ``_CHUNK`` elements: chunk c's exp-sum (from L1, with the
    running max) runs in the same loop as chunk c+1's max (from memory); the
    float64 running sums are rescaled when the max grows.  The second sum
    (for ``_log_sum``) takes the terms below the running max: when the max
    grows every earlier term, the old max's included, falls below it, so it
    restarts as the whole rescaled sum.  A NaN or +inf max is returned at
    once (the caller fills the row).
    """
    k = xr.shape[0]
    ninf = _to(xr, -np.inf)
    m = ninf
    s = 0.0
    r = 0.0
    mx = _max_with(xr[0:_CHUNK], _sl(mr, 0, _CHUNK), ninf)
    for c0 in range(0, k, _CHUNK):
        c1 = min(c0 + _CHUNK, k)
        mb = _maximum(m, mx)          # mx: this chunk's max
        if not _finite(mb) and mb != -np.inf:
            return mb, s, r
        if mb > m:
            if s != 0.0:
                s = s * math.exp(np.float64(m) - np.float64(mb))
            r = s
            m = mb
        mx = ninf
        n1 = min(c1 + _CHUNK, k)      # next chunk [c1, n1)
        for b0 in range(c0, c1, _BLOCK):
            b1 = min(b0 + _BLOCK, c1)
            q0 = min(c1 + (b0 - c0), n1)   # the part of the next chunk paired with this block
            q1 = min(c1 + (b1 - c0), n1)
            if m == -np.inf:          # nothing but -inf so far: no exps
                mx = _max_with(xr[q0:q1], _sl(mr, q0, q1), mx)
            else:
                sb, rb, mx = _online_exp_sum_max(xr[b0:b1], _sl(mr, b0, b1), m,
                                                 xr[q0:q1], _sl(mr, q0, q1), mx)
                s += sb
                r += rb
    return m, s, r


@_inline
def _log_softmax_row_online(xr, mr, out_r, nt):
    """``nt``: the result (no mask) is streamed to memory (non-temporal stores)."""
    m, s, r = _online_max_sum(xr, mr)
    _log_finish(xr, mr, m, s, r, out_r, nt)


# ----------------------------------------------------------------------------
# short rows: transposed tiles
# ----------------------------------------------------------------------------

def _tile_rows(k):
    """Rows per tile for rows of length ``k``; 0: the row path.

    About 4096 elements, a multiple of 16.  Computed in Python and passed in:
    when LLVM can see how T derives from k the tile loops run 45% slower.
    """
    if k >= _TILE_K:
        return 0
    return min(256, max(16, (4096 // k) // 16 * 16))


@_inline
def _tile_load_max(xf, mf, base, k, tw, T, buf, mrow):
    """buf[j*T + r] = x[r, j] (-inf where not selected); mrow[r] = row max.

    The max here is the plain one: a NaN is caught later by the sum.
    """
    ninf = _to(xf, -np.inf)
    for r in range(tw):
        xr = xf[base + r * k:base + r * k + k]
        m = ninf
        if mf is None:
            for j in range(k):
                v = xr[j]
                buf[j * T + r] = v
                m = v if v > m else m
        else:
            mr = mf[base + r * k:base + r * k + k]
            for j in range(k):
                v = xr[j] if mr[j] else ninf
                buf[j * T + r] = v
                m = v if v > m else m
        mrow[r] = m


@_inline
def _tile_exp_sum(buf, mrow, srow, rrow, k, tw, T, store):
    """srow[r] = sum_j exp(buf[j, r] - mrow[r]); with ``store`` the exps replace buf.
    ``rrow`` (None for softmax): the same over buf[j, r] < mrow[r] only, for
    ``_log_sum``.  Returns the sum of all the tile's exps, NaN if one is (a
    register sum: LLVM then runs several vectors an iteration, 15% faster on
    the strided kernels' long tiles; unused, it is dropped)."""
    zero = _to(buf, 0.0)
    tot = _to(buf, 0.0)
    for r in range(tw):
        srow[r] = 0
        if rrow is not None:
            rrow[r] = 0
    for j in range(k):
        bj = buf[j * T:j * T + T]
        if store:
            for r in range(tw):
                d = bj[r] - mrow[r]
                e = _expn(d)
                bj[r] = e
                srow[r] += e
                tot += e
                if rrow is not None:
                    rrow[r] += e if d < 0 else zero
        else:
            for r in range(tw):
                d = bj[r] - mrow[r]
                e = _expn(d)
                srow[r] += e
                tot += e
                if rrow is not None:
                    rrow[r] += e if d < 0 else zero
    return tot


@_inline
def _tile_any_special(mrow, srow, tw):
    """Any row of the tile special? One vectorised pass, so the common case
    writes back without a test per row."""
    n = 0
    for r in range(tw):
        n += not (_finite(mrow[r]) and srow[r] == srow[r])
    return n > 0


@_inline
def _tile_is_special(m, s):
    # not finite max (NaN, +-inf: nothing or all -inf selected), or a NaN the plain max missed
    return not (_finite(m) and s == s)




@_inline
def _tile_scratch(x, T):
    """The tile path's scratch: (buf, the tile column-major; per-row max; per-row
    sum; indices of special rows)."""
    return (np.empty(x.shape[1] * T, x.dtype), np.empty(T, x.dtype), np.empty(T, x.dtype),
            np.empty(T, np.int64))


@_inline
def _tile_load_sums(xf, mask, base, k, tw, T, buf, mrow, srow, rrow, store):
    """``_tile_load_max`` (``mask``: 2-D or None) then ``_tile_exp_sum``."""
    if mask is None:
        _tile_load_max(xf, None, base, k, tw, T, buf, mrow)
    else:
        _tile_load_max(xf, mask.reshape(-1), base, k, tw, T, buf, mrow)
    _tile_exp_sum(buf, mrow, srow, rrow, k, tw, T, store)
