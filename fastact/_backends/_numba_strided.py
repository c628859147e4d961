"""Numba kernels over the middle axis of a C-contiguous ``(outer, k, inner)``
array, reduced where it lies, without moving it last (issue 18): softmax,
log_softmax, logsumexp and the backwards.  Cross entropy: ``_numba_strided_xent``.

The elements of a reduced column lie ``inner`` apart, but each of its ``k``
rows is a run of contiguous inner positions: the layout of the tile path's
transposed tiles (``_numba_rows``: ``buf[j*T + r]`` is element ``j`` of row
``r``), columns in place of rows.  So nothing is transposed: a work item is
one outer index and a tile of ``W`` inner positions; the ``k x W`` block is
copied row by row (``W`` contiguous elements) into a per-thread scratch, the
column max on the way (``_col_load_max``), the tile path's numerics run on it
vectorised across the ``W`` columns (``_tile_exp_sum``, ``_log_sum``), and
the results go back row by row.  ``W`` (chosen by ``numba_kernels``, like the
tile path's ``T``) keeps the scratch within ~2 MB: the block is read from
memory once and written once, and the scratch does not grow with the array.
Long columns (a block too narrow) take a chunked path instead: max and sums
in one pass over chunks of rows, then a pass that writes the result.

Numerics are the row kernels': sums over at most ``_COL_BLOCK`` rows in the
working dtype, added in float64; logs by ``_log_sum`` (accurate near 0).
Columns whose max is not finite or whose sum is NaN (NaN, +-inf, nothing
selected) are gathered and computed by the row functions themselves, as the
tile path does with its special rows; their results are written after the
block's (in place, ``out`` is ``x``, the block's write would overwrite them).

The kernels are templates like the row kernels' (``numba_kernels._Kernels``
compiles a copy per constant on first use): ``kernel(..., W, p0, p1)`` runs
work items ``[p0, p1)``, item ``p`` being outer index ``p // ntiles`` and
inner positions from ``(p % ntiles) * W``.
"""

from __future__ import annotations

import numpy as np

from ._numba_intrinsics import _maximum, _nt_scale, _nt_sub_sub, _store_fence
from ._numba_math import _exp, _expn, _finite, _inline, _log_sum, _sub_sub, _to
from ._numba_rows import _log_softmax_row, _same, _sl, _softmax_row, _tile_exp_sum
from ._numba_softmax import _lse_range

#: Rows of a chunk of the long columns' path (the columns too long for a
#: block of a cache line of positions in the scratch).
_CHUNK_ROWS = 64
#: Rows of a block summed in the working dtype before the column sums go to
#: float64: each column's block sum is sequential (the vectorisation runs
#: across columns), so the block is kept near the tile path's rows (< 40).
_COL_BLOCK = 32


# ----------------------------------------------------------------------------
# column pieces
# ----------------------------------------------------------------------------

@_inline
def _tile_at(p, inner, W):
    """(outer index, first inner position, width) of work item ``p``."""
    ntiles = (inner + W - 1) // W
    o = p // ntiles
    i0 = (p - o * ntiles) * W
    return o, i0, min(W, inner - i0)


@_inline
def _col_copy(src, s0, ls, dst, d0, ld, k):
    """dst[d0 + j*ld] = src[s0 + j*ls], j < k: one column in or out."""
    for j in range(k):
        dst[d0 + j * ld] = src[s0 + j * ls]


@_inline
def _col_rows(src, base, inner, dst):
    """Column ``base`` of ``src`` (flat; elements ``inner`` apart) as the one
    row of ``dst`` (1, k), for the row functions."""
    k = dst.shape[1]
    for j in range(k):
        dst[0, j] = src[base + j * inner]
    return dst


@_inline
def _col_load_max(xf, mf, base, inner, k, tw, W, buf, mrow, m2):
    """buf[j*W + r] = x[j, r] of the k x tw block at ``xf[base:]`` (rows
    ``inner`` apart), -inf where not selected; mrow[r] = the column max
    (``_maximum``: NaN if one is).  The running max goes back and forth
    between the halves of ``m2`` (2 W): read and written in place, LLVM
    makes the update a masked store (it skips the lanes whose max is NaN),
    which AMD runs as slowly as scalar code."""
    ninf = _to(xf, -np.inf)
    for r in range(tw):
        m2[r] = ninf
    for j in range(k):
        xs = xf[base + j * inner:base + j * inner + tw]
        bj = buf[j * W:j * W + tw]
        ma = m2[(j & 1) * W:(j & 1) * W + tw]
        mb = m2[W - (j & 1) * W:W - (j & 1) * W + tw]
        if mf is None:
            for r in range(tw):
                v = xs[r]
                bj[r] = v
                mb[r] = _maximum(ma[r], v)
        else:
            ms = mf[base + j * inner:base + j * inner + tw]
            for r in range(tw):
                v = xs[r] if ms[r] else ninf
                bj[r] = v
                mb[r] = _maximum(ma[r], v)
    h = (k & 1) * W
    for r in range(tw):
        mrow[r] = m2[h + r]


