/* Row kernels, part 3 of the per-ISA template (rows_template.c): the
 * row-length strategies shared by the kernel families: tiles of VL short
 * rows, short rows in registers, long rows in chunks (and streamed). */

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
    int64_t e = k;
    const int64_t h = stream ? FN(stream_span)(y, k, 1, &e) : 0;
    V m0 = v_set1((T)-INFINITY), m1 = m0, m2 = m0, m3 = m0;
    int64_t j = 0;
    for (; j < h; j++)
        y[j] = FM_OPS(src[j]);
    if (xn && h > 0) /* h < 64 bytes' worth unless y is not T-aligned */
        for (int64_t t = 0; t < h; t += VL)
            m2 = v_max(v_load_tail(xn + t, v_tailmask(h - t < VL ? h - t : VL), (T)-INFINITY), m2);
    if (h == k)
        return v_hmax(m2);
    /* the streamed lines [h, e), then ordinary stores from e on */
#define FM_LOOPS(STORE, lim)                                                               \
    do {                                                                                   \
    for (; j + 4 * VL <= (lim); j += 4 * VL) {                                             \
        const V r0 = FM_OP(v_load(src + j)), r1 = FM_OP(v_load(src + j + VL));             \
        const V r2 = FM_OP(v_load(src + j + 2 * VL)), r3 = FM_OP(v_load(src + j + 3 * VL)); \
        STORE(y + j, r0);                                                                  \
        STORE(y + j + VL, r1);                                                             \
        STORE(y + j + 2 * VL, r2);                                                         \
        STORE(y + j + 3 * VL, r3);                                                         \
        if (xn) {                                                                          \
            m0 = v_max(v_load(xn + j), m0);                                                \
            m1 = v_max(v_load(xn + j + VL), m1);                                           \
            m2 = v_max(v_load(xn + j + 2 * VL), m2);                                       \
            m3 = v_max(v_load(xn + j + 3 * VL), m3);                                       \
        }                                                                                  \
    }                                                                                      \
    for (; j + VL <= (lim); j += VL) {                                                     \
        STORE(y + j, FM_OP(v_load(src + j)));                                              \
        if (xn)                                                                            \
            m0 = v_max(v_load(xn + j), m0);                                                \
    }                                                                                      \
    } while (0)
    if (stream)
        FM_LOOPS(v_stream, e);
    FM_LOOPS(v_store, k);
#undef FM_LOOPS
    if (j < k) {
        const VTM tm = v_tailmask(k - j);
        v_store_tail(y + j, tm, FM_OP(v_load_tail(src + j, tm, (T)0)));
        if (xn)
            m1 = v_max(v_load_tail(xn + j, tm, (T)-INFINITY), m1);
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
