/* Row kernels of the per-ISA template (rows_template.c): softmax,
 * log_softmax and logsumexp. */

#ifndef FA_ROW_LOCALS
/* Row i of a softmax-family call: its length k, input row x, output row y and
 * mask row mk (NULL without a mask). */
#define FA_ROW_LOCALS(A, i)                          \
    const int64_t k = (A)->k;                        \
    const T *x = (const T *)(A)->x + (i) * k;        \
    T *y = (T *)(A)->out + (i) * k;                  \
    const unsigned char *mk = (A)->mask ? (A)->mask + (i) * k : NULL
#endif

/* tmp: NULL, or (streaming mode: large unmasked outputs) k elements of
 * scratch for the exp terms, the result then written once with
 * non-temporal stores. */
static void FN(softmax_row)(const fa_args *A, int64_t i, T *tmp)
{
    FA_ROW_LOCALS(A, i);
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
    FA_ROW_LOCALS(A, i);
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

#if HAVE_TILES
/* softmax of a tile of VL rows (columns in buf, m their maxes): the exp sum
 * column-wise, then back in row order: the row's max and 1/sum moved to each
 * lane by a permute, exp recomputed (cheaper than gathering the results). */
static inline void FN(softmax_tile)(const fa_args *A, const FN(tile_idx) *ti, int64_t i,
                                    const T *buf, V m)
{
    const int64_t k = A->k;
    V s = v_zero();
    for (int64_t j = 0; j < k; j++)
        s = v_add(s, FN(vexp)(v_sub(v_load(buf + j * VL), m), 0));
    V inv = v_div(v_set1((T)1), s);
    const T *x = (const T *)A->x + i * k;
    T *y = (T *)A->out + i * k;
    for (int64_t v = 0; v < k; v++) {
        const int32_t *rix = ti->rix + v * VL;
        V e = FN(vexp)(v_sub(v_load(x + v * VL), v_permute(rix, m)), 0);
        v_store(y + v * VL, v_mul(e, v_permute(rix, inv)));
    }
}

/* log_softmax of a tile of VL rows: x - m - log(sum) in row order. */
static inline void FN(log_softmax_tile)(const fa_args *A, const FN(tile_idx) *ti, int64_t i,
                                        const T *buf, V m)
{
    const int64_t k = A->k;
    const V ls = FN(tile_log_sum)(buf, k, m, NULL);
    const T *x = (const T *)A->x + i * k;
    T *y = (T *)A->out + i * k;
    for (int64_t v = 0; v < k; v++) {
        const int32_t *rix = ti->rix + v * VL;
        V d = v_sub(v_load(x + v * VL), v_permute(rix, m));
        v_store(y + v * VL, v_sub(d, v_permute(rix, ls)));
    }
}
#endif

#if HAVE_TILES
/* Short rows past the tiles (TILE_MAX_K < k <= GROUP_MAX_K, unmasked) in
 * groups of VL rows (nr <= VL: the last group of a call): each row's max and
 * exp sums (for the logs the terms below the max apart) as short_row, then
 * one vector operation for the VL sums instead of a scalar one per row,
 * which cost as much as the rest of such a row: the logs (vlog_sum, as the
 * tiles; 1 thread, float32, 4M elements in rows of 21: log_softmax 13.4 ->
 * 7.2 ms, torch 9.1) or 1 / sum; then per row softmax (op 0: the terms,
 * stored in y as they were summed, times 1 / sum), log_softmax (op 1:
 * (x - m) - log_sum) or logsumexp (op 2: m + log_sum into out, sign).  A
 * row whose max is not finite goes to the row path (special_row); every
 * other row gets this arithmetic, however the rows are split between calls
 * and threads. */
#define GROUP_MAX_K (8 * VL)

static void FN(logsumexp_row)(const fa_args *A, int64_t i);

static void FN(rows_group)(const fa_args *A, int64_t i, int nr, const int op)
{
    const int64_t k = A->k;
    const int64_t nv = (k + VL - 1) / VL;
    const VTM tm = v_tailmask(k - (nv - 1) * VL);
    const T *X = (const T *)A->x + i * k;
    T ms[VL], ss[VL], rs[VL];
    unsigned char sp[VL];
    for (int r = 0; r < VL; r++) { /* the maxima first: a special row is left to the row path */
        ms[r] = 0;
        ss[r] = 1;
        rs[r] = 0;
        sp[r] = 1;
        if (r >= nr)
            continue;
        const T *x = X + r * k;
        V mx = v_set1((T)-INFINITY);
        for (int64_t u = 0; u < nv - 1; u++)
            mx = v_max(v_load(x + u * VL), mx);
        mx = v_max(v_load_tail(x + (nv - 1) * VL, tm, (T)-INFINITY), mx);
        const T m = v_hmax(mx);
        if (!isfinite(m)) {
            if (op == 0)
                FN(softmax_row)(A, i + r, NULL);
            else if (op == 1)
                FN(log_softmax_row)(A, i + r, 0);
            else
                FN(logsumexp_row)(A, i + r);
            continue;
        }
        ms[r] = m;
        sp[r] = 0;
    }
    for (int r = 0; r < nr; r++) {
        if (sp[r])
            continue;
        const T *x = X + r * k;
        const V xt = v_load_tail(x + (nv - 1) * VL, tm, (T)-INFINITY);
        const V vm = v_set1(ms[r]);
        V s = v_zero(), rn = v_zero();
        for (int64_t u = 0; u < nv - 1; u++) {
            const V xv = v_load(x + u * VL);
            const V e = FN(vexp)(v_sub(xv, vm), 0);
            s = v_add(s, e);
            if (op == 0)
                v_store((T *)A->out + (i + r) * k + u * VL, e);
            else
                rn = v_add_if(rn, v_lt(xv, vm), e);
        }
        /* lanes past the end (-inf for the max) as exp(0), zeroed */
        const V e = FN(vexp_sel)(xt, vm, m_tail(tm));
        s = v_add(s, e);
        if (op == 0)
            v_store_tail((T *)A->out + (i + r) * k + (nv - 1) * VL, tm, e);
        else
            rn = v_add_if(rn, v_lt(xt, vm), e);
        ss[r] = (T)v_hsum_d(s);
        rs[r] = (T)v_hsum_d(rn);
    }
    const V sv = v_load(ss);
    T c[VL]; /* per row: 1 / sum, log_sum, or (logsumexp) the result */
    v_store(c, op == 0 ? v_div(v_set1((T)1), sv) : FN(vlog_sum)(sv, v_load(rs)));
    for (int r = 0; r < nr; r++) {
        if (sp[r])
            continue;
        if (op == 2) {
            T *sign = (T *)A->sign;
            ((T *)A->out)[i + r] = ms[r] + c[r];
            if (sign) /* s >= 1, or NaN (a NaN entry) */
                sign[i + r] = ss[r] == ss[r] ? (T)1 : ss[r];
            continue;
        }
        T *y = (T *)A->out + (i + r) * k;
        if (op == 0) {
            FN(scale)(y, c[r], k);
            continue;
        }
        const T *x = X + r * k;
        const V vm = v_set1(ms[r]), vl = v_set1(c[r]);
        int64_t u = 0;
        for (; u < nv - 1; u++)
            v_store(y + u * VL, v_sub(v_sub(v_load(x + u * VL), vm), vl));
        v_store_tail(y + u * VL, tm, v_sub(v_sub(v_load_tail(x + u * VL, tm, (T)0), vm), vl));
    }
}
#endif

/* Rows r0 .. r1 - 1 of softmax (take_log = 0) or log_softmax (1), by row
 * length: tiles of short rows, mid_rows, long rows streamed, else row by row.
 * Streaming (large unmasked outputs): softmax writes each row's exp terms to
 * a scratch row first (tmp), log_softmax recomputes them. */
static FA_ALWAYS_INLINE void FN(softmax_family_rows)(const fa_args *A, int64_t r0, int64_t r1,
                                                     const int take_log)
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
                for (int r = 0; r < VL; r++) {
                    if (take_log)
                        FN(log_softmax_row)(A, i + r, 0);
                    else
                        FN(softmax_row)(A, i + r, NULL);
                }
                continue;
            }
            if (take_log)
                FN(log_softmax_tile)(A, &ti, i, buf, m);
            else
                FN(softmax_tile)(A, &ti, i, buf, m);
        }
    }
    if (!A->mask && k > TILE_MAX_K && k <= GROUP_MAX_K)
        for (; i < r1; i += VL)
            FN(rows_group)(A, i, r1 - i < VL ? (int)(r1 - i) : VL, take_log);
