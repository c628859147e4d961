/* The elementwise kernels, written once (declarations and contract:
 * elementwise.h), expanded per ISA level and dtype by elementwise.c through
 * ew_expand.h with T = FA_EW_T and names suffixed FA_EW_SFX (_f32_avx2, ...).
 * Plain loops over flat arrays that the compiler vectorises for the level's
 * target (FA_TARGET_PUSH in elementwise.c); no -ffast-math assumptions
 * (infinities and NaN must behave).
 */

/* The helpers below are inlined into every loop, also those compiled with
 * other optimisation options (the unary loops: see "no-trapping-math"). */
#if defined(__GNUC__) || defined(__clang__)
#define EW_INLINE __attribute__((always_inline))
#else
#define EW_INLINE
#endif

#define T FA_EW_T
#define EW_MADD(a, b, c) ((a) * (b) + (c))
#define EW_CONST(c) (c)
#define NM(name) FA_EW_CAT(name, FA_EW_SFX)

#if FA_EW_F64
typedef uint64_t NM(ew_bits);
typedef int64_t NM(ew_int);
#define EW_MANT 52
#define EW_BIAS 1023
#else
typedef uint32_t NM(ew_bits);
typedef int32_t NM(ew_int);
#define EW_MANT 23
#define EW_BIAS 127
#endif

static inline EW_INLINE NM(ew_bits) NM(ew_to_bits)(T v)
{
    NM(ew_bits) b;
    memcpy(&b, &v, sizeof b);
    return b;
}

static inline EW_INLINE T NM(ew_from_bits)(NM(ew_bits) b)
{
    T v;
    memcpy(&v, &b, sizeof v);
    return v;
}

/* Range reduction shared by exp and expm1: v = n ln2 + r, |r| <= ln2/2, and
 * r q(r) = expm1(r) by a Taylor polynomial (truncation below 0.05 ulp).  n is
 * read from the bits of v log2e + 1.5 2^MANT (round to nearest without a
 * float -> int conversion, which NaN would make undefined). */
static inline EW_INLINE T NM(ew_reduce)(T v, NM(ew_int) *n)
{
#if FA_EW_F64
    const T log2e = 1.4426950408889634074, magic = 6755399441055744.0;
    const T l2hi = 6.93147180369123816490e-01, l2lo = 1.90821492927058770002e-10;
#else
    const T log2e = 1.44269504088896341f, magic = F32_MAGIC;
    const T l2hi = F32_LN2_CEPHES_HI, l2lo = F32_LN2_CEPHES_LO;
#endif
    T y = v * log2e + magic;
    *n = (NM(ew_int))(NM(ew_to_bits)(y) - NM(ew_to_bits)(magic));
    T nf = y - magic;
    T r = (v - nf * l2hi) - nf * l2lo;
#if FA_EW_F64
    T q = (T)(1.0 / 6227020800.0);
    q = q * r + (T)(1.0 / 479001600.0);
    q = q * r + (T)(1.0 / 39916800.0);
    q = q * r + (T)(1.0 / 3628800.0);
    q = q * r + (T)(1.0 / 362880.0);
    q = q * r + (T)(1.0 / 40320.0);
    q = q * r + (T)(1.0 / 5040.0);
#else
    T q = (T)(1.0 / 5040.0);
#endif
    q = q * r + (T)(1.0 / 720.0);
    q = q * r + (T)(1.0 / 120.0);
    q = q * r + (T)(1.0 / 24.0);
    q = q * r + (T)(1.0 / 6.0);
    q = q * r + (T)0.5;
    q = q * r + (T)1;
    return r * q;
}

/* 2^n for n in [1 - BIAS, BIAS] (any int: no undefined behaviour). */
static inline EW_INLINE T NM(ew_pow2)(NM(ew_int) n)
{
    return NM(ew_from_bits)(((NM(ew_bits))n + EW_BIAS) << EW_MANT);
}

