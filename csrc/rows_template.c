/* Row kernels written once, expanded per (ISA, dtype) by fastact.c.
 *
 * Not compiled on its own: fastact.c defines the vector vocabulary (T, V, VL,
 * v_add, ...) for one ISA and one dtype, then includes this file.  Every
 * function here is static and named FN(name) = name_<SFX>.
 *
 * Numerics, shared by every kernel:
 * - m = row max over the selected entries, with a max that skips NaN
 *   (v_max(x, acc) keeps acc when x is NaN).  A NaN in a row with a finite m
 *   reaches the sum as exp(NaN) and makes the row NaN, as the reference does;
 *   a row with a non-finite m goes to a scalar path that mirrors the reference.
 * - exp(x - m) with x - m <= 0: our own exp (polynomial, 2^n built in the
 *   exponent bits), exact 0 for -inf, gradual underflow kept (slow path only
 *   for lanes below the normal range).
 * - Sums: several vector accumulators over blocks of BLOCK elements, each
 *   block folded into a double, so 1M-element float32 rows do not drift.
 * - log of a row's exp sum (log_softmax, logsumexp, cross entropy): the loops
 *   that sum the terms also sum, apart, the terms below the max (z = x - m <
 *   0: one compare and one masked add per vector), so that the row's log-sum
 *   is log1p of those when the max term is alone (log_sum, vlog_sum), as the
 *   reference: logsumexp([0, -40]) is 4.2e-18, not log(1 + 4.2e-18) = 0.
 */

#define FN(name) FN2(name, SFX)
#define FN2(a, b) FN3(a, b)
#define FN3(a, b) a##_##b

/* Elements per block of float accumulation (16 adds per lane and accumulator). */
#define BLOCK (16 * 4 * VL)

/* Software prefetch distance: the row kernels prefetch, while computing a row,
 * the row this many bytes ahead (at least the next one), so that its memory
 * traffic overlaps the arithmetic.  Measured on 4096 x 1000 float32: one row
 * (4 KB) ahead 1.85x the time of a copy, 8 KB ahead 1.45x (4-12 KB tried). */
#ifndef FA_PF_BYTES
#define FA_PF_BYTES 8192
#endif

/* Offset (in elements) of the row to prefetch, for rows of k elements. */
static inline int64_t FN(pf_off)(int64_t k)
{
    const int64_t rb = k * (int64_t)sizeof(T);
    return ((FA_PF_BYTES + rb - 1) / rb) * k;
}

/* ---------------------------------------------------------------- exp, log */

/* q(t) with exp(t) ~= 1 + t q(t) on |t| <= ln2/2.  float32: XNNPACK's degree-5
 * minimax ("p5"); float64: Taylor to degree 12 (truncation 2e-16 relative). */
static inline V FN(exp_poly)(V t)
{
#if IS_F64
    V q = v_set1(1.0 / 479001600.0);
    q = v_fma(q, t, v_set1(1.0 / 39916800.0));
    q = v_fma(q, t, v_set1(1.0 / 3628800.0));
    q = v_fma(q, t, v_set1(1.0 / 362880.0));
    q = v_fma(q, t, v_set1(1.0 / 40320.0));
    q = v_fma(q, t, v_set1(1.0 / 5040.0));
    q = v_fma(q, t, v_set1(1.0 / 720.0));
    q = v_fma(q, t, v_set1(1.0 / 120.0));
    q = v_fma(q, t, v_set1(1.0 / 24.0));
    q = v_fma(q, t, v_set1(1.0 / 6.0));
    q = v_fma(q, t, v_set1(0.5));
    q = v_fma(q, t, v_set1(1.0));
#else
    V q = v_set1(0x1.0F9F9Cp-7f);
    q = v_fma(q, t, v_set1(0x1.573A1Ap-5f));
    q = v_fma(q, t, v_set1(0x1.555A80p-3f));
    q = v_fma(q, t, v_set1(0x1.FFFDC6p-2f));
    q = v_fma(q, t, v_set1(0x1.FFFFF6p-1f));
#endif
    return q;
}

/* exp for lanes outside [FAST_LO, FAST_HI]: 2^n split in two normal factors so
 * that results in the subnormal range round once, and overflow gives +inf. */
#if !HAVE_SCALEF
static inline V FN(vexp_slow)(V x)
{
    V xc = v_min(v_max(x, v_set1(EXP_SLOW_LO)), v_set1(EXP_SLOW_HI));
    V n = v_sub(v_fma(xc, v_set1(EXP_LOG2E), v_set1(EXP_MAGIC)), v_set1(EXP_MAGIC));
    V t = v_fma(n, v_set1(-EXP_LN2_HI), xc);
    t = v_fma(n, v_set1(-EXP_LN2_LO), t);
    V q = FN(exp_poly)(t);
    V e = v_fma(t, q, v_set1((T)1));
    V n1 = v_sub(v_add(v_mul(n, v_set1((T)0.5)), v_set1(EXP_MAGIC)), v_set1(EXP_MAGIC));
    V n2 = v_sub(n, n1);
    V s1 = v_shl_exp(v_add(n1, v_set1(EXP_MAGIC_BIAS)));
    V s2 = v_shl_exp(v_add(n2, v_set1(EXP_MAGIC_BIAS)));
    return v_mul(v_mul(e, s1), s2);
}
#endif

#if HAVE_SCALEF
/* AVX-512: vscalef computes p 2^n with correct gradual underflow and overflow,
 * so there is no slow path: clamp (v_max(c, x) keeps NaN), round, reduce,
 * polynomial, scale. */
static inline V FN(vexp_scalef)(V x, const int check_hi)
{
    V xc = v_max(v_set1(EXP_SLOW_LO), x);
    if (check_hi)
        xc = v_min(v_set1(EXP_SLOW_HI), xc);
    V n = v_sub(v_fma(xc, v_set1(EXP_LOG2E), v_set1(EXP_MAGIC)), v_set1(EXP_MAGIC));
    V t = v_fma(n, v_set1(-EXP_LN2_HI), xc);
    t = v_fma(n, v_set1(-EXP_LN2_LO), t);
    return v_scalef(v_fma(t, FN(exp_poly)(t), v_set1((T)1)), n);
}
#endif

#if HAVE_EXP_LUT
/* float32 exp(x) for x <= 0 (or NaN), the softmax case, in 5 multiply-adds:
 * N = round(x 32/ln2) (MAGIC trick: N sits in the low bits of n), t = x - N
 * ln2/32 (|t| <= ln2/64), 2^(N/32) = 2^(N>>5) * 2^((N&31)/32) from a 32-entry
 * table (v_exp_lut: two-register permute on the low 5 bits of n, exponent
 * added as an integer), exp(t) ~= 1 + t + t^2/2.  Relative error: t^3/6 <=
 * 2.2e-7 from the polynomial, <= |N| 6e-11 <= 2.4e-7 from the one-constant
 * reduction, plus a few roundings (measured max ~5e-7 over [-87, 0]).  Lanes
 * below -87 (subnormal results, 0, -inf) take the exact vscalef path. */
static inline V FN(vexp_nonpos)(V x)
{
    V n = v_fma(x, v_set1(0x1.715476p+5f), v_set1(EXP_MAGIC));
    V t = v_fma(v_sub(n, v_set1(EXP_MAGIC)), v_set1(-0x1.62e430p-6f), x);
    V s = v_exp_lut(n);
    V r = v_fma(v_mul(s, t), v_fma(t, v_set1(0.5f), v_set1(1.0f)), s);
    VM slow = v_lt(x, v_set1(-87.0f));
    if (m_any(slow))
        r = v_select(slow, FN(vexp_scalef)(x, 0), r);
    return r;
}
#endif

/* exp(x): NaN -> NaN, -inf -> 0, +inf -> +inf.  check_hi = 0 promises x <= 0
 * (or NaN), which saves one compare in the softmax loops. */
static inline V FN(vexp)(V x, const int check_hi)
{
#if HAVE_EXP_LUT
    if (!check_hi)
        return FN(vexp_nonpos)(x);
#endif
#if HAVE_SCALEF
    return FN(vexp_scalef)(x, check_hi);
#else
    V nm = v_fma(x, v_set1(EXP_LOG2E), v_set1(EXP_MAGIC_BIAS));
    V s = v_shl_exp(nm);
    V n = v_sub(nm, v_set1(EXP_MAGIC_BIAS));
    V t = v_fma(n, v_set1(-EXP_LN2_HI), x);
    t = v_fma(n, v_set1(-EXP_LN2_LO), t);
    V q = FN(exp_poly)(t);
    V f = v_fma(v_mul(t, s), q, s);
    VM out = v_lt(x, v_set1(EXP_FAST_LO));
    if (check_hi)
        out = m_or(out, v_gt(x, v_set1(EXP_FAST_HI)));
    if (m_any(out))
        f = v_select(out, FN(vexp_slow)(x), f);
    return f;
#endif
}

/* exp(x) for EXP_FAST_LO <= x <= 0 (or NaN): no range check. */
static inline V FN(vexp_inrange)(V x)
{
#if HAVE_EXP_LUT
    V n = v_fma(x, v_set1(0x1.715476p+5f), v_set1(EXP_MAGIC));
    V t = v_fma(v_sub(n, v_set1(EXP_MAGIC)), v_set1(-0x1.62e430p-6f), x);
    V s = v_exp_lut(n);
    return v_fma(v_mul(s, t), v_fma(t, v_set1(0.5f), v_set1(1.0f)), s);
#elif HAVE_SCALEF
    return FN(vexp_scalef)(x, 0);
#else
    V nm = v_fma(x, v_set1(EXP_LOG2E), v_set1(EXP_MAGIC_BIAS));
    V s = v_shl_exp(nm);
    V n = v_sub(nm, v_set1(EXP_MAGIC_BIAS));
    V t = v_fma(n, v_set1(-EXP_LN2_HI), x);
    t = v_fma(n, v_set1(-EXP_LN2_LO), t);
    return v_fma(v_mul(t, s), FN(exp_poly)(t), s);
#endif
}

/* exp(x - m) on the lanes in sel, 0 on the others (lanes past a row end,
 * unselected entries), x - m <= 0 or NaN on the selected lanes.  The other
 * lanes are computed as exp(0) and zeroed after the exp: loaded or set to
 * -inf they would send every such vector (every short row, every row tail)
 * to the exp's slow path, which only lanes really below the fast range
 * (-inf entries, large spreads) should take. */
static inline V FN(vexp_sel)(V x, V vm, VM sel)
{
    return v_select(sel, FN(vexp)(v_sub(v_select(sel, x, vm), vm), 0), v_zero());
}

/* ------------------------------------------------ log of a row's exp sum */

/* log(s) for a row's exp sum s (terms exp(x - m) <= 1, the max term exactly
 * exp(0) = 1), r the sum of its terms below the max (x - m < 0): s < 2 means
 * the max term is alone (a tie would make s >= 2), s = 1 + r, and the result
 * is log1p(r), accurate however small r is (log(s) would round 1 + 4e-18 to
 * 1: logsumexp([0, -40]) would be 0, not 4.2e-18); otherwise log(s), >= log 2
 * with no cancellation.  The reference's _log_sum without weights.  NaN s
 * (a NaN term): NaN. */
