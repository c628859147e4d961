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
from ._numba_half import CONST, IN, OUT, PAR_MIN_ELEMS, ROW_OUT, SLICE, is_half
from ._numba_half import run as run_half
from ._numba_math import _exp_nonpos_f32  # noqa: F401  (tests call it)
from ._numba_math import _jit, _jit_par, _specialise
from ._numba_rows import (_BLOCK, _CHUNK, _ONLINE, _TILE_K, ONLINE, PIPED, ROWS,  # noqa: F401
                          TILES, _tile_rows)
from ._numba_softmax import lse_kernel, softmax_kernel
from ._numba_strided import backward_strided_kernel, lse_strided_kernel, softmax_strided_kernel
from ._numba_strided_xent import ce_index_strided_kernel, ce_prob_strided_kernel
from ._numba_xent import _check_targets, ce_index_kernel, ce_prob_kernel

NAME = "numba"

#: Below this many elements a call stays on the calling thread (the half layer's too).
_PAR_MIN_ELEMS = PAR_MIN_ELEMS
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


def _threads(nthreads, x, min_elems=_PAR_MIN_ELEMS, n=None):
    """Threads worth using for ``x`` (``n`` items of work, by default its rows):
    1 for small work or a single item."""
    n = x.shape[0] if n is None else n
    if not nthreads or nthreads <= 1 or x.size < min_elems or n < 2:
        return 1
    nt = min(int(nthreads), _MAX_THREADS, n)
    numba.set_num_threads(nt)
    return nt


def _parallel(nchunks, n, *args):
    """Template of the parallel kernels: the serial kernel RANGE over blocks of
    its ``n`` items (rows, or a strided kernel's tiles), one block a thread
    (RANGE is called, not inlined: Numba's parfors would hoist the scratch
    allocations out of the loop, one for all threads)."""
    code = RANGE(*args, 0, 0)        # noqa: F821  (in place: RANGE's answer on no rows)
    if code:
        return code
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

    def __call__(self, flags, nt, *args, n=None):
        """Runs the kernel of ``flags`` over all ``n`` items of ``args`` (by
        default the rows of the first) on ``nt`` threads; a kernel that finds
        its output is an input returns SAME's value for it, and that kernel
        runs instead."""
        n = args[0].shape[0] if n is None else n
        if nt > 1:
            # parfors take no tuple inside the arguments' tuple: scalars as an array
            args = tuple(np.array(a, np.float64) if type(a) is tuple else a for a in args)
            code = (self.par.get(flags) or self._make(flags, True))(nt, n, *args)
            if code:
                flags = flags[:-1] + (code,)
                (self.par.get(flags) or self._make(flags, True))(nt, n, *args)
            return
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


def _grad_options(n, dtype, loss, row_scale, grad):
    """A call that wants the gradient takes a loss buffer and row scales (ones)
    of its ``n`` rows whether it wants them or not: one compiled kernel for
    the gradient of softmax_cross_entropy_backward and _with_grad, so that the
    two agree to the bit (two kernels may round the per-row factors apart)."""
    if grad is None:
        return loss, row_scale
    return (np.empty(n, dtype) if loss is None else loss,
            np.ones(n, dtype) if row_scale is None else row_scale)


def _ce_index_options(k, dtype, weight, label_smoothing, z_loss, a, b, g):
    """(class weights, the scalar options ``sc``) of an index cross entropy."""
    if weight is None:
        w = _ones(k, dtype)
        wsum = float(k)
    else:
        w = weight
        wsum = float(np.sum(weight, dtype=np.float64)) if label_smoothing != 0 else 0.0
    return w, (wsum, float(label_smoothing), float(z_loss), float(a), float(b), float(g))


def _ce_prob_options(k, dtype, weight, label_smoothing, z_loss, a, b, g):
    w = _ones(k, dtype) if weight is None else weight
    return w, (0.0, float(label_smoothing), float(z_loss), float(a), float(b), float(g))