/* exp(v) within ~1 ulp: NaN -> NaN, -inf -> 0, +inf -> +inf, gradual underflow
 * (2^n applied as two normal factors).  Branch-free, so that loops vectorise. */
static inline EW_INLINE T NM(ew_exp)(T v)
{
#if FA_EW_F64
    const T lo = -746.0, hi = 710.0;
#else
    const T lo = -104.0f, hi = 89.0f;
#endif
    T x = v < lo ? lo : v; /* NaN stays NaN */
    x = x > hi ? hi : x;
    NM(ew_int) n;
#if FA_EW_F64
    T p = NM(ew_reduce)(x, &n) + (T)1;
#else
    /* XNNPACK's rr2_p5 (as numba_kernels and the row kernels: vmath.h), a
     * degree-5 minimax polynomial on |r| <= ln2/2, max error ~1.5 ulp; 4 fewer
     * multiply-adds than Taylor. */
    T y = x * F32_LOG2E + F32_MAGIC;
    n = (NM(ew_int))(NM(ew_to_bits)(y) - NM(ew_to_bits)(F32_MAGIC));
    T nf = y - F32_MAGIC;
    T r = (x - nf * F32_LN2_HI) - nf * F32_LN2_LO;
    T p;
    FA_EXPF_Q(p, r, EW_MADD, EW_CONST);
    p = p * r + 1.0f;
#endif
    NM(ew_int) n1 = n >> 1; /* floor(n / 2): an arithmetic shift, n - n1 stays in range */
    return p * NM(ew_pow2)(n1) * NM(ew_pow2)(n - n1);
}

/* expm1(v) for v <= 0 (and NaN) within ~1 ulp: 2^n expm1(r) + (2^n - 1). */
static inline EW_INLINE T NM(ew_expm1_neg)(T v)
{
#if FA_EW_F64
    const T lo = -700.0;
#else
    const T lo = -80.0f;
#endif
    T x = v < lo ? lo : v;
    NM(ew_int) n;
    T e = NM(ew_reduce)(x, &n);
    T s = NM(ew_pow2)(n);
    return s * e + (s - (T)1);
}

/* log1p(e) for e in [0, 1] (and NaN) within ~1 ulp, branch-free: u = 1 + e
 * rounded, c = e - (u - 1) its rounding error (exact), u = m 2^k with m in
 * [sqrt(1/2), sqrt(2)), log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.172,
 * by its odd series (truncation below 0.02 ulp); log1p(e) = k ln2 + log m + c/u. */
static inline EW_INLINE T NM(ew_log1p_unit)(T e)
{
    T u = (T)1 + e;
    T c = e - (u - (T)1);
    int big = u > (T)1.41421356237309504880;
    T m = big ? u * (T)0.5 : u;
    T k = big ? (T)0.69314718055994530942 : (T)0;
    T s = (m - (T)1) / (m + (T)1);
    T s2 = s * s;
#if FA_EW_F64
    T q = (T)(1.0 / 21.0);
    q = q * s2 + (T)(1.0 / 19.0);
    q = q * s2 + (T)(1.0 / 17.0);
    q = q * s2 + (T)(1.0 / 15.0);
    q = q * s2 + (T)(1.0 / 13.0);
    q = q * s2 + (T)(1.0 / 11.0);
#else
    T q = (T)(1.0 / 11.0);
#endif
    q = q * s2 + (T)(1.0 / 9.0);
    q = q * s2 + (T)(1.0 / 7.0);
    q = q * s2 + (T)(1.0 / 5.0);
    q = q * s2 + (T)(1.0 / 3.0);
    q = q * s2 + (T)1;
    return k + ((T)2 * s * q + c / u);
}

/* erfc(z).  float32: t exp(-z^2 + P(t)), t = 1 / (1 + |z|/2), the Chebyshev fit
 * of Numerical Recipes (erfcc), relative error below 1.2e-7 for every z >= 0
 * (checked against mpmath), 2 - erfc(-z) for z < 0; branch-free, so that the
 * gelu loops vectorise (libm's erfcf is a scalar call).  |z| = inf: t = 0 and
 * exp(-inf) = 0.  float64: libm. */