static inline double FN(log_sum)(double s, double r)
{
    return s < 2 ? log1p(r) : log(s);
}

/* log_sum rounded to T: for float32, logf/log1pf of the sums rounded to float
 * (as the reference's float32 log of a float32 sum; about 1 ulp), cheaper
 * than libm's double log once per short row (1 thread, time vs np.copyto:
 * 8192x512 log_softmax 1.35x -> 1.28x, 4096x1000 1.23x -> 1.18x). */
static inline T FN(log_sum_t)(double s, double r)
{
#if IS_F64
    return FN(log_sum)(s, r);
#else
    return s < 2 ? log1pf((float)r) : logf((float)s);
#endif
}

/* log|c + r| and sign(c + r) for weighted sums (logsumexp's b): c the weights
 * of the terms at the max summed (without b: the number of ties), r the
 * weighted terms below it; log|c| + log1p(r / c) as the reference's _log_sum
 * (1 + t < 0: |1 + t| = 1 + (-t - 2)), log|r| when c = 0 (the weights of the
 * ties cancel).  NaN in, NaN out (sign included). */
static double FN(log_sum_w)(double c, double r, double *sign)
{
#define FA_SGN(v) ((v) > 0 ? 1.0 : (v) < 0 ? -1.0 : (v) == 0 ? 0.0 : (double)NAN)
    if (c == 0) {
        *sign = FA_SGN(r);
        return log(fabs(r));
    }
    double t = r / c;
    *sign = FA_SGN(c) * FA_SGN(t + 1);
    if (t < -1)
        t = -t - 2;
    return log(fabs(c)) + log1p(t);
#undef FA_SGN
}

#if HAVE_TILES
/* log(s) for s >= 1 (a sum whose largest term is 1) or NaN, float32: Cephes
 * logf (mantissa in [sqrt(1/2), sqrt(2)), degree-8 polynomial, ~1 ulp). */
#if !IS_F64
static inline V FN(vlog)(V s)
{
    V e = v_sub(v_exp_field(s), v_set1(126.0f));
    V mt = v_mant_half(s);
    VM lt = v_lt(mt, v_set1(0.707106781186547524f));
    e = v_select(lt, v_sub(e, v_set1(1.0f)), e);
    V f = v_sub(v_select(lt, v_add(mt, mt), mt), v_set1(1.0f));
    V z = v_mul(f, f);
    V y = v_set1(7.0376836292E-2f);
    y = v_fma(y, f, v_set1(-1.1514610310E-1f));
    y = v_fma(y, f, v_set1(1.1676998740E-1f));
    y = v_fma(y, f, v_set1(-1.2420140846E-1f));
    y = v_fma(y, f, v_set1(1.4249322787E-1f));
    y = v_fma(y, f, v_set1(-1.6668057665E-1f));
    y = v_fma(y, f, v_set1(2.0000714765E-1f));
    y = v_fma(y, f, v_set1(-2.4999993993E-1f));
    y = v_fma(y, f, v_set1(3.3333331174E-1f));
    y = v_mul(v_mul(y, f), z);
    y = v_fma(e, v_set1(-2.12194440e-4f), y);
    y = v_fma(z, v_set1(-0.5f), y);
    V r = v_add(f, y);
    r = v_fma(e, v_set1(0.693359375f), r);
    return v_select(v_ne(s, s), s, r);
}
#endif

/* log_sum per lane (tiles: a row per lane), s the exp sums, r their terms
 * below the max.  float32: one vlog, of u = 1 + r where s < 2 with the
 * rounding of 1 + r put back (log1p(r) = log(u) + (r - (u - 1)) / u to first
 * order; u - 1 is exact), of s elsewhere; float64: log_sum per lane. */
static inline V FN(vlog_sum)(V s, V r)
{
#if IS_F64
    T ts[VL], tr[VL];
    v_store(ts, s);
    v_store(tr, r);
    for (int l = 0; l < VL; l++)
        ts[l] = FN(log_sum)(ts[l], tr[l]);
    return v_load(ts);
#else
    const V one = v_set1(1.0f);
    const VM alone = v_lt(s, v_set1(2.0f));
    const V u = v_select(alone, v_add(one, r), s);
    const V fix = v_select(alone, v_div(v_sub(r, v_sub(u, one)), u), v_zero());
    return v_add(FN(vlog)(u), fix);
#endif
}
#endif

/* ------------------------------------------------------------- reductions */

/* Max over a row, skipping NaN; -inf for an all-NaN/-inf row. */
static T FN(row_max)(const T *x, int64_t k)
{
    V a0 = v_set1((T)-INFINITY), a1 = a0, a2 = a0, a3 = a0;
    int64_t j = 0;
    for (; j + 4 * VL <= k; j += 4 * VL) {
        a0 = v_max(v_load(x + j), a0);
        a1 = v_max(v_load(x + j + VL), a1);
        a2 = v_max(v_load(x + j + 2 * VL), a2);
        a3 = v_max(v_load(x + j + 3 * VL), a3);
    }
    for (; j + VL <= k; j += VL)
        a0 = v_max(v_load(x + j), a0);
    if (j < k)
        a1 = v_max(v_load_tail(x + j, v_tailmask(k - j), (T)-INFINITY), a1);
    return v_hmax(v_max(v_max(a0, a1), v_max(a2, a3)));
}

/* Selection mask of the VL entries at j: mask[j] != 0 and b[j] != 0 (either
 * may be NULL); n < VL for a row end. */
static inline VM FN(sel_at)(const unsigned char *mask, const T *b, int64_t j, int64_t n)
{
    VM sel;
    if (VL == 1 || n >= VL) {
        sel = mask ? m_bytes(mask + j) : m_true();
        if (b)
            sel = m_and(sel, v_ne(v_load(b + j), v_zero()));
    } else {
        unsigned char tmp[VL];
        memset(tmp, 0, sizeof tmp);
        const size_t nb = (size_t)(n > 0 ? n : 0) & (VL - 1);
        if (mask)
            memcpy(tmp, mask + j, nb);
        else
            memset(tmp, 1, nb);
        sel = m_bytes(tmp);
        if (b)
            sel = m_and(sel, v_ne(v_load_tail(b + j, v_tailmask(n), (T)0), v_zero()));
    }
    return sel;
}

/* Row x at j with unselected entries (and lanes past the row end) at -inf. */
static inline V FN(load_sel)(const T *x, VM sel, int64_t j, int64_t n)
{
    V v = n >= VL ? v_load(x + j) : v_load_tail(x + j, v_tailmask(n), (T)-INFINITY);
    return v_select(sel, v, v_set1((T)-INFINITY));
}

static T FN(row_max_sel)(const T *x, const unsigned char *mask, const T *b, int64_t k)
{
    V a = v_set1((T)-INFINITY);
    for (int64_t j = 0; j < k; j += VL) {
        VM sel = FN(sel_at)(mask, b, j, k - j);
        a = v_max(FN(load_sel)(x, sel, j, k - j), a);
    }
    return v_hmax(a);
}

/* sum_j exp(x[j] - m), storing the terms in y unless y is NULL, and into
 * *rneg (unless NULL) the sum of the terms with x[j] - m < 0 (see log_sum):
 * per vector a masked add on the sign of x - m (AVX2: blend and add;
 * AVX-512: compare and masked add), into an accumulator of its own (the
 * compare-and-add form cost 3-4% more on AVX2, and a second accumulator more
 * register pressure).  While the
 * row is in cache, a later row's input and output (pf_x, pf_y: the same
 * offsets FA_PF_BYTES on; pf_y == pf_x for none) are prefetched, so that their
 * memory traffic overlaps this row's arithmetic instead of following it.
 * Each block is first computed with the exp without its range check (a
 * compare and a branch per vector) while keeping the least x - m; a block
 * where that falls below the exp's fast range (-inf entries, spreads > 87)
 * is computed again with the checked exp (in place, y == x, only the latter). */
static double FN(expsum)(const T *x, T m, T *y, int64_t k, const T *pf_x, const T *pf_y,
                         double *rneg)
{
    const V vm = v_set1(m);
    const int pfy = pf_y != pf_x;
    const int inplace = y == x; /* no second try: the terms overwrite x */
    const int neg = rneg != NULL;
    double total = 0.0, rtotal = 0.0;
    int64_t j = 0;
    for (;;) {
        int64_t lim = k - j < BLOCK ? k - j : BLOCK;
        lim -= lim % (4 * VL);
        if (lim == 0)
            break;
        const int64_t j0 = j, end = j + lim;
        V s0 = v_zero(), s1 = v_zero(), s2 = v_zero(), s3 = v_zero(), lo = v_zero();
        V r0 = v_zero();
#define EXPSUM_NEG(d0, d1, d2, d3)                                                                 \
    do {                                                                                           \
        r0 = v_add_neg(r0, d0, e0);                                                                \
        r0 = v_add_neg(r0, d1, e1);                                                                \
        r0 = v_add_neg(r0, d2, e2);                                                                \
        r0 = v_add_neg(r0, d3, e3);                                                                \
    } while (0)
#define EXPSUM_FAST_STEP(STORE, NEG)                                                               \
    do {                                                                                           \
        FA_PREFETCH_LINES(pf_x, j, 0, 4 * VL * sizeof(T));                                         \
        if (pfy)                                                                                   \
            FA_PREFETCH_LINES(pf_y, j, 1, 4 * VL * sizeof(T));                                     \
        const V d0 = v_sub(v_load(x + j), vm), d1 = v_sub(v_load(x + j + VL), vm);                 \
        const V d2 = v_sub(v_load(x + j + 2 * VL), vm), d3 = v_sub(v_load(x + j + 3 * VL), vm);    \
        const V e0 = FN(vexp_inrange)(d0), e1 = FN(vexp_inrange)(d1);                              \
        const V e2 = FN(vexp_inrange)(d2), e3 = FN(vexp_inrange)(d3);                              \
        if (STORE) {                                                                               \
            v_store(y + j, e0);                                                                    \
            v_store(y + j + VL, e1);                                                               \
            v_store(y + j + 2 * VL, e2);                                                           \
            v_store(y + j + 3 * VL, e3);                                                           \
        }                                                                                          \
        s0 = v_add(s0, e0);                                                                        \
        s1 = v_add(s1, e1);                                                                        \
        s2 = v_add(s2, e2);                                                                        \
        s3 = v_add(s3, e3);                                                                        \
        lo = v_min(v_min(d0, d1), lo); /* v_min(d, acc) skips NaN */                               \
        lo = v_min(v_min(d2, d3), lo);                                                             \
        if (NEG)                                                                                   \
            EXPSUM_NEG(d0, d1, d2, d3);                                                            \
    } while (0)
        if (y && neg) {
            for (; !inplace && j < end; j += 4 * VL)
                EXPSUM_FAST_STEP(1, 1);
        } else if (y) {
            for (; !inplace && j < end; j += 4 * VL)
                EXPSUM_FAST_STEP(1, 0);
        } else {
            for (; j < end; j += 4 * VL)
                EXPSUM_FAST_STEP(0, 1);
        }
#undef EXPSUM_FAST_STEP
        if (inplace || m_any(v_lt(lo, v_set1(EXP_FAST_LO)))) {
            j = j0;
            s0 = s1 = s2 = s3 = r0 = v_zero();
            for (; j < end; j += 4 * VL) {
                const V d0 = v_sub(v_load(x + j), vm), d1 = v_sub(v_load(x + j + VL), vm);
                const V d2 = v_sub(v_load(x + j + 2 * VL), vm), d3 = v_sub(v_load(x + j + 3 * VL), vm);
                const V e0 = FN(vexp)(d0, 0), e1 = FN(vexp)(d1, 0);
                const V e2 = FN(vexp)(d2, 0), e3 = FN(vexp)(d3, 0);
                if (neg)
                    EXPSUM_NEG(d0, d1, d2, d3);
                if (y) {
                    v_store(y + j, e0);
                    v_store(y + j + VL, e1);
                    v_store(y + j + 2 * VL, e2);
                    v_store(y + j + 3 * VL, e3);
                }
                s0 = v_add(s0, e0);
                s1 = v_add(s1, e1);
                s2 = v_add(s2, e2);
                s3 = v_add(s3, e3);
            }
        }
        total += v_hsum_d(v_add(v_add(s0, s1), v_add(s2, s3)));
        if (neg)
            rtotal += v_hsum_d(r0);
    }
#undef EXPSUM_NEG
    V s = v_zero(), r = v_zero();
    for (; j + VL <= k; j += VL) {
        const V d = v_sub(v_load(x + j), vm);
        const V e = FN(vexp)(d, 0);
        if (y)
            v_store(y + j, e);
        s = v_add(s, e);
        if (neg)
            r = v_add_neg(r, d, e);
    }
    if (j < k) {
        VTM tm = v_tailmask(k - j);
        /* lanes past the end loaded as m: exp(0), zeroed after (d = 0: not below the max) */
        const V d = v_sub(v_load_tail(x + j, tm, m), vm);
        V e = FN(vexp)(d, 0);
        e = v_select(m_tail(tm), e, v_zero());
        if (y)
            v_store_tail(y + j, tm, e);
        s = v_add(s, e);
        if (neg)
            r = v_add_neg(r, d, e);
    }
    if (neg)
        *rneg = rtotal + v_hsum_d(r);
    return total + v_hsum_d(s);
}