@_inline
def _col_exp_sum(buf, mrow, s, rs, sb, rb, k, tw, W, store):
    """s[r] = sum_j exp(buf[j, r] - mrow[r]) in float64 (``_tile_exp_sum`` over
    blocks of ``_COL_BLOCK`` rows, ``sb``/``rb`` its working-dtype sums); ``rs``
    (None: not wanted) the same over buf < mrow only, for ``_log_sum``;
    ``store``: the exps replace buf.  Returns the sum of all the exps: NaN
    when a column is special (its max NaN or +-inf: some x - max is NaN), a
    number otherwise (every x - max in [-inf, 0])."""
    tot = 0.0
    for r in range(tw):
        s[r] = 0.0
        if rs is not None:
            rs[r] = 0.0
    for j0 in range(0, k, _COL_BLOCK):
        j1 = min(j0 + _COL_BLOCK, k)
        if rs is None:
            tot += _tile_exp_sum(buf[j0 * W:j1 * W], mrow, sb, None, j1 - j0, tw, W, store)
        else:
            tot += _tile_exp_sum(buf[j0 * W:j1 * W], mrow, sb, rb, j1 - j0, tw, W, store)
        for r in range(tw):
            s[r] += sb[r]
            if rs is not None:
                rs[r] += rb[r]
    return tot


@_inline
def _col_specials(mrow, s, tw, spec):
    """Indices of the columns whose max is not finite or whose sum is NaN into
    ``spec``; returns how many (``_tile_is_special`` of each column)."""
    n = 0
    for r in range(tw):
        if not (_finite(mrow[r]) and s[r] == s[r]):
            spec[n] = r
            n += 1
    return n


@_inline
def _flat(a):
    return None if a is None else a.reshape(-1)


# ----------------------------------------------------------------------------
# long columns: chunks of rows
# ----------------------------------------------------------------------------

@_inline
def _col_online_max_sum(xf, mf, base, inner, k, tw, W, sc):
    """(max, sum exp(x - max), the same over x < max only) of the columns of
    the k x tw block at ``xf[base:]`` (``mf``: its mask or None), into ``sc``'s
    M, s, rs, in one pass over memory, as ``_online_max_sum`` along a row:
    ``_CHUNK_ROWS`` rows at a time are copied into ``buf`` with their column
    max, the running sums are rescaled where the max grows (the earlier
    terms, the old max's included, then all lie below it), and the chunk's
    exps are summed from ``buf``.  ``me``, the max the exps are taken from, is
    0 while a column has seen nothing but -inf: its terms are 0, not NaN."""
    buf, m2, cmax, M, me, s, rs, cs, crs, sb, rb = sc
    ninf = _to(xf, -np.inf)
    zero = _to(xf, 0.0)
    for r in range(tw):
        M[r] = ninf
        s[r] = 0.0
        rs[r] = 0.0
    for j0 in range(0, k, _CHUNK_ROWS):
        j1 = min(j0 + _CHUNK_ROWS, k)
        _col_load_max(xf, mf, base + j0 * inner, inner, j1 - j0, tw, W, buf, cmax, m2)
        for r in range(tw):
            mo = M[r]
            mn = _maximum(mo, cmax[r])
            sv = s[r] * _exp(np.float64(mo) - np.float64(mn))
            grow = mn > mo
            s[r] = sv if grow else s[r]
            rs[r] = sv if grow else rs[r]
            M[r] = mn
            me[r] = mn if mn > ninf else zero
        _col_exp_sum(buf, me, cs, crs, sb, rb, j1 - j0, tw, W, False)
        for r in range(tw):
            s[r] += cs[r]
            rs[r] += crs[r]


