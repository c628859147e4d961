"""Numba kernels of the softmax and log_softmax backwards (a sum per row and
one more pass; no exp in softmax's)."""

from __future__ import annotations

from ._numba_intrinsics import _row
from ._numba_math import _exp, _inline, _to
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


#: The constants of a kernel (set by ``_numba_math._specialise``): log_softmax's
#: (1) or softmax's (0, no mask) backward; in place: 1 if ``out`` is ``grad``, 2
#: if it is ``y`` (read and written through ``out``'s view).
LOG, SAME = 0, 0


def backward_kernel(grad, y, mask, out, r0, r1):
    """The backward of rows [r0, r1) -> 0; a kernel of SAME 0 that finds ``out``
    is ``grad`` or ``y`` returns 1 or 2, having done nothing (see
    ``_numba_softmax``)."""
    if SAME == 0:
        if _same(grad, out):
            return 1
        if _same(y, out):
            return 2
    for i in range(r0, r1):
        gr = _row(grad, i)
        yr = _row(y, i)
        orow = _row(out, i)
        if not LOG:
            _softmax_backward_row(orow if SAME == 1 else gr, orow if SAME == 2 else yr, orow)
        elif mask is None:
            _log_softmax_backward_row(orow if SAME == 1 else gr, orow if SAME == 2 else yr, None,
                                      orow)
        else:
            _log_softmax_backward_row(orow if SAME == 1 else gr, orow if SAME == 2 else yr,
                                      _row(mask, i), orow)
    return 0