/* sum over selected j of exp(x[j] - m) (times b[j] if b), terms stored in y
 * (0 at unselected entries) unless y is NULL; as expsum, *rneg (unless NULL)
 * gets the sum of the terms with x[j] - m < 0, and *ctie (unless NULL) that
 * of the others (the weights of the ties at the max; NaN terms). */
static double FN(expsum_sel)(const T *x, const unsigned char *mask, const T *b,
                             T m, T *y, int64_t k, double *rneg, double *ctie)
{
    const V vm = v_set1(m);
    double total = 0.0, rtotal = 0.0, ctotal = 0.0;
    V s = v_zero(), r = v_zero(), c = v_zero();
    int64_t cnt = 0;
    for (int64_t j = 0; j < k; j += VL) {
        const int64_t n = k - j;
        VM sel = FN(sel_at)(mask, b, j, n);
        V xv = n >= VL ? v_load(x + j) : v_load_tail(x + j, v_tailmask(n), m);
        V e = FN(vexp_sel)(xv, vm, sel);
        if (b) {
            V bv = n >= VL ? v_load(b + j) : v_load_tail(b + j, v_tailmask(n), (T)0);
            e = v_select(sel, v_mul(e, bv), v_zero()); /* b may be inf/NaN where unselected */
        }
        if (y) {
            if (n >= VL)
                v_store(y + j, e);
            else
                v_store_tail(y + j, v_tailmask(n), e);
        }
        s = v_add(s, e);
        if (rneg) {
            const VM lt = v_lt(xv, vm); /* x - m < 0 (e = 0 where unselected) */
            r = v_add_if(r, lt, e);
            if (ctie)
                c = v_add(c, v_select(lt, v_zero(), e));
        }
        if (++cnt == 64) {
            total += v_hsum_d(s);
            rtotal += v_hsum_d(r);
            ctotal += v_hsum_d(c);
            s = r = c = v_zero();
            cnt = 0;
        }
    }
    if (rneg)
        *rneg = rtotal + v_hsum_d(r);
    if (ctie)
        *ctie = ctotal + v_hsum_d(c);
    return total + v_hsum_d(s);
}

/* y[j] *= c */
static void FN(scale)(T *y, T c, int64_t k)
{
    const V vc = v_set1(c);
    int64_t j = 0;
    for (; j + 4 * VL <= k; j += 4 * VL) {
        v_store(y + j, v_mul(v_load(y + j), vc));
        v_store(y + j + VL, v_mul(v_load(y + j + VL), vc));
        v_store(y + j + 2 * VL, v_mul(v_load(y + j + 2 * VL), vc));
        v_store(y + j + 3 * VL, v_mul(v_load(y + j + 3 * VL), vc));
    }
    for (; j + VL <= k; j += VL)
        v_store(y + j, v_mul(v_load(y + j), vc));
    if (j < k) {
        VTM tm = v_tailmask(k - j);
        v_store_tail(y + j, tm, v_mul(v_load_tail(y + j, tm, (T)0), vc));
    }
}

/* Elements before y + j is aligned for v_stream (all of k if y is not even
 * T-aligned, or when not streaming). */
static inline int64_t FN(stream_head)(const T *y, int64_t k, const int stream)
{
    const uintptr_t a = (uintptr_t)y, al = (uintptr_t)(VL * sizeof(T));
    if (!stream || VL == 1 || a % sizeof(T) != 0)
        return stream && VL == 1 ? 0 : k;
    const int64_t h = (int64_t)(((al - a % al) % al) / sizeof(T));
    return h < k ? h : k;
}

/* y[j] = src[j] * c; with stream, non-temporal stores (the result bypasses
 * the caches: for outputs larger than the last-level cache, which saves the
 * read-for-ownership of y).  src may be y when not streaming. */
static void FN(scale_to)(const T *src, T *y, T c, int64_t k, const int stream)
{
    const int64_t h = FN(stream_head)(y, k, stream);
    if (h > 0) {
        if (src == y)
            FN(scale)(y, c, h);
        else
            for (int64_t j = 0; j < h; j++)
                y[j] = src[j] * c;
    }
    const V vc = v_set1(c);
    int64_t j = h;
    for (; j + 4 * VL <= k; j += 4 * VL) {
        v_stream(y + j, v_mul(v_load(src + j), vc));
        v_stream(y + j + VL, v_mul(v_load(src + j + VL), vc));
        v_stream(y + j + 2 * VL, v_mul(v_load(src + j + 2 * VL), vc));
        v_stream(y + j + 3 * VL, v_mul(v_load(src + j + 3 * VL), vc));
    }
    for (; j + VL <= k; j += VL)
        v_stream(y + j, v_mul(v_load(src + j), vc));
    for (; j < k; j++)
        y[j] = src[j] * c;
}

/* y[j] = (x[j] - m) - ls, unmasked, with non-temporal stores; prefetches
 * pf[j] (unless NULL) as it goes (see long_rows_stream). */
static void FN(shift_sub_stream)(const T *x, T m, T ls, T *y, int64_t k, const T *pf)
{
    const int64_t h = FN(stream_head)(y, k, 1);
    for (int64_t j = 0; j < h; j++)
        y[j] = (x[j] - m) - ls;
    const V vm = v_set1(m), vl = v_set1(ls);
    int64_t j = h;
    for (; j + 2 * VL <= k; j += 2 * VL) {
        if (pf)
            FA_PREFETCH_LINES(pf, j, 0, 2 * VL * sizeof(T));
        v_stream(y + j, v_sub(v_sub(v_load(x + j), vm), vl));
        v_stream(y + j + VL, v_sub(v_sub(v_load(x + j + VL), vm), vl));
    }
    for (; j + VL <= k; j += VL)
        v_stream(y + j, v_sub(v_sub(v_load(x + j), vm), vl));
    for (; j < k; j++)
        y[j] = (x[j] - m) - ls;
}

/* y[j] = (x[j] - m) - ls, with unselected entries at -inf (mask may be NULL). */
static void FN(shift_sub)(const T *x, const unsigned char *mask, T m, T ls, T *y, int64_t k)
{
    const V vm = v_set1(m), vl = v_set1(ls);
    int64_t j = 0;
    if (!mask) {
        for (; j + 4 * VL <= k; j += 4 * VL) {
            V a0 = v_load(x + j), a1 = v_load(x + j + VL);
            V a2 = v_load(x + j + 2 * VL), a3 = v_load(x + j + 3 * VL);
            v_store(y + j, v_sub(v_sub(a0, vm), vl));
            v_store(y + j + VL, v_sub(v_sub(a1, vm), vl));
            v_store(y + j + 2 * VL, v_sub(v_sub(a2, vm), vl));
            v_store(y + j + 3 * VL, v_sub(v_sub(a3, vm), vl));
        }
        for (; j + VL <= k; j += VL)
            v_store(y + j, v_sub(v_sub(v_load(x + j), vm), vl));
        if (j < k) {
            VTM tm = v_tailmask(k - j);
            v_store_tail(y + j, tm, v_sub(v_sub(v_load_tail(x + j, tm, (T)0), vm), vl));
        }
        return;
    }
    for (; j < k; j += VL) {
        const int64_t n = k - j;
        VM sel = FN(sel_at)(mask, NULL, j, n);
        V r = v_sub(v_sub(FN(load_sel)(x, sel, j, n), vm), vl);
        if (n >= VL)
            v_store(y + j, r);
        else
            v_store_tail(y + j, v_tailmask(n), r);
    }
}

/* ------------------------------------------------- special rows (scalar) */

/* A row whose max is not finite (+inf or NaN among the selected; or -inf: all
 * selected are -inf, or nothing is selected), as the reference: selected
 * entries NaN, unselected ones `empty` (0 or -inf). */
static void FN(special_row)(const unsigned char *mask, T *y, int64_t k, T empty)
{
    for (int64_t j = 0; j < k; j++)
        y[j] = (!mask || mask[j]) ? (T)NAN : empty;
}

/* A NaN among the selected entries of a row with a finite max makes the sum
 * NaN, hence every entry; the unselected ones are reset to `empty`. */
static void FN(reset_unselected)(const unsigned char *mask, T *y, int64_t k, T empty)
{
    for (int64_t j = 0; j < k; j++)
        if (!mask[j])
            y[j] = empty;
}

/* ------------------------------------------ short rows: tiles of VL rows */

#if HAVE_TILES
/* Rows of at most TILE_MAX_K elements (VL; 16 for AVX2 float32) are computed
 * column-wise over a tile of VL rows:
 * gathered into a local k x VL buffer (one vector per column) and reduced with
 * vertical max/add; the results are then written in row order with contiguous
 * stores.  (Gathering the results back was slower on AVX-512 than recomputing
 * exp in row order; for longer rows short_row below is faster than gathers.) */
#define TILE_K (4 * VL)
/* Longest rows on tiles (VL unless the ISA's v_tile_cols loads more). */
#ifndef TILE_MAX_K
#define TILE_MAX_K VL
#endif

typedef struct {
    int32_t gin[VL];              /* lane r -> r * k: gathers column j of a tile */
    int32_t rix[TILE_K * VL];     /* flat position p -> its row p / k in the tile */
} FN(tile_idx);