@_inline
def _chunk_scratch(x, W):
    """The scratch of ``_col_online_max_sum``."""
    f, d = x.dtype, np.float64
    return (np.empty(_CHUNK_ROWS * W, f), np.empty(2 * W, f), np.empty(W, f), np.empty(W, f),
            np.empty(W, f), np.empty(W, d), np.empty(W, d), np.empty(W, d), np.empty(W, d),
            np.empty(W, f), np.empty(W, f))


@_inline
def _softmax_cols_write(xf, mf, of, base, inner, k, tw, mw, res, tmp, log, nt):
    """The chunked path's last pass over the k x tw block at ``base``:
    exp(x - mw) * res (``log`` 0) or (x - mw) - res, 0 or -inf where not
    selected; ``nt`` (no mask): non-temporal stores (the exps through
    ``tmp``)."""
    ninf = _to(xf, -np.inf)
    zero = _to(xf, 0.0)
    for j in range(k):
        xs = xf[base + j * inner:base + j * inner + tw]
        os = of[base + j * inner:base + j * inner + tw]
        if nt:
            if log:
                _nt_sub_sub(xs, os, mw[:tw], res[:tw])
            else:
                for r in range(tw):
                    tmp[r] = _expn(xs[r] - mw[r])
                _nt_scale(tmp[:tw], os, res[:tw], res[:tw])
        elif mf is None:
            if log:
                for r in range(tw):
                    os[r] = _sub_sub(xs[r], mw[r], res[r])
            else:
                for r in range(tw):
                    os[r] = _expn(xs[r] - mw[r]) * res[r]
        else:
            ms = mf[base + j * inner:base + j * inner + tw]
            if log:
                for r in range(tw):
                    v = _sub_sub(xs[r], mw[r], res[r])
                    os[r] = v if ms[r] else ninf
            else:
                for r in range(tw):
                    e = _expn(xs[r] - mw[r]) * res[r]
                    os[r] = e if ms[r] else zero
    if nt:
        _store_fence()


# ----------------------------------------------------------------------------
# softmax, log_softmax
# ----------------------------------------------------------------------------

#: The constants of a kernel (``_numba_math._specialise``): log_softmax (1) or
#: softmax (0) (a backward of log_softmax (1) or of softmax (0)); the chunked
#: path of long columns (else a block at a time); the result written with
#: non-temporal stores (large outputs, no mask); in place (``out`` is ``x``,
#: read and written through ``out``'s view: the chunked path only).  The
#: branches on them are in the templates, where Numba prunes them (passed to
#: an inlined function, they are not, and both sides compile).
LOG, CHUNKED, NT, SAME = 0, 0, 0, 0


