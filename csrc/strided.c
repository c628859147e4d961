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
 * Softmax, log_softmax, logsumexp (without mask or b) and index-target cross
 * entropy without label smoothing take the column kernels instead when a
 * row of the slab holds a cache line (rows_cols.c: strips of up to COLS_MAX
 * columns packed into an L2-sized per-thread scratch, the columns across the
 * vector lanes, no transposes); a strip with a column whose max is not finite
 * comes back here.  1 thread, float32, against the transposing path: (32000,
 * 512) over axis 0 0.47x the time, (8, 21, 128, 128) over axis 1 0.4-0.55x
 * (cross entropy with its gradient 0.43x), (1000, 4096) over axis 0 0.85x.
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
    fa_cols_fn cols;    /* column mode (cw > 0): the column kernel for op */
    int op, cscratch;
    int64_t cw;         /* column mode: strip width (0: the transposing path only) */
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

/* The transposing path's per-thread scratch: one tile buffer per row input
 * (x, y, b, tprob), the gradient's, the mask's; allocated on first use. */
typedef struct {
    char *mem, *bufs[4], *gbuf;
    unsigned char *mbuf;
} fa_tr_mem;

static int fa_tr_alloc(const fa_strided *S, fa_tr_mem *M)
{
    if (M->mem)
        return 0;
    const size_t es = (size_t)S->itemsize;
    const size_t tile = (size_t)(S->w * S->k) * es, tile_pad = (tile + 63) / 64 * 64;
    const size_t mtile = (size_t)(S->w * S->k), mtile_pad = (mtile + 63) / 64 * 64;
    const int nfl = !!(S->rows_in & FA_S_X) + !!(S->rows_in & FA_S_Y) +
                    !!(S->rows_in & FA_S_B) + !!(S->rows_in & FA_S_TPROB);
    const int has_mask = !!(S->rows_in & FA_S_MASK);
    M->mem = (char *)malloc((nfl + S->grad_rows) * tile_pad + (has_mask ? mtile_pad : 0) + 64);
    if (!M->mem)
        return -1;
    char *p = M->mem + (64 - (uintptr_t)M->mem % 64) % 64;
    for (int f = 0; f < 4; f++)
        if (S->rows_in & (1u << f)) {
            M->bufs[f] = p;
            p += tile_pad;
        }
    if (S->grad_rows) {
        M->gbuf = p;
        p += tile_pad;
    }
    if (has_mask)
        M->mbuf = (unsigned char *)p;
    return 0;
}

/* Inner positions i0 .. i0 + wt - 1 (wt <= S->w) of outer index o through
 * the row kernel: transposed into M's scratch, computed, transposed back. */
static void fa_tr_tile(const fa_strided *S, const fa_tr_mem *M, int64_t o, int64_t i0,
                       int64_t wt)
{
    const int64_t k = S->k, inner = S->inner;
    const size_t es = (size_t)S->itemsize;
    const int64_t off = o * k * inner + i0; /* element (o, 0, i0) */
    const int64_t roff = o * inner + i0;    /* per-row position (o, i0) */
    const void *srcs[4] = {S->a.x, S->a.y, S->a.b, S->a.tprob};
    for (int f = 0; f < 4; f++)
        if (M->bufs[f])
            fa_tr(S, (const char *)srcs[f] + (size_t)off * es, inner, M->bufs[f], k, k, wt, 0);
    if (M->mbuf)
        fa_tr_u8(S->a.mask + off, inner, M->mbuf, k, k, wt);
    fa_args a = S->a;
    a.n = wt;
    a.stream = 0;
    a.x = M->bufs[0];
    a.y = M->bufs[1];
    a.b = M->bufs[2];
    a.tprob = M->bufs[3];
    a.mask = M->mbuf;
    if (S->out_rows)
        a.out = M->bufs[0];
    else if (a.out)
        a.out = (char *)a.out + (size_t)roff * es;
    if (S->grad_rows)
        a.grad = M->gbuf;
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
        fa_tr(S, M->bufs[0], k, (char *)S->a.out + (size_t)off * es, inner, wt, k, by_rows);
    if (S->grad_rows)
        fa_tr(S, M->gbuf, k, (char *)S->a.grad + (size_t)off * es, inner, wt, k, by_rows);
}