static void FN(tile_idx_init)(FN(tile_idx) *ti, int64_t k)
{
    for (int r = 0; r < VL; r++)
        ti->gin[r] = (int32_t)(r * k);
    for (int64_t p = 0; p < k * VL; p++)
        ti->rix[p] = (int32_t)(p / k);
}

/* Loads a tile into buf (column j at buf + j * VL); returns the row maxima.
 * With v_tile_cols (float32): row loads and a transpose in registers. */
static inline V FN(tile_load)(const FN(tile_idx) *ti, const T *x, int64_t k, T *buf)
{
    V m = v_set1((T)-INFINITY);
#if HAVE_TILE_COLS
    (void)ti;
    v_tile_cols(x, k, buf);
    for (int64_t j = 0; j < k; j++)
        m = v_max(v_load(buf + j * VL), m);
#else
    for (int64_t j = 0; j < k; j++) {
        V c = v_gather(x + j, ti->gin);
        v_store(buf + j * VL, c);
        m = v_max(c, m);
    }
#endif
    return m;
}

static inline int FN(all_finite)(V m)
{
    /* m - m is 0 for finite lanes, NaN otherwise. */
    return !m_any(v_ne(v_sub(m, m), v_zero()));
}

/* The log of each row's exp sum over a loaded tile (row maxima m): the sums
 * column-wise (also stored in *sum unless NULL), with the terms below the
 * max apart (vlog_sum). */
static inline V FN(tile_log_sum)(const T *buf, int64_t k, V m, V *sum)
{
    V s = v_zero(), r = v_zero();
    for (int64_t j = 0; j < k; j++) {
        const V d = v_sub(v_load(buf + j * VL), m);
        const V e = FN(vexp)(d, 0);
        s = v_add(s, e);
        r = v_add_neg(r, d, e);
    }
    if (sum)
        *sum = s;
    return FN(vlog_sum)(s, r);
}
#endif

/* ------------------------------------------------------------ the kernels */

/* Rows of at most SHORT_K elements live in registers: one masked load per
 * vector, max, exp, sum and the result without re-reading memory.  Returns 0
 * (nothing written) for a row with a non-finite max, left to the row path.
 * take_log = 0: softmax; 1: log_softmax. */
#define SHORT_K (4 * VL)

static inline int FN(short_row)(const T *x, T *y, int64_t k, const int take_log)
{
    V v[4];
    const int nv = (int)((k + VL - 1) / VL);
    const VTM tm = v_tailmask(k - (int64_t)(nv - 1) * VL);
    V mx = v_set1((T)-INFINITY);
    for (int u = 0; u < nv; u++) {
        v[u] = u < nv - 1 ? v_load(x + u * VL) : v_load_tail(x + u * VL, tm, (T)-INFINITY);
        mx = v_max(v[u], mx);
    }
    const T m = v_hmax(mx);
    if (!isfinite(m))
        return 0;
    const V vm = v_set1(m);
    V s = v_zero(), rn = v_zero();
    for (int u = 0; u < nv; u++) {
        /* the last vector's lanes past the end (-inf for the max) as exp(0), zeroed */
        V e = u < nv - 1 ? FN(vexp)(v_sub(v[u], vm), 0) : FN(vexp_sel)(v[u], vm, m_tail(tm));
        s = v_add(s, e);
        if (take_log) /* the terms below the max (see log_sum) */
            rn = v_add_if(rn, v_lt(v[u], vm), e);
        else
            v[u] = e;
    }
    const double sd = v_hsum_d(s);
    const V c = take_log ? v_set1((T)FN(log_sum)(sd, v_hsum_d(rn))) : v_set1((T)(1.0 / sd));
    for (int u = 0; u < nv; u++) {
        V r = take_log ? v_sub(v_sub(v[u], vm), c) : v_mul(v[u], c);
        if (u < nv - 1)
            v_store(y + u * VL, r);
        else
            v_store_tail(y + u * VL, tm, r);
    }
    return 1;
}

static void FN(fill)(T *y, T v, int64_t k)
{
    for (int64_t j = 0; j < k; j++)
        y[j] = v;
}

/* Rows longer than LONG_K (unmasked): one streaming pass over chunks that
 * stay in L1 (chunk max, then exp stored and summed relative to the running
 * max), so reading the row from memory overlaps the arithmetic; then each
 * chunk is scaled by exp(m_chunk - m) / s.  softmax (take_log = 0) or
 * log_softmax (1: sums only, then (x - m) - log(s)).  y may be x. */
#define LONG_K 16384
#ifndef LONG_CHUNK
#define LONG_CHUNK 4096
#endif

static int64_t FN(lr_chunk)(int64_t k)
{
    int64_t chunk = LONG_CHUNK;
    while ((k + chunk - 1) / chunk > 256)
        chunk *= 2;
    return chunk;
}

/* A row's exp sum from its chunks' sums cs[c], each relative to the running
 * max cm[c] after chunk c, rescaled to the row max m; with r (unless NULL),
 * the sum of the terms below m (see log_sum): all of a chunk whose cm is
 * below m, the chunk's own such terms cr[c] for the chunks at m. */
static double FN(chunk_total)(const T *cm, const double *cs, const double *cr, int nc,
                              int nan_early, T m, double *r)
{
    double s = nan_early ? (double)NAN : 0.0, rs = 0.0;
    for (int c = 0; c < nc; c++)
        if (cm[c] != (T)-INFINITY) {
            const double t = cs[c] * exp((double)cm[c] - (double)m);
            s += t;
            rs += cm[c] == m ? cr[c] : t;
        }
    if (r)
        *r = rs;
    return s;
}

/* Long rows (softmax, log_softmax, cross entropy): one pass over L1-sized chunks,
 * each chunk's max, then its exp terms relative to the running max stored in
 * y (unless NULL) and summed (and those below it if want_r); chunk_sum
 * rescales the chunk sums to the final max, chunk_scale writes
 * y = src * (c exp(cm - m)) chunk by chunk. */
typedef struct {
    T m;
    int nc, nan_early;
    int64_t chunk;
    T cm[256];
    double cs[256], cr[256];
} FN(chunks_t);

static T FN(chunk_expsum)(const T *x, T *y, int64_t k, FN(chunks_t) *ch, const int want_r)
{
    const int64_t chunk = FN(lr_chunk)(k);
    T m = (T)-INFINITY;
    int nc = 0, nan_early = 0;
    for (int64_t j0 = 0; j0 < k; j0 += chunk, nc++) {
        const int64_t len = k - j0 < chunk ? k - j0 : chunk;
        const T mc = FN(row_max)(x + j0, len);
        if (mc > m)
            m = mc;
        ch->cm[nc] = m;
        ch->cs[nc] = ch->cr[nc] = 0.0;
        if (m == (T)INFINITY)
            break;
        if (m == (T)-INFINITY) { /* only -inf or NaN so far */
            for (int64_t j = j0; j < j0 + len; j++)
                nan_early |= x[j] != x[j];
            continue;
        }
        const T *pf = x + j0 + len;
        ch->cs[nc] = FN(expsum)(x + j0, m, y ? y + j0 : NULL, len, pf, y ? y + j0 + len : pf,
                                want_r ? &ch->cr[nc] : NULL);
    }
    ch->m = m;
    ch->nc = nc;
    ch->nan_early = nan_early;
    ch->chunk = chunk;
    return m;
}

static double FN(chunk_sum)(const FN(chunks_t) *ch, double *r)
{
    return FN(chunk_total)(ch->cm, ch->cs, ch->cr, ch->nc, ch->nan_early, ch->m, r);
}

static void FN(chunk_scale)(const FN(chunks_t) *ch, const T *src, T *y, int64_t k, double c,
                            const int stream)
{
    int ci = 0;
    for (int64_t j0 = 0; j0 < k; j0 += ch->chunk, ci++) {
        const int64_t len = k - j0 < ch->chunk ? k - j0 : ch->chunk;
        if (ch->cm[ci] == (T)-INFINITY)
            FN(fill)(y + j0, (T)(0.0 * c), len);
        else
            FN(scale_to)(src + j0, y + j0, (T)(exp((double)ch->cm[ci] - (double)ch->m) * c), len, stream);
    }
}

static void FN(long_row)(const T *x, T *y, T *tmp, int64_t k, const int take_log)
{
    const int stream = tmp != NULL;
    if (!tmp)
        tmp = y;
    FN(chunks_t) ch;
    const T m = FN(chunk_expsum)(x, take_log ? NULL : tmp, k, &ch, take_log);
    if (!isfinite(m)) { /* +inf, or all -inf/NaN: NaN everywhere (unmasked) */
        FN(fill)(y, (T)NAN, k);
        return;
    }
    double r = 0.0;
    const double s = FN(chunk_sum)(&ch, take_log ? &r : NULL);
    if (take_log) {
        const T ls = (T)FN(log_sum)(s, r);
        if (stream)
            FN(shift_sub_stream)(x, m, ls, y, k, NULL);
        else
            FN(shift_sub)(x, NULL, m, ls, y, k);
        return;
    }
    FN(chunk_scale)(&ch, tmp, y, k, 1.0 / s, stream);
}

/* Unmasked rows of SHORT_K < k <= LONG_K, pipelined across rows: the final
 * pass of row i (softmax: y = src c; log_softmax: y = (x - m) - ls; with
 * non-temporal stores when streaming) is one loop with the max of row i + 1,
 * so that the next row's reads overlap this row's writes and the latency of
 * log(s) or 1/s is hidden behind independent work.  Returns row i + 1's max
 * (xn may be NULL: none). */
static FA_ALWAYS_INLINE T FN(final_max)(const T *src, T *y, T a, T b, int64_t k, const int stream,
                       const int take_log, const T *xn)
{
    const V va = v_set1(a), vb = v_set1(b);
#define FM_OP(v) (take_log ? v_sub(v_sub((v), va), vb) : v_mul((v), va))
#define FM_OPS(t) (take_log ? ((t) - a) - b : (t) * a)
    const int64_t h = stream ? FN(stream_head)(y, k, 1) : 0;
    V m0 = v_set1((T)-INFINITY), m1 = m0, m2 = m0, m3 = m0;
    int64_t j = 0;
    for (; j < h; j++)
        y[j] = FM_OPS(src[j]);
    if (xn && h > 0) /* h < VL unless y is not T-aligned */
        for (int64_t t = 0; t < h; t += VL)
            m2 = v_max(v_load_tail(xn + t, v_tailmask(h - t < VL ? h - t : VL), (T)-INFINITY), m2);
    if (h == k)
        return v_hmax(m2);
    for (; j + 4 * VL <= k; j += 4 * VL) {
        const V r0 = FM_OP(v_load(src + j)), r1 = FM_OP(v_load(src + j + VL));
        const V r2 = FM_OP(v_load(src + j + 2 * VL)), r3 = FM_OP(v_load(src + j + 3 * VL));
        if (stream) {
            v_stream(y + j, r0);
            v_stream(y + j + VL, r1);
            v_stream(y + j + 2 * VL, r2);
            v_stream(y + j + 3 * VL, r3);
        } else {
            v_store(y + j, r0);
            v_store(y + j + VL, r1);
            v_store(y + j + 2 * VL, r2);
            v_store(y + j + 3 * VL, r3);
        }
        if (xn) {
            m0 = v_max(v_load(xn + j), m0);
            m1 = v_max(v_load(xn + j + VL), m1);
            m2 = v_max(v_load(xn + j + 2 * VL), m2);
            m3 = v_max(v_load(xn + j + 3 * VL), m3);
        }
    }
    for (; j + VL <= k; j += VL) {
        const V r = FM_OP(v_load(src + j));
        if (stream)
            v_stream(y + j, r);
        else
            v_store(y + j, r);
        if (xn)
            m0 = v_max(v_load(xn + j), m0);
    }
    if (j < k) {
        if (stream) { /* scalar: masked stores beside streamed lines were slow */
            for (int64_t t = j; t < k; t++)
                y[t] = FM_OPS(src[t]);
        } else {
            const VTM tm = v_tailmask(k - j);
            v_store_tail(y + j, tm, FM_OP(v_load_tail(src + j, tm, (T)0)));
        }
        if (xn)
            m1 = v_max(v_load_tail(xn + j, v_tailmask(k - j), (T)-INFINITY), m1);
    }
#undef FM_OP
#undef FM_OPS
    return v_hmax(v_max(v_max(m0, m1), v_max(m2, m3)));
}