def softmax_strided_kernel(x, mask, out, W, p0, p1):
    """Softmax (LOG 0) or log_softmax (LOG 1) over axis 1 of the
    (outer, k, inner) ``x`` (``mask`` alike or None) into ``out``, work
    items [p0, p1) -> 0; 1, doing nothing, when the chunked kernel of SAME 0
    finds ``out`` is ``x`` (as ``_numba_softmax``).

    A block at a time (read once, written once), or for long columns
    (CHUNKED) max and sums by ``_col_online_max_sum``, then one pass that
    reads x again and writes exp(x - max) / sum or (x - max) - log(sum) (0 or
    -inf where not selected), as the row kernels' long rows.  On that path a
    column whose max is not finite takes NaN as its max, which gives the row
    functions' result: NaN where selected, 0 or -inf elsewhere."""
    if CHUNKED and not SAME:
        if _same(x, out):
            return 1
    k, inner = x.shape[1], x.shape[2]
    xf = out.reshape(-1) if SAME else x.reshape(-1)
    of = out.reshape(-1)
    mf = _flat(mask)
    res = np.empty(W, x.dtype)
    if CHUNKED:
        sc = _chunk_scratch(x, W)
        mrow, s, rs = sc[3], sc[5], sc[6]
        mw, tmp = np.empty(W, x.dtype), np.empty(W if NT else 0, x.dtype)
    else:
        buf = np.empty(k * W, x.dtype)
        mrow, sb, rb = np.empty(W, x.dtype), np.empty(W, x.dtype), np.empty(W, x.dtype)
        s, rs = np.empty(W, np.float64), np.empty(W, np.float64)
        spec = np.empty(W, np.int64)
        m2 = np.empty(2 * W, x.dtype)
        xc, oc = np.empty(k, x.dtype), np.empty(k, x.dtype)
        mc = np.empty(k, np.bool_)
    for p in range(p0, p1):
        o, i0, tw = _tile_at(p, inner, W)
        base = o * k * inner + i0
        if CHUNKED:
            _col_online_max_sum(xf, mf, base, inner, k, tw, W, sc)
        else:
            _col_load_max(xf, mf, base, inner, k, tw, W, buf, mrow, m2)
            tot = _col_exp_sum(buf, mrow, s, rs if LOG else None, sb, rb, k, tw, W, not LOG)
        for r in range(tw):
            if LOG:
                res[r] = _to(x, _log_sum(s[r], rs[r]))
            else:
                res[r] = _to(x, 1.0 / s[r])
        if CHUNKED:
            for r in range(tw):
                mw[r] = mrow[r] if _finite(mrow[r]) else _to(x, np.nan)
            _softmax_cols_write(xf, mf, of, base, inner, k, tw, mw, res, tmp, LOG, NT)
            continue
        # rare columns (inf, NaN, nothing selected) by the row functions, before
        # the block's write overwrites x (in place); their results wait in buf
        nspec = 0 if tot == tot else _col_specials(mrow, s, tw, spec)
        for q in range(nspec):
            r = spec[q]
            _col_copy(xf, base + r, inner, xc, 0, 1, k)
            if mask is None:
                if LOG:
                    _log_softmax_row(xc, None, oc)
                else:
                    _softmax_row(xc, None, oc)
            else:
                _col_copy(mf, base + r, inner, mc, 0, 1, k)
                if LOG:
                    _log_softmax_row(xc, mc, oc)
                else:
                    _softmax_row(xc, mc, oc)
            _col_copy(oc, 0, 1, buf, r, W, k)
        for j in range(k):
            bj = buf[j * W:j * W + tw]
            os = of[base + j * inner:base + j * inner + tw]
            if NT:
                if LOG:
                    _nt_sub_sub(bj, os, mrow[:tw], res[:tw])
                else:
                    _nt_scale(bj, os, res[:tw], res[:tw])
            elif LOG:     # (x - max) - log(sum); -inf where not selected (buf's -inf)
                for r in range(tw):
                    os[r] = _sub_sub(bj[r], mrow[r], res[r])
            else:
                for r in range(tw):
                    os[r] = bj[r] * res[r]
        if NT:
            _store_fence()      # before the special columns' ordinary stores
        for q in range(nspec):
            _col_copy(buf, spec[q], W, of, base + spec[q], inner, k)
    return 0


# ----------------------------------------------------------------------------
# logsumexp
# ----------------------------------------------------------------------------

def lse_strided_kernel(x, b, mask, out, sign, W, p0, p1):
    """logsumexp over axis 1 of the (outer, k, inner) ``x`` (``b``, ``mask``
    alike or None) into the flat (outer * inner) ``out`` (and ``sign``), work
    items [p0, p1) -> 0 (CHUNKED: long columns).  With ``b`` every column goes
    to the row function (the row kernels also take their row path for it)."""
    k, inner = x.shape[1], x.shape[2]
    xf = x.reshape(-1)
    mf = _flat(mask)
    xr1 = np.empty((1, k), x.dtype)
    br1 = np.empty((1, k), x.dtype)
    mr1 = np.empty((1, k), np.bool_)
    if b is not None:
        bf = b.reshape(-1)
        for p in range(p0, p1):
            o, i0, tw = _tile_at(p, inner, W)
            base = o * k * inner + i0
            for r in range(tw):
                q = o * inner + i0 + r
                if mask is None:
                    _lse_range(_col_rows(xf, base + r, inner, xr1),
                               _col_rows(bf, base + r, inner, br1), None,
                               out[q:q + 1], _sl(sign, q, q + 1), 0, 1)
                else:
                    _lse_range(_col_rows(xf, base + r, inner, xr1),
                               _col_rows(bf, base + r, inner, br1),
                               _col_rows(mf, base + r, inner, mr1),
                               out[q:q + 1], _sl(sign, q, q + 1), 0, 1)
        return 0
    sc = _chunk_scratch(x, W if CHUNKED else 1)
    if CHUNKED:
        mrow, s, rs = sc[3], sc[5], sc[6]
    else:
        buf = np.empty(k * W, x.dtype)
        mrow, sb, rb = np.empty(W, x.dtype), np.empty(W, x.dtype), np.empty(W, x.dtype)
        s, rs = np.empty(W, np.float64), np.empty(W, np.float64)
        m2 = np.empty(2 * W, x.dtype)
    spec = np.empty(W, np.int64)
    for p in range(p0, p1):
        o, i0, tw = _tile_at(p, inner, W)
        base = o * k * inner + i0
        q0 = o * inner + i0
        if CHUNKED:
            _col_online_max_sum(xf, mf, base, inner, k, tw, W, sc)
            nspec = _col_specials(mrow, s, tw, spec)
        else:
            _col_load_max(xf, mf, base, inner, k, tw, W, buf, mrow, m2)
            tot = _col_exp_sum(buf, mrow, s, rs, sb, rb, k, tw, W, False)
            nspec = 0 if tot == tot else _col_specials(mrow, s, tw, spec)
        ob = out[q0:q0 + tw]
        for r in range(tw):
            ob[r] = _log_sum(s[r], rs[r]) + mrow[r]
        if sign is not None:
            sg = sign[q0:q0 + tw]
            for r in range(tw):
                sg[r] = 1.0
        for q in range(nspec):
            r = spec[q]
            i = q0 + r
            if mask is None:
                _lse_range(_col_rows(xf, base + r, inner, xr1), None, None, out[i:i + 1],
                           _sl(sign, i, i + 1), 0, 1)
            else:
                _lse_range(_col_rows(xf, base + r, inner, xr1), None,
                           _col_rows(mf, base + r, inner, mr1), out[i:i + 1],
                           _sl(sign, i, i + 1), 0, 1)
    return 0


