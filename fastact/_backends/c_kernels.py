"""The C backend: thin wrappers over the cffi extension ``fastact._fastact_c``.

Same row kernels, signatures and semantics as ``numpy_ref`` (whose docstring is
the contract).  The C code (``csrc/``) is written once and expanded per dtype
and per ISA (baseline C, AVX2+FMA, AVX-512F); the widest level the CPU
supports is used unless ``FASTACT_C_ISA`` (``avx512f``, ``avx2`` or
``baseline``) asks for a lower one.  Calls release the GIL and share no
mutable state, so many Python threads may call at once.

Importing this module raises ``ImportError`` with the reason when the
extension was not built (no C compiler when fastact was installed).

The wrappers are on the hot path for small arrays, so they do the least:
``ffi.from_buffer`` (measured ~4x cheaper than casting ``arr.ctypes.data``),
NULL for ``None``, the dtype passed as the item size (float16 2, bfloat16
2 | FA_BF16: rows widened to float32 in bounded blocks inside the C code,
results rounded back; weight, row_scale and losses stay float32).
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

import numpy as np

try:
    from fastact._fastact_c import ffi, lib
except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError(
        "the C extension fastact._fastact_c is not built (was a C compiler "
        f"available when fastact was installed?): {e}"
    ) from e

NAME = "c"

#: ISA level names, lowest first; the index is the C level number.
ISA_LEVELS = ("baseline", "avx2", "avx512f")
CPU_ISA = ISA_LEVELS[lib.fa_cpu_isa()]


def _isa_from_env():
    want = os.environ.get("FASTACT_C_ISA", "").strip().lower()
    best = ISA_LEVELS.index(CPU_ISA)
    if not want:
        return best
    if want not in ISA_LEVELS:
        raise ImportError(
            f"FASTACT_C_ISA={want!r} is not one of {', '.join(ISA_LEVELS)}")
    return min(ISA_LEVELS.index(want), best)


_isa = _isa_from_env()
_fb = ffi.from_buffer
_NULL = ffi.NULL

#: The kernels read and write float16 and bfloat16 rows themselves (widened
#: to float32 in bounded blocks inside the C code: csrc/half.c).
HALF = True
_BF16 = 0x100  # FA_BF16 in csrc/fastact.h


def dtype_code(x):
    """The C dtype code of a float array: its item size, | FA_BF16 for bfloat16
    (the row and the elementwise kernels alike)."""
    n = x.itemsize
    if n == 2 and x.dtype.char != "e":
        return 2 | _BF16
    return n


def simd_level():
    """The SIMD level the kernels run at: ``"avx512f"``, ``"avx2"`` or ``"baseline"``."""
    return ISA_LEVELS[_isa]


def available_isas():
    """The levels this CPU can run, lowest first (each may be forced for testing)."""
    return ISA_LEVELS[: ISA_LEVELS.index(CPU_ISA) + 1]


@contextmanager
def force_isa(name):
    """Run the kernels at ISA level ``name`` inside the block (for tests and
    benchmarks; not thread-safe with respect to other callers)."""
    global _isa
    if name not in available_isas():
        raise ValueError(f"ISA {name!r} not available here; available: {available_isas()}")
    old = _isa
    _isa = ISA_LEVELS.index(name)
    _sync_fastpath()
    try:
        yield
    finally:
        _isa = old
        _sync_fastpath()


def widen_half(h):
    """float16/bfloat16 array -> float32 array by the kernels' own conversion (for tests)."""
    h = np.ascontiguousarray(h)
    f = np.empty(h.shape, np.float32)
    lib.fa_half_widen(dtype_code(h), _isa, _fb(h), _fb("float[]", f), h.size)
    return f


def narrow_half(f, dtype):
    """float32 array -> ``dtype`` (float16/bfloat16) by the kernels' own rounding (for tests)."""
    f = np.ascontiguousarray(f, dtype=np.float32)
    h = np.empty(f.shape, dtype)
    lib.fa_half_narrow(dtype_code(h), _isa, _fb("float[]", f), _fb(h), f.size)
    return h