def cross_entropy_index_rows(x, target, weight, ignore_index, label_smoothing,
                             z_loss, a, b, g, row_scale, loss, grad, nthreads=1):
    n, k = x.shape
    if is_half(x):
        return run_half(cross_entropy_index_rows, n, k,
                        ((IN, x), (SLICE, target), (CONST, weight), (CONST, ignore_index),
                         (CONST, label_smoothing), (CONST, z_loss), (CONST, a), (CONST, b),
                         (CONST, g), (SLICE, row_scale), (SLICE, loss), (OUT, grad)),
                        nthreads, _tile_rows(k))
    w, sc = _ce_index_options(k, x.dtype, weight, label_smoothing, z_loss, a, b, g)
    loss, row_scale = _grad_options(n, x.dtype, loss, row_scale, grad)
    T = _tile_rows(k)
    _CE_INDEX((TILES if T else ROWS, 0), _threads(nthreads, x),
              x, target, w, int(ignore_index), sc, row_scale, loss, grad, T)


def cross_entropy_prob_rows(x, target, weight, label_smoothing, z_loss, a, b, g,
                            row_scale, loss, grad, nthreads=1):
    n, k = x.shape
    if is_half(x):
        return run_half(cross_entropy_prob_rows, n, k,
                        ((IN, x), (IN if is_half(target) else SLICE, target), (CONST, weight),
                         (CONST, label_smoothing), (CONST, z_loss), (CONST, a), (CONST, b),
                         (CONST, g), (SLICE, row_scale), (SLICE, loss), (OUT, grad)), nthreads)
    w, sc = _ce_prob_options(k, x.dtype, weight, label_smoothing, z_loss, a, b, g)
    loss, row_scale = _grad_options(n, x.dtype, loss, row_scale, grad)
    _CE_PROB((0,), _threads(nthreads, x), x, target, w, sc, row_scale, loss, grad)


# ----------------------------------------------------------------------------
# any axis: the middle axis of (outer, k, inner) arrays, reduced where it lies
# ----------------------------------------------------------------------------
# The contract of c_kernels' *_strided: the row kernels' arguments, row data of
# shape (outer, k, inner), per-row data (outer, inner) (any shapes of those
# sizes, C-contiguous), then outer, k, inner.  The kernels (_numba_strided,
# _numba_strided_xent) run over work items of one outer index and W inner
# positions; inner == 1 is rows, and goes to the row kernels.

#: Scratch of a strided work item's block (all the arrays it keeps, per
#: thread).  Wide blocks win, even out of L2 (this CPU's is 512 KB): a row of
#: a block is a run of W contiguous positions, read and written whole (1
#: thread float32, axis 0, budget 512 KB / 2 MB: softmax (1000, 4096) 5.7 /
#: 5.0 ms, (2000, 2000) 6.4 / 4.9; (16, 3000, 64) axis 1 5.7 / 3.9).
_STRIDED_SCRATCH = 2 << 20
#: The least width of a block (bytes of a row); the ops without a chunked path
#: take larger blocks for it, up to _STRIDED_MAX_SCRATCH.
_STRIDED_MIN_BYTES = 256
_STRIDED_MAX_SCRATCH = 16 << 20
#: The chunked path: columns whose block would be narrower than this (bytes)
#: take it.  Measured, float32 axis 0 (ms, chunked / blocks): log_softmax
#: (3000, 2048) 9.8 / 11.1, (4096, 1024) 6.4 / 9.4; softmax, which takes its
#: exps twice on that path: (3000, 2048) 13.1 / 10.1, (4096, 1024) 8.8 / 8.6,
#: (6000, 1024) 14.4 / 15.1, (8000, 512) 6.9 / 11.1.
_CHUNK_BELOW = {"softmax": 512, "log": 1024}
#: Inner positions of a work item on the chunked path: rows of 2 KB (float32)
#: read whole, 64 of them (_numba_strided._CHUNK_ROWS) a chunk in L2.
_CHUNK_W = 512
#: Non-temporal stores for the strided kernels' outputs of at least
#: _STRIDED_NT_BYTES (half the L3 here), and only when a row of a block is
#: _NT_ROW_BYTES long at least (on short ones they cost more than the lines
#: they save reading).  Softmax (8, 21, 128, 128) axis 1 (11 MB): 3.5 ms
#: streamed 2.7, log_softmax 4.1 and 3.4.
_STRIDED_NT_BYTES = 8 << 20
_NT_ROW_BYTES = 1024


