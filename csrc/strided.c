/* Reductions over an axis that is not the last, without a whole-array copy.
 *
 * Not compiled on its own: included at the end of fastact.c, after the row
 * kernels' per-ISA tables (softmax_rows_tab, ...) and the thread pool (fa_run).
 *
 * Layout {outer, k, inner}: the arrays are C-contiguous (outer, k, inner) and
 * the reduction runs over k, whose elements lie `inner` apart; per-row data
 * (logsumexp's out/sign, cross entropy's target/row_scale/loss) are the
 * C-contiguous (outer, inner) arrays.  For each outer index and each tile of
 * w inner positions, the k x w tile of every row input is transposed into a
 * per-thread scratch of w contiguous rows of k, the EXISTING row kernel runs
 * on those w rows (in place: its result overwrites the first input's
 * scratch, which those row kernels allow; cross entropy's gradient gets its
 * own scratch), and the (w, k) result is
 * transposed back.  w is chosen so that the scratch stays in L2; every
 * transpose runs on blocks of 8 x 8 (AVX2: in registers), so that it reads
 * and writes whole cache lines.
 *
 * Scratch: one buffer per row input, at most ~FA_STRIDED_SCRATCH bytes in all
 * (more only for long rows: at least one cache line of inner positions,
 * 16 rows of float32, while that stays under FA_STRIDED_MAX_SCRATCH),
 * allocated once per part of the work, whatever the array size.
 */

/* Scratch target per thread (all row inputs together): half of this CPU's
 * 512 KB L2, so that the source lines of the next tile fit beside it. */
#ifndef FA_STRIDED_SCRATCH
#define FA_STRIDED_SCRATCH ((int64_t)192 << 10)
#endif
#ifndef FA_STRIDED_MAX_SCRATCH
#define FA_STRIDED_MAX_SCRATCH ((int64_t)16 << 20)
#endif

/* Which fa_args fields are (outer, k, inner) inputs (transposed in). */
#define FA_S_X 1u
#define FA_S_Y 2u
#define FA_S_B 4u
#define FA_S_TPROB 8u
#define FA_S_MASK 16u

typedef struct fa_strided {
    fa_args hdr;        /* first member: what fa_run sees (n = tiles, k = elements per tile) */
    fa_rows_fn fn;      /* the row kernel */
    fa_args a;          /* its arguments over the whole arrays */
    int64_t outer, k, inner, w, ntiles;
    int itemsize, isa;
    unsigned rows_in;   /* FA_S_* */
    int out_rows;       /* a.out is an (outer, k, inner) result (else per row) */
    int grad_rows;      /* a.grad is an (outer, k, inner) result */
#if defined(__STDC_NO_ATOMICS__)
    volatile int failed;
#else
    _Atomic int failed; /* a part could not allocate its scratch */
#endif
} fa_strided;

/* ----------------------------------------------------------- transposes */

/* dst[c * ldd + r] = src[r * lds + c] for r < R, c < C, in blocks of 8 x 8. */
#define FA_TRANSPOSE_SCALAR(name, T)                                                 \
    static void name(const T *src, int64_t lds, T *dst, int64_t ldd, int64_t R, int64_t C) \
    {                                                                                \
        for (int64_t r0 = 0; r0 < R; r0 += 8) {                                      \
            const int64_t r1 = R - r0 < 8 ? R : r0 + 8;                              \
            for (int64_t c0 = 0; c0 < C; c0 += 8) {                                  \
                const int64_t c1 = C - c0 < 8 ? C : c0 + 8;                          \
                for (int64_t c = c0; c < c1; c++)                                    \
                    for (int64_t r = r0; r < r1; r++)                                \
                        dst[c * ldd + r] = src[r * lds + c];                         \
            }                                                                        \
        }                                                                            \
    }

FA_TRANSPOSE_SCALAR(fa_tr_f32_base, float)
FA_TRANSPOSE_SCALAR(fa_tr_f64_base, double)
FA_TRANSPOSE_SCALAR(fa_tr_u8, unsigned char)

#if FA_X86
FA_TARGET_PUSH("avx2,fma")

