"""Numba kernels of the softmax and log_softmax backwards (a sum per row and
one more pass; no exp in softmax's), serial and parallel over blocks of rows."""

from __future__ import annotations

from numba import prange

from ._numba_intrinsics import _row
from ._numba_math import _exp, _inline, _jit, _jit_par, _to
from ._numba_rows import _BLOCK, _same


@_inline
def _softmax_backward_row(gr, yr, orow):
    k = gr.shape[0]
    d = 0.0
    for b0 in range(0, k, _BLOCK):
        gb = gr[b0:b0 + _BLOCK]
        yb = yr[b0:b0 + _BLOCK]
        sb = _to(gr, 0.0)
        for j in range(gb.shape[0]):
            sb += gb[j] * yb[j]
        d += sb
    df = _to(gr, d)
    for j in range(k):
        orow[j] = yr[j] * (gr[j] - df)


@_jit
def _softmax_backward_range(grad, y, out, r0, r1):
    same_g = _same(grad, out)
    same_y = _same(y, out)
    for i in range(r0, r1):
        gr = _row(grad, i)
        yr = _row(y, i)
        orow = _row(out, i)
        if same_g:
            _softmax_backward_row(orow, yr, orow)
        elif same_y:
            _softmax_backward_row(gr, orow, orow)
        else:
            _softmax_backward_row(gr, yr, orow)


@_jit
def _softmax_backward_serial(grad, y, out):
    _softmax_backward_range(grad, y, out, 0, grad.shape[0])


@_jit_par
def _softmax_backward_parallel(grad, y, out, nchunks):
    n = grad.shape[0]
    for c in prange(nchunks):
        _softmax_backward_range(grad, y, out, c * n // nchunks, (c + 1) * n // nchunks)


@_inline
def _log_softmax_backward_row(gr, yr, mr, orow):
    k = gr.shape[0]
    zero = _to(gr, 0.0)
    s = 0.0
    for b0 in range(0, k, _BLOCK):
        gb = gr[b0:b0 + _BLOCK]
        sb = _to(gr, 0.0)
        if mr is None:
            for j in range(gb.shape[0]):
                sb += gb[j]
        else:
            mb = mr[b0:b0 + _BLOCK]
            for j in range(gb.shape[0]):
                sb += gb[j] if mb[j] else zero
        s += sb
    sf = _to(gr, s)
    if mr is None:
        for j in range(k):
            orow[j] = gr[j] - _exp(yr[j]) * sf
    else:
        for j in range(k):
            v = gr[j] - _exp(yr[j]) * sf
            orow[j] = v if mr[j] else zero


@_jit
def _log_softmax_backward_range(grad, y, mask, out, r0, r1):
    same_g = _same(grad, out)
    same_y = _same(y, out)
    for i in range(r0, r1):
        gr = _row(grad, i)
        yr = _row(y, i)
        orow = _row(out, i)
        if mask is None:
            if same_g:
                _log_softmax_backward_row(orow, yr, None, orow)
            elif same_y:
                _log_softmax_backward_row(gr, orow, None, orow)
            else:
                _log_softmax_backward_row(gr, yr, None, orow)
        else:
            mr = _row(mask, i)
            if same_g:
                _log_softmax_backward_row(orow, yr, mr, orow)
            elif same_y:
                _log_softmax_backward_row(gr, orow, mr, orow)
            else:
                _log_softmax_backward_row(gr, yr, mr, orow)


@_jit
def _log_softmax_backward_serial(grad, y, mask, out):
    _log_softmax_backward_range(grad, y, mask, out, 0, grad.shape[0])


@_jit_par
def _log_softmax_backward_parallel(grad, y, mask, out, nchunks):
    n = grad.shape[0]
    for c in prange(nchunks):
        _log_softmax_backward_range(grad, y, mask, out, c * n // nchunks, (c + 1) * n // nchunks)