static inline EW_INLINE T NM(ew_erfc)(T z)
{
#if FA_EW_F64
    return erfc(z);
#else
    T a = EW_FABS(z);
    T t = (T)1 / ((T)1 + (T)0.5 * a);
    T p = (T)0.17087277;
    p = p * t + (T)-0.82215223;
    p = p * t + (T)1.48851587;
    p = p * t + (T)-1.13520398;
    p = p * t + (T)0.27886807;
    p = p * t + (T)-0.18628806;
    p = p * t + (T)0.09678418;
    p = p * t + (T)0.37409196;
    p = p * t + (T)1.00002368;
    p = p * t + (T)-1.26551223;
    T e = t * NM(ew_exp)(p - a * a);
    return z < (T)0 ? (T)2 - e : e;
#endif
}

/* sigmoid(v) from exp(-|v|) in (0, 1]: never overflows; NaN stays NaN. */
static inline EW_INLINE T NM(ew_sig)(T v)
{
    T e = NM(ew_exp)(-EW_FABS(v));
    T r = (T)1 / ((T)1 + e);
    return v >= (T)0 ? r : e * r;
}

/* softplus(-v) = -log sigmoid(v) = max(-v, 0) + log1p(exp(-|v|)). */
static inline EW_INLINE T NM(ew_softplus_neg)(T v)
{
    T m = v < (T)0 ? -v : (T)0;
    return m + NM(ew_log1p_unit)(NM(ew_exp)(-EW_FABS(v)));
}

/* GCC assumes by default that floating-point operations may trap, so it will
 * not compute both sides of a select such as `v >= 0 ? r : e * r` once one
 * side's arithmetic has been sunk into a branch: without masked arithmetic
 * (AVX2, SSE2) 31 of the 56 loops stayed scalar ("control flow in loop").
 * These loops neither read nor rely on floating-point exception flags, and
 * -fno-trapping-math changes no result (NaN, infinities and signed zeros are
 * kept; no reassociation).  Not for the BCE loops below: there the vector
 * body and the scalar remainder then contract multiply-adds differently, and
 * results would depend on where a thread's chunk starts.  (Clang does not
 * assume trapping by default.) */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")
#endif

/* ---- forward: out[i] = f(x[i]) */

static void NM(ew_sigmoid)(const T *x, T *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = NM(ew_sig)(x[i]);
}

static void NM(ew_log_sigmoid)(const T *x, T *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = -NM(ew_softplus_neg)(x[i]);
}

static void NM(ew_relu)(const T *x, T *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        T v = x[i];
        out[i] = v < (T)0 ? (T)0 : v; /* NaN and -0.0 pass through */
    }
}

/* tanh(x) = sign(x) (-m) / (2 + m), m = expm1(-2|x|): no cancellation near 0. */
static void NM(ew_tanh)(const T *x, T *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        T v = x[i];
        T m = NM(ew_expm1_neg)((T)-2 * EW_FABS(v));
        T t = -m / ((T)2 + m);
        out[i] = v < (T)0 ? -t : t;
    }
}

static void NM(ew_softsign)(const T *x, T *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        T v = x[i];
        out[i] = v / ((T)1 + EW_FABS(v));
    }
}

/* x Phi(x) = 0.5 x erfc(-x / sqrt 2): erfc keeps the left tail accurate. */
static void NM(ew_gelu)(const T *x, T *out, int64_t n)
{
    const T c = (T)0.70710678118654752440;
    for (int64_t i = 0; i < n; i++) {
        T v = x[i];
        out[i] = (T)0.5 * v * NM(ew_erfc)(-v * c);
    }
}

