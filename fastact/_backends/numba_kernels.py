"""The Numba backend: the row kernels of ``numpy_ref`` compiled with Numba.

Same names, signatures and semantics as ``numpy_ref`` (its docstring is the
contract).  Importing this module defines the kernels but compiles nothing;
each variant (dtype, mask or not, serial or parallel) is compiled on first
use and cached on disk (``cache=True``), so a second process starts fast.

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

import math

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload
from numba.np.arrayobj import populate_array

NAME = "numba"

_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
# The exp/log polynomials must not be reassociated: LLVM would fold the
# two-step Cody-Waite range reduction (x - n*ln2_hi - n*ln2_lo) into one.
_FASTMATH_POLY = {"nsz", "arcp", "contract", "afn"}

#: Elements summed in the working dtype before the block sum goes to float64.
_BLOCK = 512
#: Rows shorter than this take the transposed-tile path.
_TILE_K = 40
#: log_softmax rows longer than this compute max and sum in one pass over
#: memory, chunk by chunk (online softmax); shorter rows are in L1 anyway and
#: the plain passes win.
_ONLINE = 4096
#: Elements per chunk of those rows (float32 512x32000: 512 and 1024 4.2 ms,
#: 2048 4.8 ms, 4096 5.4 ms, 8192 7.1 ms; 64x128256 about the same).
_CHUNK = 1024
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


def _jit(fn):
    return njit(fastmath=_FASTMATH, cache=True, nogil=True,
                error_model="numpy")(fn)


def _jit_poly(fn):
    return njit(fastmath=_FASTMATH_POLY, cache=True, nogil=True,
                error_model="numpy")(fn)


def _inline(fn):
    # Numba-level inlining: as separate functions these helpers cost up to 25%
    # (LLVM no longer sees that the scratch buffers are fresh allocations).
    return njit(fastmath=_FASTMATH, cache=True, nogil=True, inline="always",
                error_model="numpy")(fn)


def _jit_par(fn):
    return njit(fastmath=_FASTMATH, cache=True, nogil=True, parallel=True,
                error_model="numpy")(fn)


# ----------------------------------------------------------------------------
# LLVM intrinsics Numba does not expose
# ----------------------------------------------------------------------------

def _binary_intrinsic(name):
    def impl(typingctx, a, b):
        def codegen(context, builder, signature, args):
            t = args[0].type
            fn = builder.module.declare_intrinsic(name, [t], ir.FunctionType(t, [t, t]))
            return builder.call(fn, args)
        return a(a, b), codegen
    return impl


#: NaN-propagating max (IEEE 754-2019 maximum); LLVM vectorises its reductions.
_maximum = intrinsic(_binary_intrinsic("llvm.maximum"))


@intrinsic
def _rint(typingctx, a):
    def codegen(context, builder, signature, args):
        t = args[0].type
        fn = builder.module.declare_intrinsic("llvm.rint", [t], ir.FunctionType(t, [t]))
        return builder.call(fn, args)
    return a(a), codegen


@intrinsic
def _ldexp(typingctx, p, n):
    """``p * 2**n`` for ``n`` a float holding a small integer (the exps' range:
    |n| <= 151 for float32, 1077 for float64) and ``p`` near 1; exact,
    subnormals included.

    As two multiplies by powers of two built in the exponent field, ``2**(n//2)``
    then ``2**(n - n//2)``: both are normal numbers, the first product is exact
    and the second rounds once, so the result is the correctly rounded
    ``p * 2**n`` (gradual underflow and overflow to inf included) that
    ``llvm.ldexp`` gives — but in integer and multiply instructions that vectorise
    on every ISA, where ``llvm.ldexp`` is one vector instruction on AVX-512
    (vscalef) and a scalar libm call per element elsewhere (AVX2: ~10x slower
    softmax).  The multiplies carry no fast-math flags, so they are not
    reassociated into ``p * 2**n`` (which would underflow ``2**n`` itself).
    """
    def codegen(context, builder, signature, args):
        pv, nv = args
        if isinstance(pv.type, ir.DoubleType):
            it, mant, bias = ir.IntType(64), 52, 1023
        else:
            it, mant, bias = ir.IntType(32), 23, 127
        ni = builder.fptosi(nv, it)
        n1 = builder.ashr(ni, ir.Constant(it, 1))
        n2 = builder.sub(ni, n1)

        def pow2(k):
            e = builder.shl(builder.add(k, ir.Constant(it, bias)), ir.Constant(it, mant))
            return builder.bitcast(e, pv.type)
        return builder.fmul(builder.fmul(pv, pow2(n1)), pow2(n2))
    return p(p, n), codegen


@intrinsic
def _f64_bits(typingctx, a):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))
    return types.int64(types.float64), codegen


@intrinsic
def _bits_f64(typingctx, a):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


def _nt_map(name, op):
    """``dst[j] = op(src[j], b, c)`` over two 1-D C-contiguous arrays of one
    float dtype with non-temporal 64-byte vector stores (a scalar head up to
    dst's 64-byte alignment, a scalar tail); ``op(builder, v, b, c, flags)``
    emits the arithmetic.

    Large outputs written once: the stores go to memory without first reading
    the lines in (as memcpy does for large copies).  LLVM's vectoriser will not
    emit such stores from a loop (it wants 64-byte aligned elements), hence IR.
    Callers end with ``_store_fence()``.
    """
    def impl(typingctx, src, dst, b, c):
        if not (isinstance(src, types.Array) and isinstance(dst, types.Array)
                and src.ndim == 1 and dst.ndim == 1 and src.layout == "C"
                and dst.layout == "C" and src.dtype == dst.dtype
                and src.dtype in (types.float32, types.float64)):
            return None

        def codegen(context, builder, signature, args):
            sv, dv, bv, cv = args
            dt = signature.args[0].dtype
            sa = context.make_array(signature.args[0])(context, builder, sv)
            da = context.make_array(signature.args[1])(context, builder, dv)
            n = builder.extract_value(da.shape, 0)
            ft = context.get_value_type(dt)
            size = 4 if dt == types.float32 else 8
            vl = 64 // size
            i64 = ir.IntType(64)
            vt = ir.VectorType(ft, vl)
            bv = context.cast(builder, bv, signature.args[2], dt)
            cv = context.cast(builder, cv, signature.args[3], dt)

            # a flag of our own, so that Numba's fastmath pass adds none: with
            # reassoc, (v - b) - c may become v - (b + c)
            fl = ("arcp",)

            def f(v, bb, cc):
                return op(builder, v, bb, cc, fl)

            def scalar(lo, hi):
                with cgutils.for_range_slice(builder, lo, hi, ir.Constant(i64, 1)) as (j, _):
                    v = builder.load(builder.gep(sa.data, [j]))
                    builder.store(f(v, bv, cv), builder.gep(da.data, [j]))

            addr = builder.ptrtoint(da.data, i64)
            mis = builder.and_(builder.sub(ir.Constant(i64, 0), addr), ir.Constant(i64, 63))
            h = builder.udiv(mis, ir.Constant(i64, size))
            odd = builder.icmp_unsigned("!=", builder.and_(addr, ir.Constant(i64, size - 1)),
                                        ir.Constant(i64, 0))
            h = builder.select(odd, n, h)       # never 64-byte aligned: all scalar
            h = builder.select(builder.icmp_signed("<", n, h), n, h)
            nv = builder.sdiv(builder.sub(n, h), ir.Constant(i64, vl))
            t0 = builder.add(h, builder.mul(nv, ir.Constant(i64, vl)))
            scalar(ir.Constant(i64, 0), h)
            vb = ir.Constant(vt, ir.Undefined)
            vc = ir.Constant(vt, ir.Undefined)
            for q in range(vl):
                vb = builder.insert_element(vb, bv, ir.Constant(ir.IntType(32), q))
                vc = builder.insert_element(vc, cv, ir.Constant(ir.IntType(32), q))
            nontemporal = builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)])
            with cgutils.for_range(builder, nv) as loop:
                j = builder.add(h, builder.mul(loop.index, ir.Constant(i64, vl)))
                v = builder.load(builder.bitcast(builder.gep(sa.data, [j]), vt.as_pointer()),
                                 align=size)
                st = builder.store(f(v, vb, vc),
                                   builder.bitcast(builder.gep(da.data, [j]), vt.as_pointer()),
                                   align=64)
                st.set_metadata("nontemporal", nontemporal)
            scalar(t0, n)
            return context.get_dummy_value()
        return types.void(src, dst, b, c), codegen
    impl.__name__ = impl.__qualname__ = name
    return impl


@intrinsic
def _row(typingctx, a, i):
    """``a[i]`` of a 2-D C-contiguous array, as a view that holds no reference
    to ``a``'s memory (a NULL meminfo), for the row loops of the kernels, where
    ``a`` outlives it.

    A plain ``a[i]`` is reference counted with atomic ops that Numba does not
    always prune out of the loop (not across an early exit or a call); each
    one costs a few dozen cycles and drains the pending non-temporal stores
    (float32 8192x512 log_softmax, streamed: 4.7x the time of a copy against
    2.0x with these views)."""
    if not (isinstance(a, types.Array) and a.ndim == 2 and a.layout == "C"
            and isinstance(i, types.Integer)):
        return None
    rt = a.copy(ndim=1, layout="C")

    def codegen(context, builder, signature, args):
        av, iv = args
        src = context.make_array(signature.args[0])(context, builder, av)
        dst = context.make_array(rt)(context, builder)
        k = builder.extract_value(src.shape, 1)
        ii = context.cast(builder, iv, signature.args[1], types.intp)
        populate_array(dst, data=builder.gep(src.data, [builder.mul(ii, k)]),
                       shape=[k], strides=[builder.extract_value(src.strides, 1)],
                       itemsize=src.itemsize, meminfo=None)
        return dst._getvalue()
    return rt(a, i), codegen


#: dst = (src - b) - c, streamed to memory.
_nt_sub_sub = intrinsic(_nt_map(
    "_nt_sub_sub",
    lambda bld, v, b, c, fl: bld.fsub(bld.fsub(v, b, flags=fl), c, flags=fl)))
#: dst = src * b, streamed to memory (c unused).
_nt_scale = intrinsic(_nt_map("_nt_scale", lambda bld, v, b, c, fl: bld.fmul(v, b, flags=fl)))


@intrinsic
def _store_fence(typingctx):
    """Orders the non-temporal stores before whatever follows (mfence on x86)."""
    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()
    return types.void(), codegen


# ----------------------------------------------------------------------------
# exp and log
# ----------------------------------------------------------------------------

_f32, _f64 = np.float32, np.float64
# float32 exp: rr2_p5 of XNNPACK, max error ~1.5 ulp.  Clamping keeps NaN
# (the comparisons are false) and sends -inf to exp(-104) = 0 and overflow to inf.
_E32_LO, _E32_HI = _f32(-104.0), _f32(89.0)
_E32_LOG2E = _f32(float.fromhex("0x1.715476p0"))
_E32_LN2_HI = _f32(float.fromhex("0x1.62E400p-1"))
_E32_LN2_LO = _f32(float.fromhex("0x1.7F7D1Cp-20"))
_E32_C5 = _f32(float.fromhex("0x1.0F9F9Cp-7"))
_E32_C4 = _f32(float.fromhex("0x1.573A1Ap-5"))
_E32_C3 = _f32(float.fromhex("0x1.555A80p-3"))
_E32_C2 = _f32(float.fromhex("0x1.FFFDC6p-2"))
_E32_C1 = _f32(float.fromhex("0x1.FFFFF6p-1"))
_E32_ONE = _f32(1.0)

# float64 exp: Cody-Waite with fdlibm's split ln2, Taylor to degree 12 on
# |r| <= ln2/2 (truncation < 2e-16 relative).
_E64_LO, _E64_HI = -746.0, 710.0
_E64_LOG2E = 1.4426950408889634
_E64_LN2_HI = 6.93147180369123816490e-01
_E64_LN2_LO = 1.90821492927058770002e-10
_E64_C = tuple(1.0 / math.factorial(i) for i in range(13))


@_jit_poly
def _exp_f32_reduced(z, n):
    """exp(z) given n = round(z log2(e)): Cody-Waite reduction, polynomial, 2**n."""
    t = z - n * _E32_LN2_HI
    t = t - n * _E32_LN2_LO
    p = _E32_C5 * t + _E32_C4
    p = p * t + _E32_C3
    p = p * t + _E32_C2
    p = p * t + _E32_C1
    p = p * t + _E32_ONE
    return _ldexp(p, n)


@_jit_poly
def _exp_f32(z):
    z = _E32_LO if z < _E32_LO else z
    z = _E32_HI if z > _E32_HI else z
    return _exp_f32_reduced(z, _rint(z * _E32_LOG2E))


# float32 exp(z) for z <= 0 (or NaN), the softmax case: the same polynomial,
# with n rounded by the magic-number add (no float -> int -> float round trip)
# and one clamp (z < -104: -inf -> 0; NaN kept, the comparison is false).
# 2**n is applied exactly by _ldexp (two multiplies by normal powers of two),
# subnormal results included, so softmax entries below finfo.tiny are the
# subnormals np.exp gives rather than 0.
_E32_MAGIC = _f32(float.fromhex("0x1.8p23"))   # 1.5 * 2**23: adding it rounds to an integer


@_jit_poly
def _exp_nonpos_f32(z):
    z = _E32_LO if z < _E32_LO else z
    return _exp_f32_reduced(z, (z * _E32_LOG2E + _E32_MAGIC) - _E32_MAGIC)


@_jit_poly
def _exp_f64(z):
    z = _E64_LO if z < _E64_LO else z
    z = _E64_HI if z > _E64_HI else z
    n = _rint(z * _E64_LOG2E)
    t = z - n * _E64_LN2_HI
    t = t - n * _E64_LN2_LO
    c = _E64_C
    p = c[12] * t + c[11]
    p = p * t + c[10]
    p = p * t + c[9]
    p = p * t + c[8]
    p = p * t + c[7]
    p = p * t + c[6]
    p = p * t + c[5]
    p = p * t + c[4]
    p = p * t + c[3]
    p = p * t + c[2]
    p = p * t + 1.0
    p = p * t + 1.0
    return _ldexp(p, n)


_L_SQRT2 = 1.4142135623730951
_L_LN2 = 0.6931471805599453


@_jit_poly
def _log_pos(v):
    """log of a positive normal float64 (a sum >= 1 here); vectorisable.

    v = 2**e * m with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(u), u = (m-1)/(m+1),
    |u| <= 0.172: the odd series to u**19 is below 1e-17.
    """
    bits = _f64_bits(v)
    e = ((bits >> 52) & 0x7FF) - 1023
    m = _bits_f64((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)
    big = m > _L_SQRT2
    m = m * 0.5 if big else m
    e = e + 1 if big else e
    u = (m - 1.0) / (m + 1.0)
    u2 = u * u
    p = 1.0 / 19.0
    p = p * u2 + 1.0 / 17.0
    p = p * u2 + 1.0 / 15.0
    p = p * u2 + 1.0 / 13.0
    p = p * u2 + 1.0 / 11.0
    p = p * u2 + 1.0 / 9.0
    p = p * u2 + 1.0 / 7.0
    p = p * u2 + 1.0 / 5.0
    p = p * u2 + 1.0 / 3.0
    p = p * u2 + 1.0
    return e * _L_LN2 + 2.0 * u * p


@_jit_poly
def _sub_sub(a, b, c):
    """(a - b) - c, never a - (b + c): log_softmax is (x - max) - log(sum)."""
    return (a - b) - c


@_jit_poly
def _sub_add(a, b, c):
    """(a - b) + c, kept in this order (lse - x = (max - x) + log(sum))."""
    return (a - b) + c


@_jit_poly
def _log_sum(s, r):
    """log(s) of a row's exp-sum ``s = sum exp(x - max)`` (float64), accurate
    near 0 as the reference's ``_log_sum`` (SciPy's logsumexp): ``r`` is the
    sum of the terms below the max alone (x - max < 0).  Every term is <= 1
    and a term at the max is exactly 1 (``_expn(0) == 1``), so ``s < 2``
    means one term at the max and log(s) = log1p(r), taken as
    log(u) + (r - (u - 1)) / u with u = 1 + r rounded (Kahan's correction:
    a few ulp relative; u == 1 gives r itself): ``log([0, -40])`` is
    4.2e-18, not 0.  Otherwise log(s).  One log either way.

    Every path that takes a log of an exp-sum finishes its rows here (with
    logsumexp's ``b``, called as ``_log_sum(1 + t, t)``, t = r / c).  NaN s:
    NaN (special rows); u == 0 (t == -1): -inf.  Selects only, so the tiles
    vectorise it over a tile of rows; compiled without reassociation (which
    would cancel the correction), hence a ``_jit_poly`` function (Numba's
    inlining would take the caller's flags), inlined by LLVM.
    """
    one = s < 2.0
    u = 1.0 + r if one else s
    v = _log_pos(u) + ((r - (u - 1.0)) / u if one else 0.0)
    ok = (u > 0.0) & (u < np.inf)
    return v if ok else (-np.inf if u == 0.0 else u)


def _by_dtype(doc, f32, f64):
    """A function for jitted code that calls ``f32`` or ``f64`` by its argument's dtype."""
    def stub(z):
        raise NotImplementedError

    stub.__doc__ = doc

    @overload(stub)
    def _ol(z):
        if z == types.float32:
            return lambda z: f32(z)
        if z == types.float64:
            return lambda z: f64(z)
    return stub


_exp = _by_dtype("exp(z) for any z.", _exp_f32, _exp_f64)
_expn = _by_dtype("exp(z) for z <= 0, NaN or -inf (x - max): other z give garbage.",
                  _exp_nonpos_f32, _exp_f64)


def _to(a, v):
    raise NotImplementedError


@overload(_to)
def _ol_to(a, v):
    """``v`` as the dtype of array or scalar ``a``."""
    dt = a.dtype if isinstance(a, types.Array) else a
    if dt == types.float32:
        return lambda a, v: np.float32(v)
    return lambda a, v: np.float64(v)


@_inline
def _sign(v):
    if v > 0:
        return 1.0
    if v < 0:
        return -1.0
    if v == 0:
        return 0.0
    return np.nan


@_inline
def _finite(v):
    return abs(v) < np.inf


# ----------------------------------------------------------------------------
# row pieces (1-D C-contiguous views of one row)
# ----------------------------------------------------------------------------

@_inline
def _max_with(xr, mr, m):
    """max(m, max of the selected entries); NaN if one is NaN."""
    if mr is None:
        for j in range(xr.shape[0]):
            m = _maximum(m, xr[j])
    else:
        ninf = _to(xr, -np.inf)
        for j in range(xr.shape[0]):
            v = xr[j] if mr[j] else ninf
            m = _maximum(m, v)
    return m


@_inline
def _row_max(xr, mr):
    """Max over the selected entries; NaN if one is NaN; -inf if none."""
    return _max_with(xr, mr, _to(xr, -np.inf))


@_jit
def _fill_special(mr, out_r, fill):
    """A row whose max is not finite: NaN where selected, ``fill`` elsewhere."""
    nan = _to(out_r, np.nan)
    if mr is None:
        for j in range(out_r.shape[0]):
            out_r[j] = nan
    else:
        f = _to(out_r, fill)
        for j in range(out_r.shape[0]):
            out_r[j] = nan if mr[j] else f


@_inline
def _exp_sum(xr, mr, m):
    """(sum exp(x - m), the same over x < m only) over the selected entries,
    in float64 (the second for ``_log_sum``)."""
    k = xr.shape[0]
    s = 0.0
    r = 0.0
    zero = _to(xr, 0.0)
    for b0 in range(0, k, _BLOCK):
        xb = xr[b0:b0 + _BLOCK]
        sb = _to(xr, 0.0)
        rb = _to(xr, 0.0)
        if mr is None:
            for j in range(xb.shape[0]):
                d = xb[j] - m
                e = _expn(d)
                sb += e
                rb += e if d < 0 else zero
        else:
            mb = mr[b0:b0 + _BLOCK]
            for j in range(xb.shape[0]):
                d = xb[j] - m
                e = _expn(d)
                e = e if mb[j] else zero
                sb += e
                rb += e if d < 0 else zero
        s += sb
        r += rb
    return s, r


@_inline
def _exp_store_sum(xr, mr, m, out_r):
    """out_r = exp(x - m) (0 where not selected); returns the sum in float64."""
    k = xr.shape[0]
    s = 0.0
    for b0 in range(0, k, _BLOCK):
        xb = xr[b0:b0 + _BLOCK]
        ob = out_r[b0:b0 + _BLOCK]
        nb = xb.shape[0]
        sb = _to(xr, 0.0)
        if mr is None:
            for j in range(nb):
                e = _expn(xb[j] - m)
                ob[j] = e
                sb += e
        else:
            mb = mr[b0:b0 + _BLOCK]
            zero = _to(xr, 0.0)
            for j in range(nb):
                e = _expn(xb[j] - m)
                e = e if mb[j] else zero
                ob[j] = e
                sb += e
        s += sb
    return s


# Unmasked rows whose max is not finite (NaN, +inf, or all -inf) must come
# out NaN.  Their row functions get there through the arithmetic (a NaN scale
# or shift), not through an early exit or a call to _fill_special: in a loop
# over rows either one keeps Numba from pruning the reference counting of the
# row views, and each such atomic op also drains the pending non-temporal
# stores (float32 8192x512 log_softmax: 5.2x the time of a copy against 2.0x).

@_inline
def _nan_unless(fin, v):
    return v if fin else _to(v, np.nan)


@_inline
def _softmax_row(xr, mr, out_r):
    m = _row_max(xr, mr)
    if mr is not None and not _finite(m):
        _fill_special(mr, out_r, 0.0)
        return
    s = _exp_store_sum(xr, mr, m, out_r)
    inv = _nan_unless(_finite(m), _to(xr, 1.0 / s))
    for j in range(out_r.shape[0]):
        out_r[j] *= inv


@_inline
def _log_write(xr, mr, m, ls, out_r):
    """out_r = (x - m) - ls where selected, -inf elsewhere (out_r may be xr)."""
    k = xr.shape[0]
    ninf = _to(xr, -np.inf)
    for b0 in range(0, k, _BLOCK):
        xb = xr[b0:b0 + _BLOCK]
        ob = out_r[b0:b0 + _BLOCK]
        nb = xb.shape[0]
        if mr is None:
            for j in range(nb):
                ob[j] = _sub_sub(xb[j], m, ls)
        else:
            mb = mr[b0:b0 + _BLOCK]
            for j in range(nb):
                v = _sub_sub(xb[j], m, ls)
                ob[j] = v if mb[j] else ninf


@_inline
def _softmax_row_nt(xr, out_r, tmp):
    """Softmax of an unmasked row streamed to memory: the exps go to ``tmp``
    (a scratch row), then ``tmp / sum`` to ``out_r`` with non-temporal
    stores, so that ``out_r`` is written once and never read."""
    m = _row_max(xr, None)
    t = tmp[:xr.shape[0]]
    inv = _nan_unless(_finite(m), _to(xr, 1.0 / _exp_store_sum(xr, None, m, t)))
    _nt_scale(t, out_r, inv, inv)


@_inline
def _log_finish(xr, mr, m, s, r, out_r, nt):
    """out_r = x - m - log(s) (``_log_sum(s, r)``), or the special row if
    ``m`` is not finite; ``nt``: streamed to memory (no mask)."""
    fin = _finite(m)
    if mr is None:
        ls = _to(xr, _log_sum(s, r)) if fin else _to(xr, 0.0)
        if nt:
            _nt_sub_sub(xr, out_r, _nan_unless(fin, m), ls)
        else:
            _log_write(xr, None, _nan_unless(fin, m), ls, out_r)
    elif not fin:
        _fill_special(mr, out_r, -np.inf)
    else:
        _log_write(xr, mr, m, _to(xr, _log_sum(s, r)), out_r)


@_inline
def _log_softmax_row(xr, mr, out_r):
    m = _row_max(xr, mr)
    s, r = _exp_sum(xr, mr, m) if _finite(m) else (0.0, 0.0)
    _log_finish(xr, mr, m, s, r, out_r, False)


# Unmasked rows, pipelined: one loop computes row i's exps (from L1, where the
# previous loop brought it) and row i + 1's max (from memory), so the loads
# of the next row overlap this row's arithmetic (float32 1 thread, 4096x1000
# log_softmax: 1.62x the time of a copy against 1.97x for max, then exps).

@_inline
def _exp_sum_next_max(xr, m, xn, orow):
    """(float64 sum of exp(xr - m), stored into ``orow`` unless it is None;
    the same over xr < m only (0 when stored: softmax needs no log); max of
    ``xn``, a row as long as ``xr``), in one pass of blocks."""
    k = xr.shape[0]
    s = 0.0
    r = 0.0
    mx = _to(xr, -np.inf)
    for b0 in range(0, k, _BLOCK):
        b1 = min(b0 + _BLOCK, k)
        sb, rb, mx = _online_exp_sum_max(xr[b0:b1], None, m, xn[b0:b1], None, mx,
                                         _sl(orow, b0, b1))
        s += sb
        r += rb
    return s, r, mx


@_inline
def _softmax_rows_piped(src, out, r0, r1, tmp, nt):
    """``nt``: the exps go to ``tmp``, then ``tmp / sum`` is streamed to out."""
    m = _row_max(_row(src, r0), None)
    for i in range(r0, r1):
        xr = _row(src, i)
        orow = _row(out, i)
        xn = _row(src, min(i + 1, r1 - 1))
        if nt:
            t = tmp[:xr.shape[0]]
            s, _, mn = _exp_sum_next_max(xr, m, xn, t)
            inv = _nan_unless(_finite(m), _to(xr, 1.0 / s))
            _nt_scale(t, orow, inv, inv)
        else:
            s, _, mn = _exp_sum_next_max(xr, m, xn, orow)
            inv = _nan_unless(_finite(m), _to(xr, 1.0 / s))
            for j in range(orow.shape[0]):
                orow[j] *= inv
        m = mn
    if nt:
        _store_fence()


@_inline
def _log_softmax_rows_piped(src, out, r0, r1, nt):
    m = _row_max(_row(src, r0), None)
    for i in range(r0, r1):
        xr = _row(src, i)
        s, r, mn = _exp_sum_next_max(xr, m, _row(src, min(i + 1, r1 - 1)), None)
        _log_finish(xr, None, m, s, r, _row(out, i), nt)
        m = mn
    if nt:
        _store_fence()


# long log_softmax rows (k > _ONLINE): max and sum in one pass

@_inline
def _sl(a, lo, hi):
    return None if a is None else a[lo:hi]


@_inline
def _online_exp_sum_max(xc, mc, m, xn, mn, mx, oc=None):
    """(sum exp(xc - m) over the selected entries of xc in the working dtype,
    the same over xc < m only (for ``_log_sum``), max(mx, selected entries of
    xn)); xn is no longer than xc.  One loop does all, so the next chunk
    streams in from memory while this one's exps are computed.  ``oc`` (no
    mask; softmax, which takes no log): the exps are also stored there, and
    the second sum is 0."""
    n2 = xn.shape[0]
    sb = _to(xc, 0.0)
    rb = _to(xc, 0.0)
    zero = _to(xc, 0.0)
    if mc is None and oc is not None:
        for j in range(n2):
            e = _expn(xc[j] - m)
            oc[j] = e
            sb += e
            mx = _maximum(mx, xn[j])
        for j in range(n2, xc.shape[0]):
            e = _expn(xc[j] - m)
            oc[j] = e
            sb += e
    elif mc is None:
        for j in range(n2):
            d = xc[j] - m
            e = _expn(d)
            sb += e
            rb += e if d < 0 else zero
            mx = _maximum(mx, xn[j])
        for j in range(n2, xc.shape[0]):
            d = xc[j] - m
            e = _expn(d)
            sb += e
            rb += e if d < 0 else zero
    else:
        ninf = _to(xc, -np.inf)
        for j in range(n2):
            d = xc[j] - m
            e = _expn(d)
            e = e if mc[j] else zero
            sb += e
            rb += e if d < 0 else zero
            v = xn[j] if mn[j] else ninf
            mx = _maximum(mx, v)
        for j in range(n2, xc.shape[0]):
            d = xc[j] - m
            e = _expn(d)
            e = e if mc[j] else zero
            sb += e
            rb += e if d < 0 else zero
    return sb, rb, mx


@_inline
def _online_max_sum(xr, mr):
    """(max, sum exp(x - max), the same over x < max only) of the selected
    entries in one pass over memory.

    Chunks of ``_CHUNK`` elements: chunk c's exp-sum (from L1, with the
    running max) runs in the same loop as chunk c+1's max (from memory); the
    float64 running sums are rescaled when the max grows.  The second sum
    (for ``_log_sum``) takes the terms below the running max: when the max
    grows every earlier term, the old max's included, falls below it, so it
    restarts as the whole rescaled sum.  A NaN or +inf max is returned at
    once (the caller fills the row).
    """
    k = xr.shape[0]
    ninf = _to(xr, -np.inf)
    m = ninf
    s = 0.0
    r = 0.0
    mx = _max_with(xr[0:_CHUNK], _sl(mr, 0, _CHUNK), ninf)
    for c0 in range(0, k, _CHUNK):
        c1 = min(c0 + _CHUNK, k)
        mb = _maximum(m, mx)          # mx: this chunk's max
        if not _finite(mb) and mb != -np.inf:
            return mb, s, r
        if mb > m:
            if s != 0.0:
                s = s * math.exp(np.float64(m) - np.float64(mb))
            r = s
            m = mb
        mx = ninf
        n1 = min(c1 + _CHUNK, k)      # next chunk [c1, n1)
        for b0 in range(c0, c1, _BLOCK):
            b1 = min(b0 + _BLOCK, c1)
            q0 = min(c1 + (b0 - c0), n1)   # the part of the next chunk paired with this block
            q1 = min(c1 + (b1 - c0), n1)
            if m == -np.inf:          # nothing but -inf so far: no exps
                mx = _max_with(xr[q0:q1], _sl(mr, q0, q1), mx)
            else:
                sb, rb, mx = _online_exp_sum_max(xr[b0:b1], _sl(mr, b0, b1), m,
                                                 xr[q0:q1], _sl(mr, q0, q1), mx)
                s += sb
                r += rb
    return m, s, r


@_inline
def _log_softmax_row_online(xr, mr, out_r, nt):
    """``nt``: the result (no mask) is streamed to memory (non-temporal stores)."""
    m, s, r = _online_max_sum(xr, mr)
    _log_finish(xr, mr, m, s, r, out_r, nt)


# ----------------------------------------------------------------------------
# short rows: transposed tiles
# ----------------------------------------------------------------------------

def _tile_rows(k):
    """Rows per tile for rows of length ``k``; 0: the row path.

    About 4096 elements, a multiple of 16.  Computed in Python and passed in:
    when LLVM can see how T derives from k the tile loops run 45% slower.
    """
    if k >= _TILE_K:
        return 0
    return min(256, max(16, (4096 // k) // 16 * 16))


@_inline
def _tile_load_max(xf, mf, base, k, tw, T, buf, mrow):
    """buf[j*T + r] = x[r, j] (-inf where not selected); mrow[r] = row max.

    The max here is the plain one: a NaN is caught later by the sum.
    """
    ninf = _to(xf, -np.inf)
    for r in range(tw):
        xr = xf[base + r * k:base + r * k + k]
        m = ninf
        if mf is None:
            for j in range(k):
                v = xr[j]
                buf[j * T + r] = v
                m = v if v > m else m
        else:
            mr = mf[base + r * k:base + r * k + k]
            for j in range(k):
                v = xr[j] if mr[j] else ninf
                buf[j * T + r] = v
                m = v if v > m else m
        mrow[r] = m


@_inline
def _tile_exp_sum(buf, mrow, srow, rrow, k, tw, T, store):
    """srow[r] = sum_j exp(buf[j, r] - mrow[r]); with ``store`` the exps replace buf.
    ``rrow`` (None for softmax): the same over buf[j, r] < mrow[r] only, for
    ``_log_sum``."""
    zero = _to(buf, 0.0)
    for r in range(tw):
        srow[r] = 0
        if rrow is not None:
            rrow[r] = 0
    for j in range(k):
        bj = buf[j * T:j * T + T]
        if store:
            for r in range(tw):
                d = bj[r] - mrow[r]
                e = _expn(d)
                bj[r] = e
                srow[r] += e
                if rrow is not None:
                    rrow[r] += e if d < 0 else zero
        else:
            for r in range(tw):
                d = bj[r] - mrow[r]
                e = _expn(d)
                srow[r] += e
                if rrow is not None:
                    rrow[r] += e if d < 0 else zero


@_inline
def _tile_any_special(mrow, srow, tw):
    """Any row of the tile special? One vectorised pass, so the common case
    writes back without a test per row."""
    n = 0
    for r in range(tw):
        n += not (_finite(mrow[r]) and srow[r] == srow[r])
    return n > 0


@_inline
def _tile_is_special(m, s):
    # not finite max (NaN, +-inf: nothing or all -inf selected), or a NaN the plain max missed
    return not (_finite(m) and s == s)


@_jit
def _softmax_tiles(x, mask, out, r0, r1, T):
    k = x.shape[1]
    xf = x.reshape(-1)
    of = out.reshape(-1)
    buf = np.empty(k * T, x.dtype)
    mrow = np.empty(T, x.dtype)
    srow = np.empty(T, x.dtype)
    spec = np.empty(T, np.int64)
    one = _to(x, 1.0)
    for i0 in range(r0, r1, T):
        tw = min(T, r1 - i0)
        base = i0 * k
        if mask is None:
            _tile_load_max(xf, None, base, k, tw, T, buf, mrow)
        else:
            _tile_load_max(xf, mask.reshape(-1), base, k, tw, T, buf, mrow)
        _tile_exp_sum(buf, mrow, srow, None, k, tw, T, True)
        for r in range(tw):
            srow[r] = one / srow[r]
        nspec = 0
        if not _tile_any_special(mrow, srow, tw):
            for r in range(tw):
                inv = srow[r]
                ob = of[base + r * k:base + r * k + k]
                for j in range(k):
                    ob[j] = buf[j * T + r] * inv
        else:
            for r in range(tw):
                inv = srow[r]
                if _tile_is_special(mrow[r], inv):
                    spec[nspec] = i0 + r
                    nspec += 1
                    continue
                ob = of[base + r * k:base + r * k + k]
                for j in range(k):
                    ob[j] = buf[j * T + r] * inv
        # rare rows (inf, NaN, nothing selected) by the row path, outside the hot loop
        for q in range(nspec):
            i = spec[q]
            if mask is None:
                _softmax_row(_row(x, i), None, _row(out, i))
            else:
                _softmax_row(_row(x, i), _row(mask, i), _row(out, i))


@_jit
def _log_softmax_tiles(x, mask, out, r0, r1, T):
    k = x.shape[1]
    xf = x.reshape(-1)
    of = out.reshape(-1)
    buf = np.empty(k * T, x.dtype)
    mrow = np.empty(T, x.dtype)
    srow = np.empty(T, x.dtype)
    rrow = np.empty(T, x.dtype)
    spec = np.empty(T, np.int64)
    for i0 in range(r0, r1, T):
        tw = min(T, r1 - i0)
        base = i0 * k
        if mask is None:
            _tile_load_max(xf, None, base, k, tw, T, buf, mrow)
        else:
            _tile_load_max(xf, mask.reshape(-1), base, k, tw, T, buf, mrow)
        _tile_exp_sum(buf, mrow, srow, rrow, k, tw, T, False)
        for r in range(tw):
            # log of the sum, vectorised over the tile (kept in srow); specials: NaN
            srow[r] = _to(x, _log_sum(np.float64(srow[r]), np.float64(rrow[r])))
        nspec = 0
        if not _tile_any_special(mrow, srow, tw):
            for r in range(tw):
                m = mrow[r]
                ls = srow[r]
                ob = of[base + r * k:base + r * k + k]
                if mask is None:    # x itself, read along the row (out may be x)
                    xb = xf[base + r * k:base + r * k + k]
                    for j in range(k):
                        ob[j] = _sub_sub(xb[j], m, ls)
                else:
                    for j in range(k):
                        ob[j] = _sub_sub(buf[j * T + r], m, ls)
        else:
            for r in range(tw):
                m = mrow[r]
                ls = srow[r]
                if _tile_is_special(m, ls):
                    spec[nspec] = i0 + r
                    nspec += 1
                    continue
                ob = of[base + r * k:base + r * k + k]
                for j in range(k):
                    ob[j] = _sub_sub(buf[j * T + r], m, ls)
        for q in range(nspec):
            i = spec[q]
            if mask is None:
                _log_softmax_row(_row(x, i), None, _row(out, i))
            else:
                _log_softmax_row(_row(x, i), _row(mask, i), _row(out, i))


# ----------------------------------------------------------------------------
# softmax / log_softmax drivers
# ----------------------------------------------------------------------------

@_inline
def _same(a, b):
    """``a`` and ``b`` start at the same address (``out is x``, in place).

    In place, the row functions get the same view (of ``out``, so that a
    read-only input types as such) twice so that LLVM sees one pointer: with
    two it checks for overlap at run time, finds it and runs the scalar loop.
    """
    return a.ctypes.data == b.ctypes.data


@_jit
def _softmax_range(x, mask, out, r0, r1, T, nt):
    if T > 0:
        _softmax_tiles(x, mask, out, r0, r1, T)
        return
    same = _same(x, out)
    if mask is None and x.shape[1] <= _ONLINE:
        if r1 <= r0:
            return
        tmp = np.empty(x.shape[1] if nt else 0, x.dtype)
        if same:
            _softmax_rows_piped(out, out, r0, r1, tmp, nt)
        else:
            _softmax_rows_piped(x, out, r0, r1, tmp, nt)
        return
    if nt and mask is None:
        tmp = np.empty(x.shape[1], x.dtype)
        for i in range(r0, r1):
            orow = _row(out, i)
            if same:
                _softmax_row_nt(orow, orow, tmp)
            else:
                _softmax_row_nt(_row(x, i), orow, tmp)
        _store_fence()
        return
    for i in range(r0, r1):
        xr = _row(x, i)
        orow = _row(out, i)
        if mask is None:
            if same:
                _softmax_row(orow, None, orow)
            else:
                _softmax_row(xr, None, orow)
        else:
            if same:
                _softmax_row(orow, _row(mask, i), orow)
            else:
                _softmax_row(xr, _row(mask, i), orow)


@_jit
def _softmax_serial(x, mask, out, T, nt):
    _softmax_range(x, mask, out, 0, x.shape[0], T, nt)


@_jit_par
def _softmax_parallel(x, mask, out, T, nt, nchunks):
    n = x.shape[0]
    for c in prange(nchunks):
        _softmax_range(x, mask, out, c * n // nchunks, (c + 1) * n // nchunks, T, nt)


@_jit
def _log_softmax_range(x, mask, out, r0, r1, T, nt):
    if T > 0:
        _log_softmax_tiles(x, mask, out, r0, r1, T)
        return
    same = _same(x, out)
    if mask is None and x.shape[1] <= _ONLINE:
        if r1 <= r0:
            return
        if same:
            _log_softmax_rows_piped(out, out, r0, r1, nt)
        else:
            _log_softmax_rows_piped(x, out, r0, r1, nt)
        return
    if x.shape[1] > _ONLINE:
        for i in range(r0, r1):
            orow = _row(out, i)
            if mask is None:
                if same:
                    _log_softmax_row_online(orow, None, orow, nt)
                else:
                    _log_softmax_row_online(_row(x, i), None, orow, nt)
            else:
                if same:
                    _log_softmax_row_online(orow, _row(mask, i), orow, nt)
                else:
                    _log_softmax_row_online(_row(x, i), _row(mask, i), orow, nt)
        if nt:
            _store_fence()
        return
    if mask is not None:          # masked rows up to _ONLINE (never streamed)
        for i in range(r0, r1):
            orow = _row(out, i)
            if same:
                _log_softmax_row(orow, _row(mask, i), orow)
            else:
                _log_softmax_row(_row(x, i), _row(mask, i), orow)


@_jit
def _log_softmax_serial(x, mask, out, T, nt):
    _log_softmax_range(x, mask, out, 0, x.shape[0], T, nt)


@_jit_par
def _log_softmax_parallel(x, mask, out, T, nt, nchunks):
    n = x.shape[0]
    for c in prange(nchunks):
        _log_softmax_range(x, mask, out, c * n // nchunks, (c + 1) * n // nchunks, T, nt)


# ----------------------------------------------------------------------------
# logsumexp
# ----------------------------------------------------------------------------

@_inline
def _lse_row_max(xr, br, mr, has_b):
    """Max over the entries that take part: selected and (with b) b != 0."""
    if not has_b:
        return _row_max(xr, mr)
    m = _to(xr, -np.inf)
    ninf = _to(xr, -np.inf)
    if mr is None:
        for j in range(xr.shape[0]):
            v = xr[j] if br[j] != 0 else ninf
            m = _maximum(m, v)
    else:
        for j in range(xr.shape[0]):
            v = xr[j] if (mr[j] and br[j] != 0) else ninf
            m = _maximum(m, v)
    return m


@_jit
def _lse_row(xr, br, mr, has_b):
    """(log|sum|, sign) of one row, as numpy_ref.logsumexp_rows with sign wanted."""
    m = _lse_row_max(xr, br, mr, has_b)
    if m == -np.inf:
        return -np.inf, 0.0
    if m != m:
        return np.nan, np.nan
    if m == np.inf:
        if not has_b:
            return np.inf, 1.0
        w = 0.0
        for j in range(xr.shape[0]):
            if xr[j] == np.inf and (mr is None or mr[j]):
                w += br[j]
        # the +inf entries dominate: the sign is that of their total weight
        return (np.nan if w == 0 else np.inf), _sign(w)
    if not has_b:
        s, r = _exp_sum(xr, mr, m)
        return _log_sum(s, r) + m, _sign(s)
    # as numpy_ref._log_sum: c = sum of b at the max, r = sum of b exp(x - m)
    # below it; log|c + r| = log|c| + log1p(r / c)
    c = 0.0
    r = 0.0
    k = xr.shape[0]
    zero = _to(xr, 0.0)
    for b0 in range(0, k, _BLOCK):
        xb = xr[b0:b0 + _BLOCK]
        bb = br[b0:b0 + _BLOCK]
        cb = _to(xr, 0.0)
        rb = _to(xr, 0.0)
        if mr is None:
            for j in range(xb.shape[0]):
                bj = bb[j]
                d = xb[j] - m
                e = _exp(d) * bj
                cb += bj if d == 0 else zero
                rb += e if (bj != 0 and d < 0) else zero
        else:
            mb = mr[b0:b0 + _BLOCK]
            for j in range(xb.shape[0]):
                bj = bb[j]
                d = xb[j] - m
                e = _exp(d) * bj
                sel = mb[j] and bj != 0
                cb += bj if (sel and d == 0) else zero
                rb += e if (sel and d < 0) else zero
        c += cb
        r += rb
    if c == 0:                 # the weights at the max cancel: the sum is r alone
        return np.log(abs(r)) + m, _sign(r)
    t = r / c
    sg = _sign(c) * _sign(t + 1.0)
    t = -t - 2.0 if t < -1.0 else t
    return np.log(abs(c)) + _log_sum(1.0 + t, t) + m, sg


@_jit
def _lse_range(x, b, mask, out, sign, has_b, has_sign, r0, r1):
    for i in range(r0, r1):
        br = _row(b, i) if has_b else _row(b, 0)
        if mask is None:
            r, sg = _lse_row(_row(x, i), br, None, has_b)
        else:
            r, sg = _lse_row(_row(x, i), br, _row(mask, i), has_b)
        if has_sign:
            if r != r:
                sg = np.nan
            sign[i] = sg
        else:
            # without sign: a negative sum (or a +inf entry of negative weight) is NaN
            if sg < 0:
                r = np.nan
        out[i] = r


@_jit
def _lse_tiles(x, mask, out, r0, r1, T):
    """logsumexp of short rows without b: the tile path."""
    k = x.shape[1]
    xf = x.reshape(-1)
    buf = np.empty(k * T, x.dtype)
    mrow = np.empty(T, x.dtype)
    srow = np.empty(T, x.dtype)
    rrow = np.empty(T, x.dtype)
    spec = np.empty(T, np.int64)
    lrow = np.empty(T, np.float64)
    for i0 in range(r0, r1, T):
        tw = min(T, r1 - i0)
        base = i0 * k
        if mask is None:
            _tile_load_max(xf, None, base, k, tw, T, buf, mrow)
        else:
            _tile_load_max(xf, mask.reshape(-1), base, k, tw, T, buf, mrow)
        _tile_exp_sum(buf, mrow, srow, rrow, k, tw, T, False)
        for r in range(tw):
            lrow[r] = _log_sum(np.float64(srow[r]), np.float64(rrow[r])) + mrow[r]
        nspec = 0
        for r in range(tw):
            if _tile_is_special(mrow[r], srow[r]):
                spec[nspec] = i0 + r
                nspec += 1
            else:
                out[i0 + r] = lrow[r]
        for q in range(nspec):
            _lse_range(x, x, mask, out, out, False, False, spec[q], spec[q] + 1)


@_jit
def _lse_any_range(x, b, mask, out, sign, has_b, has_sign, r0, r1, T):
    if not has_b and T > 0:
        if has_sign:
            for i in range(r0, r1):
                sign[i] = 1.0
            _lse_tiles(x, mask, out, r0, r1, T)
            for i in range(r0, r1):
                if out[i] == -np.inf:
                    sign[i] = 0.0
                elif out[i] != out[i]:
                    sign[i] = np.nan
        else:
            _lse_tiles(x, mask, out, r0, r1, T)
        return
    _lse_range(x, b, mask, out, sign, has_b, has_sign, r0, r1)


@_jit
def _lse_serial(x, b, mask, out, sign, has_b, has_sign, T):
    _lse_any_range(x, b, mask, out, sign, has_b, has_sign, 0, x.shape[0], T)


@_jit_par
def _lse_parallel(x, b, mask, out, sign, has_b, has_sign, T, nchunks):
    n = x.shape[0]
    for c in prange(nchunks):
        _lse_any_range(x, b, mask, out, sign, has_b, has_sign,
                       c * n // nchunks, (c + 1) * n // nchunks, T)


# ----------------------------------------------------------------------------
# backward
# ----------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------
# cross entropy
# ----------------------------------------------------------------------------

@_jit
def _check_targets(target, k, ignore_index):
    for i in range(target.shape[0]):
        t = target[i]
        if (t < 0 or t >= k) and t != ignore_index:
            return i
    return -1


@_inline
def _ce_exp_pass(xr, wr, m, out_r, store, smooth):
    """exp(x - m) -> out_r (if ``store``); returns (sum exp, the same over
    x < m only (for ``_log_sum``), sum_c w_c (m - x_c)) in float64.

    Each x is read before its slot is written: out_r may be xr.  The last
    sum is taken in float64: m - x_c overflows float32 near -+finfo.max.
    """
    k = xr.shape[0]
    s = 0.0
    r = 0.0
    a = 0.0
    zero = _to(xr, 0.0)
    for b0 in range(0, k, _BLOCK):
        xb = xr[b0:b0 + _BLOCK]
        nb = xb.shape[0]
        sb = _to(xr, 0.0)
        rb = _to(xr, 0.0)
        ab = 0.0
        if store:
            ob = out_r[b0:b0 + _BLOCK]
            if smooth:
                wb = wr[b0:b0 + _BLOCK]
                for j in range(nb):
                    xj = xb[j]
                    d = xj - m
                    e = _expn(d)
                    ab += np.float64(wb[j]) * (np.float64(m) - np.float64(xj))
                    ob[j] = e
                    sb += e
                    rb += e if d < 0 else zero
            else:
                for j in range(nb):
                    d = xb[j] - m
                    e = _expn(d)
                    ob[j] = e
                    sb += e
                    rb += e if d < 0 else zero
        else:
            for j in range(nb):
                d = xb[j] - m
                e = _expn(d)
                sb += e
                rb += e if d < 0 else zero
            if smooth:
                wb = wr[b0:b0 + _BLOCK]
                for j in range(nb):
                    ab += np.float64(wb[j]) * (np.float64(m) - np.float64(xb[j]))
        s += sb
        r += rb
        a += ab
    return s, r, a


@_jit_poly
def _ce_index_loss(m, x_t, w_t, logs, sw, wsum, eps, k, z_loss, a, b):
    """One row's loss, in the compute dtype and in the reference's order of
    operations (so that it overflows where the reference does)."""
    ls = _to(m, logs)
    ce = (_to(m, 1.0) - _to(m, eps)) * w_t * _sub_add(m, x_t, ls)
    if eps != 0.0:
        ce = ce + _to(m, (eps / k) * (sw + wsum * logs))
    val = _to(m, a) * ce
    if z_loss != 0.0:
        lse = m + ls
        val = val + _to(m, b) * _to(m, z_loss) * lse * lse
    return val


@_jit
def _ce_index_range(x, target, w, wsum, ignore_index, eps, z_loss, a, b, g,
                    row_scale, has_rs, loss, want_loss, grad, want_grad, r0, r1):
    n, k = x.shape
    smooth = eps != 0.0
    same = _same(x, grad)
    zero = _to(x, 0.0)
    nan = _to(x, np.nan)
    for i in range(r0, r1):
        t = target[i]
        xr = _row(x, i)
        if t == ignore_index:
            if want_loss:
                loss[i] = 0.0
            if want_grad:
                gr = _row(grad, i)
                for j in range(k):
                    gr[j] = zero
            continue
        m = _row_max(xr, None)
        if not _finite(m):
            if want_loss:
                loss[i] = np.nan
            if want_grad:
                gr = _row(grad, i)
                for j in range(k):
                    gr[j] = nan
            continue
        x_t = xr[t]   # before the exp pass: grad may be x
        w_t = np.float64(w[t])
        if not want_grad:
            s, sr, sw = _ce_exp_pass(xr, w, m, xr, False, smooth)
        elif same:  # through grad's view: x may be read-only only when it is not grad
            gi = _row(grad, i)
            s, sr, sw = _ce_exp_pass(gi, w, m, gi, True, smooth)
        else:
            s, sr, sw = _ce_exp_pass(xr, w, m, _row(grad, i), True, smooth)
        logs = _log_sum(s, sr)
        mm = np.float64(m)
        lse = mm + logs
        r = g * (row_scale[i] if has_rs else 1.0)
        if want_loss:
            loss[i] = _ce_index_loss(m, x_t, w[t], logs, sw, wsum, eps, k, z_loss, a, b)
        if want_grad:
            c1 = a * ((1.0 - eps) * w_t + (eps / k) * wsum)
            if z_loss != 0.0:
                c1 += 2.0 * b * z_loss * lse
            cp = _to(x, r * c1 / s)
            gr = _row(grad, i)
            if smooth:
                cw = _to(x, r * a * eps / k)
                for j in range(k):
                    gr[j] = gr[j] * cp - w[j] * cw
            else:
                for j in range(k):
                    gr[j] = gr[j] * cp
            gr[t] -= _to(x, r * a * (1.0 - eps) * w_t)


@_jit
def _ce_index_tiles(x, target, w, wsum, ignore_index, eps, z_loss, a, b, g,
                    row_scale, has_rs, loss, want_loss, grad, want_grad, r0, r1, T):
    """Index cross entropy for short rows: transposed tiles (see _softmax_tiles)."""
    k = x.shape[1]
    xf = x.reshape(-1)
    gf = grad.reshape(-1)
    buf = np.empty(k * T, x.dtype)
    mrow = np.empty(T, x.dtype)
    srow = np.empty(T, x.dtype)
    rrow = np.empty(T, x.dtype)
    spec = np.empty(T, np.int64)
    lrow = np.empty(T, np.float64)
    arow = np.empty(T, np.float64)
    smooth = eps != 0.0
    for i0 in range(r0, r1, T):
        tw = min(T, r1 - i0)
        base = i0 * k
        _tile_load_max(xf, None, base, k, tw, T, buf, mrow)
        # sum_c w_c (m - x_c), before buf turns into exps
        if smooth:
            for r in range(tw):
                arow[r] = 0.0
            for j in range(k):
                bj = buf[j * T:j * T + T]
                wj = w[j]
                for r in range(tw):
                    arow[r] += np.float64(wj) * (np.float64(mrow[r]) - np.float64(bj[r]))
        _tile_exp_sum(buf, mrow, srow, rrow, k, tw, T, want_grad)
        for r in range(tw):
            lrow[r] = _log_sum(np.float64(srow[r]), np.float64(rrow[r]))
        nspec = 0
        for r in range(tw):
            i = i0 + r
            t = target[i]
            m = mrow[r]
            s = srow[r]
            if t == ignore_index:
                if want_loss:
                    loss[i] = 0.0
                if want_grad:
                    gb = gf[base + r * k:base + r * k + k]
                    for j in range(k):
                        gb[j] = 0
                continue
            if _tile_is_special(m, s):
                spec[nspec] = i
                nspec += 1
                continue
            logs = lrow[r]
            mm = np.float64(m)
            lse = mm + logs
            w_t = np.float64(w[t])
            if want_loss:
                loss[i] = _ce_index_loss(m, xf[base + r * k + t], w[t], logs, arow[r], wsum,
                                         eps, k, z_loss, a, b)
            if want_grad:
                rs = g * (row_scale[i] if has_rs else 1.0)
                c1 = a * ((1.0 - eps) * w_t + (eps / k) * wsum)
                if z_loss != 0.0:
                    c1 += 2.0 * b * z_loss * lse
                cp = _to(x, rs * c1 / s)
                gb = gf[base + r * k:base + r * k + k]
                if smooth:
                    cw = _to(x, rs * a * eps / k)
                    for j in range(k):
                        gb[j] = buf[j * T + r] * cp - w[j] * cw
                else:
                    for j in range(k):
                        gb[j] = buf[j * T + r] * cp
                gb[t] -= _to(x, rs * a * (1.0 - eps) * w_t)
        for q in range(nspec):
            _ce_index_range(x, target, w, wsum, ignore_index, eps, z_loss, a, b, g,
                            row_scale, has_rs, loss, want_loss, grad, want_grad,
                            spec[q], spec[q] + 1)


@_jit
def _ce_index_any(x, target, w, wsum, ignore_index, eps, z_loss, a, b, g,
                  row_scale, has_rs, loss, want_loss, grad, want_grad, r0, r1, T):
    if T > 0:
        _ce_index_tiles(x, target, w, wsum, ignore_index, eps, z_loss, a, b, g,
                        row_scale, has_rs, loss, want_loss, grad, want_grad, r0, r1, T)
    else:
        _ce_index_range(x, target, w, wsum, ignore_index, eps, z_loss, a, b, g,
                        row_scale, has_rs, loss, want_loss, grad, want_grad, r0, r1)


@_jit
def _ce_index_serial(x, target, w, wsum, ignore_index, eps, z_loss, a, b, g,
                     row_scale, has_rs, loss, want_loss, grad, want_grad, T):
    _ce_index_any(x, target, w, wsum, ignore_index, eps, z_loss, a, b, g,
                  row_scale, has_rs, loss, want_loss, grad, want_grad, 0, x.shape[0], T)


@_jit_par
def _ce_index_parallel(x, target, w, wsum, ignore_index, eps, z_loss, a, b, g,
                       row_scale, has_rs, loss, want_loss, grad, want_grad, T, nchunks):
    n = x.shape[0]
    for c in prange(nchunks):
        _ce_index_any(x, target, w, wsum, ignore_index, eps, z_loss, a, b, g,
                      row_scale, has_rs, loss, want_loss, grad, want_grad,
                      c * n // nchunks, (c + 1) * n // nchunks, T)


@_inline
def _ce_prob_pass(xr, tr, w, m, out_r, store, one_m_eps, eps_k):
    """exp(x - m) -> out_r (if ``store``, x read first); returns float64
    (sum exp, the same over x < m only (for ``_log_sum``), sum_c wq_c,
    sum_c wq_c (m - x_c)), wq = (t (1-eps) + eps/k) w."""
    k = xr.shape[0]
    s = 0.0
    sr = 0.0
    sq = 0.0
    sa = 0.0
    zero = _to(xr, 0.0)
    for b0 in range(0, k, _BLOCK):
        xb = xr[b0:b0 + _BLOCK]
        tb = tr[b0:b0 + _BLOCK]
        wb = w[b0:b0 + _BLOCK]
        ob = out_r[b0:b0 + _BLOCK]
        nb = xb.shape[0]
        sb = _to(xr, 0.0)
        rb = _to(xr, 0.0)
        qb = _to(xr, 0.0)
        ab = 0.0
        for j in range(nb):
            xj = xb[j]
            d = xj - m
            e = _expn(d)
            if store:
                ob[j] = e
            sb += e
            rb += e if d < 0 else zero
            wq = (tb[j] * one_m_eps + eps_k) * wb[j]
            qb += wq
            ab += np.float64(wq) * (np.float64(m) - np.float64(xj))   # float64: see _ce_exp_pass
        s += sb
        sr += rb
        sq += qb
        sa += ab
    return s, sr, sq, sa


@_jit
def _ce_prob_range(x, target, w, eps, z_loss, a, b, g, row_scale, has_rs,
                   loss, want_loss, grad, want_grad, r0, r1):
    k = x.shape[1]
    same = _same(x, grad)
    one_m_eps = _to(x, 1.0 - eps)
    eps_k = _to(x, eps / k)
    nan = _to(x, np.nan)
    for i in range(r0, r1):
        xr = _row(x, i)
        tr = _row(target, i)
        m = _row_max(xr, None)
        if not _finite(m):
            if want_loss:
                loss[i] = np.nan
            if want_grad:
                gr = _row(grad, i)
                for j in range(k):
                    gr[j] = nan
            continue
        if not want_grad:
            s, sr, sq, sa = _ce_prob_pass(xr, tr, w, m, xr, False, one_m_eps, eps_k)
        elif same:
            gi = _row(grad, i)
            s, sr, sq, sa = _ce_prob_pass(gi, tr, w, m, gi, True, one_m_eps, eps_k)
        else:
            s, sr, sq, sa = _ce_prob_pass(xr, tr, w, m, _row(grad, i), True, one_m_eps, eps_k)
        logs = _log_sum(s, sr)
        lse = np.float64(m) + logs
        if want_loss:
            val = a * (sa + logs * sq)
            if z_loss != 0.0:
                val += b * z_loss * lse * lse
            loss[i] = val
        if want_grad:
            rs = g * (row_scale[i] if has_rs else 1.0)
            c1 = a * sq
            if z_loss != 0.0:
                c1 += 2.0 * b * z_loss * lse
            cp = _to(x, rs * c1 / s)
            cw = _to(x, rs * a)
            gr = _row(grad, i)
            for j in range(k):
                wq = (tr[j] * one_m_eps + eps_k) * w[j]
                gr[j] = gr[j] * cp - wq * cw


@_jit
def _ce_prob_serial(x, target, w, eps, z_loss, a, b, g, row_scale, has_rs,
                    loss, want_loss, grad, want_grad):
    _ce_prob_range(x, target, w, eps, z_loss, a, b, g, row_scale, has_rs,
                   loss, want_loss, grad, want_grad, 0, x.shape[0])


@_jit_par
def _ce_prob_parallel(x, target, w, eps, z_loss, a, b, g, row_scale, has_rs,
                      loss, want_loss, grad, want_grad, nchunks):
    n = x.shape[0]
    for c in prange(nchunks):
        _ce_prob_range(x, target, w, eps, z_loss, a, b, g, row_scale, has_rs,
                       loss, want_loss, grad, want_grad,
                       c * n // nchunks, (c + 1) * n // nchunks)


# ----------------------------------------------------------------------------
# Python wrappers: the contract of numpy_ref; None -> dummy array + flag
# ----------------------------------------------------------------------------

_MAX_THREADS = numba.config.NUMBA_NUM_THREADS
_DUMMY = {np.dtype(np.float32): np.zeros((1, 1), np.float32),
          np.dtype(np.float64): np.zeros((1, 1), np.float64)}
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
    d = _DUMMY[x.dtype]
    has_b = b is not None
    has_sign = sign is not None
    bb = b if has_b else d
    sg = sign if has_sign else d[0]
    T = _tile_rows(x.shape[1])
    nt = _threads(nthreads, x)
    if nt > 1:
        _lse_parallel(x, bb, mask, out, sg, has_b, has_sign, T, nt)
    else:
        _lse_serial(x, bb, mask, out, sg, has_b, has_sign, T)


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
    d = _DUMMY[x.dtype]
    if weight is None:
        w = _ones(k, x.dtype)
        wsum = float(k)
    else:
        w = weight
        wsum = float(np.sum(weight, dtype=np.float64)) if label_smoothing != 0 else 0.0
    args = (x, target, w, wsum, int(ignore_index), float(label_smoothing), float(z_loss),
            float(a), float(b), float(g),
            d[0] if row_scale is None else row_scale, row_scale is not None,
            d[0] if loss is None else loss, loss is not None,
            d if grad is None else grad, grad is not None, _tile_rows(k))
    nt = _threads(nthreads, x)
    if nt > 1:
        _ce_index_parallel(*args, nt)
    else:
        _ce_index_serial(*args)


def cross_entropy_prob_rows(x, target, weight, label_smoothing, z_loss, a, b, g,
                            row_scale, loss, grad, nthreads=1):
    n, k = x.shape
    d = _DUMMY[x.dtype]
    w = _ones(k, x.dtype) if weight is None else weight
    args = (x, target, w, float(label_smoothing), float(z_loss),
            float(a), float(b), float(g),
            d[0] if row_scale is None else row_scale, row_scale is not None,
            d[0] if loss is None else loss, loss is not None,
            d if grad is None else grad, grad is not None)
    nt = _threads(nthreads, x)
    if nt > 1:
        _ce_prob_parallel(*args, nt)
    else:
        _ce_prob_serial(*args)


from .table import RowKernels  # noqa: E402  (beside its one use)

#: The table the API calls (``fastact._backends.table``).
KERNELS = RowKernels.of(NAME, softmax_rows, log_softmax_rows, logsumexp_rows, softmax_backward_rows,
                        log_softmax_backward_rows, cross_entropy_index_rows,
                        cross_entropy_prob_rows, check_targets)
