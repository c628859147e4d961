/* Row kernels of the per-ISA template (rows_template.c): softmax,
 * log_softmax and logsumexp down the columns of a (k, inner) slab, for an
 * axis that is not the last (strided.c), without transposing anything.
 *
 * A strip of w columns (w <= COLS_MAX; element (j, c) at x[j * inner + c])
 * is reduced with its columns across the vector lanes, so that every load
 * reads w contiguous elements of one row of the slab:
 *   1. the column maxima, one pass down the rows (the strip from memory,
 *      the rows ahead prefetched: they lie `inner` apart), the strip packed
 *      into `scratch` (k rows of wp elements) as it goes when the driver
 *      gives one: rows `inner` apart share a few cache sets when inner is a
 *      power of 2 (16 KB apart: 4 of L2's sets per line), so the strip
 *      itself would not stay in L2, its packed copy does;
 *   2. the exp sums (and, for the logs, the terms below the max apart: see
 *      log_sum), blocks of rows (COLS_FOLD) summed in T and folded into double
 *      sums per column, as the row kernels fold their blocks; softmax keeps
 *      the terms in the packed copy;
 *   3. the result row by row: softmax the terms (without scratch: exp
 *      recomputed) times 1 / sum, log_softmax (x - m) - log_sum; logsumexp
 *      m + log_sum per column.
 * The driver gives scratch when the packed strip fits in L2, else (long
 * columns) the passes read x three times.  Per column this is the row
 * kernels' arithmetic (same exp, same log_sum, the max term's 1 and the
 * others summed apart), in another order of summation.  A strip with a
 * column whose max is not finite (+inf, or no finite entry) returns 1 after
 * pass 1, nothing written: the driver sends it to the transposing path, whose
 * scalar rows mirror the reference. */

/* Rows per block of T sums: 64 (16 adds per lane and accumulator, as the
 * row kernels' BLOCK) over a packed strip; 16 over long columns read from
 * memory, whose blocks of 64 rows of up to COLS_MAX elements would not stay
 * in L1 (1 thread, against 16 everywhere: (1000, 4096) over axis 0 0.87x the
 * time, (8, 21, 128, 128) over axis 1 0.8-0.9x; (32000, 512) over axis 0
 * 1.05x with 64). */
#ifndef COLS_FOLD
#define COLS_FOLD 64
#endif
#ifndef COLS_FOLD_LONG
#define COLS_FOLD_LONG 16
#endif

/* exp(d) for d <= 0 or NaN; fast: every d in the exp's fast range. */
static FA_ALWAYS_INLINE V FN(cols_exp)(V d, const int fast)
{
    return fast ? FN(vexp_inrange)(d) : FN(vexp)(d, 0);
}

/* Pass 2 of cols: ds[c] (dr[c]) = the column's exp terms (those below its
 * max) summed, blocks of COLS_FOLD (packed) or COLS_FOLD_LONG rows summed in
 * T (four rows at a time into separate accumulators) and added in double;
 * columns of one block leave their sums in st and rt; rows R + j * rs of wp elements (packed: whole
 * vectors; else the last vector of w masked); softmax (op 0) stores the
 * terms over packed rows.  Returns 1 when the sums were left in st, rt. */