/* Long rows in streaming mode, pipelined across rows: the final pass of row
 * i - 1 (scale the stored exp terms, or (x - m) - log s, written with
 * non-temporal stores) is done chunk by chunk between the chunks of row i's
 * first pass (chunk max, exp stored and summed).  So reading the input and
 * writing the output overlap each other and the arithmetic, instead of a
 * read-and-compute phase followed by a write phase per 0.5 MB row.  Chunk c
 * of the scratch row is read by row i - 1's final pass before row i's first
 * pass overwrites it, so one scratch row serves both.  Row i's chunk max is
 * taken in the same loop as row i - 1's final pass over that chunk
 * (final_max), so the chunk is read while the previous one is written
 * (1 thread, time vs np.copyto: 64x128256 softmax 1.12x -> 1.01x,
 * log_softmax 1.07x -> 0.97x; 512x32000 1.14x -> 1.01x).  log_softmax's final
 * pass also prefetches the chunk of row i that the first pass reads next, so
 * that reads are in flight while it writes (1 thread, time vs np.copyto:
 * 64x128256 1.20x -> 1.10x; softmax's scale pass doing the same was slower,
 * 1.24x -> 1.35x, and is left without). */
typedef struct {
    const T *x;
    T *y;
    T m, ls;         /* row max; log s (log_softmax) */
    double inv;      /* 1/s (softmax) */
    int nc, nan_early, stopped, skip_b;
    T cm[256];       /* running max after each chunk */
    double cs[256];  /* each chunk's sum relative to its cm */
    double cr[256];  /* log_softmax: its terms below cm (see chunk_total) */
} FN(lr_st);


static void FN(lr_a)(FN(lr_st) *st, int c, int64_t j0, int64_t len, T *tmp, const int take_log,
                     const T *mc_given)
{
    if (st->stopped)
        return;
    const T *x = st->x;
    const T mc = mc_given ? *mc_given : FN(row_max)(x + j0, len);
    if (mc > st->m)
        st->m = mc;
    st->cm[c] = st->m;
    st->cs[c] = st->cr[c] = 0.0;
    st->nc = c + 1;
    if (st->m == (T)INFINITY) {
        st->stopped = 1;
        return;
    }
    if (st->m == (T)-INFINITY) { /* only -inf or NaN so far */
        for (int64_t j = j0; j < j0 + len; j++)
            st->nan_early |= x[j] != x[j];
        return;
    }
    const T *pf = x + j0 + len;
    st->cs[c] = FN(expsum)(x + j0, st->m, take_log ? NULL : tmp + j0, len, pf, pf,
                           take_log ? &st->cr[c] : NULL);
}

static void FN(lr_finish)(FN(lr_st) *st, int64_t k, const int take_log)
{
    const T m = st->m;
    if (!isfinite(m)) { /* +inf, or all -inf/NaN: NaN everywhere (unmasked) */
        FN(fill)(st->y, (T)NAN, k);
        st->skip_b = 1;
        return;
    }
    double r = 0.0;
    const double s = FN(chunk_total)(st->cm, st->cs, st->cr, st->nc, st->nan_early, m,
                                     take_log ? &r : NULL);
    if (take_log)
        st->ls = (T)FN(log_sum)(s, r);
    else
        st->inv = 1.0 / s;
}

static void FN(lr_b)(const FN(lr_st) *st, int c, int64_t j0, int64_t len, const T *tmp,
                     const int take_log, const T *pf)
{
    if (st->skip_b)
        return;
    if (take_log) {
        FN(shift_sub_stream)(st->x + j0, st->m, st->ls, st->y + j0, len, pf);
        return;
    }
    const double inv = st->inv;
    if (st->cm[c] == (T)-INFINITY)
        FN(fill)(st->y + j0, (T)(0.0 * inv), len);
    else
        FN(scale_to)(tmp + j0, st->y + j0, (T)(exp((double)st->cm[c] - (double)st->m) * inv), len, 1);
}

static void FN(long_rows_stream)(const fa_args *A, int64_t r0, int64_t r1, T *tmp, const int take_log)
{
    const int64_t k = A->k, chunk = FN(lr_chunk)(k);
    FN(lr_st) st[2];
    FN(lr_st) *prev = NULL;
    for (int64_t i = r0; i < r1; i++) {
        FN(lr_st) *cur = &st[i & 1];
        memset(cur, 0, sizeof *cur);
        cur->x = (const T *)A->x + i * k;
        cur->y = (T *)A->out + i * k;
        cur->m = (T)-INFINITY;
        int c = 0;
        for (int64_t j0 = 0; j0 < k; j0 += chunk, c++) {
            const int64_t len = k - j0 < chunk ? k - j0 : chunk;
            /* row i - 1's chunk written in one loop with row i's chunk max */
            const int fuse = prev && !prev->skip_b && (take_log || prev->cm[c] != (T)-INFINITY);
            T mc = (T)0;
            if (fuse) {
                if (take_log)
                    mc = FN(final_max)(prev->x + j0, prev->y + j0, prev->m, prev->ls, len, 1, 1, cur->x + j0);
                else
                    mc = FN(final_max)(tmp + j0, prev->y + j0,
                                       (T)(exp((double)prev->cm[c] - (double)prev->m) * prev->inv), (T)0,
                                       len, 1, 0, cur->x + j0);
            } else if (prev) {
                FN(lr_b)(prev, c, j0, len, tmp, take_log, cur->x + j0);
            }
            FN(lr_a)(cur, c, j0, len, tmp, take_log, fuse ? &mc : NULL);
        }
        FN(lr_finish)(cur, k, take_log);
        prev = cur;
    }
    if (prev) {
        int c = 0;
        for (int64_t j0 = 0; j0 < k; j0 += chunk, c++)
            FN(lr_b)(prev, c, j0, k - j0 < chunk ? k - j0 : chunk, tmp, take_log, NULL);
    }
}

/* tmp: NULL, or (streaming mode: large unmasked outputs) k elements of
 * scratch for the exp terms, the result then written once with
 * non-temporal stores. */
static void FN(softmax_row)(const fa_args *A, int64_t i, T *tmp)
{
    const int64_t k = A->k;
    const T *x = (const T *)A->x + i * k;
    T *y = (T *)A->out + i * k;
    const unsigned char *mk = A->mask ? A->mask + i * k : NULL;
    if (!mk && k <= SHORT_K && FN(short_row)(x, y, k, 0))
        return;
    if (!mk && k > LONG_K) {
        FN(long_row)(x, y, tmp, k, 0);
        return;
    }
    T m = mk ? FN(row_max_sel)(x, mk, NULL, k) : FN(row_max)(x, k);
    if (!isfinite(m)) {
        FN(special_row)(mk, y, k, (T)0);
        return;
    }
    if (tmp) {
        const double st = FN(expsum)(x, m, tmp, k, x + FN(pf_off)(k), x + FN(pf_off)(k), NULL);
        FN(scale_to)(tmp, y, (T)(1.0 / st), k, 1);
        return;
    }
    double s = mk ? FN(expsum_sel)(x, mk, NULL, m, y, k, NULL, NULL)
                  : FN(expsum)(x, m, y, k, x + FN(pf_off)(k), y + FN(pf_off)(k), NULL);
    FN(scale)(y, (T)(1.0 / s), k);
    if (mk && s != s)
        FN(reset_unselected)(mk, y, k, (T)0);
}

static void FN(log_softmax_row)(const fa_args *A, int64_t i, const int stream)
{
    const int64_t k = A->k;
    const T *x = (const T *)A->x + i * k;
    T *y = (T *)A->out + i * k;
    const unsigned char *mk = A->mask ? A->mask + i * k : NULL;
    if (!mk && k <= SHORT_K && FN(short_row)(x, y, k, 1))
        return;
    if (!mk && k > LONG_K) {
        FN(long_row)(x, y, stream ? y : NULL, k, 1);
        return;
    }
    T m = mk ? FN(row_max_sel)(x, mk, NULL, k) : FN(row_max)(x, k);
    if (!isfinite(m)) {
        FN(special_row)(mk, y, k, (T)-INFINITY);
        return;
    }
    double r;
    const double s = mk ? FN(expsum_sel)(x, mk, NULL, m, NULL, k, &r, NULL)
                        : FN(expsum)(x, m, NULL, k, x + FN(pf_off)(k), (stream ? x : y) + FN(pf_off)(k), &r);
    const T ls = (T)FN(log_sum)(s, r);
    if (stream) {
        FN(shift_sub_stream)(x, m, ls, y, k, NULL);
        return;
    }
    FN(shift_sub)(x, mk, m, ls, y, k);
    if (mk && s != s)
        FN(reset_unselected)(mk, y, k, (T)-INFINITY);
}

/* Rows r0 .. r1 - 1 as softmax_row / log_softmax_row do them (unmasked,
 * SHORT_K < k <= LONG_K), each row's max taken in the previous row's final
 * pass (final_max).  tmp: the softmax scratch row when streaming. */
static void FN(mid_rows)(const fa_args *A, int64_t r0, int64_t r1, T *tmp, const int stream,
                         const int take_log)
{
    const int64_t k = A->k, pfo = FN(pf_off)(k);
    const T *X = (const T *)A->x;
    T *Y = (T *)A->out;
    if (r0 >= r1)
        return;
    T m = FN(row_max)(X + r0 * k, k);
    for (int64_t i = r0; i < r1; i++) {
        const T *x = X + i * k;
        T *y = Y + i * k;
        const T *xn = i + 1 < r1 ? x + k : NULL;
        if (!isfinite(m)) {
            FN(special_row)(NULL, y, k, take_log ? (T)-INFINITY : (T)0);
            m = xn ? FN(row_max)(xn, k) : (T)0;
            continue;
        }
        if (take_log) {
            double r;
            const double s = FN(expsum)(x, m, NULL, k, x + pfo, (stream ? x : y) + pfo, &r);
            m = FN(final_max)(x, y, m, FN(log_sum_t)(s, r), k, stream, 1, xn);
        } else if (stream) {
            /* the scratch row at y's offset in a cache line (tmp is 64-byte
             * aligned with 64 bytes to spare): the final pass's loads are then
             * aligned where its non-temporal stores are (1 thread, vs tmp
             * itself: 4096x1000 1.19x -> 1.05x the time of np.copyto) */
            T *t = tmp;
            if ((uintptr_t)y % sizeof(T) == 0)
                t = tmp + ((uintptr_t)y % 64) / sizeof(T);
            const double s = FN(expsum)(x, m, t, k, x + pfo, x + pfo, NULL);
            m = FN(final_max)(t, y, (T)(1.0 / s), (T)0, k, 1, 0, xn);
        } else {
            const double s = FN(expsum)(x, m, y, k, x + pfo, y + pfo, NULL);
            m = FN(final_max)(y, y, (T)(1.0 / s), (T)0, k, 0, 0, xn);
        }
    }
}