/* Tiles p0 .. p1 - 1 (tile p: outer index p / ntiles, inner positions from
 * (p % ntiles) w, or in column mode strips of cw); run by fa_run on the
 * pool's threads.  A strip the column kernel declines (a column without a
 * finite max) goes through the transposing path, tile by tile. */
static void fa_strided_part(const fa_args *hdr, int64_t p0, int64_t p1)
{
    fa_strided *S = (fa_strided *)hdr;
    const int64_t k = S->k, inner = S->inner;
    const size_t es = (size_t)S->itemsize;
    const int64_t step = S->cw ? S->cw : S->w;
    fa_tr_mem M = {0};
    char *cmem = NULL, *cscratch = NULL;
    if (!S->cw && fa_tr_alloc(S, &M))
        goto fail;
    if (S->cw && S->cscratch) {
        const int64_t wp = (S->cw + 15) / 16 * 16; /* >= the kernel's w rounded to VL */
        cmem = (char *)malloc((size_t)(k * wp) * es + 64);
        if (!cmem)
            goto fail;
        cscratch = cmem + (64 - (uintptr_t)cmem % 64) % 64;
    }
    for (int64_t p = p0; p < p1; p++) {
        const int64_t o = p / S->ntiles, i0 = (p % S->ntiles) * step;
        const int64_t wt = inner - i0 < step ? inner - i0 : step;
        if (S->cw) {
            const int64_t off = o * k * inner + i0, roff = o * inner + i0;
            fa_cols_args c = {.x = (const char *)S->a.x + (size_t)off * es,
                              .scratch = cscratch, .k = k, .inner = inner, .w = wt,
                              .op = S->op};
            if (S->op == 3) {
                const fa_args *A = &S->a;
                c.target = A->target + roff;
                c.weight = A->weight;
                c.row_scale = A->row_scale ? (const char *)A->row_scale + (size_t)roff * es : NULL;
                c.loss = A->loss ? (char *)A->loss + (size_t)roff * es : NULL;
                c.grad = A->grad ? (char *)A->grad + (size_t)off * es : NULL;
                c.ignore_index = A->ignore_index;
                c.a = A->a;
                c.bz = A->b_coef * A->z_loss;
                c.g = A->g;
            } else if (S->op == 2) {
                c.out = (char *)S->a.out + (size_t)roff * es;
                c.sign = S->a.sign ? (char *)S->a.sign + (size_t)roff * es : NULL;
            } else {
                c.out = (char *)S->a.out + (size_t)off * es;
            }
            if (!S->cols(&c))
                continue;
            if (fa_tr_alloc(S, &M))
                goto fail;
            for (int64_t i = i0; i < i0 + wt; i += S->w)
                fa_tr_tile(S, &M, o, i, i0 + wt - i < S->w ? i0 + wt - i : S->w);
            continue;
        }
        fa_tr_tile(S, &M, o, i0, wt);
    }
    free(M.mem);
    free(cmem);
    return;
fail:
    S->failed = 1;
    free(M.mem);
    free(cmem);
}

/* Column strips (rows_cols.c) of at most FA_COLS_STRIP bytes of input are
 * packed into a scratch that stays in L2 between the kernel's passes (half
 * of this CPU's 512 KB; 1 thread, 1000 x 4096 over axis 0: 128 KB strips
 * 1.3x the time of 256 KB ones, 384 KB the same). */
#ifndef FA_COLS_STRIP
#define FA_COLS_STRIP ((int64_t)256 << 10)
#endif

/* Runs row kernel `fn` over the (outer, k, inner) arrays of `a`; -1 when the
 * scratch could not be allocated (the results are then incomplete).  op >= 0:
 * the column kernel's op (rows_cols.c) for softmax, log_softmax and
 * logsumexp without mask or b, and cross entropy with index targets without
 * label smoothing, used when a row of the slab holds at least a cache line. */