/* 0.5 x (1 + tanh(u)) = x sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3). */
static void NM(ew_gelu_tanh)(const T *x, T *out, int64_t n)
{
    const T k0 = (T)1.5957691216057307117; /* 2 sqrt(2/pi) */
    const T k1 = (T)0.044715;
    for (int64_t i = 0; i < n; i++) {
        T v = x[i];
        out[i] = v * NM(ew_sig)(k0 * v * ((T)1 + k1 * v * v));
    }
}

static void NM(ew_silu)(const T *x, T *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        T v = x[i];
        out[i] = v * NM(ew_sig)(v);
    }
}

/* ---- backward: out[i] = grad[i] * f'(x[i]) (sigmoid: from y) */

static void NM(ew_sigmoid_bwd)(const T *grad, const T *y, T *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        T v = y[i];
        out[i] = grad[i] * ((T)1 - v) * v;
    }
}

static void NM(ew_log_sigmoid_bwd)(const T *grad, const T *x, T *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = grad[i] * NM(ew_sig)(-x[i]);
}

static void NM(ew_relu_bwd)(const T *grad, const T *x, T *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        T g = grad[i];
        out[i] = x[i] <= (T)0 ? (T)0 : g; /* NaN x passes grad, as PyTorch */
    }
}

/* 1 - tanh(x)^2 = 4t / (1 + t)^2, t = exp(-2|x|): no cancellation near |x| large. */
static void NM(ew_tanh_bwd)(const T *grad, const T *x, T *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        T e = NM(ew_exp)((T)-2 * EW_FABS(x[i]));
        T d = (T)1 + e;
        out[i] = grad[i] * ((T)4 * e / (d * d));
    }
}

static void NM(ew_softsign_bwd)(const T *grad, const T *x, T *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        T v = x[i];
        T r = (T)1 / ((T)1 + EW_FABS(v));
        T d = isinf(v) ? (T)NAN : r * r; /* +-inf: NaN, as PyTorch */
        out[i] = grad[i] * d;
    }
}

/* Phi(x) + x phi(x); x*x overflowing to inf gives exp(-inf) = 0, no NaN. */
static void NM(ew_gelu_bwd)(const T *grad, const T *x, T *out, int64_t n)
{
    const T c = (T)0.70710678118654752440;
    const T k = (T)0.39894228040143267794; /* 1 / sqrt(2 pi) */
    for (int64_t i = 0; i < n; i++) {
        T v = x[i];
        T d = (T)0.5 * NM(ew_erfc)(-v * c) + v * (NM(ew_exp)((T)-0.5 * v * v) * k);
        out[i] = grad[i] * d;
    }
}

/* s + 2 x s (1-s) u', s = sigmoid(2u); the second term is 0 once s (1-s)
 * underflows, so that a huge finite x gives no 0 * inf. */
static void NM(ew_gelu_tanh_bwd)(const T *grad, const T *x, T *out, int64_t n)
{
    const T k0 = (T)1.5957691216057307117; /* 2 sqrt(2/pi) */
    const T k1 = (T)0.044715;
    const T k3 = (T)0.134145; /* 3 * 0.044715 */
    for (int64_t i = 0; i < n; i++) {
        T v = x[i];
        T v2 = v * v;
        T u2 = k0 * v * ((T)1 + k1 * v2);
        T s = NM(ew_sig)(u2);
        T ss = s * NM(ew_sig)(-u2);
        T term = v * (k0 * ((T)1 + k3 * v2)) * ss;
        if (ss == (T)0 && !isinf(v))
            term = (T)0;
        out[i] = grad[i] * (s + term);
    }
}

static void NM(ew_silu_bwd)(const T *grad, const T *x, T *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        T v = x[i];
        out[i] = grad[i] * (NM(ew_sig)(v) * ((T)1 + v * NM(ew_sig)(-v)));
    }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