#endif
    const int want_stream = A->stream && !A->mask && A->k > SHORT_K;
    T *tmp = NULL, *tmp_mem = NULL;
    if (!take_log && want_stream) {
        tmp_mem = (T *)malloc((size_t)A->k * sizeof(T) + 128);
        if (tmp_mem)
            tmp = (T *)((char *)tmp_mem + ((64 - (uintptr_t)tmp_mem % 64) % 64));
    }
    /* softmax streams only with its scratch row */
    const int stream = take_log ? want_stream : tmp != NULL;
    if (stream && A->k > LONG_K) {
        FN(long_rows_stream)(A, i, r1, tmp, take_log);
        i = r1;
    }
    if (!A->mask && A->k > SHORT_K && A->k <= LONG_K) {
        FN(mid_rows)(A, i, r1, tmp, stream, take_log);
        i = r1;
    }
    for (; i < r1; i++) {
        if (take_log)
            FN(log_softmax_row)(A, i, stream);
        else
            FN(softmax_row)(A, i, tmp);
    }
    if (stream)
        v_sfence();
    free(tmp_mem);
}

static void FN(softmax_rows)(const fa_args *A, int64_t r0, int64_t r1)
{
    FN(softmax_family_rows)(A, r0, r1, 0);
}

static void FN(log_softmax_rows)(const fa_args *A, int64_t r0, int64_t r1)
{
    FN(softmax_family_rows)(A, r0, r1, 1);
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
    if (!A->mask && !A->b && k > TILE_MAX_K && k <= GROUP_MAX_K)
        for (; i < r1; i += VL)
            FN(rows_group)(A, i, r1 - i < VL ? (int)(r1 - i) : VL, 2);
#endif
    for (; i < r1; i++)
        FN(logsumexp_row)(A, i);
}