static void FN(softmax_rows)(const fa_args *A, int64_t r0, int64_t r1)
{
    int64_t i = r0;
#if HAVE_TILES
    const int64_t k = A->k;
    if (FA_USE_TILES && !A->mask && k <= TILE_MAX_K && r1 - r0 >= VL) {
        FN(tile_idx) ti;
        T buf[TILE_K * VL];
        FN(tile_idx_init)(&ti, k);
        for (; i + VL <= r1; i += VL) {
            V m = FN(tile_load)(&ti, (const T *)A->x + i * k, k, buf);
            if (!FN(all_finite)(m)) {
                for (int r = 0; r < VL; r++)
                    FN(softmax_row)(A, i + r, NULL);
                continue;
            }
            V s = v_zero();
            for (int64_t j = 0; j < k; j++)
                s = v_add(s, FN(vexp)(v_sub(v_load(buf + j * VL), m), 0));
            V inv = v_div(v_set1((T)1), s);
            /* Back in row order: the row's max and 1/sum moved to each lane by a
             * permute, exp recomputed (cheaper than gathering the results). */
            const T *x = (const T *)A->x + i * k;
            T *y = (T *)A->out + i * k;
            for (int64_t v = 0; v < k; v++) {
                const int32_t *rix = ti.rix + v * VL;
                V e = FN(vexp)(v_sub(v_load(x + v * VL), v_permute(rix, m)), 0);
                v_store(y + v * VL, v_mul(e, v_permute(rix, inv)));
            }
        }
    }
#endif
    T *tmp = NULL, *tmp_mem = NULL;
    if (A->stream && !A->mask && A->k > SHORT_K) {
        tmp_mem = (T *)malloc((size_t)A->k * sizeof(T) + 128);
        if (tmp_mem)
            tmp = (T *)((char *)tmp_mem + ((64 - (uintptr_t)tmp_mem % 64) % 64));
    }
    if (tmp && A->k > LONG_K) {
        FN(long_rows_stream)(A, i, r1, tmp, 0);
        i = r1;
    }
    if (!A->mask && A->k > SHORT_K && A->k <= LONG_K) {
        FN(mid_rows)(A, i, r1, tmp, tmp != NULL, 0);
        i = r1;
    }
    for (; i < r1; i++)
        FN(softmax_row)(A, i, tmp);
    if (tmp_mem) {
        v_sfence();
        free(tmp_mem);
    }
}

static void FN(log_softmax_rows)(const fa_args *A, int64_t r0, int64_t r1)
{
    int64_t i = r0;
#if HAVE_TILES
    const int64_t k = A->k;
    if (FA_USE_TILES && !A->mask && k <= TILE_MAX_K && r1 - r0 >= VL) {
        FN(tile_idx) ti;
        T buf[TILE_K * VL];
        FN(tile_idx_init)(&ti, k);
        for (; i + VL <= r1; i += VL) {
            V m = FN(tile_load)(&ti, (const T *)A->x + i * k, k, buf);
            if (!FN(all_finite)(m)) {
                for (int r = 0; r < VL; r++)
                    FN(log_softmax_row)(A, i + r, 0);
                continue;
            }
            const V ls = FN(tile_log_sum)(buf, k, m, NULL);
            const T *x = (const T *)A->x + i * k;
            T *y = (T *)A->out + i * k;
            for (int64_t v = 0; v < k; v++) {
                const int32_t *rix = ti.rix + v * VL;
                V d = v_sub(v_load(x + v * VL), v_permute(rix, m));
                v_store(y + v * VL, v_sub(d, v_permute(rix, ls)));
            }
        }
    }
#endif
    const int stream = A->stream && !A->mask && A->k > SHORT_K;
    if (stream && A->k > LONG_K) {
        FN(long_rows_stream)(A, i, r1, NULL, 1);
        i = r1;
    }
    if (!A->mask && A->k > SHORT_K && A->k <= LONG_K) {
        FN(mid_rows)(A, i, r1, NULL, stream, 1);
        i = r1;
    }
    for (; i < r1; i++)
        FN(log_softmax_row)(A, i, stream);
    if (stream)
        v_sfence();
}

/* logsumexp of a row whose max is not finite, as the reference. */
static void FN(logsumexp_special)(const T *x, const T *b, const unsigned char *mk,
                                  int64_t k, T *out, T *sign)
{
    int nan = 0, pinf = 0;
    double inf_w = 0.0;
    for (int64_t j = 0; j < k; j++) {
        if ((mk && !mk[j]) || (b && b[j] == 0))
            continue;
        if (x[j] != x[j])
            nan = 1;
        else if (x[j] == (T)INFINITY) {
            pinf = 1;
            if (b)
                inf_w += (double)b[j];
        }
    }
    T r, sg;
    if (nan) {
        r = (T)NAN;
        sg = (T)NAN;
    } else if (!pinf) { /* nothing selected, or all selected -inf */
        r = (T)-INFINITY;
        sg = 0;
    } else if (!b) {
        r = (T)INFINITY;
        sg = 1;
    } else if (sign) {
        sg = inf_w > 0 ? (T)1 : inf_w < 0 ? (T)-1 : inf_w == 0 ? (T)0 : (T)NAN;
        r = inf_w == 0 ? (T)NAN : (T)INFINITY;
        if (r != r)
            sg = (T)NAN;
    } else {
        r = inf_w <= 0 ? (T)NAN : (T)INFINITY;
        sg = 0;
    }
    *out = r;
    if (sign)
        *sign = sg;
}

static void FN(logsumexp_row)(const fa_args *A, int64_t i)
{
    const int64_t k = A->k;
    const unsigned char *M = A->mask;
    const T *B = (const T *)A->b;
    T *out = (T *)A->out, *sign = (T *)A->sign;
    {
        const T *x = (const T *)A->x + i * k;
        const T *b = B ? B + i * k : NULL;
        const unsigned char *mk = M ? M + i * k : NULL;
        const int sel = mk || b;
        T m = sel ? FN(row_max_sel)(x, mk, b, k) : FN(row_max)(x, k);
        if (!isfinite(m)) {
            FN(logsumexp_special)(x, b, mk, k, out + i, sign ? sign + i : NULL);
            return;
        }
        double r, ls, sg;
        if (sel) { /* the ties' weights c apart (b of either sign) */
            double c;
            FN(expsum_sel)(x, mk, b, m, NULL, k, &r, &c);
            ls = FN(log_sum_w)(c, r, &sg);
        } else {
            const double s = FN(expsum)(x, m, NULL, k, x + FN(pf_off)(k), x + FN(pf_off)(k), &r);
            ls = FN(log_sum)(s, r);
            sg = s == s ? 1.0 : (double)NAN;
        }
        const double res = ls + (double)m;
        if (sign) {
            out[i] = (T)res;
            sign[i] = res == res ? (T)sg : (T)NAN;
        } else {
            out[i] = sg < 0 ? (T)NAN : (T)res;
        }
    }
}

static void FN(logsumexp_rows)(const fa_args *A, int64_t r0, int64_t r1)
{
    int64_t i = r0;
#if HAVE_TILES
    /* short rows without b or mask on tiles of VL rows (as softmax_rows):
     * max and exp sum column-wise, m + its log (tile_log_sum) per lane */
    const int64_t k = A->k;
    if (FA_USE_TILES && !A->mask && !A->b && k <= TILE_MAX_K && r1 - r0 >= VL) {
        FN(tile_idx) ti;
        T buf[TILE_K * VL];
        T *out = (T *)A->out, *sign = (T *)A->sign;
        FN(tile_idx_init)(&ti, k);
        for (; i + VL <= r1; i += VL) {
            V m = FN(tile_load)(&ti, (const T *)A->x + i * k, k, buf);
            if (!FN(all_finite)(m)) {
                for (int r = 0; r < VL; r++)
                    FN(logsumexp_row)(A, i + r);
                continue;
            }
            V s;
            v_store(out + i, v_add(m, FN(tile_log_sum)(buf, k, m, &s)));
            if (sign) /* s >= 1, or NaN (a NaN entry) */
                v_store(sign + i, v_select(v_ne(s, s), s, v_set1((T)1)));
        }
    }
#endif
    for (; i < r1; i++)
        FN(logsumexp_row)(A, i);
}

static void FN(softmax_backward_rows)(const fa_args *A, int64_t r0, int64_t r1)
{
    const int64_t k = A->k;
    for (int64_t i = r0; i < r1; i++) {
        const T *g = (const T *)A->x + i * k;
        const T *y = (const T *)A->y + i * k;
        T *o = (T *)A->out + i * k;
        double d = 0.0;
        int64_t j = 0;
        for (;;) {
            int64_t lim = k - j < BLOCK ? k - j : BLOCK;
            lim -= lim % (2 * VL);
            if (lim == 0)
                break;
            const int64_t end = j + lim;
            V s0 = v_zero(), s1 = v_zero();
            for (; j < end; j += 2 * VL) {
                s0 = v_fma(v_load(g + j), v_load(y + j), s0);
                s1 = v_fma(v_load(g + j + VL), v_load(y + j + VL), s1);
            }
            d += v_hsum_d(v_add(s0, s1));
        }
        V s = v_zero();
        for (; j + VL <= k; j += VL)
            s = v_fma(v_load(g + j), v_load(y + j), s);
        if (j < k) {
            VTM tm = v_tailmask(k - j);
            s = v_fma(v_load_tail(g + j, tm, (T)0), v_load_tail(y + j, tm, (T)0), s);
        }
        d += v_hsum_d(s);
        const V vd = v_set1((T)d);
        for (j = 0; j + VL <= k; j += VL)
            v_store(o + j, v_mul(v_load(y + j), v_sub(v_load(g + j), vd)));
        if (j < k) {
            VTM tm = v_tailmask(k - j);
            v_store_tail(o + j, tm, v_mul(v_load_tail(y + j, tm, (T)0),
                                          v_sub(v_load_tail(g + j, tm, (T)0), vd)));
        }
    }
}