static inline void fa_tr8x8_f32_avx2(const float *s, int64_t lds, float *d, int64_t ldd)
{
    __m256 r[8], t[8];
    for (int i = 0; i < 8; i++)
        r[i] = _mm256_loadu_ps(s + i * lds);
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) { /* r[i + m]: columns m and 4 + m of rows i .. i + 3 */
        r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);
        r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);
    }
    for (int m = 0; m < 4; m++) {
        _mm256_storeu_ps(d + m * ldd, _mm256_permute2f128_ps(r[m], r[4 + m], 0x20));
        _mm256_storeu_ps(d + (4 + m) * ldd, _mm256_permute2f128_ps(r[m], r[4 + m], 0x31));
    }
}

static inline void fa_tr4x4_f64_avx2(const double *s, int64_t lds, double *d, int64_t ldd)
{
    const __m256d r0 = _mm256_loadu_pd(s), r1 = _mm256_loadu_pd(s + lds);
    const __m256d r2 = _mm256_loadu_pd(s + 2 * lds), r3 = _mm256_loadu_pd(s + 3 * lds);
    const __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
    const __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
    _mm256_storeu_pd(d, _mm256_permute2f128_pd(t0, t2, 0x20));
    _mm256_storeu_pd(d + ldd, _mm256_permute2f128_pd(t1, t3, 0x20));
    _mm256_storeu_pd(d + 2 * ldd, _mm256_permute2f128_pd(t0, t2, 0x31));
    _mm256_storeu_pd(d + 3 * ldd, _mm256_permute2f128_pd(t1, t3, 0x31));
}

/* The AVX2 transposes walk the big array's rows in order, whole rows at a
 * time (all of a tile's w positions), so that its cache lines are read or
 * written whole and once: `out` = 0, the source rows are the array's (tile in);
 * `out` = 1, the destination rows are (tile out).  The array's rows
 * FA_TR_PF_ROWS ahead are prefetched: they lie `inner` apart, too far for
 * the hardware prefetchers. */
#ifndef FA_TR_MAX_ROW_BYTES
#define FA_TR_MAX_ROW_BYTES 16384
#endif
#ifndef FA_TR_PF_ROWS
#define FA_TR_PF_ROWS 16
#endif

/* An R x C transpose by 8x8 blocks (TR8: the block transpose, BASE: the
 * scalar one for the edges), prefetching FA_TR_PF_ROWS rows of the side read
 * row-wise (out = 0: src, gathered into scratch) or written column-wise
 * (out = 1: dst, scattered back). */
#define FA_TRANSPOSE_AVX2(NAME, T, TR8, BASE)                                                      \
    static void NAME(const T *src, int64_t lds, T *dst, int64_t ldd, int64_t R, int64_t C,      \
                     int out)                                                                    \
    {                                                                                            \
        const int64_t R8 = R - R % 8, C8 = C - C % 8;                                            \
        if (!out) {                                                                              \
            for (int64_t r0 = 0; r0 < R8; r0 += 8) {                                             \
                for (int64_t r = r0 + FA_TR_PF_ROWS; r < r0 + FA_TR_PF_ROWS + 8 && r < R; r++)   \
                    FA_PREFETCH_LINES(src, r * lds, 0, (size_t)C * sizeof(T));                   \
                for (int64_t c0 = 0; c0 < C8; c0 += 8)                                           \
                    TR8(src + r0 * lds + c0, lds, dst + c0 * ldd + r0, ldd);                     \
            }                                                                                    \
        } else {                                                                                 \
            for (int64_t c0 = 0; c0 < C8; c0 += 8) {                                             \
                for (int64_t c = c0 + FA_TR_PF_ROWS; c < c0 + FA_TR_PF_ROWS + 8 && c < C; c++)   \
                    FA_PREFETCH_LINES(dst, c * ldd, 1, (size_t)R * sizeof(T));                   \
                for (int64_t r0 = 0; r0 < R8; r0 += 8)                                           \
                    TR8(src + r0 * lds + c0, lds, dst + c0 * ldd + r0, ldd);                     \
            }                                                                                    \
        }                                                                                        \
        if (C8 < C) /* the last columns, every row */                                            \
            BASE(src + C8, lds, dst + C8 * ldd, ldd, R, C - C8);                                 \
        if (R8 < R) /* the last rows, the columns done above */                                  \
            BASE(src + R8 * lds, lds, dst + R8, ldd, R - R8, C8);                                \
    }

FA_TRANSPOSE_AVX2(fa_tr_f32_avx2, float, fa_tr8x8_f32_avx2, fa_tr_f32_base)

