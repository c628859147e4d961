"""float16 and bfloat16 for the Numba backend: the float32 kernels over bounded
blocks of widened rows (issue 17), the design of ``csrc/half.c``.

No kernel is written per half dtype.  ``run`` takes a float32 kernel and its
arguments, tagged by what each is (a half row input, a half row output, a
per-row slice, ...), splits the rows into blocks whose float32 scratch stays
within ``BLOCK_BYTES`` per widened array, widens the block's half inputs into
the scratch, runs the kernel on the block and narrows its results into the
half outputs.  So the scratch is bounded whatever the input's size, and each
half result is the float32 kernel's result rounded once.  An output may be an
input (``out=x``, the cross-entropy gradient over the logits): a block is
widened before its result is stored, and later blocks are not touched.

The conversions are Numba loops of integer and float operations that LLVM
vectorises (NumPy converts float16 in software: ~67 ns per element for
results below float16's smallest normal, every probability of a softmax over a
few thousand classes):

* float16 (with F16C, the CPU's own conversions through LLVM's half type; else
  integer forms:)
* float16 -> float32: exponent rebias in the bits; subnormals by one exact
  float subtraction (Giesen's ``half_to_float``), inf/NaN kept.
* float32 -> float16: round to nearest-even, subnormals kept (never flushed to
  zero): the rounding bias added in the bits for normals, one float addition
  (rounded by the FPU to nearest-even) for results in float16's subnormal
  range, overflow to inf, NaN kept NaN (quieted; sign and top payload bits
  kept).  Bit-identical to NumPy's ``astype(np.float16)`` on every value.
* bfloat16: widens by a 16-bit shift; narrows by adding ``0x7FFF`` + the lsb
  (nearest-even), NaN quieted, as ``ml_dtypes``.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ._numba_intrinsics import _bits_f32, _f32_bits
from ._numba_math import _jit
from .elementwise import chunked, run_ranges

#: Bytes of float32 scratch per widened array of a block (at least one row).
#: Measured (1 thread, float16 softmax, out=; ms at 32 KB / 128 KB / 512 KB /
#: 2 MB): 4096x1000 9.0 / 5.1 / 4.4 / 4.2, 512x32000 19.0 / 19.1 / 16.2 / 15.2:
#: each block costs a few Python-level calls, so larger is faster, while the
#: scratch (a few of these per thread) stays bounded.
BLOCK_BYTES = 512 << 10


def _has_f16c():
    """Numba compiles for a CPU with F16C (the host's features, unless
    NUMBA_CPU_NAME / NUMBA_CPU_FEATURES ask for others)."""
    try:
        import llvmlite.binding as llb
        from numba import config
        if config.CPU_NAME is None:
            return bool(llb.get_host_cpu_features().get("f16c"))
        return "+f16c" in (config.CPU_FEATURES or "")
    except Exception:  # pragma: no cover - an llvmlite without the query
        return False


#: The hardware conversions (vcvtph2ps / vcvtps2ph, LLVM's fpext / fptrunc of
#: half, vectorised): about 10x faster than the integer forms below, which
#: are the path for CPUs without F16C (where LLVM would call a runtime
#: function that Numba's JIT may not have).
F16C = _has_f16c()


@intrinsic
def _h2f(typingctx, a):
    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())
    return types.float32(types.uint16), codegen


@intrinsic
def _f2h(typingctx, a):
    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))
    return types.uint16(types.float32), codegen


@_jit
def _widen_f16_hw(h, f):
    for i in range(h.shape[0]):
        f[i] = _h2f(h[i])


@_jit
def _narrow_f16_hw(f, h):
    for i in range(f.shape[0]):
        h[i] = _f2h(f[i])


@_jit
def _widen_f16_soft(h, f):
    """``f[i] = float32(h[i])``: ``h`` the float16 bits (uint16), 1-D."""
    magic = np.float32(6.103515625e-05)  # 2**-14: bits 113 << 23
    for i in range(h.shape[0]):
        u = np.uint32(h[i])
        o = (u & np.uint32(0x7FFF)) << np.uint32(13)
        e = o & np.uint32(0x0F800000)
        normal = o + np.uint32(0x38000000)              # exponent 15 -> 127 bias
        special = o + np.uint32(0x70000000)             # inf, NaN: exponent 255
        sub = _f32_bits(_bits_f32(o + np.uint32(0x38800000)) - magic)  # exact
        r = special if e == np.uint32(0x0F800000) else (sub if e == np.uint32(0) else normal)
        f[i] = _bits_f32(r | ((u & np.uint32(0x8000)) << np.uint32(16)))


@_jit
def _narrow_f16_soft(f, h):
    """``h[i] = float16(f[i])`` (bits, uint16), nearest-even, subnormals kept."""
    denorm = _bits_f32(np.uint32(0x3F000000))  # 0.5: adds align the lsb to 2**-24
    for i in range(f.shape[0]):
        u = _f32_bits(f[i])
        sign = (u >> np.uint32(16)) & np.uint32(0x8000)
        a = u & np.uint32(0x7FFFFFFF)
        # normal results: rebias, add the rounding bias (0xFFF + the kept lsb)
        odd = (a >> np.uint32(13)) & np.uint32(1)
        nrm = (a + np.uint32(0xC8000FFF) + odd) >> np.uint32(13)  # (15 - 127) << 23
        # |f| < 2**-14: float16 subnormal or 0, rounded by the float addition
        sub = _f32_bits(_bits_f32(a) + denorm) - np.uint32(0x3F000000)
        # overflow (>= 65520 rounds to inf) and inf; NaN quieted
        big = np.uint32(0x7C00)
        nan = np.uint32(0x7E00) | ((a >> np.uint32(13)) & np.uint32(0x3FF))
        r = (nan if a > np.uint32(0x7F800000) else
             (big if a >= np.uint32(0x477FF000) else
              (sub if a < np.uint32(0x38800000) else nrm)))
        h[i] = np.uint16(r | sign)


_widen_f16 = _widen_f16_hw if F16C else _widen_f16_soft
_narrow_f16 = _narrow_f16_hw if F16C else _narrow_f16_soft


@_jit
def _widen_bf16(h, f):
    for i in range(h.shape[0]):
        f[i] = _bits_f32(np.uint32(h[i]) << np.uint32(16))


@_jit
def _narrow_bf16(f, h):
    for i in range(f.shape[0]):
        u = _f32_bits(f[i])
        r = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
        q = (u >> np.uint32(16)) | np.uint32(0x40)
        h[i] = np.uint16(q if (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000) else r)


def is_half(a):
    """``a`` holds float16 or bfloat16 (the dtypes this layer widens)."""
    return a.dtype.itemsize == 2 and a.dtype.kind in "fV"


def _bf16(a):
    return a.dtype.char != "e"


def widen(h, f):
    """float32 ``f`` (flat) from the half array ``h`` (C-contiguous, same size)."""
    (_widen_bf16 if _bf16(h) else _widen_f16)(h.reshape(-1).view(np.uint16), f)


def narrow(f, h):
    """The half array ``h`` (C-contiguous) from float32 ``f`` (flat, same size)."""
    (_narrow_bf16 if _bf16(h) else _narrow_f16)(f, h.reshape(-1).view(np.uint16))


# ------------------------------------------------------------------ the blocks
# What run() does with each argument of the float32 kernel:
IN = "in"        # (n, k) half rows: widened block by block
OUT = "out"      # (n, k) half rows written: scratch, narrowed block by block
SLICE = "slice"  # (n, k) or (n,) array (mask, index targets, float32 per-row data), or None: sliced
ROW_OUT = "row_out"  # (n,) half per-row result, or None: scratch, narrowed
CONST = "const"  # passed as it is


def rows_per_block(n, k, nbuf, tile=0):
    """Rows of a block: ``nbuf`` float32 buffers of ``BLOCK_BYTES`` each (at least
    one row); a multiple of ``tile`` rows (the row tiles of short rows), so that
    every row meets the float32 kernel in the same tile as over the whole array."""
    per = max(1, BLOCK_BYTES // (4 * max(k, 1)))
    if tile:
        per = max(tile, per // tile * tile)
    return min(n, per)


#: Below this many elements a call (rows, or its half blocks) runs on the calling
#: thread only (numba_kernels' row calls use it too).
PAR_MIN_ELEMS = 1 << 15


def run(kernel, n, k, args, nthreads, tile=0):
    """``kernel(*float32 args, 1)`` over blocks of the ``n`` rows of length ``k``;
    ``args``: ``(tag, value)`` pairs (tags above).  With threads, each takes a
    contiguous range of rows (whole tiles) and its own scratch."""
    parts = max(1, min(int(nthreads or 1), (n * k) // PAR_MIN_ELEMS, n))
    if parts == 1:
        _run_rows(kernel, 0, n, k, args, tile)
        return
    step = -(-n // parts)
    if tile:
        step = -(-step // tile) * tile
    run_ranges(lambda a, b: _run_rows(kernel, a, b, k, args, tile),
               [(i, min(n, i + step)) for i in range(0, n, step)])


def _run_rows(kernel, r0, r1, k, args, tile):
    nbuf = sum(1 for t, a in args if t in (IN, OUT) and a is not None)
    per = rows_per_block(r1 - r0, k, nbuf, tile)
    scratch = [np.empty(per * k if t != ROW_OUT else per, np.float32)
               if t in (IN, OUT, ROW_OUT) and a is not None else None for t, a in args]
    for b0 in range(r0, r1, per):
        b1 = min(r1, b0 + per)
        m = b1 - b0
        call = []
        for (t, a), s in zip(args, scratch):
            if a is None or t == CONST:
                call.append(a)
            elif t == SLICE:
                call.append(a[b0:b1])
            elif t == IN:
                b = s[:m * k]
                widen(a[b0:b1], b)
                call.append(b.reshape(m, k))
            elif t == OUT:
                call.append(s[:m * k].reshape(m, k))
            else:
                call.append(s[:m])
        kernel(*call, 1)
        for (t, a), s in zip(args, scratch):
            if a is not None and t in (OUT, ROW_OUT):
                narrow(s[:m * k] if t == OUT else s[:m], a[b0:b1])


def run_flat(kernel, arrays, out, nthreads, min_chunk):
    """Elementwise ``kernel(*float32 blocks, out_block)`` over flat half arrays
    (``arrays`` inputs, ``out`` the result; any may be float32 already), in
    blocks of ``BLOCK_BYTES``, ranges of them on threads (``chunked``)."""
    n = out.shape[0]
    per = BLOCK_BYTES // 4

    def part(a, b):
        m = min(per, b - a)
        bufs = [np.empty(m, np.float32) if is_half(x) else None for x in arrays]
        ob = np.empty(m, np.float32)
        for c0 in range(a, b, per):
            c1 = min(b, c0 + per)
            w = c1 - c0
            ins = []
            for x, s in zip(arrays, bufs):
                if s is None:
                    ins.append(x[c0:c1])
                else:
                    widen(x[c0:c1], s[:w])
                    ins.append(s[:w])
            kernel(*ins, ob[:w])
            narrow(ob[:w], out[c0:c1])

    chunked(part, n, nthreads, min_chunk)
