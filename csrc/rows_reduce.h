/* Row kernels, part 2 of the per-ISA template (rows_template.c): reductions
 * over a row (max, exp sums, plain and over selected entries) and the passes
 * that write a row's result (scale, shift-subtract, special rows). */

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

/* y[j] = src[j] * vc from j on, whole vectors only (4 at a time, then 1),
 * written by STORE (v_store or v_stream); j is left at the first element not
 * done. */
#define SCALE_VECTORS(STORE, src, y, vc, j, k)                        \
    do {                                                              \
        for (; (j) + 4 * VL <= (k); (j) += 4 * VL) {                  \
            STORE((y) + (j), v_mul(v_load((src) + (j)), (vc)));       \
            STORE((y) + (j) + VL, v_mul(v_load((src) + (j) + VL), (vc)));         \
            STORE((y) + (j) + 2 * VL, v_mul(v_load((src) + (j) + 2 * VL), (vc))); \
            STORE((y) + (j) + 3 * VL, v_mul(v_load((src) + (j) + 3 * VL), (vc))); \
        }                                                             \
        for (; (j) + VL <= (k); (j) += VL)                            \
            STORE((y) + (j), v_mul(v_load((src) + (j)), (vc)));       \
    } while (0)

/* y[j] *= c */
static void FN(scale)(T *y, T c, int64_t k)
{
    const V vc = v_set1(c);
    int64_t j = 0;
    SCALE_VECTORS(v_store, y, y, vc, j, k);
    if (j < k) {
        VTM tm = v_tailmask(k - j);
        v_store_tail(y + j, tm, v_mul(v_load_tail(y + j, tm, (T)0), vc));
    }
}

/* The span [h, *e) of y[0:k] written with non-temporal stores: whole 64-byte
 * cache lines only (all of k when VL == 1; none when not streaming or y is
 * not even T-aligned: h = *e = k).  The elements before h and from *e on
 * share their line with the row before or after, or with another chunk, and
 * get ordinary stores: a line written partly by ordinary and partly by
 * non-temporal stores costs a flush (1 thread, softmax 4096x1000 with out
 * 16 bytes off a line: 1.35x the time of a line-aligned out when only the
 * vector, not the line, was aligned).  h and *e - h are whole vectors'
 * worth of elements from a line boundary. */
static inline int64_t FN(stream_span)(const T *y, int64_t k, const int stream, int64_t *e)
{
    const uintptr_t a = (uintptr_t)y, line = 64;
    *e = k;
    if (!stream || VL == 1 || a % sizeof(T) != 0)
        return stream && VL == 1 ? 0 : k;
    const int64_t h = (int64_t)(((line - a % line) % line) / sizeof(T));
    if (h >= k)
        return k;
    const int64_t last = (int64_t)(((a + (uintptr_t)k * sizeof(T)) % line) / sizeof(T));
    *e = k - last > h ? k - last : h;
    return h;
}

/* y[j] = src[j] * c; with stream, non-temporal stores (the result bypasses
 * the caches: for outputs larger than the last-level cache, which saves the
 * read-for-ownership of y).  src may be y when not streaming. */
static void FN(scale_to)(const T *src, T *y, T c, int64_t k, const int stream)
{
    int64_t e;
    const int64_t h = FN(stream_span)(y, k, stream, &e);
    if (h > 0) {
        if (src == y)
            FN(scale)(y, c, h);
        else
            for (int64_t j = 0; j < h; j++)
                y[j] = src[j] * c;
    }
    const V vc = v_set1(c);
    int64_t j = h;
    SCALE_VECTORS(v_stream, src, y, vc, j, e);
    SCALE_VECTORS(v_store, src, y, vc, j, k);
    for (; j < k; j++)
        y[j] = src[j] * c;
}

/* y[j] = (x[j] - m) - ls, unmasked, with non-temporal stores (over
 * stream_span); prefetches pf[j] (unless NULL) as it goes (see
 * long_rows_stream). */
static void FN(shift_sub_stream)(const T *x, T m, T ls, T *y, int64_t k, const T *pf)
{
    int64_t e;
    const int64_t h = FN(stream_span)(y, k, 1, &e);
    for (int64_t j = 0; j < h; j++)
        y[j] = (x[j] - m) - ls;
    const V vm = v_set1(m), vl = v_set1(ls);
    int64_t j = h;
    for (; j + 2 * VL <= e; j += 2 * VL) {
        if (pf)
            FA_PREFETCH_LINES(pf, j, 0, 2 * VL * sizeof(T));
        v_stream(y + j, v_sub(v_sub(v_load(x + j), vm), vl));
        v_stream(y + j + VL, v_sub(v_sub(v_load(x + j + VL), vm), vl));
    }
    for (; j + VL <= e; j += VL)
        v_stream(y + j, v_sub(v_sub(v_load(x + j), vm), vl));
    for (; j + VL <= k; j += VL)
        v_store(y + j, v_sub(v_sub(v_load(x + j), vm), vl));
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