static FA_ALWAYS_INLINE int FN(cols_sums)(const T *R, int64_t rs, int64_t k, int64_t w,
                                             int64_t wp, const int packed, const int op,
                                             const T *m, double *ds, double *dr,
                                             T *st, T *rt, const int fast)
{
    const int64_t wv = w - w % VL;
    const VTM tm = v_tailmask(w - wv > 0 ? w - wv : VL);
    const int take_log = op != 0, store = packed && (op == 0 || op == 3);
    const int64_t fold = packed ? COLS_FOLD : COLS_FOLD_LONG;
    const int one = k <= fold; /* one block: the sums stay in T (st, rt) */
    if (!one)
        for (int64_t i = 0; i < wp; i++)
            ds[i] = dr[i] = 0.0;
    for (int64_t j0 = 0; j0 < k; j0 += fold) {
        const int64_t j1 = k - j0 < fold ? k : j0 + fold;
        for (int64_t v = 0; v < wp; v += VL) {
            const V vm = v_load(m + v);
            const int full = packed || v < wv;
            V s0 = v_zero(), s1 = v_zero(), s2 = v_zero(), s3 = v_zero();
            V r0 = v_zero(), r1 = v_zero(), r2 = v_zero(), r3 = v_zero();
#define COLS_TERM(J, S, RR)                                                        \
    do {                                                                           \
        T *p_ = (T *)(R + (J) * rs + v);                                           \
        const V d_ = v_sub(full ? v_load(p_) : v_load_tail(p_, tm, (T)0), vm);     \
        const V e_ = FN(cols_exp)(d_, fast);                                       \
        if (store)                                                                 \
            v_store(p_, e_);                                                       \
        S = v_add(S, e_);                                                          \
        if (take_log)                                                              \
            RR = v_add_neg(RR, d_, e_);                                            \
    } while (0)
            int64_t j = j0;
            for (; j + 4 <= j1; j += 4) {
                COLS_TERM(j, s0, r0);
                COLS_TERM(j + 1, s1, r1);
                COLS_TERM(j + 2, s2, r2);
                COLS_TERM(j + 3, s3, r3);
            }
            for (; j < j1; j++)
                COLS_TERM(j, s0, r0);
#undef COLS_TERM
            if (one) {
                v_store(st + v, v_add(v_add(s0, s1), v_add(s2, s3)));
                v_store(rt + v, v_add(v_add(r0, r1), v_add(r2, r3)));
                continue;
            }
            T ts[VL], tr[VL];
            v_store(ts, v_add(v_add(s0, s1), v_add(s2, s3)));
            v_store(tr, v_add(v_add(r0, r1), v_add(r2, r3)));
            for (int l = 0; l < VL; l++) {
                ds[v + l] += (double)ts[l];
                dr[v + l] += (double)tr[l];
            }
        }
    }
    return one;
}

/* Pass 3 of cols for softmax (op 0) and log_softmax (1): y[0:w] from row
 * src (packed: softmax's terms, else x), the column maxima m and a (1 / sum,
 * or log_sum).  (Non-temporal stores were slower here in every case tried,
 * line-aligned spans only or not: strips of rows 16 KB apart 1.6x the time,
 * a contiguous 256 KB strip 1.7x, long columns 1.2x.) */
static FA_ALWAYS_INLINE void FN(cols_out)(const T *src, T *y, const T *m, const T *a, int64_t w,
                                            const int op, const int packed, const int fast)
{
#define COLS_OUT(LOAD)                                                                     \
    (op == 0 ? v_mul(packed ? LOAD(src + t) : FN(cols_exp)(v_sub(LOAD(src + t), LOAD(m + t)), fast), \
                     LOAD(a + t))                                                          \
             : v_sub(v_sub(LOAD(src + t), LOAD(m + t)), LOAD(a + t)))
#define COLS_LOAD_TAIL(p) v_load_tail((p), tm, (T)0)
    int64_t t = 0;
    for (; t + VL <= w; t += VL)
        v_store(y + t, COLS_OUT(v_load));
    if (t < w) {
        const VTM tm = v_tailmask(w - t);
        v_store_tail(y + t, tm, COLS_OUT(COLS_LOAD_TAIL));
    }
#undef COLS_OUT
#undef COLS_LOAD_TAIL
}

