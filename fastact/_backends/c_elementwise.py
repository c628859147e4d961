"""C elementwise kernels (``csrc/elementwise.c``) over the cffi extension ``fastact._fastact_c``.

Contract: ``numpy_elementwise``'s docstring.  The C functions release the GIL
and run at the row kernels' ISA level (``c_kernels``: ``FASTACT_C_ISA``,
``force_isa``), passed per call.  ``unary`` and ``unary_backward`` spread a
large call over ``nthreads`` threads of the C kernels' own pool
(csrc/pool.c, as the row kernels); ``bce`` runs chunks on the caller's thread
each, spread by ``chunked`` (its sum depends on where chunks start).
Importing this module raises ``ImportError`` with the reason when the extension is missing or was
built without these kernels.
"""

from __future__ import annotations

from . import c_kernels as _ck
from .c_kernels import dtype_code
from .elementwise import chunked
from .numpy_elementwise import tile_periodic

try:
    from fastact._fastact_c import ffi as _ffi, lib as _lib
except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError(f"the C extension fastact._fastact_c is not built: {e}") from e

if not hasattr(_lib, "fa_unary"):  # pragma: no cover - an extension from before the kernels
    raise ImportError("the C extension fastact._fastact_c was built without the elementwise "
                      "kernels (csrc/elementwise.c); rebuild it")

NAME = "c"
#: fa_unary / fa_unary_backward read and write float16 and bfloat16 themselves
#: (widened in blocks inside the C code); BCE is computed from float32 arrays.
HALF = ("unary", "unary_backward")
UNARY = ("sigmoid", "log_sigmoid", "relu", "tanh", "softsign", "gelu", "gelu_tanh", "silu")
BACKWARD = UNARY
_OP = {name: i for i, name in enumerate(UNARY)}  # enum fa_unary_op in csrc/elementwise.h


def _bind(ffi, lib):
    """Use ``lib`` (a cffi module exposing elementwise.h) for the kernels."""
    global _fb, _NULL, _unary, _unary_bwd, _bce
    _fb = ffi.from_buffer
    _NULL = ffi.NULL
    _unary, _unary_bwd, _bce = lib.fa_unary, lib.fa_unary_backward, lib.fa_bce


_bind(_ffi, _lib)


def unary(op, x, out, nthreads=1):
    _unary(dtype_code(x), _ck._isa, _OP[op], _fb(x), _fb(out), x.shape[0], nthreads)


def unary_backward(op, grad, s, out, nthreads=1):
    _unary_bwd(dtype_code(s), _ck._isa, _OP[op], _fb(grad), _fb(s), _fb(out), s.shape[0],
               nthreads)


def bce_chunk(x, t, w, pw, offset, c, gscale, loss, grad):
    return _bce(x.itemsize, _ck._isa, _fb(x), _fb(t),
                _NULL if w is None else _fb(w), 0 if w is None else w.shape[0],
                _NULL if pw is None else _fb(pw), 0 if pw is None else pw.shape[0],
                offset, float(c),
                _NULL if gscale is None else _fb(gscale),
                _NULL if loss is None else _fb(loss),
                _NULL if grad is None else _fb(grad), x.shape[0])


def bce(x, t, w, pw, c, gscale, loss, grad, nthreads=1):
    w, pw = tile_periodic(w), tile_periodic(pw)  # contiguous runs of >= 1024 weights

    def part(a, b):
        return bce_chunk(x[a:b], t[a:b], w, pw, a, c,
                         None if gscale is None else gscale[a:b],
                         None if loss is None else loss[a:b],
                         None if grad is None else grad[a:b])

    return float(sum(chunked(part, x.shape[0], nthreads)))


from .table import ElementwiseKernels  # noqa: E402  (beside its one use)

#: The table the API calls (``fastact._backends.table``).
KERNELS = ElementwiseKernels(NAME, unary, unary_backward, bce, UNARY, half=frozenset(HALF))
