"""LLVM intrinsics and IR for the Numba backend: what Numba does not expose.

``_maximum`` (NaN-propagating max, vectorisable as a reduction), ``_rint``,
``_ldexp`` (``p * 2**n`` exactly, in instructions that vectorise on every ISA),
float64 bit casts, ``_row`` (a row view without reference counting) and the
non-temporal stores (``_nt_sub_sub``, ``_nt_scale``, ``_store_fence``).  Used by
``_numba_math`` (exp, log) and the row kernels.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import populate_array


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


def _bitcast(src, dst, llvm_dst):
    """An intrinsic that reinterprets the bits of a ``src`` scalar as ``dst``."""
    @intrinsic
    def cast(typingctx, a):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], llvm_dst)
        return dst(src), codegen
    return cast


_f64_bits = _bitcast(types.float64, types.int64, ir.IntType(64))
_bits_f64 = _bitcast(types.int64, types.float64, ir.DoubleType())
_f32_bits = _bitcast(types.float32, types.uint32, ir.IntType(32))
_bits_f32 = _bitcast(types.uint32, types.float32, ir.FloatType())


def _nt_map(name, op):
    """``dst[j] = op(src[j], b, c)`` over two 1-D C-contiguous arrays of one
    float dtype with non-temporal 64-byte vector stores (a scalar head up to
    dst's 64-byte alignment, a scalar tail); ``op(builder, v, b, c, flags)``
    emits the arithmetic.  ``b`` and ``c`` are scalars, or arrays like ``src``
    (``b[j]``, ``c[j]``: per-column factors of the strided kernels).

    Large outputs written once: the stores go to memory without first reading
    the lines in (as memcpy does for large copies).  LLVM's vectoriser will not
    emit such stores from a loop (it wants 64-byte aligned elements), hence IR.
    Callers end with ``_store_fence()``.
    """
    def row(a):
        return isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"

    def impl(typingctx, src, dst, b, c):
        if not (row(src) and row(dst) and src.dtype == dst.dtype
                and src.dtype in (types.float32, types.float64)
                and all(not isinstance(a, types.Array) or (row(a) and a.dtype == src.dtype)
                        for a in (b, c))):
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

            def operand(val, ty):
                """(scalar at j, vector at j) of an operand b or c."""
                if isinstance(ty, types.Array):
                    data = context.make_array(ty)(context, builder, val).data
                    return (lambda j: builder.load(builder.gep(data, [j])),
                            lambda j: builder.load(builder.bitcast(builder.gep(data, [j]),
                                                                   vt.as_pointer()), align=size))
                v = context.cast(builder, val, ty, dt)
                vv = ir.Constant(vt, ir.Undefined)
                for q in range(vl):
                    vv = builder.insert_element(vv, v, ir.Constant(ir.IntType(32), q))
                return (lambda j: v), (lambda j: vv)

            (bs, bvec), (cs, cvec) = (operand(bv, signature.args[2]),
                                      operand(cv, signature.args[3]))

            # a flag of our own, so that Numba's fastmath pass adds none: with
            # reassoc, (v - b) - c may become v - (b + c)
            fl = ("arcp",)

            def f(v, bb, cc):
                return op(builder, v, bb, cc, fl)

            def scalar(lo, hi):
                with cgutils.for_range_slice(builder, lo, hi, ir.Constant(i64, 1)) as (j, _):
                    v = builder.load(builder.gep(sa.data, [j]))
                    builder.store(f(v, bs(j), cs(j)), builder.gep(da.data, [j]))

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
            nontemporal = builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)])
            with cgutils.for_range(builder, nv) as loop:
                j = builder.add(h, builder.mul(loop.index, ir.Constant(i64, vl)))
                v = builder.load(builder.bitcast(builder.gep(sa.data, [j]), vt.as_pointer()),
                                 align=size)
                st = builder.store(f(v, bvec(j), cvec(j)),
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