static int FN(cols)(const fa_cols_args *c)
{
    const int64_t k = c->k, ld = c->inner, w = c->w;
    const int64_t wv = w - w % VL, wp = (w + VL - 1) / VL * VL;
    const VTM tm = v_tailmask(w - wv > 0 ? w - wv : VL);
    const T *X = (const T *)c->x;
    T *P = (T *)c->scratch; /* the packed strip, or NULL */
    const int op = c->op;
    T m[COLS_MAX], mn[COLS_MAX], a[COLS_MAX], st[COLS_MAX], rt[COLS_MAX];
    double ds[COLS_MAX], dr[COLS_MAX];
    /* rows ahead to prefetch in the passes that read from memory: ~8 KB */
    const int64_t rb = w * (int64_t)sizeof(T), pfr = (8192 + rb - 1) / rb;

    /* 1. maxima (lanes past w: 0, a finite max that is never stored) */
    for (int64_t v = 0; v < wp; v += VL) {
        v_store(m + v, v_set1((T)-INFINITY));
        v_store(mn + v, v_set1((T)INFINITY));
    }
    for (int64_t j = 0; j < k; j++) {
        const T *xj = X + j * ld;
        if (j + pfr < k)
            FA_PREFETCH_LINES(xj, pfr * ld, 0, (size_t)rb);
        T *pj = P ? P + j * wp : NULL;
        int64_t v = 0;
        for (; v < wv; v += VL) {
            const V xv = v_load(xj + v);
            if (pj)
                v_store(pj + v, xv);
            v_store(m + v, v_max(xv, v_load(m + v)));
            v_store(mn + v, v_min(xv, v_load(mn + v)));
        }
        if (v < w) {
            const V xv = v_load_tail(xj + v, tm, (T)0);
            if (pj)
                v_store(pj + v, xv);
            v_store(m + v, v_max(xv, v_load(m + v)));
            v_store(mn + v, v_min(xv, v_load(mn + v)));
        }
    }
    /* every x - m of the strip in the exp's fast range (v_min skips NaN) */
    int fast = 1;
    for (int64_t i = 0; i < w; i++) {
        if (!isfinite(m[i]))
            return 1;
        if (!(mn[i] - m[i] >= EXP_FAST_LO))
            fast = 0;
    }

    /* 2. the exp sums */
    const T *R = P ? P : X; /* the rows of the passes below, rs apart */
    const int64_t rs = P ? wp : ld;
    const int one = fast ? FN(cols_sums)(R, rs, k, w, wp, P != NULL, op, m, ds, dr, st, rt, 1)
                         : FN(cols_sums)(R, rs, k, w, wp, P != NULL, op, m, ds, dr, st, rt, 0);

    /* 3. the results: a = 1 / sum (softmax) or log_sum per column, a vector
     * at a time on the sums rounded to T where there is a vector log (short
     * columns would otherwise pay a scalar log or division per few elements) */
    if (!one)
        for (int64_t i = 0; i < wp; i++) {
            st[i] = (T)ds[i];
            rt[i] = (T)dr[i];
        }
#if HAVE_TILES
    for (int64_t v = 0; v < wp; v += VL) {
        const V sv = v_load(st + v);
        v_store(a + v, op == 0 ? v_div(v_set1((T)1), sv) : FN(vlog_sum)(sv, v_load(rt + v)));
    }
#else
    for (int64_t i = 0; i < wp; i++) {
        const double sd = one ? (double)st[i] : ds[i];
        const double rd = one ? (double)rt[i] : dr[i];
        a[i] = op == 0 ? (T)(1.0 / sd) : (T)FN(log_sum)(sd, rd);
    }
#endif
    if (op == 2) {
        T *out = (T *)c->out, *sign = (T *)c->sign;
        for (int64_t i = 0; i < w; i++) {
            const T res = (T)((double)a[i] + (double)m[i]);
            out[i] = res;
            if (sign)
                sign[i] = res == res ? (T)1 : (T)NAN;
        }
        return 0;
    }
    if (op == 3) { /* cross entropy: loss per column, grad = e cp - (target's term) */
        const T *W = (const T *)c->weight, *Rs = (const T *)c->row_scale;
        T *L = (T *)c->loss, *tg = mn; /* the target's terms (mn no longer needed) */
        for (int64_t i = 0; i < w; i++) {
            const int64_t t = c->target[i];
            const double sd = one ? (double)st[i] : ds[i];
            if (t == c->ignore_index) {
                if (L)
                    L[i] = 0;
                a[i] = tg[i] = 0;
                continue;
            }
            const double wt = W ? (double)W[t] : 1.0, ls = (double)a[i];
            const double lse = (double)m[i] + ls;
            if (L)
                L[i] = (T)(c->a * (wt * (((double)m[i] - (double)X[t * ld + i]) + ls)) +
                           c->bz * lse * lse);
            const double Gi = Rs ? c->g * (double)Rs[i] : c->g;
            a[i] = (T)(c->bz != 0 ? (c->a * wt + 2 * c->bz * lse) * (Gi / sd) : Gi * c->a * wt / sd);
            tg[i] = (T)(Gi * c->a * wt);
        }
        for (int64_t i = w; i < wp; i++)
            a[i] = 0;
        if (!c->grad)
            return 0;
    }
    /* the rows of the result: softmax / log_softmax into out, cross entropy's
     * gradient (the softmax's form with a = cp) into grad */
    T *Y = (T *)(op == 3 ? c->grad : c->out);
    for (int64_t j = 0; j < k; j++) {
        const T *xj = R + j * rs;
        if (!P && j + pfr < k)
            FA_PREFETCH_LINES(xj, pfr * ld, 0, (size_t)rb);
        FN(cols_out)(xj, Y + j * ld, m, a, w, op == 3 ? 0 : op, P != NULL, fast);
    }
    if (op == 3) /* the target's term */
        for (int64_t i = 0; i < w; i++)
            if (c->target[i] != c->ignore_index)
                Y[c->target[i] * ld + i] -= mn[i]; /* tg above */
    return 0;
}
