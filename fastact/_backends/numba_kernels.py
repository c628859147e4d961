"""The Numba backend: the row kernels of ``numpy_ref`` compiled with Numba.

Same names, signatures and semantics as ``numpy_ref`` (its docstring is the
contract).  Importing this module defines the kernels but compiles nothing;
each variant (dtype, mask or not, serial or parallel) is compiled on first
use and cached on disk (``cache=True``), so a second process starts fast.

This module is the backend: the Python wrappers (threads, scratch, which
compiled kernel a call takes) over the kernels of

* ``_numba_intrinsics``: LLVM intrinsics and IR (max, rint, ldexp, row views,
  non-temporal stores);
* ``_numba_math``: exp, log and the other vector math (shared with
  ``numba_elementwise``), the jit decorators;
* ``_numba_rows``: row pieces and tile pieces;
* ``_numba_softmax`` (softmax, log_softmax, logsumexp), ``_numba_backward``,
  ``_numba_xent`` (cross entropy): the kernels.

How the kernels are fast:

* ``exp`` is our own polynomial (``_exp_f32``/``_exp_f64``) built from
  operations LLVM vectorises: round, Cody-Waite reduction, Horner, and
  ``2**n`` as two multiplies by powers of two made in the exponent field
  (``_ldexp``: exact, subnormals included, on every ISA); NumPy's
  ``np.exp`` in a Numba loop is a scalar libm call.  Where the argument is
  ``x - max`` (<= 0), float32 uses ``_exp_nonpos_f32``: one clamp, and the
  rounding by a magic-number add instead of ``rint``.
* Rows follow XNNPACK: a max pass, one fused pass that computes
  ``exp(x - max)``, stores it and sums it, then a scale pass.  Unmasked rows
  up to ``_ONLINE`` are pipelined: the fused pass of one row also takes the
  next row's max.  Sums are blocked: a vectorised float32 sum over at most
  ``_BLOCK`` elements, the blocks added in float64, so 1M-element rows do
  not drift.
* Row loops take rows by ``_row`` (views without reference counting: Numba
  does not always prune the atomic reference-count updates of ``x[i]``), and
  outputs of at least ``_NT_BYTES`` are written with non-temporal stores.
* The fused passes write through a small scratch block: LLVM checks at run
  time that input and output do not overlap before it runs the vector loop,
  and ``out is x`` (in place) would otherwise fall back to scalar code.
* Long log_softmax rows (``k > _ONLINE``) take two passes, not three: chunk
  by chunk (``_CHUNK`` elements, in L1) the exp-sum with the running max, in
  the same loop as the next chunk's max (so memory and arithmetic overlap);
  the float64 running sum is rescaled when the max grows.  Large results are
  then written with non-temporal stores (``_nt_map``, LLVM IR: the vectoriser
  does not emit them).
* Short rows (``k < _TILE_K``) are transposed tile by tile into a
  column-major scratch buffer so that the exp pass vectorises across rows.
* Threads: ``prange`` over blocks of rows, only when the work is large enough
  to pay for waking the thread pool.
* Every log of an exp-sum (logsumexp, log_softmax, cross entropy) is
  accurate near 0: the exp-sum loops also sum the terms below the max (a
  select in the same loop), and ``_log_sum`` takes log1p of that when one
  term is at the max (``logsumexp([0, -40])`` is 4.2e-18, not 0).

The max uses ``llvm.maximum`` (NaN-propagating and vectorisable as a
reduction), so a NaN anywhere in a row is seen; the plain ``a > b`` max
would lose it.  Fastmath is the explicit flag set without ``nnan``/``ninf``.
"""

from __future__ import annotations

import numba
import numpy as np

from ._numba_backward import (_log_softmax_backward_parallel, _log_softmax_backward_serial,
                              _softmax_backward_parallel, _softmax_backward_serial)
from ._numba_math import _exp_nonpos_f32  # noqa: F401  (tests call it)
from ._numba_rows import _BLOCK, _CHUNK, _ONLINE, _TILE_K, _tile_rows  # noqa: F401
from ._numba_softmax import (_log_softmax_parallel, _log_softmax_serial, _lse_parallel,
                             _lse_serial, _softmax_parallel, _softmax_serial)
from ._numba_xent import (_ce_index_parallel, _ce_index_serial, _ce_prob_parallel,
                          _ce_prob_serial, _check_targets)

NAME = "numba"