def _no_scratch():
    """For a kernel that returned -1: its scratch could not be allocated (the
    half rows' widened blocks, the strided driver's tiles), nothing written."""
    raise MemoryError("fastact: the C kernels could not allocate their scratch")


# The row kernels below also take C-contiguous arrays of any ndim >= 1 as the
# rows of their last axis (the API's fast path passes them without a reshape).
ND_ROWS = True


def softmax_rows(x, mask, out, nthreads=1):
    k = x.shape[-1]
    i = x.itemsize
    if lib.fa_softmax_rows(i if i != 2 else dtype_code(x), _isa, _fb(x),
                           _NULL if mask is None else _fb(mask), _fb(out), x.size // k, k, nthreads):
        _no_scratch()


def log_softmax_rows(x, mask, out, nthreads=1):
    k = x.shape[-1]
    i = x.itemsize
    if lib.fa_log_softmax_rows(i if i != 2 else dtype_code(x), _isa, _fb(x),
                               _NULL if mask is None else _fb(mask), _fb(out), x.size // k, k,
                               nthreads):
        _no_scratch()


def logsumexp_rows(x, b, mask, out, sign, nthreads=1):
    n, k = x.shape
    if lib.fa_logsumexp_rows(dtype_code(x), _isa, _fb(x), _NULL if b is None else _fb(b),
                             _NULL if mask is None else _fb(mask), _fb(out),
                             _NULL if sign is None else _fb(sign), n, k, nthreads):
        _no_scratch()


def softmax_backward_rows(grad, y, out, nthreads=1):
    k = grad.shape[-1]
    i = grad.itemsize
    if lib.fa_softmax_backward_rows(i if i != 2 else dtype_code(grad), _isa, _fb(grad), _fb(y),
                                    _fb(out), grad.size // k, k, nthreads):
        _no_scratch()


def log_softmax_backward_rows(grad, y, mask, out, nthreads=1):
    k = grad.shape[-1]
    i = grad.itemsize
    if lib.fa_log_softmax_backward_rows(i if i != 2 else dtype_code(grad), _isa, _fb(grad), _fb(y),
                                        _NULL if mask is None else _fb(mask), _fb(out),
                                        grad.size // k, k, nthreads):
        _no_scratch()


def check_targets(target, k, ignore_index):
    return int(lib.fa_check_targets(_fb("int64_t[]", target), target.shape[0], k, ignore_index))


def cross_entropy_index_rows(x, target, weight, ignore_index, label_smoothing,
                             z_loss, a, b, g, row_scale, loss, grad, nthreads=1):
    n, k = x.shape
    if lib.fa_cross_entropy_index_rows(
            dtype_code(x), _isa, _fb(x), _fb("int64_t[]", target), _NULL if weight is None else _fb(weight),
            ignore_index, label_smoothing, z_loss, a, b, g,
            _NULL if row_scale is None else _fb(row_scale),
            _NULL if loss is None else _fb(loss), _NULL if grad is None else _fb(grad),
            n, k, nthreads):
        _no_scratch()


def cross_entropy_prob_rows(x, target, weight, label_smoothing, z_loss, a, b, g,
                            row_scale, loss, grad, nthreads=1):
    n, k = x.shape
    if lib.fa_cross_entropy_prob_rows(
            dtype_code(x), _isa, _fb(x), _fb(target), _NULL if weight is None else _fb(weight),
            label_smoothing, z_loss, a, b, g,
            _NULL if row_scale is None else _fb(row_scale),
            _NULL if loss is None else _fb(loss), _NULL if grad is None else _fb(grad),
            n, k, nthreads):
        _no_scratch()


# ---------------------------------------------------------------- any axis
# The same kernels over the middle axis of C-contiguous (outer, k, inner)
# arrays, without a whole-array copy (csrc/strided.c): row data of shape
# (outer, k, inner), per-row data (outer, inner) (any shapes of those sizes,
# C-contiguous).  Only the C backend has them; _api uses them when present.

def _strided_ok(rc):
    if rc != 0:
        _no_scratch()


def softmax_strided(x, mask, out, outer, k, inner, nthreads=1):
    _strided_ok(lib.fa_softmax_strided(x.itemsize, _isa, _fb(x), _NULL if mask is None else _fb(mask),
                                       _fb(out), outer, k, inner, nthreads))


def log_softmax_strided(x, mask, out, outer, k, inner, nthreads=1):
    _strided_ok(lib.fa_log_softmax_strided(x.itemsize, _isa, _fb(x),
                                           _NULL if mask is None else _fb(mask), _fb(out),
                                           outer, k, inner, nthreads))


def logsumexp_strided(x, b, mask, out, sign, outer, k, inner, nthreads=1):
    _strided_ok(lib.fa_logsumexp_strided(x.itemsize, _isa, _fb(x), _NULL if b is None else _fb(b),
                                         _NULL if mask is None else _fb(mask), _fb(out),
                                         _NULL if sign is None else _fb(sign),
                                         outer, k, inner, nthreads))


def softmax_backward_strided(grad, y, out, outer, k, inner, nthreads=1):
    _strided_ok(lib.fa_softmax_backward_strided(grad.itemsize, _isa, _fb(grad), _fb(y), _fb(out),
                                                outer, k, inner, nthreads))


def log_softmax_backward_strided(grad, y, mask, out, outer, k, inner, nthreads=1):
    _strided_ok(lib.fa_log_softmax_backward_strided(grad.itemsize, _isa, _fb(grad), _fb(y),
                                                    _NULL if mask is None else _fb(mask),
                                                    _fb(out), outer, k, inner, nthreads))


def cross_entropy_index_strided(x, target, weight, ignore_index, label_smoothing, z_loss,
                                a, b, g, row_scale, loss, grad, outer, k, inner, nthreads=1):
    _strided_ok(lib.fa_cross_entropy_index_strided(
        x.itemsize, _isa, _fb(x), _fb("int64_t[]", target), _NULL if weight is None else _fb(weight),
        ignore_index, label_smoothing, z_loss, a, b, g,
        _NULL if row_scale is None else _fb(row_scale),
        _NULL if loss is None else _fb(loss), _NULL if grad is None else _fb(grad),
        outer, k, inner, nthreads))


def cross_entropy_prob_strided(x, target, weight, label_smoothing, z_loss, a, b, g,
                               row_scale, loss, grad, outer, k, inner, nthreads=1):
    _strided_ok(lib.fa_cross_entropy_prob_strided(
        x.itemsize, _isa, _fb(x), _fb(target), _NULL if weight is None else _fb(weight),
        label_smoothing, z_loss, a, b, g,
        _NULL if row_scale is None else _fb(row_scale),
        _NULL if loss is None else _fb(loss), _NULL if grad is None else _fb(grad),
        outer, k, inner, nthreads))


# ------------------------------------------------------------ scale= in C
# The row kernels on z = x * scale, in blocks (csrc/transform.c): float32/float64
# rows, no mask, no softcap (fastact._transforms calls them for what they
# cover, its Python block layer for the rest).

def softmax_transformed(scale, x, out, nthreads=1):
    n, k = x.shape
    if lib.fa_softmax_rows_xf(x.itemsize, _isa, scale, _fb(x), _fb(out), n, k, nthreads):
        _no_scratch()


def log_softmax_transformed(scale, x, out, nthreads=1):
    n, k = x.shape
    if lib.fa_log_softmax_rows_xf(x.itemsize, _isa, scale, _fb(x), _fb(out), n, k, nthreads):
        _no_scratch()


def logsumexp_transformed(scale, x, b, out, sign, nthreads=1):
    n, k = x.shape
    if lib.fa_logsumexp_rows_xf(x.itemsize, _isa, scale, _fb(x), _NULL if b is None else _fb(b),
                                _fb(out), _NULL if sign is None else _fb(sign), n, k, nthreads):
        _no_scratch()


def softmax_backward_transformed(scale, grad, y, out, nthreads=1):
    n, k = grad.shape
    if lib.fa_softmax_backward_rows_xf(grad.itemsize, _isa, scale, _fb(grad), _fb(y), _fb(out),
                                       n, k, nthreads):
        _no_scratch()


def log_softmax_backward_transformed(scale, grad, y, out, nthreads=1):
    n, k = grad.shape
    if lib.fa_log_softmax_backward_rows_xf(grad.itemsize, _isa, scale, _fb(grad), _fb(y),
                                           _fb(out), n, k, nthreads):
        _no_scratch()


def cross_entropy_index_transformed(scale, x, target, weight, ignore_index, label_smoothing,
                                    z_loss, a, b, g, row_scale, loss, grad, nthreads=1):
    n, k = x.shape
    if lib.fa_cross_entropy_index_rows_xf(
            x.itemsize, _isa, scale, _fb(x), _fb("int64_t[]", target),
            _NULL if weight is None else _fb(weight), ignore_index, label_smoothing, z_loss, a, b,
            g, _NULL if row_scale is None else _fb(row_scale),
            _NULL if loss is None else _fb(loss), _NULL if grad is None else _fb(grad),
            n, k, nthreads):
        _no_scratch()


def cross_entropy_prob_transformed(scale, x, target, weight, label_smoothing, z_loss, a, b, g,
                                   row_scale, loss, grad, nthreads=1):
    n, k = x.shape
    if lib.fa_cross_entropy_prob_rows_xf(
            x.itemsize, _isa, scale, _fb(x), _fb(target),
            _NULL if weight is None else _fb(weight), label_smoothing, z_loss, a, b, g,
            _NULL if row_scale is None else _fb(row_scale),
            _NULL if loss is None else _fb(loss), _NULL if grad is None else _fb(grad),
            n, k, nthreads):
        _no_scratch()


# ------------------------------------------------------- the common call in C
# fastact._fastpath (csrc/fastpath.c) checks the common call of softmax,
# log_softmax and their backwards on the array structs and calls these kernels
# through their addresses (fastact._api tries it first); it follows the default
# backend, the thread count (fastact._config.sync_fast) and the ISA level here.

try:
    from fastact import _fastpath
except ImportError:  # pragma: no cover - built beside _fastact_c when NumPy was there
    _fastpath = None


def fastpath_state(enabled, nthreads):
    """Tell the fast path whether the C backend is the default, and the threads."""
    if _fastpath is not None:
        _fastpath.set_state(enabled, _isa, nthreads)


def _sync_fastpath():
    from fastact import _config
    _config.sync_fast(sys.modules[__name__])


if _fastpath is not None:
    from fastact._config import _override

    from . import _loaded
    _fastpath.configure(tuple(int(ffi.cast("uintptr_t", ffi.addressof(lib, f)))
                              for f in ("fa_softmax_rows", "fa_log_softmax_rows",
                                        "fa_softmax_backward_rows",
                                        "fa_log_softmax_backward_rows")),
                        _override, _loaded, (NAME, "rows"))


from .table import RowKernels  # noqa: E402  (beside its one use)

#: The table the API calls (``fastact._backends.table``).
KERNELS = RowKernels.of(NAME, softmax_rows, log_softmax_rows, logsumexp_rows, softmax_backward_rows,
                        log_softmax_backward_rows, cross_entropy_index_rows,
                        cross_entropy_prob_rows, check_targets,
                        strided=(softmax_strided, log_softmax_strided, logsumexp_strided,
                                 softmax_backward_strided, log_softmax_backward_strided,
                                 cross_entropy_index_strided, cross_entropy_prob_strided),
                        transformed=(softmax_transformed, log_softmax_transformed,
                                     logsumexp_transformed, softmax_backward_transformed,
                                     log_softmax_backward_transformed,
                                     cross_entropy_index_transformed,
                                     cross_entropy_prob_transformed),
                        half=HALF, nd_rows=ND_ROWS)

_sync_fastpath()  # the module is loaded: the fast path may take calls now