static void FN(log_softmax_backward_rows)(const fa_args *A, int64_t r0, int64_t r1)
{
    const int64_t k = A->k;
    const unsigned char *M = A->mask;
    for (int64_t i = r0; i < r1; i++) {
        const T *g = (const T *)A->x + i * k;
        const T *y = (const T *)A->y + i * k;
        T *o = (T *)A->out + i * k;
        const unsigned char *mk = M ? M + i * k : NULL;
        double sum = 0.0;
        V s = v_zero();
        int64_t cnt = 0;
        for (int64_t j = 0; j < k; j += VL) {
            const int64_t n = k - j;
            V gv = n >= VL ? v_load(g + j) : v_load_tail(g + j, v_tailmask(n), (T)0);
            if (mk)
                gv = v_select(FN(sel_at)(mk, NULL, j, n), gv, v_zero());
            s = v_add(s, gv);
            if (++cnt == 64) {
                sum += v_hsum_d(s);
                s = v_zero();
                cnt = 0;
            }
        }
        sum += v_hsum_d(s);
        const V vs = v_set1((T)sum);
        for (int64_t j = 0; j < k; j += VL) {
            const int64_t n = k - j;
            V gv, yv;
            if (n >= VL) {
                gv = v_load(g + j);
                yv = v_load(y + j);
            } else {
                VTM tm = v_tailmask(n);
                gv = v_load_tail(g + j, tm, (T)0);
                yv = v_load_tail(y + j, tm, (T)0);
            }
            V r;
            if (mk) {
                VM sel = FN(sel_at)(mk, NULL, j, n);
                /* unselected lanes as exp(0) (-inf would take the exp's slow path), zeroed */
                r = v_sub(gv, v_mul(FN(vexp)(v_select(sel, yv, v_zero()), 1), vs));
                r = v_select(sel, r, v_zero());
            } else {
                r = v_sub(gv, v_mul(FN(vexp)(yv, 1), vs));
            }
            if (n >= VL)
                v_store(o + j, r);
            else
                v_store_tail(o + j, v_tailmask(n), r);
        }
    }
}

/* sum_c w_c q_c (m - x_c) in double (w, q may be NULL: 1; q with label
 * smoothing eps: (1 - eps) q_c + eps / k, as the vector loops round it), for
 * rows where the T sum overflowed: m - x_c exceeds T's range for logits near
 * -+max while the term itself is finite. */
static double FN(wdiff_sum_d)(const T *x, const T *w, const T *q, T m, int64_t k, double eps)
{
    const T q1 = (T)(1 - eps), q0 = (T)(eps / (double)k);
    double s = 0.0;
    for (int64_t j = 0; j < k; j++) {
        T wq = w ? w[j] : (T)1;
        if (q) {
            const T qj = eps != 0 ? q[j] * q1 + q0 : q[j];
            wq = w ? qj * w[j] : qj;
        }
        s += (double)wq * ((double)m - (double)x[j]);
    }
    return s;
}

/* sum_c w_c q_c (m - x_c) accumulated as the fused loops of ce_index_plain
 * (tq NULL) and cross_entropy_prob_rows do it (T vectors, blocks of 64 folded
 * into a double), falling back to wdiff_sum_d where that overflows: the sum
 * an in-place call (grad == x) takes before the gradient overwrites x, equal
 * to the one the same call out of place gets. */
static double FN(wdiff_sum_pre)(const T *x, const T *W, const T *tq, T m, int64_t k, double eps)
{
    const V vm = v_set1(m), q1 = v_set1((T)(1 - eps)), q0 = v_set1((T)(eps / (double)k));
    V acc = v_zero();
    double s = 0.0;
    int64_t cnt = 0;
    for (int64_t j = 0; j < k; j += VL) {
        const int64_t n = k - j;
        V xv, tv = v_zero(), wv = v_set1((T)1);
        if (n >= VL) {
            xv = v_load(x + j);
            if (W)
                wv = v_load(W + j);
            if (tq)
                tv = v_load(tq + j);
        } else {
            VTM tm = v_tailmask(n);
            xv = v_load_tail(x + j, tm, m); /* m - x = 0 past the end */
            if (W)
                wv = v_load_tail(W + j, tm, (T)0);
            if (tq)
                tv = v_load_tail(tq + j, tm, (T)0);
        }
        V wq = wv;
        if (tq) {
            V q = eps != 0 ? v_fma(tv, q1, q0) : tv;
            if (n < VL)
                q = v_select(m_tail(v_tailmask(n)), q, v_zero());
            wq = W ? v_mul(q, wv) : q;
        }
        acc = v_fma(wq, v_sub(vm, xv), acc);
        if (++cnt == 64) {
            s += v_hsum_d(acc);
            acc = v_zero();
            cnt = 0;
        }
    }
    s += v_hsum_d(acc);
    return isfinite(s) ? s : FN(wdiff_sum_d)(x, W, tq, m, k, eps);
}

/* One fused pass per row: max; exp stored into grad while summing (and, with
 * label smoothing, sum_c w_c (m - x_c)); then grad scaled in place.  grad may
 * be x: x[t] is read first, and each x[c] is read before grad[c] is written. */

static void FN(ce_index_plain)(const fa_args *A, int64_t r0, int64_t r1, T *tmp)
{
    const int64_t k = A->k;
    const T *W = (const T *)A->weight;
    const T *R = (const T *)A->row_scale;
    T *L = (T *)A->loss;
    T *G = (T *)A->grad;
    const double eps = A->eps, z = A->z_loss, a = A->a, bz = A->b_coef, g = A->g;
    const double Wsum = A->wsum;
    /* log(s) is wanted for the loss and the z-loss's gradient: then the terms
     * below the max are summed apart too (log_sum) */
    const int want_r = L != NULL || z != 0;
    for (int64_t i = r0; i < r1; i++) {
        const T *x = (const T *)A->x + i * k;
        T *gr = G ? G + i * k : NULL;
        const int64_t t = A->target[i];
        if (t == A->ignore_index) {
            if (L)
                L[i] = 0;
            if (gr)
                FN(fill)(gr, 0, k);
            continue;
        }
        const double wt = W ? (double)W[t] : 1.0;
        const T xt = x[t];
        /* rows longer than LONG_K without smoothing: in chunks, the exp terms
         * into tmp (streamed output) or gr */
        const int chunked = eps == 0 && k > LONG_K;
        FN(chunks_t) ch;
        T m;
        if (chunked)
            m = FN(chunk_expsum)(x, gr ? (tmp ? tmp : gr) : NULL, k, &ch, want_r);
        else
            m = FN(row_max)(x, k);
        if (!isfinite(m)) {
            if (L)
                L[i] = (T)NAN;
            if (gr)
                FN(fill)(gr, (T)NAN, k);
            continue;
        }
        double s, r = 0.0, swd = 0.0;
        if (chunked) {
            s = FN(chunk_sum)(&ch, &r);
        } else if (eps != 0) {
            /* sum_c w_c (m - x_c), in the same pass as the exp sum; in place
             * (gr == x) in double first, as the exp terms overwrite the x that
             * the overflow fallback below would read again */
            const int inplace = (const T *)gr == x;
            const double swd0 = inplace ? FN(wdiff_sum_pre)(x, W, NULL, m, k, 0.0) : 0.0;
            const V vm = v_set1(m);
            V acc = v_zero(), se = v_zero(), re = v_zero();
            double sacc = 0.0;
            int64_t cnt = 0;
            for (int64_t j = 0; j < k; j += VL) {
                const int64_t n = k - j;
                V xv, wv = v_set1((T)1);
                if (n >= VL) {
                    xv = v_load(x + j);
                    if (W)
                        wv = v_load(W + j);
                } else {
                    VTM tm = v_tailmask(n);
                    xv = v_load_tail(x + j, tm, m);
                    if (W)
                        wv = v_load_tail(W + j, tm, (T)0);
                }
                V d = v_sub(vm, xv);
                V e = FN(vexp)(v_sub(xv, vm), 0);
                acc = v_fma(wv, d, acc);
                if (n < VL)
                    e = v_select(m_tail(v_tailmask(n)), e, v_zero());
                if (gr) {
                    if (n >= VL)
                        v_store(gr + j, e);
                    else
                        v_store_tail(gr + j, v_tailmask(n), e);
                }
                se = v_add(se, e);
                if (want_r) /* x < m: below the max (lanes past the end: x = m) */
                    re = v_add_if(re, v_lt(xv, vm), e);
                if (++cnt == 64) {
                    swd += v_hsum_d(acc);
                    sacc += v_hsum_d(se);
                    r += v_hsum_d(re);
                    acc = se = re = v_zero();
                    cnt = 0;
                }
            }
            swd += v_hsum_d(acc);
            s = sacc + v_hsum_d(se);
            r += v_hsum_d(re);
            if (inplace)
                swd = swd0;
            else if (!isfinite(swd)) /* m - x_c overflowed T (logits near -+max): in double */
                swd = FN(wdiff_sum_d)(x, W, NULL, m, k, 0.0);
        } else {
            s = FN(expsum)(x, m, gr, k, x + FN(pf_off)(k), (gr ? gr : x) + FN(pf_off)(k),
                           want_r ? &r : NULL);
        }
        const double logs = want_r ? FN(log_sum)(s, r) : 0.0, lse = (double)m + logs;
        if (L) {
            double ce = (1 - eps) * wt * (((double)m - (double)xt) + logs);
            if (eps != 0)
                ce += eps / (double)k * (swd + Wsum * logs);
            double val = a * ce;
            if (z != 0)
                val += bz * z * lse * lse;
            L[i] = (T)val;
        }
        if (gr) {
            const double Gi = R ? g * (double)R[i] : g;
            /* Without smoothing and z-loss, cp = (G a) wt / s and the target's term
             * (G a) wt below are rounded alike: a one-class row gets exactly 0. */
            double cp;
            if (eps == 0 && z == 0) {
                cp = Gi * a * wt / s;
            } else {
                cp = a * ((1 - eps) * wt + eps * Wsum / (double)k);
                if (z != 0)
                    cp += 2 * bz * z * lse;
                cp *= Gi / s;
            }
            const double cw = -Gi * a * eps / (double)k;
            if (eps != 0 && W) {
                const V vcp = v_set1((T)cp), vcw = v_set1((T)cw);
                int64_t j = 0;
                for (; j + VL <= k; j += VL)
                    v_store(gr + j, v_fma(v_load(gr + j), vcp, v_mul(v_load(W + j), vcw)));
                if (j < k) {
                    VTM tm = v_tailmask(k - j);
                    v_store_tail(gr + j, tm, v_fma(v_load_tail(gr + j, tm, (T)0), vcp,
                                                   v_mul(v_load_tail(W + j, tm, (T)0), vcw)));
                }
            } else if (eps != 0) {
                const V vcp = v_set1((T)cp), vcw = v_set1((T)cw);
                int64_t j = 0;
                for (; j + VL <= k; j += VL)
                    v_store(gr + j, v_fma(v_load(gr + j), vcp, vcw));
                if (j < k) {
                    VTM tm = v_tailmask(k - j);
                    v_store_tail(gr + j, tm, v_fma(v_load_tail(gr + j, tm, (T)0), vcp, vcw));
                }
            } else if (chunked) {
                FN(chunk_scale)(&ch, tmp ? tmp : gr, gr, k, cp, tmp != NULL);
            } else {
                FN(scale)(gr, (T)cp, k);
            }
            gr[t] = gr[t] - (T)(Gi * a * (1 - eps) * wt);
        }
    }
}

#if HAVE_TILES
/* Index-target cross entropy without label smoothing on a tile of VL rows of
 * k <= TILE_MAX_K (as softmax_rows' tiles): max and sum column-wise, log of the sums
 * (vlog_sum), the per-row terms (target logit, weight, scale) in lanes, the
 * gradient written in row order (exp recomputed, times the row's factor
 * moved to each lane by a permute), then the target entries and ignored rows
 * fixed per row.  Returns 0 (nothing written) if a row's max is not finite. */
