/* Row kernels, part 1 of the per-ISA template (rows_template.c): exp and log
 * on vectors, and the log of a row's exp sum.  The float32 polynomial and the
 * reduction constants are vmath.h's, shared with the elementwise kernels. */

/* ---------------------------------------------------------------- exp, log */

/* q(t) with exp(t) ~= 1 + t q(t) on |t| <= ln2/2.  float32: XNNPACK's degree-5
 * minimax ("p5", vmath.h); float64: Taylor to degree 12 (truncation 2e-16 relative). */
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
    V q;
    FA_EXPF_Q(q, t, v_fma, v_set1);
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

#if !HAVE_SCALEF
/* exp(x) for EXP_FAST_LO <= x <= EXP_FAST_HI (or NaN): 2^n built in the
 * exponent bits, no range check (vexp adds it). */
static inline V FN(vexp_fast)(V x)
{
    V nm = v_fma(x, v_set1(EXP_LOG2E), v_set1(EXP_MAGIC_BIAS));
    V s = v_shl_exp(nm);
    V n = v_sub(nm, v_set1(EXP_MAGIC_BIAS));
    V t = v_fma(n, v_set1(-EXP_LN2_HI), x);
    t = v_fma(n, v_set1(-EXP_LN2_LO), t);
    V q = FN(exp_poly)(t);
    return v_fma(v_mul(t, s), q, s);
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
 * below -87 (subnormal results, 0, -inf) need the exact vscalef path
 * (vexp_nonpos); here without that check (-87 <= x <= 0 or NaN). */
static inline V FN(vexp_lut_fast)(V x)
{
    V n = v_fma(x, v_set1(0x1.715476p+5f), v_set1(EXP_MAGIC));
    V t = v_fma(v_sub(n, v_set1(EXP_MAGIC)), v_set1(-0x1.62e430p-6f), x);
    V s = v_exp_lut(n);
    return v_fma(v_mul(s, t), v_fma(t, v_set1(0.5f), v_set1(1.0f)), s);
}

/* vexp_lut_fast, and vscalef on the lanes below -87. */
static inline V FN(vexp_nonpos)(V x)
{
    V r = FN(vexp_lut_fast)(x);
    VM slow = v_lt(x, v_set1(-87.0f));
    if (m_any(slow))
        r = v_select(slow, FN(vexp_scalef)(x, 0), r);
    return r;
}
#endif

/* exp(x): NaN -> NaN, -inf -> 0, +inf -> +inf.  check_hi = 0 promises x <= 0
 * (or NaN), which saves one compare in the softmax loops.. */
static inline V FN(vexp)(V x, const int check_hi)
{
#if HAVE_EXP_LUT
    if (!check_hi)
        return FN(vexp_nonpos)(x);
#endif
#if HAVE_SCALEF
    return FN(vexp_scalef)(x, check_hi);
#else
    V f = FN(vexp_fast)(x);
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
    return FN(vexp_lut_fast)(x);
#elif HAVE_SCALEF
    return FN(vexp_scalef)(x, 0);
#else
    return FN(vexp_fast)(x);
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
    y = v_fma(e, v_set1(F32_LN2_CEPHES_LO), y);
    y = v_fma(z, v_set1(-0.5f), y);
    V r = v_add(f, y);
    r = v_fma(e, v_set1(F32_LN2_CEPHES_HI), r);
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