# ----------------------------------------------------------------------------
# backwards
# ----------------------------------------------------------------------------

def backward_strided_kernel(grad, y, mask, out, W, p0, p1):
    """The backward of softmax (LOG 0: ``y * (grad - sum(grad * y))``, no mask)
    or log_softmax (LOG 1: ``grad - exp(y) * sum(grad)`` where selected, 0
    elsewhere) over axis 1 of (outer, k, inner) arrays, work items [p0, p1)
    -> 0, in the order of operations of ``_numba_backward``.  ``out`` may be
    ``grad`` or ``y``: both are copied into the scratch first."""
    k, inner = grad.shape[1], grad.shape[2]
    gf, yf, of = grad.reshape(-1), y.reshape(-1), out.reshape(-1)
    mf = _flat(mask)
    gbuf, ybuf = np.empty(k * W, grad.dtype), np.empty(k * W, grad.dtype)
    sb, df = np.empty(W, grad.dtype), np.empty(W, grad.dtype)
    d = np.empty(W, np.float64)
    zero = _to(grad, 0.0)
    for p in range(p0, p1):
        o, i0, tw = _tile_at(p, inner, W)
        base = o * k * inner + i0
        for r in range(tw):
            d[r] = 0.0
        for j0 in range(0, k, _COL_BLOCK):
            for r in range(tw):
                sb[r] = 0.0
            for j in range(j0, min(j0 + _COL_BLOCK, k)):
                gs = gf[base + j * inner:base + j * inner + tw]
                ys = yf[base + j * inner:base + j * inner + tw]
                gb = gbuf[j * W:j * W + tw]
                yb = ybuf[j * W:j * W + tw]
                if not LOG:
                    for r in range(tw):
                        gb[r] = gs[r]
                        yb[r] = ys[r]
                        sb[r] += gb[r] * yb[r]
                elif mask is None:
                    for r in range(tw):
                        gb[r] = gs[r]
                        yb[r] = ys[r]
                        sb[r] += gb[r]
                else:
                    ms = mf[base + j * inner:base + j * inner + tw]
                    for r in range(tw):
                        gb[r] = gs[r]
                        yb[r] = ys[r]
                        sb[r] += gb[r] if ms[r] else zero
            for r in range(tw):
                d[r] += sb[r]
        for r in range(tw):
            df[r] = _to(grad, d[r])
        for j in range(k):
            gb = gbuf[j * W:j * W + tw]
            yb = ybuf[j * W:j * W + tw]
            os = of[base + j * inner:base + j * inner + tw]
            if not LOG:
                for r in range(tw):
                    os[r] = yb[r] * (gb[r] - df[r])
            elif mask is None:
                for r in range(tw):
                    os[r] = gb[r] - _exp(yb[r]) * df[r]
            else:
                ms = mf[base + j * inner:base + j * inner + tw]
                for r in range(tw):
                    v = gb[r] - _exp(yb[r]) * df[r]
                    os[r] = v if ms[r] else zero
    return 0