#: Below this many elements a call stays on the calling thread.
_PAR_MIN_ELEMS = 1 << 15
#: The same for the backwards (no exp: a few operations per element), measured
#: here (2-core AVX2 VM, float32): softmax_backward on 256x256 took 44 us on one
#: thread and 48 us on two.
_PAR_MIN_ELEMS_BWD = 1 << 17
#: Outputs of at least this many bytes (over a third of the L3 here; the C
#: backend's FA_STREAM_BYTES) that are written once go straight to memory
#: (non-temporal stores); a module global read at call time, so tests can
#: lower it.
_NT_BYTES = 12 << 20


# ----------------------------------------------------------------------------
# Python wrappers: the contract of numpy_ref
# ----------------------------------------------------------------------------

_MAX_THREADS = numba.config.NUMBA_NUM_THREADS
_ONES: dict = {}


def _threads(nthreads, x, min_elems=_PAR_MIN_ELEMS):
    """Threads worth using for ``x``: 1 for small work or a single row."""
    if not nthreads or nthreads <= 1 or x.size < min_elems or x.shape[0] < 2:
        return 1
    nt = min(int(nthreads), _MAX_THREADS, x.shape[0])
    numba.set_num_threads(nt)
    return nt


def _ones(k, dtype):
    key = (k, dtype)
    w = _ONES.get(key)
    if w is None:
        if len(_ONES) > 64:
            _ONES.clear()
        w = _ONES[key] = np.ones(k, dtype)
        w.flags.writeable = False
    return w


def _stream(mask, out, T):
    """Write the result with non-temporal stores: large outputs (in no cache
    anyway) of rows on the row path (not tiles), no mask."""
    return mask is None and T == 0 and out.nbytes >= _NT_BYTES


def softmax_rows(x, mask, out, nthreads=1):
    T = _tile_rows(x.shape[1])
    st = _stream(mask, out, T)
    nt = _threads(nthreads, x)
    if nt > 1:
        _softmax_parallel(x, mask, out, T, st, nt)
    else:
        _softmax_serial(x, mask, out, T, st)


def log_softmax_rows(x, mask, out, nthreads=1):
    T = _tile_rows(x.shape[1])
    st = _stream(mask, out, T)
    nt = _threads(nthreads, x)
    if nt > 1:
        _log_softmax_parallel(x, mask, out, T, st, nt)
    else:
        _log_softmax_serial(x, mask, out, T, st)


def logsumexp_rows(x, b, mask, out, sign, nthreads=1):
    T = _tile_rows(x.shape[1])
    nt = _threads(nthreads, x)
    if nt > 1:
        _lse_parallel(x, b, mask, out, sign, T, nt)
    else:
        _lse_serial(x, b, mask, out, sign, T)


def softmax_backward_rows(grad, y, out, nthreads=1):
    nt = _threads(nthreads, grad, _PAR_MIN_ELEMS_BWD)
    if nt > 1:
        _softmax_backward_parallel(grad, y, out, nt)
    else:
        _softmax_backward_serial(grad, y, out)


def log_softmax_backward_rows(grad, y, mask, out, nthreads=1):
    nt = _threads(nthreads, grad, _PAR_MIN_ELEMS_BWD)
    if nt > 1:
        _log_softmax_backward_parallel(grad, y, mask, out, nt)
    else:
        _log_softmax_backward_serial(grad, y, mask, out)


def check_targets(target, k, ignore_index):
    return int(_check_targets(target, k, ignore_index))


def cross_entropy_index_rows(x, target, weight, ignore_index, label_smoothing,
                             z_loss, a, b, g, row_scale, loss, grad, nthreads=1):
    n, k = x.shape
    if weight is None:
        w = _ones(k, x.dtype)
        wsum = float(k)
    else:
        w = weight
        wsum = float(np.sum(weight, dtype=np.float64)) if label_smoothing != 0 else 0.0
    args = (x, target, w, int(ignore_index),
            (wsum, float(label_smoothing), float(z_loss), float(a), float(b), float(g)),
            row_scale, loss, grad, _tile_rows(k))
    nt = _threads(nthreads, x)
    if nt > 1:
        _ce_index_parallel(*args, nt)
    else:
        _ce_index_serial(*args)


def cross_entropy_prob_rows(x, target, weight, label_smoothing, z_loss, a, b, g,
                            row_scale, loss, grad, nthreads=1):
    n, k = x.shape
    w = _ones(k, x.dtype) if weight is None else weight
    args = (x, target, w, (0.0, float(label_smoothing), float(z_loss), float(a), float(b),
                           float(g)),
            row_scale, loss, grad)
    nt = _threads(nthreads, x)
    if nt > 1:
        _ce_prob_parallel(*args, nt)
    else:
        _ce_prob_serial(*args)