static int FN(ce_index_tile)(const fa_args *A, const FN(tile_idx) *ti, int64_t i, T *buf)
{
    const int64_t k = A->k;
    const T *W = (const T *)A->weight;
    const T *R = (const T *)A->row_scale;
    T *L = (T *)A->loss;
    T *G = (T *)A->grad;
    const T *x = (const T *)A->x + i * k;
    const int64_t *tg = A->target + i;
    const V m = FN(tile_load)(ti, x, k, buf);
    if (!FN(all_finite)(m))
        return 0;
    V s;
    const V logs = FN(tile_log_sum)(buf, k, m, &s);
    T wt[VL], xt[VL], gs[VL], mr[VL], lr[VL];
    int any_ign = 0;
    for (int r = 0; r < VL; r++) {
        const int64_t t = tg[r];
        if (t == A->ignore_index) {
            wt[r] = 0;
            xt[r] = 0;
            any_ign = 1;
        } else {
            wt[r] = W ? W[t] : (T)1;
            xt[r] = x[r * k + t];
        }
        gs[r] = R ? (T)(A->g * (double)R[i + r]) : (T)A->g;
    }
    const V vw = v_load(wt), va = v_set1((T)A->a);
    const int zl = A->z_loss != 0;
    const V vbz = v_set1((T)(A->b_coef * A->z_loss));
    const V lse = v_add(m, logs);
    if (L) { /* per row in double, as the row path (no overflow of m - x[t]) */
        const double a = A->a, bzz = A->b_coef * A->z_loss;
        T lt[VL];
        v_store(mr, m);
        v_store(lr, logs);
        for (int r = 0; r < VL; r++) {
            const double ls = (double)lr[r], lse_r = (double)mr[r] + ls;
            double val = a * ((double)wt[r] * (((double)mr[r] - (double)xt[r]) + ls));
            if (zl)
                val += bzz * lse_r * lse_r;
            lt[r] = (T)val;
        }
        memcpy(L + i, lt, sizeof lt);
    }
    if (G) {
        const V gaw = v_mul(v_mul(v_load(gs), va), vw); /* the target's term */
        V cp;
        if (zl)
            cp = v_mul(v_fma(v_add(vbz, vbz), lse, v_mul(va, vw)), v_div(v_load(gs), s));
        else
            cp = v_div(gaw, s);
        T *y = G + i * k;
        for (int64_t v = 0; v < k; v++) {
            const int32_t *rix = ti->rix + v * VL;
            V e = FN(vexp)(v_sub(v_load(x + v * VL), v_permute(rix, m)), 0);
            v_store(y + v * VL, v_mul(e, v_permute(rix, cp)));
        }
        v_store(gs, gaw);
        for (int r = 0; r < VL; r++) {
            const int64_t t = tg[r];
            if (t != A->ignore_index)
                y[r * k + t] = y[r * k + t] - gs[r];
        }
    }
    if (any_ign)
        for (int r = 0; r < VL; r++)
            if (tg[r] == A->ignore_index) {
                if (L)
                    L[i + r] = 0;
                if (G)
                    FN(fill)(G + (i + r) * k, 0, k);
            }
    return 1;
}
#endif

static void FN(cross_entropy_index_rows)(const fa_args *A, int64_t r0, int64_t r1)
{
    int64_t i = r0;
#if HAVE_TILES
    const int64_t k = A->k;
    if (FA_USE_TILES && k <= TILE_MAX_K && A->eps == 0 && r1 - r0 >= VL) {
        FN(tile_idx) ti;
        T buf[TILE_K * VL];
        FN(tile_idx_init)(&ti, k);
        for (; i + VL <= r1; i += VL)
            if (!FN(ce_index_tile)(A, &ti, i, buf))
                FN(ce_index_plain)(A, i, i + VL, NULL);
    }
#endif
    /* long rows with a large gradient: exp terms in a scratch row, the
     * gradient written once with non-temporal stores (as softmax_rows) */
    T *tmp = NULL;
    if (A->stream && A->grad && A->eps == 0 && A->k > LONG_K)
        tmp = (T *)malloc((size_t)A->k * sizeof(T));
    FN(ce_index_plain)(A, i, r1, tmp);
    if (tmp) {
        v_sfence();
        free(tmp);
    }
}

static void FN(cross_entropy_prob_rows)(const fa_args *A, int64_t r0, int64_t r1)
{
    const int64_t k = A->k;
    const T *W = (const T *)A->weight;
    const T *R = (const T *)A->row_scale;
    T *L = (T *)A->loss;
    T *G = (T *)A->grad;
    const double eps = A->eps, z = A->z_loss, a = A->a, bz = A->b_coef, g = A->g;
    const V q1 = v_set1((T)(1 - eps)), q0 = v_set1((T)(eps / (double)k));
    const int want_r = L != NULL || z != 0; /* as in ce_index_plain */
    for (int64_t i = r0; i < r1; i++) {
        const T *x = (const T *)A->x + i * k;
        const T *tq = (const T *)A->tprob + i * k;
        T *gr = G ? G + i * k : NULL;
        const T m = FN(row_max)(x, k);
        if (!isfinite(m)) {
            if (L)
                L[i] = (T)NAN;
            if (gr)
                FN(fill)(gr, (T)NAN, k);
            continue;
        }
        const V vm = v_set1(m);
        V se = v_zero(), sq = v_zero(), sd = v_zero(), re = v_zero();
        double s = 0.0, swq = 0.0, swd = 0.0, r = 0.0;
        /* in place (gr == x): the smoothing-weighted sum in double first, as
         * the exp terms overwrite the x that the overflow fallback reads */
        const int inplace = L && (const T *)gr == x;
        const double swd0 = inplace ? FN(wdiff_sum_pre)(x, W, tq, m, k, eps) : 0.0;
        int64_t cnt = 0;
        for (int64_t j = 0; j < k; j += VL) {
            const int64_t n = k - j;
            V xv, tv, wv = v_set1((T)1);
            if (n >= VL) {
                xv = v_load(x + j);
                tv = v_load(tq + j);
                if (W)
                    wv = v_load(W + j);
            } else {
                VTM tm = v_tailmask(n);
                xv = v_load_tail(x + j, tm, m); /* exp(0), zeroed below; m - x = 0 */
                tv = v_load_tail(tq + j, tm, (T)0);
                if (W)
                    wv = v_load_tail(W + j, tm, (T)0);
            }
            V q = eps != 0 ? v_fma(tv, q1, q0) : tv;
            if (n < VL)
                q = v_select(m_tail(v_tailmask(n)), q, v_zero());
            V wq = W ? v_mul(q, wv) : q;
            V e = FN(vexp)(v_sub(xv, vm), 0);
            if (n < VL)
                e = v_select(m_tail(v_tailmask(n)), e, v_zero());
            if (gr) {
                if (n >= VL)
                    v_store(gr + j, e);
                else
                    v_store_tail(gr + j, v_tailmask(n), e);
            }
            se = v_add(se, e);
            sq = v_add(sq, wq);
            if (L) {
                sd = v_fma(wq, v_sub(vm, xv), sd); /* lanes past the end: 0 * 0 */
            }
            if (want_r) /* x < m: below the max (lanes past the end: x = m) */
                re = v_add_if(re, v_lt(xv, vm), e);
            if (++cnt == 64) {
                s += v_hsum_d(se);
                swq += v_hsum_d(sq);
                swd += v_hsum_d(sd);
                r += v_hsum_d(re);
                se = sq = sd = re = v_zero();
                cnt = 0;
            }
        }
        s += v_hsum_d(se);
        swq += v_hsum_d(sq);
        swd += v_hsum_d(sd);
        r += v_hsum_d(re);
        if (L && inplace) /* as in ce_index_plain */
            swd = swd0;
        else if (L && !isfinite(swd))
            swd = FN(wdiff_sum_d)(x, W, tq, m, k, eps);
        const double logs = want_r ? FN(log_sum)(s, r) : 0.0, lse = (double)m + logs;
        if (L) {
            double val = a * (swd + swq * logs);
            if (z != 0)
                val += bz * z * lse * lse;
            L[i] = (T)val;
        }
        if (gr) {
            const double Gi = R ? g * (double)R[i] : g;
            /* grad = e (cp) - q w (G a): without z-loss cp = (swq / s) (G a), rounded
             * as the second term is, so a one-class row gets exactly 0 */
            const T ga = (T)(Gi * a);
            T cpt;
            if (z != 0)
                cpt = (T)((a * swq + 2 * bz * z * lse) * (Gi / s));
            else
                cpt = (T)(swq / s) * ga;
            const V vcp = v_set1(cpt), vca = v_set1(-ga);
            for (int64_t j = 0; j < k; j += VL) {
                const int64_t n = k - j;
                if (n >= VL) {
                    V q = v_load(tq + j);
                    if (eps != 0)
                        q = v_fma(q, q1, q0);
                    if (W)
                        q = v_mul(q, v_load(W + j));
                    v_store(gr + j, v_fma(v_load(gr + j), vcp, v_mul(q, vca)));
                } else {
                    VTM tm = v_tailmask(n);
                    V q = v_load_tail(tq + j, tm, (T)0);
                    if (eps != 0)
                        q = v_fma(q, q1, q0);
                    if (W)
                        q = v_mul(q, v_load_tail(W + j, tm, (T)0));
                    v_store_tail(gr + j, tm, v_fma(v_load_tail(gr + j, tm, (T)0), vcp, v_mul(q, vca)));
                }
            }
        }
    }
}

#undef BLOCK
#undef FN
#undef FN2
#undef FN3
#undef SHORT_K
#undef LONG_K
#undef LONG_CHUNK
#if HAVE_TILES
#undef TILE_K
#undef TILE_MAX_K
#endif

/* The vocabulary belongs to one expansion: drop it for the next. */
#undef T
#undef V
#undef VM
#undef VTM
#undef VL
#undef SFX
#undef IS_F64
#undef HAVE_GATHER
#undef HAVE_TILES
#undef HAVE_TILE_COLS
#undef v_tile_cols
#undef v_permute
#undef HAVE_SCALEF
#undef HAVE_EXP_LUT
#undef v_exp_lut
#undef v_round
#undef v_scalef
#undef v_zero
#undef v_set1
#undef v_load
#undef v_store
#undef v_add
#undef v_sub
#undef v_mul
#undef v_div
#undef v_fma
#undef v_max
#undef v_min
#undef v_lt
#undef v_gt
#undef v_ne
#undef m_or
#undef m_and
#undef m_any
#undef m_true
#undef m_bytes
#undef v_select
#undef v_add_if
#undef v_add_neg
#undef v_shl_exp
#undef v_hmax
#undef v_hsum_d
#undef v_tailmask
#undef m_tail
#undef v_load_tail
#undef v_store_tail
#undef v_stream
#undef v_sfence
#undef v_gather
#undef v_exp_field
#undef v_mant_half
#undef EXP_LOG2E
#undef EXP_MAGIC
#undef EXP_MAGIC_BIAS
#undef EXP_LN2_HI
#undef EXP_LN2_LO
#undef EXP_FAST_LO
#undef EXP_FAST_HI
#undef EXP_SLOW_LO
#undef EXP_SLOW_HI