static FA_ALWAYS_INLINE void fa_tr8x8_f64_avx2(const double *s, int64_t lds, double *d, int64_t ldd)
{
    fa_tr4x4_f64_avx2(s, lds, d, ldd);
    fa_tr4x4_f64_avx2(s + 4, lds, d + 4 * ldd, ldd);
    fa_tr4x4_f64_avx2(s + 4 * lds, lds, d + 4, ldd);
    fa_tr4x4_f64_avx2(s + 4 * lds + 4, lds, d + 4 * ldd + 4, ldd);
}

FA_TRANSPOSE_AVX2(fa_tr_f64_avx2, double, fa_tr8x8_f64_avx2, fa_tr_f64_base)

FA_TARGET_POP()
#endif /* FA_X86 */

/* Transpose of float data (itemsize 4 or 8) at the job's ISA level. */
static void fa_tr(const fa_strided *S, const void *src, int64_t lds, void *dst, int64_t ldd,
                  int64_t R, int64_t C, int out)
{
#if FA_X86
    if (S->isa >= FA_ISA_AVX2) {
        if (S->itemsize == 8)
            fa_tr_f64_avx2((const double *)src, lds, (double *)dst, ldd, R, C, out);
        else
            fa_tr_f32_avx2((const float *)src, lds, (float *)dst, ldd, R, C, out);
        return;
    }
#else
    (void)out;
#endif
    if (S->itemsize == 8)
        fa_tr_f64_base((const double *)src, lds, (double *)dst, ldd, R, C);
    else
        fa_tr_f32_base((const float *)src, lds, (float *)dst, ldd, R, C);
}

/* ------------------------------------------------------------- the driver */

/* Tiles p0 .. p1 - 1 (tile p: outer index p / ntiles, inner positions from
 * (p % ntiles) w); run by fa_run on the pool's threads. */
static void fa_strided_part(const fa_args *hdr, int64_t p0, int64_t p1)
{
    const fa_strided *S = (const fa_strided *)hdr;
    const int64_t k = S->k, inner = S->inner, w = S->w;
    const size_t es = (size_t)S->itemsize;
    const size_t tile = (size_t)(w * k) * es, tile_pad = (tile + 63) / 64 * 64;
    const size_t mtile = (size_t)(w * k), mtile_pad = (mtile + 63) / 64 * 64;
    const int nfl = !!(S->rows_in & FA_S_X) + !!(S->rows_in & FA_S_Y) +
                    !!(S->rows_in & FA_S_B) + !!(S->rows_in & FA_S_TPROB);
    const int has_mask = !!(S->rows_in & FA_S_MASK);
    char *mem = (char *)malloc((nfl + S->grad_rows) * tile_pad + (has_mask ? mtile_pad : 0) + 64);
    if (!mem) {
        ((fa_strided *)S)->failed = 1;
        return;
    }
    char *base = mem + (64 - (uintptr_t)mem % 64) % 64;
    char *bufs[4] = {NULL, NULL, NULL, NULL}; /* x, y, b, tprob */
    char *gbuf = NULL; /* cross entropy's gradient: its own scratch, not over x */
    unsigned char *mbuf = NULL;
    {
        char *p = base;
        for (int f = 0; f < 4; f++)
            if (S->rows_in & (1u << f)) {
                bufs[f] = p;
                p += tile_pad;
            }
        if (S->grad_rows) {
            gbuf = p;
            p += tile_pad;
        }
        if (has_mask)
            mbuf = (unsigned char *)p;
    }
    const void *srcs[4] = {S->a.x, S->a.y, S->a.b, S->a.tprob};
    for (int64_t p = p0; p < p1; p++) {
        const int64_t o = p / S->ntiles, i0 = (p % S->ntiles) * w;
        const int64_t wt = inner - i0 < w ? inner - i0 : w;
        const int64_t off = o * k * inner + i0; /* element (o, 0, i0) */
        const int64_t roff = o * inner + i0;    /* per-row position (o, i0) */
        for (int f = 0; f < 4; f++)
            if (bufs[f])
                fa_tr(S, (const char *)srcs[f] + (size_t)off * es, inner, bufs[f], k, k, wt, 0);
        if (mbuf)
            fa_tr_u8(S->a.mask + off, inner, mbuf, k, k, wt);
        fa_args a = S->a;
        a.n = wt;
        a.stream = 0;
        a.x = bufs[0];
        a.y = bufs[1];
        a.b = bufs[2];
        a.tprob = bufs[3];
        a.mask = mbuf;
        if (S->out_rows)
            a.out = bufs[0];
        else if (a.out)
            a.out = (char *)a.out + (size_t)roff * es;
        if (S->grad_rows)
            a.grad = gbuf;
        if (a.sign)
            a.sign = (char *)a.sign + (size_t)roff * es;
        if (a.loss)
            a.loss = (char *)a.loss + (size_t)roff * es;
        if (a.row_scale)
            a.row_scale = (const char *)a.row_scale + (size_t)roff * es;
        if (a.target)
            a.target += roff;
        S->fn(&a, 0, wt);
        /* the result back, the array's rows in order, but for long rows: the
         * scratch rows then lie far apart in the same cache sets, and reading
         * 8 of them per block thrashes (32000 x 512 over axis 0: 1.4x slower) */
        const int by_rows = k * (int64_t)es <= FA_TR_MAX_ROW_BYTES;
        if (S->out_rows)
            fa_tr(S, bufs[0], k, (char *)S->a.out + (size_t)off * es, inner, wt, k, by_rows);
        if (S->grad_rows)
            fa_tr(S, gbuf, k, (char *)S->a.grad + (size_t)off * es, inner, wt, k, by_rows);
    }
    free(mem);
}