def _even(w, inner):
    """``w`` evened out over the tiles of ``inner`` and rounded up to a multiple
    of 8 (whole vectors) when that is more than 8; at most ``inner``."""
    if w < inner:
        nt = -(-inner // w)
        w = -(-inner // nt)
        if w > 8:
            w = -(-w // 8) * 8
    return min(w, inner)


def _strided(kernels, flags, nthreads, min_elems, nbuf, x, args, k, inner, chunk=None,
             stream=None):
    """Runs a strided template over the items of (outer, k, inner) ``args``;
    ``chunk``: the kernel has the chunked path (a key of _CHUNK_BELOW; flags:
    CHUNKED, then NT if ``stream`` is not None, then SAME, if there, after
    ``flags``); ``stream``: the output, written with non-temporal stores when
    it is large and its rows (W positions) long."""
    outer = x.size // (k * inner)
    size = x.itemsize
    per_pos = k * nbuf * size       # bytes of a block an inner position
    W = _STRIDED_SCRATCH // per_pos
    chunked = chunk is not None and W * size < _CHUNK_BELOW[chunk]
    if chunked:
        W = _CHUNK_W
    elif W * size < _STRIDED_MIN_BYTES:
        least = _STRIDED_MIN_BYTES // size
        W = least if least * per_pos <= _STRIDED_MAX_SCRATCH else _STRIDED_MAX_SCRATCH // per_pos
    W = _even(max(1, W), inner)
    nt = _threads(nthreads, x, min_elems, outer * inner)
    if outer * -(-inner // W) < nt:     # an item for each thread
        W = _even(max(64 // size, -(-inner // -(-nt // outer))), inner)
    n = outer * -(-inner // W)
    nt = min(nt, n)
    if chunk is not None:
        flags = flags + (int(chunked),)
    if stream is not None:
        flags = flags + (int(stream.nbytes >= _STRIDED_NT_BYTES and W * size >= _NT_ROW_BYTES),)
    if kernels.names[-1:] == ("SAME",):
        flags = flags + (0,)
    kernels(flags, nt, *args, W, n=n)


def _shaped(a, shape):
    return None if a is None else a.reshape(shape)


_SOFTMAX_STRIDED = _Kernels(softmax_strided_kernel, "LOG", "CHUNKED", "NT", "SAME")
_LSE_STRIDED = _Kernels(lse_strided_kernel, "CHUNKED")
_BACKWARD_STRIDED = _Kernels(backward_strided_kernel, "LOG")
_CE_INDEX_STRIDED = _Kernels(ce_index_strided_kernel)
_CE_PROB_STRIDED = _Kernels(ce_prob_strided_kernel)


def _softmax_like_strided(log, x, mask, out, outer, k, inner, nthreads):
    if outer * k * inner == 0:
        return
    if inner == 1:
        rows = (outer, k)
        (log_softmax_rows if log else softmax_rows)(x.reshape(rows), _shaped(mask, rows),
                                                    out.reshape(rows), nthreads)
        return
    s = (outer, k, inner)
    _strided(_SOFTMAX_STRIDED, (log,), nthreads, _PAR_MIN_ELEMS, 1, x,
             (x.reshape(s), _shaped(mask, s), out.reshape(s)), k, inner,
             "log" if log else "softmax", out if mask is None else out[:0])


def softmax_strided(x, mask, out, outer, k, inner, nthreads=1):
    _softmax_like_strided(0, x, mask, out, outer, k, inner, nthreads)


def log_softmax_strided(x, mask, out, outer, k, inner, nthreads=1):
    _softmax_like_strided(1, x, mask, out, outer, k, inner, nthreads)


def logsumexp_strided(x, b, mask, out, sign, outer, k, inner, nthreads=1):
    if outer * k * inner == 0:
        return
    if inner == 1:
        rows = (outer, k)
        logsumexp_rows(x.reshape(rows), _shaped(b, rows), _shaped(mask, rows), out.reshape(-1),
                       _shaped(sign, -1), nthreads)
        return
    s = (outer, k, inner)
    _strided(_LSE_STRIDED, (), nthreads, _PAR_MIN_ELEMS, 1, x,
             (x.reshape(s), _shaped(b, s), _shaped(mask, s), out.reshape(-1),
              _shaped(sign, -1)), k, inner, "log")


def _backward_strided(log, grad, y, mask, out, outer, k, inner, nthreads):
    if outer * k * inner == 0:
        return
    if inner == 1:
        rows = (outer, k)
        if log:
            log_softmax_backward_rows(grad.reshape(rows), y.reshape(rows), _shaped(mask, rows),
                                      out.reshape(rows), nthreads)
        else:
            softmax_backward_rows(grad.reshape(rows), y.reshape(rows), out.reshape(rows),
                                  nthreads)
        return
    s = (outer, k, inner)
    _strided(_BACKWARD_STRIDED, (log,), nthreads, _PAR_MIN_ELEMS_BWD, 2, grad,
             (grad.reshape(s), y.reshape(s), _shaped(mask, s), out.reshape(s)), k, inner)


def softmax_backward_strided(grad, y, out, outer, k, inner, nthreads=1):
    _backward_strided(0, grad, y, None, out, outer, k, inner, nthreads)


def log_softmax_backward_strided(grad, y, mask, out, outer, k, inner, nthreads=1):
    _backward_strided(1, grad, y, mask, out, outer, k, inner, nthreads)


def _ce_strided(kernels, nbuf, x, target, w, extra, sc, row_scale, loss, grad, outer, k, inner,
                nthreads):
    """A cross entropy's strided kernel over (outer, k, inner) logits: per-row data
    flat, ``extra`` the arguments between the weights and ``sc``."""
    loss, row_scale = _grad_options(outer * inner, x.dtype, _shaped(loss, -1),
                                    _shaped(row_scale, -1), grad)
    s = (outer, k, inner)
    _strided(kernels, (), nthreads, _PAR_MIN_ELEMS, nbuf, x,
             (x.reshape(s), target, w, *extra, sc, row_scale, loss, _shaped(grad, s)), k, inner)


def cross_entropy_index_strided(x, target, weight, ignore_index, label_smoothing, z_loss,
                                a, b, g, row_scale, loss, grad, outer, k, inner, nthreads=1):
    if outer * k * inner == 0:
        return
    if inner == 1:
        cross_entropy_index_rows(x.reshape(outer, k), target.reshape(-1), weight, ignore_index,
                                 label_smoothing, z_loss, a, b, g, _shaped(row_scale, -1),
                                 _shaped(loss, -1), _shaped(grad, (outer, k)), nthreads)
        return
    w, sc = _ce_index_options(k, x.dtype, weight, label_smoothing, z_loss, a, b, g)
    _ce_strided(_CE_INDEX_STRIDED, 1, x, target.reshape(-1), w, (int(ignore_index),), sc,
                row_scale, loss, grad, outer, k, inner, nthreads)


def cross_entropy_prob_strided(x, target, weight, label_smoothing, z_loss, a, b, g,
                               row_scale, loss, grad, outer, k, inner, nthreads=1):
    if outer * k * inner == 0:
        return
    if inner == 1:
        cross_entropy_prob_rows(x.reshape(outer, k), target.reshape(outer, k), weight,
                                label_smoothing, z_loss, a, b, g, _shaped(row_scale, -1),
                                _shaped(loss, -1), _shaped(grad, (outer, k)), nthreads)
        return
    w, sc = _ce_prob_options(k, x.dtype, weight, label_smoothing, z_loss, a, b, g)
    # the targets are read twice: counted in the block as the logits
    _ce_strided(_CE_PROB_STRIDED, 2, x, target.reshape(outer, k, inner), w, (), sc, row_scale,
                loss, grad, outer, k, inner, nthreads)


from .table import RowKernels  # noqa: E402  (beside its one use)

#: The table the API calls (``fastact._backends.table``).
KERNELS = RowKernels.of(NAME, softmax_rows, log_softmax_rows, logsumexp_rows, softmax_backward_rows,
                        log_softmax_backward_rows, cross_entropy_index_rows,
                        cross_entropy_prob_rows, check_targets,
                        strided=(softmax_strided, log_softmax_strided, logsumexp_strided,
                                 softmax_backward_strided, log_softmax_backward_strided,
                                 cross_entropy_index_strided, cross_entropy_prob_strided),
                        half=True)