static int fa_strided_run(const fa_rows_fn tab[3][2], fa_args *a, int itemsize, int isa,
                          int64_t outer, int64_t k, int64_t inner, unsigned rows_in,
                          int out_rows, int grad_rows, int nthreads, int op)
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
    int64_t step = w;
    if (op >= 0 && inner >= line && !(rows_in & (FA_S_B | FA_S_MASK))) {
        /* column strips: as wide as keeps the strip in L2 (long columns,
         * which cannot stay: COLS_MAX wide), evened out over the row with
         * enough strips for every thread, whole cache lines each */
        const int64_t fit = FA_COLS_STRIP / (k * itemsize);
        int64_t cw = fit >= line ? fit / line * line : COLS_MAX;
        if (cw > COLS_MAX)
            cw = COLS_MAX;
        int64_t ns = (inner + cw - 1) / cw;
        /* more strips for idle threads only over packed strips: long columns
         * read three times from memory ran slower in halves of their rows on
         * 2 threads than whole on one ((32000, 512) over axis 0: 1.4x) */
        if (outer * ns < nthreads && fit >= line)
            ns = (nthreads + outer - 1) / outer;
        cw = ((inner + ns - 1) / ns + line - 1) / line * line;
        if (cw > inner)
            cw = inner;
        S->cols = cols_tab[S->isa][itemsize == 8];
        S->op = op;
        S->cw = step = cw;
        S->cscratch = fit >= line;
    }
    S->ntiles = (inner + step - 1) / step;
    S->hdr.n = outer * S->ntiles;
    S->hdr.k = step * k;
    fa_run(fa_strided_part, &S->hdr, nthreads);
    const int failed = S->failed;
    free(S);
    return failed ? -1 : 0;
}

/* ======================================================== the C API */

/* softmax and log_softmax: x (and mask) in, out of x's layout. */
static int fa_softmax_like_strided(const fa_rows_fn tab[3][2], int op, int itemsize, int isa,
                                   const void *x, const void *mask, void *out, int64_t outer,
                                   int64_t k, int64_t inner, int nthreads)
{
    fa_args a;
    fa_row_args(&a, x, NULL, NULL, mask, out, NULL);
    if (inner == 1)
        a.stream = fa_stream_out(outer, k, itemsize);
    return fa_strided_run(tab, &a, itemsize, isa, outer, k, inner,
                          FA_S_X | (mask ? FA_S_MASK : 0), 1, 0, nthreads, op);
}

int fa_softmax_strided(int itemsize, int isa, const void *x, const void *mask, void *out,
                       int64_t outer, int64_t k, int64_t inner, int nthreads)
{
    return fa_softmax_like_strided(softmax_rows_tab, 0, itemsize, isa, x, mask, out, outer, k,
                                   inner, nthreads);
}

int fa_log_softmax_strided(int itemsize, int isa, const void *x, const void *mask, void *out,
                           int64_t outer, int64_t k, int64_t inner, int nthreads)
{
    return fa_softmax_like_strided(log_softmax_rows_tab, 1, itemsize, isa, x, mask, out, outer, k,
                                   inner, nthreads);
}

int fa_logsumexp_strided(int itemsize, int isa, const void *x, const void *b,
                         const void *mask, void *out, void *sign,
                         int64_t outer, int64_t k, int64_t inner, int nthreads)
{
    fa_args a;
    fa_row_args(&a, x, NULL, b, mask, out, sign);
    return fa_strided_run(logsumexp_rows_tab, &a, itemsize, isa, outer, k, inner,
                          FA_S_X | (b ? FA_S_B : 0) | (mask ? FA_S_MASK : 0), 0, 0, nthreads, 2);
}

int fa_softmax_backward_strided(int itemsize, int isa, const void *grad, const void *y,
                                void *out, int64_t outer, int64_t k, int64_t inner,
                                int nthreads)
{
    fa_args a;
    fa_row_args(&a, grad, y, NULL, NULL, out, NULL);
    return fa_strided_run(softmax_backward_rows_tab, &a, itemsize, isa, outer, k, inner,
                          FA_S_X | FA_S_Y, 1, 0, nthreads, -1);
}

int fa_log_softmax_backward_strided(int itemsize, int isa, const void *grad, const void *y,
                                    const void *mask, void *out, int64_t outer, int64_t k,
                                    int64_t inner, int nthreads)
{
    fa_args a;
    fa_row_args(&a, grad, y, NULL, mask, out, NULL);
    return fa_strided_run(log_softmax_backward_rows_tab, &a, itemsize, isa, outer, k, inner,
                          FA_S_X | FA_S_Y | (mask ? FA_S_MASK : 0), 1, 0, nthreads, -1);
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
                          FA_S_X, 0, grad != NULL, nthreads, label_smoothing == 0 ? 3 : -1);
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
                          FA_S_X | FA_S_TPROB, 0, grad != NULL, nthreads, -1);
}