/* Runs row kernel `fn` over the (outer, k, inner) arrays of `a`; -1 when the
 * scratch could not be allocated (the results are then incomplete). */
static int fa_strided_run(const fa_rows_fn tab[3][2], fa_args *a, int itemsize, int isa,
                          int64_t outer, int64_t k, int64_t inner, unsigned rows_in,
                          int out_rows, int grad_rows, int nthreads)
{
    const fa_rows_fn fn = fa_pick(tab, itemsize, isa);
    if (outer <= 0 || k <= 0 || inner <= 0)
        return 0;
    if (inner == 1) { /* the rows themselves */
        a->n = outer;
        a->k = k;
        fa_run(fn, a, nthreads);
        return 0;
    }
    fa_strided *S = (fa_strided *)calloc(1, sizeof *S);
    if (!S)
        return -1;
    S->fn = fn;
    S->a = *a;
    S->a.k = k;
    S->a.stream = 0;
    S->outer = outer;
    S->k = k;
    S->inner = inner;
    S->itemsize = itemsize;
    S->isa = fa_isa_level(isa);
    S->rows_in = rows_in;
    S->out_rows = out_rows;
    S->grad_rows = grad_rows;
    /* w: the scratch of all row inputs within FA_STRIDED_SCRATCH, but at
     * least one cache line of positions (whole lines read and written) while
     * that stays within FA_STRIDED_MAX_SCRATCH; then evened out over the
     * tiles of a row of `inner` and rounded up to a multiple of 8. */
    const int64_t nin = (int64_t)(!!(rows_in & FA_S_X) + !!(rows_in & FA_S_Y) +
                                  !!(rows_in & FA_S_B) + !!(rows_in & FA_S_TPROB) + grad_rows) *
                            itemsize +
                        !!(rows_in & FA_S_MASK);
    const int64_t per_pos = k * (nin > 0 ? nin : 1); /* scratch bytes per inner position */
    int64_t w = FA_STRIDED_SCRATCH / per_pos;
    const int64_t line = 64 / itemsize;
    if (w < line)
        w = line * per_pos <= FA_STRIDED_MAX_SCRATCH ? line : FA_STRIDED_MAX_SCRATCH / per_pos;
    if (w < 1)
        w = 1;
    if (w < inner) {
        const int64_t nt = (inner + w - 1) / w;
        w = (inner + nt - 1) / nt;
        if (w >= 8)
            w = (w + 7) / 8 * 8;
    }
    if (w > inner)
        w = inner;
    S->w = w;
    S->ntiles = (inner + w - 1) / w;
    S->hdr.n = outer * S->ntiles;
    S->hdr.k = w * k;
    fa_run(fa_strided_part, &S->hdr, nthreads);
    const int failed = S->failed;
    free(S);
    return failed ? -1 : 0;
}

/* ======================================================== the C API */

