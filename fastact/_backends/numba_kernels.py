"""The Numba backend: the row kernels of ``numpy_ref`` compiled with Numba.

Same names, signatures and semantics as ``numpy_ref`` (its docstring is the
contract).  Importing this module defines the kernels but compiles nothing.
A call compiles only the kernel it runs: each kernel is a copy of a template
(``softmax_kernel`` ...) for one path (tiles, pipelined rows, rows, online
rows) and its flags (streamed, in place), made by ``_Kernels`` on first use and
compiled by Numba for the dtypes and optional arrays (None or not) it meets;
the parallel kernel, a ``prange`` over blocks of rows calling the serial one,
only when a call takes threads.  Each is cached on disk (``cache=True``), so
a second process loads it.

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

import threading

import numba
import numpy as np
from numba import prange

from ._numba_backward import backward_kernel
from ._numba_half import CONST, IN, OUT, ROW_OUT, SLICE, is_half
from ._numba_half import run as run_half
from ._numba_math import _exp_nonpos_f32  # noqa: F401  (tests call it)
from ._numba_math import _jit, _jit_par, _specialise
from ._numba_rows import (_BLOCK, _CHUNK, _ONLINE, _TILE_K, ONLINE, PIPED, ROWS,  # noqa: F401
                          TILES, _tile_rows)
from ._numba_softmax import lse_kernel, softmax_kernel
from ._numba_xent import _check_targets, ce_index_kernel, ce_prob_kernel

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


def _parallel(nchunks, *args):
    """Template of the parallel kernels: the serial kernel RANGE over blocks of
    rows, one block a thread (RANGE is called, not inlined: Numba's parfors
    would hoist the scratch allocations out of the loop, one for all threads)."""
    code = RANGE(*args, 0, 0)        # noqa: F821  (in place: RANGE's answer on no rows)
    if code:
        return code
    n = args[0].shape[0]
    for c in prange(nchunks):
        RANGE(*args, c * n // nchunks, (c + 1) * n // nchunks)  # noqa: F821
    return 0


class _Kernels:
    """The kernels of one template (``_numba_softmax`` and the others), made on
    first use per tuple of constants ``flags`` (named by ``names``; SAME, when
    there, last) and compiled on their first call: a call compiles only its
    path, serial or parallel, dtype and optional arrays."""

    def __init__(self, template, *names):
        self.template, self.names = template, names
        self.serial, self.par = {}, {}
        self.lock = threading.Lock()

    def _make(self, flags, par):
        with self.lock:     # one kernel per flags, also when threads ask at once
            have = (self.par if par else self.serial).get(flags)
            return have or self._new(flags, par)

    def _new(self, flags, par):
        if not par:
            tag = "_".join(f"{n.lower()}{int(v)}" for n, v in zip(self.names, flags))
            k = _jit(_specialise(self.template, tag, **dict(zip(self.names, flags))))
            self.serial[flags] = k
            return k
        ser = self.serial.get(flags) or self._new(flags, False)
        k = _jit_par(_specialise(_parallel, ser.py_func.__name__, RANGE=ser))
        self.par[flags] = k
        return k

    def __call__(self, flags, nt, *args):
        """Runs the kernel of ``flags`` over all rows of ``args`` (on ``nt``
        threads); a kernel that finds its output is an input returns SAME's
        value for it, and that kernel runs instead."""
        if nt > 1:
            # parfors take no tuple inside the arguments' tuple: scalars as an array
            args = tuple(np.array(a, np.float64) if type(a) is tuple else a for a in args)
            code = (self.par.get(flags) or self._make(flags, True))(nt, *args)
            if code:
                flags = flags[:-1] + (code,)
                (self.par.get(flags) or self._make(flags, True))(nt, *args)
            return
        n = args[0].shape[0]
        code = (self.serial.get(flags) or self._make(flags, False))(*args, 0, n)
        if code:
            flags = flags[:-1] + (code,)
            (self.serial.get(flags) or self._make(flags, False))(*args, 0, n)


_SOFTMAX = _Kernels(softmax_kernel, "LOG", "PATH", "NT", "SAME")
_LSE = _Kernels(lse_kernel, "PATH")
_BACKWARD = _Kernels(backward_kernel, "LOG", "SAME")
_CE_INDEX = _Kernels(ce_index_kernel, "PATH", "SAME")
_CE_PROB = _Kernels(ce_prob_kernel, "SAME")


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


def _path(mask, k, T, online=False):
    """The path of a softmax-like kernel: tiles for short rows, unmasked rows up
    to _ONLINE pipelined, longer ones (``online``: log_softmax's) in one pass."""
    if T:
        return TILES
    if k > _ONLINE:
        return ONLINE if online else ROWS
    return PIPED if mask is None else ROWS


def softmax_rows(x, mask, out, nthreads=1):
    k = x.shape[1]
    T = _tile_rows(k)
    if is_half(x):
        return run_half(softmax_rows, x.shape[0], k, ((IN, x), (SLICE, mask), (OUT, out)),
                        nthreads, T)
    _SOFTMAX((0, _path(mask, k, T), _stream(mask, out, T), 0), _threads(nthreads, x),
             x, mask, out, T)


def log_softmax_rows(x, mask, out, nthreads=1):
    k = x.shape[1]
    T = _tile_rows(k)
    if is_half(x):
        return run_half(log_softmax_rows, x.shape[0], k, ((IN, x), (SLICE, mask), (OUT, out)),
                        nthreads, T)
    _SOFTMAX((1, _path(mask, k, T, True), _stream(mask, out, T), 0), _threads(nthreads, x),
             x, mask, out, T)


def logsumexp_rows(x, b, mask, out, sign, nthreads=1):
    T = _tile_rows(x.shape[1])
    if is_half(x):
        return run_half(logsumexp_rows, x.shape[0], x.shape[1],
                        ((IN, x), (IN, b), (SLICE, mask), (ROW_OUT, out), (ROW_OUT, sign)),
                        nthreads, T)
    _LSE((TILES if T and b is None else ROWS,), _threads(nthreads, x), x, b, mask, out, sign, T)


def softmax_backward_rows(grad, y, out, nthreads=1):
    if is_half(grad):
        return run_half(softmax_backward_rows, grad.shape[0], grad.shape[1],
                        ((IN, grad), (IN, y), (OUT, out)), nthreads)
    _BACKWARD((0, 0), _threads(nthreads, grad, _PAR_MIN_ELEMS_BWD), grad, y, None, out)


def log_softmax_backward_rows(grad, y, mask, out, nthreads=1):
    if is_half(grad):
        return run_half(log_softmax_backward_rows, grad.shape[0], grad.shape[1],
                        ((IN, grad), (IN, y), (SLICE, mask), (OUT, out)), nthreads)
    _BACKWARD((1, 0), _threads(nthreads, grad, _PAR_MIN_ELEMS_BWD), grad, y, mask, out)


def check_targets(target, k, ignore_index):
    return int(_check_targets(target, k, ignore_index))


def _grad_options(x, loss, row_scale, grad):
    """A call that wants the gradient takes a loss buffer and row scales (ones)
    whether it wants them or not: one compiled kernel for the gradient of
    softmax_cross_entropy_backward and _with_grad, so that the two agree to
    the bit (two kernels may round the per-row factors apart)."""
    if grad is None:
        return loss, row_scale
    n = x.shape[0]
    return (np.empty(n, x.dtype) if loss is None else loss,
            np.ones(n, x.dtype) if row_scale is None else row_scale)


def cross_entropy_index_rows(x, target, weight, ignore_index, label_smoothing,
                             z_loss, a, b, g, row_scale, loss, grad, nthreads=1):
    k = x.shape[1]
    if is_half(x):
        return run_half(cross_entropy_index_rows, x.shape[0], k,
                        ((IN, x), (SLICE, target), (CONST, weight), (CONST, ignore_index),
                         (CONST, label_smoothing), (CONST, z_loss), (CONST, a), (CONST, b),
                         (CONST, g), (SLICE, row_scale), (SLICE, loss), (OUT, grad)),
                        nthreads, _tile_rows(k))
    if weight is None:
        w = _ones(k, x.dtype)
        wsum = float(k)
    else:
        w = weight
        wsum = float(np.sum(weight, dtype=np.float64)) if label_smoothing != 0 else 0.0
    sc = (wsum, float(label_smoothing), float(z_loss), float(a), float(b), float(g))
    loss, row_scale = _grad_options(x, loss, row_scale, grad)
    T = _tile_rows(k)
    _CE_INDEX((TILES if T else ROWS, 0), _threads(nthreads, x),
              x, target, w, int(ignore_index), sc, row_scale, loss, grad, T)


def cross_entropy_prob_rows(x, target, weight, label_smoothing, z_loss, a, b, g,
                            row_scale, loss, grad, nthreads=1):
    if is_half(x):
        return run_half(cross_entropy_prob_rows, x.shape[0], x.shape[1],
                        ((IN, x), (IN if is_half(target) else SLICE, target), (CONST, weight),
                         (CONST, label_smoothing), (CONST, z_loss), (CONST, a), (CONST, b),
                         (CONST, g), (SLICE, row_scale), (SLICE, loss), (OUT, grad)), nthreads)
    w = _ones(x.shape[1], x.dtype) if weight is None else weight
    sc = (0.0, float(label_smoothing), float(z_loss), float(a), float(b), float(g))
    loss, row_scale = _grad_options(x, loss, row_scale, grad)
    _CE_PROB((0,), _threads(nthreads, x), x, target, w, sc, row_scale, loss, grad)


from .table import RowKernels  # noqa: E402  (beside its one use)

#: The table the API calls (``fastact._backends.table``).
KERNELS = RowKernels.of(NAME, softmax_rows, log_softmax_rows, logsumexp_rows, softmax_backward_rows,
                        log_softmax_backward_rows, cross_entropy_index_rows,
                        cross_entropy_prob_rows, check_targets, half=True)
