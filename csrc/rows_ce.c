/* Row kernels of the per-ISA template (rows_template.c): softmax cross
 * entropy, index and probability targets (loss and gradient in one pass). */

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

/* The arrays of a cross-entropy call (fa_args A) as locals: k, W (weight),
 * R (row_scale), L (loss), G (grad). */
#define CE_ARGS(A)                             \
    const int64_t k = (A)->k;                  \
    const T *W = (const T *)(A)->weight;       \
    const T *R = (const T *)(A)->row_scale;    \
    T *L = (T *)(A)->loss;                     \
    T *G = (T *)(A)->grad

/* A row whose max is not finite (a NaN, or +-inf logits): NaN loss and
 * gradient.  (A macro, not a function: the kernels' inlining stays as it was.) */
#define CE_NAN_ROW(L, i, gr, k)                \
    do {                                       \
        if (L)                                 \
            (L)[i] = (T)NAN;                   \
        if (gr)                                \
            FN(fill)((gr), (T)NAN, (k));       \
    } while (0)

/* The exp terms e of the n (or more) elements left at j: lanes past the row
 * end zeroed, stored to the gradient row gr when there is one. */
static inline V FN(ce_exp_out)(V e, T *gr, int64_t j, int64_t n)
{
    if (n < VL)
        e = v_select(m_tail(v_tailmask(n)), e, v_zero());
    if (gr) {
        if (n >= VL)
            v_store(gr + j, e);
        else
            v_store_tail(gr + j, v_tailmask(n), e);
    }
    return e;
}

/* One fused pass per row: max; exp stored into grad while summing (and, with
 * label smoothing, sum_c w_c (m - x_c)); then grad scaled in place.  grad may
 * be x: x[t] is read first, and each x[c] is read before grad[c] is written. */

static void FN(ce_index_plain)(const fa_args *A, int64_t r0, int64_t r1, T *tmp)
{
    CE_ARGS(A);
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
            CE_NAN_ROW(L, i, gr, k);
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
                e = FN(ce_exp_out)(e, gr, j, n);
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
    CE_ARGS(A);
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
    CE_ARGS(A);
    const double eps = A->eps, z = A->z_loss, a = A->a, bz = A->b_coef, g = A->g;
    const V q1 = v_set1((T)(1 - eps)), q0 = v_set1((T)(eps / (double)k));
    const int want_r = L != NULL || z != 0; /* as in ce_index_plain */
    for (int64_t i = r0; i < r1; i++) {
        const T *x = (const T *)A->x + i * k;
        const T *tq = (const T *)A->tprob + i * k;
        T *gr = G ? G + i * k : NULL;
        const T m = FN(row_max)(x, k);
        if (!isfinite(m)) {
            CE_NAN_ROW(L, i, gr, k);
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
            e = FN(ce_exp_out)(e, gr, j, n);
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

#undef CE_ARGS
#undef CE_NAN_ROW