/* softmax and log_softmax: x (and mask) in, out of x's layout. */
static int fa_softmax_like_strided(const fa_rows_fn tab[3][2], int itemsize, int isa,
                                   const void *x, const void *mask, void *out, int64_t outer,
                                   int64_t k, int64_t inner, int nthreads)
{
    fa_args a;
    fa_row_args(&a, x, NULL, NULL, mask, out, NULL);
    if (inner == 1)
        a.stream = fa_stream_out(outer, k, itemsize);
    return fa_strided_run(tab, &a, itemsize, isa, outer, k, inner,
                          FA_S_X | (mask ? FA_S_MASK : 0), 1, 0, nthreads);
}

int fa_softmax_strided(int itemsize, int isa, const void *x, const void *mask, void *out,
                       int64_t outer, int64_t k, int64_t inner, int nthreads)
{
    return fa_softmax_like_strided(softmax_rows_tab, itemsize, isa, x, mask, out, outer, k,
                                   inner, nthreads);
}

int fa_log_softmax_strided(int itemsize, int isa, const void *x, const void *mask, void *out,
                           int64_t outer, int64_t k, int64_t inner, int nthreads)
{
    return fa_softmax_like_strided(log_softmax_rows_tab, itemsize, isa, x, mask, out, outer, k,
                                   inner, nthreads);
}

int fa_logsumexp_strided(int itemsize, int isa, const void *x, const void *b,
                         const void *mask, void *out, void *sign,
                         int64_t outer, int64_t k, int64_t inner, int nthreads)
{
    fa_args a;
    fa_row_args(&a, x, NULL, b, mask, out, sign);
    return fa_strided_run(logsumexp_rows_tab, &a, itemsize, isa, outer, k, inner,
                          FA_S_X | (b ? FA_S_B : 0) | (mask ? FA_S_MASK : 0), 0, 0, nthreads);
}

int fa_softmax_backward_strided(int itemsize, int isa, const void *grad, const void *y,
                                void *out, int64_t outer, int64_t k, int64_t inner,
                                int nthreads)
{
    fa_args a;
    fa_row_args(&a, grad, y, NULL, NULL, out, NULL);
    return fa_strided_run(softmax_backward_rows_tab, &a, itemsize, isa, outer, k, inner,
                          FA_S_X | FA_S_Y, 1, 0, nthreads);
}

int fa_log_softmax_backward_strided(int itemsize, int isa, const void *grad, const void *y,
                                    const void *mask, void *out, int64_t outer, int64_t k,
                                    int64_t inner, int nthreads)
{
    fa_args a;
    fa_row_args(&a, grad, y, NULL, mask, out, NULL);
    return fa_strided_run(log_softmax_backward_rows_tab, &a, itemsize, isa, outer, k, inner,
                          FA_S_X | FA_S_Y | (mask ? FA_S_MASK : 0), 1, 0, nthreads);
}

int fa_cross_entropy_index_strided(int itemsize, int isa, const void *x,
                                   const int64_t *target, const void *weight,
                                   int64_t ignore_index, double label_smoothing,
                                   double z_loss, double a_, double b, double g,
                                   const void *row_scale, void *loss, void *grad,
                                   int64_t outer, int64_t k, int64_t inner, int nthreads)
{
    fa_args a;
    fa_ce_args(&a, itemsize, x, target, NULL, weight, ignore_index, label_smoothing, z_loss, a_,
               b, g, row_scale, loss, grad, k);
    if (inner == 1)
        a.stream = grad != NULL && fa_stream_out(outer, k, itemsize);
    if (!loss && !grad)
        return 0;
    return fa_strided_run(cross_entropy_index_rows_tab, &a, itemsize, isa, outer, k, inner,
                          FA_S_X, 0, grad != NULL, nthreads);
}

int fa_cross_entropy_prob_strided(int itemsize, int isa, const void *x, const void *target,
                                  const void *weight, double label_smoothing, double z_loss,
                                  double a_, double b, double g, const void *row_scale,
                                  void *loss, void *grad, int64_t outer, int64_t k,
                                  int64_t inner, int nthreads)
{
    fa_args a;
    fa_ce_args(&a, itemsize, x, NULL, target, weight, 0, label_smoothing, z_loss, a_, b, g,
               row_scale, loss, grad, k);
    if (!loss && !grad)
        return 0;
    return fa_strided_run(cross_entropy_prob_rows_tab, &a, itemsize, isa, outer, k, inner,
                          FA_S_X | FA_S_TPROB, 0, grad != NULL, nthreads);
}
