/* Vector math shared by the row kernels (rows_vmath.h, per ISA on vectors)
 * and the elementwise kernels (elementwise.c, plain C on scalars that the
 * compiler vectorises): the exp reduction constants and the exp polynomial,
 * written once as macros over the caller's multiply-add and constant.
 */
#ifndef FA_VMATH_H
#define FA_VMATH_H

#include <stdint.h>
#include <string.h>

/* exp constants.  MAGIC_BIAS = 1.5 * 2^p + exponent bias: adding it rounds
 * x log2(e) to an integer n and leaves n + bias in the low mantissa bits,
 * ready to be shifted into the exponent field.  The fast path covers
 * [FAST_LO, FAST_HI] (2^n normal); other lanes take the slow path, which
 * clamps to [SLOW_LO, SLOW_HI] (below: 0, above: +inf). */
#define F32_LOG2E 0x1.715476p+0f
#define F32_MAGIC 0x1.8p23f
#define F32_MAGIC_BIAS 0x1.8000FEp23f
#define F32_LN2_HI 0x1.62E400p-1f
#define F32_LN2_LO 0x1.7F7D1Cp-20f
#define F64_LOG2E 0x1.71547652B82FEp+0
#define F64_MAGIC 0x1.8p52
#define F64_MAGIC_BIAS (0x1.8p52 + 1023.0)
#define F64_LN2_HI 6.93147180369123816490e-01
#define F64_LN2_LO 1.90821492927058770002e-10

/* v with its bits shifted left by SHIFT (the mantissa width): the integer
 * n + bias in v's low bits becomes the exponent field of 2^n. */
#define FA_SHL_EXP(name, F, U, SHIFT) \
    static inline F name(F v)         \
    {                                 \
        U u;                          \
        memcpy(&u, &v, sizeof u);     \
        u <<= SHIFT;                  \
        memcpy(&v, &u, sizeof v);     \
        return v;                     \
    }
FA_SHL_EXP(fa_shl_exp_f32, float, uint32_t, 23)
FA_SHL_EXP(fa_shl_exp_f64, double, uint64_t, 52)

/* ln 2 split for float32 log (Cephes): ln2 = HI + LO, HI exact in 9 bits. */
#define F32_LN2_CEPHES_HI 0.693359375f
#define F32_LN2_CEPHES_LO (-2.12194440e-4f)

/* float32 exp on |t| <= ln2/2: exp(t) ~= 1 + t q(t), q of degree 4 from
 * XNNPACK's degree-5 minimax "rr2_p5" (max error ~1.5 ulp), by Horner into
 * the variable q, with FMA(a, b, c) = a b + c and SET(c) the constant in the
 * caller's type: the row kernels' v_fma / v_set1, the elementwise kernels'
 * scalar a * b + c.  One statement per step, as the compilers schedule it. */
#define FA_EXPF_Q(q, t, FMA, SET)                  \
    do {                                           \
        (q) = SET(0x1.0F9F9Cp-7f);                 \
        (q) = FMA((q), (t), SET(0x1.573A1Ap-5f));  \
        (q) = FMA((q), (t), SET(0x1.555A80p-3f));  \
        (q) = FMA((q), (t), SET(0x1.FFFDC6p-2f));  \
        (q) = FMA((q), (t), SET(0x1.FFFFF6p-1f));  \
    } while (0)

#endif