/* ---- binary cross-entropy with logits (see elementwise.h)
 *
 * In blocks of EW_BLK elements that never cross the end of w or pw, so that
 * their elements are read contiguously (no modulo per element).  A block's
 * loss and gradient go to stack buffers first (the loop then reads only its
 * inputs and writes only memory it owns: it vectorises without run-time alias
 * checks, also when grad is x) and are copied out; the block's losses are
 * summed in EW_LANES float64 partial sums (a vectorised sum that does not
 * reassociate), folded at the end.  One loop per (pos_weight?, grad?) case;
 * a missing w or gscale reads a block of ones (multiplying by 1 is exact). */

#ifndef EW_BLK
#define EW_BLK 256
#define EW_LANES 8
#endif

static inline __attribute__((always_inline)) void NM(ew_bce_block)(
    const T *restrict x, const T *restrict t, const T *restrict w, const T *restrict pw,
    const T *restrict gs, T cc, T *restrict lbuf, T *restrict gbuf, int64_t m,
    const int has_pw, const int has_grad)
{
    for (int64_t k = 0; k < m; k++) {
        T v = x[k], ti = t[k];
        T sp = NM(ew_softplus_neg)(v);
        T lw = has_pw ? (T)1 + (pw[k] - (T)1) * ti : (T)1;
        T el = (((T)1 - ti) * v + lw * sp) * w[k];
        lbuf[k] = el;
        if (has_grad) {
            T s = NM(ew_sig)(v);
            T d = has_pw ? lw * s - pw[k] * ti : s - ti;
            gbuf[k] = d * w[k] * cc * gs[k];
        }
    }
}

static double NM(ew_bce)(const T *x, const T *t, const T *w, int64_t w_len,
                         const T *pw, int64_t pw_len, int64_t offset, double c,
                         const T *gscale, T *loss, T *grad, int64_t n)
{
    const T cc = (T)c;
    T ones[EW_BLK], lbuf[EW_BLK], gbuf[EW_BLK];
    double acc[EW_LANES];
    for (int k = 0; k < EW_BLK; k++)
        ones[k] = (T)1;
    for (int l = 0; l < EW_LANES; l++)
        acc[l] = 0.0;
    int64_t jw = w ? offset % w_len : 0;
    int64_t jp = pw ? offset % pw_len : 0;
    for (int64_t i0 = 0; i0 < n;) {
        int64_t m = n - i0 < EW_BLK ? n - i0 : EW_BLK;
        if (w && w_len - jw < m)
            m = w_len - jw;
        if (pw && pw_len - jp < m)
            m = pw_len - jp;
        const T *wb = w ? w + jw : ones;
        const T *gs = gscale ? gscale + i0 : ones;
        if (pw) {
            if (grad)
                NM(ew_bce_block)(x + i0, t + i0, wb, pw + jp, gs, cc, lbuf, gbuf, m, 1, 1);
            else
                NM(ew_bce_block)(x + i0, t + i0, wb, pw + jp, gs, cc, lbuf, gbuf, m, 1, 0);
        } else {
            if (grad)
                NM(ew_bce_block)(x + i0, t + i0, wb, ones, gs, cc, lbuf, gbuf, m, 0, 1);
            else
                NM(ew_bce_block)(x + i0, t + i0, wb, ones, gs, cc, lbuf, gbuf, m, 0, 0);
        }
        int64_t k = 0;
        for (; k + EW_LANES <= m; k += EW_LANES)
            for (int l = 0; l < EW_LANES; l++)
                acc[l] += (double)lbuf[k + l];
        for (int l = 0; k < m; k++, l++)
            acc[l] += (double)lbuf[k];
        if (loss)
            memcpy(loss + i0, lbuf, (size_t)m * sizeof(T));
        if (grad)
            memcpy(grad + i0, gbuf, (size_t)m * sizeof(T));
        i0 += m;
        if (w && (jw += m) == w_len)
            jw = 0;
        if (pw && (jp += m) == pw_len)
            jp = 0;
    }
    double total = 0.0;
    for (int l = 0; l < EW_LANES; l++)
        total += acc[l];
    return total;
}

#undef NM
#undef T
#undef EW_MADD
#undef EW_CONST
#undef EW_INLINE
#undef EW_MANT
#undef EW_BIAS

