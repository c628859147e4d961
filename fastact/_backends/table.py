"""The typed kernel tables: what the API calls, one table per backend part.

Each backend module fills its table once, at its end (``KERNELS = RowKernels(...)``
or ``KERNELS = ElementwiseKernels(...)``), naming its own functions; the API
holds the table (``fastact._config.resolve`` returns it) and calls
``be.softmax.rows(...)``: a reader, a type checker and a "go to definition"
follow a call from ``fastact.softmax`` into the backend's kernel.  The contract
of each kernel (arguments, dtypes, special values) is written once, in the
docstrings of ``numpy_ref`` (rows) and ``numpy_elementwise`` (elementwise).
``tests/test_kernel_table.py`` checks that every backend fills its tables with
the reference's signatures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

Kernel = Callable[..., None]


@dataclass(frozen=True)
class RowOp:
    """One op of the softmax family: its kernel over ``(n, k)`` C-contiguous rows,
    and (C, Numba) its kernel over the middle axis of a C-contiguous
    ``(outer, k, inner)`` array, reduced where it lies (``csrc/strided.c``,
    ``_numba_strided``)."""

    rows: Kernel
    strided: Optional[Kernel] = None
    #: (C only) the same kernel on ``z = x * scale`` (``fastact._transforms``):
    #: ``(scale, <the rows kernel's arguments without the mask>)``, the gradients
    #: w.r.t. the logits ``x`` (``csrc/transform.c``).
    transformed: Optional[Kernel] = None


@dataclass(frozen=True)
class RowKernels:
    """A backend's softmax-family kernels (contract: ``numpy_ref``)."""

    name: str
    softmax: RowOp
    log_softmax: RowOp
    logsumexp: RowOp
    softmax_backward: RowOp
    log_softmax_backward: RowOp
    cross_entropy_index: RowOp
    cross_entropy_prob: RowOp
    #: ``check_targets(target, k, ignore_index) -> int``: the first bad flat row, or -1.
    check_targets: Callable[..., int]
    #: The kernels read and write float16/bfloat16 rows themselves (computing in
    #: float32 in bounded blocks); else the API hands them float32 rows.
    half: bool = False
    #: The row kernels take any C-contiguous array, reduced over its last axis
    #: (no reshape to 2-D needed).
    nd_rows: bool = False

    @classmethod
    def of(cls, name, softmax, log_softmax, logsumexp, softmax_backward, log_softmax_backward,
           cross_entropy_index, cross_entropy_prob, check_targets, *, strided=(),
           transformed=(), **flags):
        """The table of the reference's row kernels in their order (``strided``,
        ``transformed``: the same ops' strided / transformed kernels, in the same
        order, if the backend has them)."""
        rows = (softmax, log_softmax, logsumexp, softmax_backward, log_softmax_backward,
                cross_entropy_index, cross_entropy_prob)
        strided = tuple(strided) or (None,) * len(rows)
        transformed = tuple(transformed) or (None,) * len(rows)
        if len(strided) != len(rows) or len(transformed) != len(rows):
            raise ValueError("RowKernels.of: one strided / transformed kernel per row kernel")
        ops = [RowOp(r, s, t) for r, s, t in zip(rows, strided, transformed)]
        return cls(name, *ops, check_targets=check_targets, **flags)


@dataclass(frozen=True)
class ElementwiseKernels:
    """A backend's elementwise kernels (contract: ``numpy_elementwise``)."""

    name: str
    #: ``unary(op, x, out, nthreads)``, ``op`` one of ``ops``.
    unary: Kernel
    #: ``unary_backward(op, grad, s, out, nthreads)``.
    unary_backward: Kernel
    #: ``bce(x, t, w, pw, c, gscale, loss, grad, nthreads) -> float``.
    bce: Callable[..., float]
    ops: tuple
    #: The kernels (by field name) that read and write float16/bfloat16 arrays.
    half: frozenset = frozenset()
