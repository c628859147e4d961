/* float16 / bfloat16 rows: the float32 row kernels over blocks of widened rows.
 *
 * Included by fastact.c (it needs the static float32 kernels and fa_run).  No
 * kernel is written per half dtype: fa_half_run splits the rows into blocks
 * whose float32 scratch stays in L2, widens the block's half inputs (x; grad
 * and y; b; probability targets) into the scratch, runs the float32 kernel on
 * it in place (the kernels' contract allows out == x, grad == x) and narrows
 * the results into the half outputs.  Blocks are threaded by fa_run like any
 * other kernel.  Per-row outputs: logsumexp's out/sign are narrowed to the
 * half dtype; cross-entropy losses stay float32 (SPEC.md), and so do weight
 * and row_scale.
 *
 * Narrowing rounds to nearest-even and keeps subnormals (never flushed), as
 * NumPy's / ml_dtypes' astype: F16C vcvtps2ph (imm8 = round to nearest) on
 * AVX2 and above, the same rounding in integer arithmetic otherwise; bfloat16
 * widens by a 16-bit shift and narrows by adding 0x7FFF + lsb (NaN kept NaN,
 * quieted).
 *
 * Scratch per thread: FA_HALF_SCRATCH bytes (the rows of a block times
 * the widened inputs), or, for one row longer than that, one row per widened
 * buffer (k * 4 bytes each: at most 2, so 8 k bytes), all allocated before
 * the first block, so that an allocation failure writes no output.  Short rows
 * (k <= FA_TILE_ROWS) are blocked in multiples of FA_TILE_ROWS rows, so that
 * every row meets the float32 kernel in the same row tile as it would over
 * the whole array: the half result is the float32 result rounded.
 */

/* 128 KB: within this VM's 512 KB L2 with the half rows streaming past;
 * measured (1 thread, 4096x1000 / 512x32000 float16 softmax) 32 KB, 128 KB
 * and 256 KB within noise of each other. */
#ifndef FA_HALF_SCRATCH
#define FA_HALF_SCRATCH ((int64_t)128 << 10)
#endif

/* ------------------------------------------------- portable conversions */

static inline float fa_h2f(uint16_t h)
{
    const uint32_t s = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    uint32_t u;
    if (e == 0x1f)
        u = s | 0x7f800000u | (m << 13);
    else if (e)
        u = s | ((e + 112) << 23) | (m << 13);
    else {
        float f = (float)m * 0x1p-24f; /* exact: m < 2^10 */
        memcpy(&u, &f, 4);
        u |= s;
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t fa_f2h(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    const uint16_t s = (uint16_t)((u >> 16) & 0x8000);
    u &= 0x7fffffffu;
    if (u > 0x7f800000u) /* NaN: quiet, top payload bits kept */
        return (uint16_t)(s | 0x7e00 | ((u >> 13) & 0x3ff));
    if (u >= 0x477ff000u) /* >= 65520 (inf included): rounds to inf */
        return (uint16_t)(s | 0x7c00);
    if (u >= 0x38800000u) { /* normal in half: round the 13 dropped bits to even, rebias */
        const uint32_t r = u + 0xfffu + ((u >> 13) & 1u);
        return (uint16_t)(s | ((r - 0x38000000u) >> 13));
    }
    /* below 2^-14: |f| + 0.5 puts the subnormal step 2^-24 in the last
     * mantissa bit, and the float addition rounds to nearest-even */
    float a;
    memcpy(&a, &u, 4);
    a += 0.5f;
    memcpy(&u, &a, 4);
    return (uint16_t)(s | (u - 0x3f000000u));
}

static inline float fa_bf2f(uint16_t h)
{
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t fa_f2bf(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static void fa_widen_base(const uint16_t *h, float *f, int64_t n, int bf16)
{
    if (bf16)
        for (int64_t j = 0; j < n; j++)
            f[j] = fa_bf2f(h[j]);
    else
        for (int64_t j = 0; j < n; j++)
            f[j] = fa_h2f(h[j]);
}

static void fa_narrow_base(const float *f, uint16_t *h, int64_t n, int bf16)
{
    if (bf16)
        for (int64_t j = 0; j < n; j++)
            h[j] = fa_f2bf(f[j]);
    else
        for (int64_t j = 0; j < n; j++)
            h[j] = fa_f2h(f[j]);
}

/* ------------------------------------------------------ AVX2 + F16C */

#if FA_X86
FA_TARGET_PUSH("avx2,f16c")

/* Software prefetch FA_HALF_PF bytes ahead in the half rows (one line per
 * 32 elements), as the float32 kernels do (FA_PF_BYTES): this VM's hardware
 * prefetch alone left the half path at DRAM latency. */
#ifndef FA_HALF_PF
#define FA_HALF_PF 4096
#endif
#define FA_HALF_PF_EVERY(j) (((j) & 31) == 0)

static void fa_widen_avx2(const uint16_t *h, float *f, int64_t n, int bf16)
{
    int64_t j = 0;
    if (bf16) {
        for (; j + 16 <= n; j += 16) {
            if (FA_HALF_PF_EVERY(j))
                FA_PREFETCH_LINES(h, j + FA_HALF_PF / 2, 0, 1);
            const __m256i a = _mm256_loadu_si256((const __m256i *)(h + j));
            const __m256i lo = _mm256_cvtepu16_epi32(_mm256_castsi256_si128(a));
            const __m256i hi = _mm256_cvtepu16_epi32(_mm256_extracti128_si256(a, 1));
            _mm256_storeu_ps(f + j, _mm256_castsi256_ps(_mm256_slli_epi32(lo, 16)));
            _mm256_storeu_ps(f + j + 8, _mm256_castsi256_ps(_mm256_slli_epi32(hi, 16)));
        }
    } else {
        for (; j + 16 <= n; j += 16) {
            if (FA_HALF_PF_EVERY(j))
                FA_PREFETCH_LINES(h, j + FA_HALF_PF / 2, 0, 1);
            const __m256i a = _mm256_loadu_si256((const __m256i *)(h + j));
            _mm256_storeu_ps(f + j, _mm256_cvtph_ps(_mm256_castsi256_si128(a)));
            _mm256_storeu_ps(f + j + 8, _mm256_cvtph_ps(_mm256_extracti128_si256(a, 1)));
        }
    }
    fa_widen_base(h + j, f + j, n - j, bf16);
}

/* 8 floats to 8 bfloat16 in the low 16 bits of each 32-bit lane. */
static inline __m256i fa_f2bf_avx2(__m256 v)
{
    const __m256i u = _mm256_castps_si256(v);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    const __m256i r = _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb);
    const __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
    const __m256i q = _mm256_or_si256(u, _mm256_set1_epi32(0x00400000));
    return _mm256_srli_epi32(_mm256_castps_si256(_mm256_blendv_ps(
                                 _mm256_castsi256_ps(r), _mm256_castsi256_ps(q), nan)),
                             16);
}

static void fa_narrow_avx2(const float *f, uint16_t *h, int64_t n, int bf16, int stream)
{
    int64_t j = 0, e = n;
    /* non-temporal stores on whole 64-byte lines only (see stream_span in
     * rows_reduce.h): a scalar head up to the first line, ordinary stores
     * from the last line boundary on */
    if (stream && ((uintptr_t)h & 1) == 0) {
        int64_t head = (int64_t)(((64 - (uintptr_t)h % 64) % 64) / 2);
        if (head > n)
            head = n;
        fa_narrow_base(f, h, head, bf16);
        j = head;
        e = n - (int64_t)(((uintptr_t)(h + n) % 64) / 2);
        if (e < j)
            e = j;
    } else {
        stream = 0;
    }
    if (bf16) {
        for (; j + 16 <= n; j += 16) {
            if (j == e)
                stream = 0;
            if (!stream && FA_HALF_PF_EVERY(j))
                FA_PREFETCH_LINES(h, j + FA_HALF_PF / 2, 1, 1);
            const __m256i a = fa_f2bf_avx2(_mm256_loadu_ps(f + j));
            const __m256i b = fa_f2bf_avx2(_mm256_loadu_ps(f + j + 8));
            /* packus per 128-bit lane: a0-3 b0-3 | a4-7 b4-7; then lanes 0 2 1 3 */
            const __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xd8);
            if (stream)
                _mm256_stream_si256((__m256i *)(h + j), p);
            else
                _mm256_storeu_si256((__m256i *)(h + j), p);
        }
    } else {
        for (; j + 16 <= n; j += 16) {
            if (j == e)
                stream = 0;
            if (!stream && FA_HALF_PF_EVERY(j))
                FA_PREFETCH_LINES(h, j + FA_HALF_PF / 2, 1, 1);
            const __m128i a = _mm256_cvtps_ph(_mm256_loadu_ps(f + j), _MM_FROUND_TO_NEAREST_INT);
            const __m128i b = _mm256_cvtps_ph(_mm256_loadu_ps(f + j + 8), _MM_FROUND_TO_NEAREST_INT);
            const __m256i p = _mm256_inserti128_si256(_mm256_castsi128_si256(a), b, 1);
            if (stream)
                _mm256_stream_si256((__m256i *)(h + j), p);
            else
                _mm256_storeu_si256((__m256i *)(h + j), p);
        }
    }
    fa_narrow_base(f + j, h + j, n - j, bf16);
}

FA_TARGET_POP()
#endif /* FA_X86 */

/* The conversion level: F16C comes with every AVX2 CPU we know of, but is
 * checked on its own; AVX-512 uses the AVX2 conversions. */
static int fa_half_cvt_isa(int isa)
{
#if FA_X86
    __builtin_cpu_init();
    if (isa >= FA_ISA_AVX2 && fa_cpu_isa() >= FA_ISA_AVX2 && __builtin_cpu_supports("f16c"))
        return FA_ISA_AVX2;
#else
    (void)isa;
#endif
    return FA_ISA_BASELINE;
}

static void fa_widen(int cvt, const uint16_t *h, float *f, int64_t n, int bf16)
{
#if FA_X86
    if (cvt >= FA_ISA_AVX2) {
        fa_widen_avx2(h, f, n, bf16);
        return;
    }
#endif
    (void)cvt;
    fa_widen_base(h, f, n, bf16);
}

static void fa_narrow(int cvt, const float *f, uint16_t *h, int64_t n, int bf16, int stream)
{
#if FA_X86
    if (cvt >= FA_ISA_AVX2) {
        fa_narrow_avx2(f, h, n, bf16, stream);
        return;
    }
#endif
    (void)cvt;
    (void)stream;
    fa_narrow_base(f, h, n, bf16);
}

/* The conversions on their own (tests, and callers with their own blocks). */
void fa_half_widen(int code, int isa, const void *src, float *dst, int64_t n)
{
    fa_widen(fa_half_cvt_isa(isa), (const uint16_t *)src, dst, n, (code & FA_BF16) != 0);
}

void fa_half_narrow(int code, int isa, const float *src, void *dst, int64_t n)
{
    fa_narrow(fa_half_cvt_isa(isa), src, (uint16_t *)dst, n, (code & FA_BF16) != 0, 0);
}

/* ------------------------------------------------------------ the blocks */

/* Take (returns 0 if it was free) and give back a slot flag, atomically
 * where threads exist (GCC/clang builtins); single-threaded otherwise. */
#if FA_HAVE_PTHREADS && (defined(__GNUC__) || defined(__clang__))
#define FA_SLOT_TAKE(p) __atomic_exchange_n((p), 1, __ATOMIC_ACQUIRE)
#define FA_SLOT_GIVE(p) __atomic_store_n((p), 0, __ATOMIC_RELEASE)
#define FA_SET_FAILED(p) __atomic_store_n((p), 1, __ATOMIC_RELAXED)
#else
#define FA_SLOT_TAKE(p) (*(p) ? 1 : (*(p) = 1, 0))
#define FA_SLOT_GIVE(p) (*(p) = 0)
#define FA_SET_FAILED(p) (*(p) = 1)
#endif

/* The per-thread scratch of a driver (this file's and transform.c's),
 * allocated before any part runs (so that a failure leaves every output
 * untouched): nslots buffers of slot_bytes, 64-byte aligned, one per thread
 * of fa_run, then their flags busy[s], in one allocation (mem); a part takes
 * a free one. */
typedef struct {
    char *mem;
    size_t slot_bytes;
    int nslots;
    int *busy;
    int failed; /* a part found no free slot and could not allocate its own */
} fa_slots;

/* nslots slots of at least `bytes` each; -1 when the allocation fails. */
static int fa_slots_alloc(fa_slots *S, int nslots, size_t bytes)
{
    S->slot_bytes = (bytes + 64 + 63) / 64 * 64;
    S->nslots = nslots;
    S->failed = 0;
    S->mem = (char *)malloc((size_t)nslots * (S->slot_bytes + sizeof(int)));
    if (!S->mem)
        return -1;
    S->busy = (int *)(S->mem + (size_t)nslots * S->slot_bytes);
    memset(S->busy, 0, (size_t)nslots * sizeof(int));
    return 0;
}

/* A part's scratch: a free slot (*slot its index), or, when none is free,
 * its own malloc (*own, freed by fa_slots_give); NULL with S->failed set
 * when that fails.  64-byte aligned. */
static char *fa_slots_take(fa_slots *S, int *slot, char **own)
{
    *slot = -1;
    *own = NULL;
    for (int t = 0; t < S->nslots && *slot < 0; t++)
        if (!FA_SLOT_TAKE(&S->busy[t]))
            *slot = t;
    /* no free slot: more threads than fa_run asked for woke up (spurious
     * wake-ups in the pool); such a part allocates its own scratch */
    if (*slot < 0 && !(*own = (char *)malloc(S->slot_bytes + 64))) {
        FA_SET_FAILED(&S->failed);
        return NULL;
    }
    char *mem = *slot >= 0 ? S->mem + (size_t)*slot * S->slot_bytes : *own;
    return mem + ((64 - (uintptr_t)mem % 64) % 64);
}

static void fa_slots_give(fa_slots *S, int slot, char *own)
{
    if (slot >= 0)
        FA_SLOT_GIVE(&S->busy[slot]);
    free(own);
}

/* Rows per block of a driver: as many rows of k elements of elem_bytes as
 * fit in budget (at least 1), at the row-tile boundaries of fa_part for
 * short rows (k <= FA_TILE_ROWS). */
static int64_t fa_block_rows(int64_t budget, int64_t k, int64_t elem_bytes)
{
    int64_t B = budget / ((k > 0 ? k : 1) * elem_bytes);
    if (k <= FA_TILE_ROWS)
        B = B / FA_TILE_ROWS * FA_TILE_ROWS;
    return B < 1 ? 1 : B;
}

/* One call's job.  `a` first: fa_run hands &job->a to fa_half_part, which
 * casts it back.  a's pointers are the caller's (half rows, float32 per-row
 * data); out and sign are per row when row_out (logsumexp). */
typedef struct {
    fa_args a;
    fa_rows_fn fn; /* the float32 kernel */
    int bf16, cvt, row_out, stream;
    int64_t block; /* rows per block */
    fa_slots sc;   /* the per-thread scratch */
} fa_half_job;

#define FA_HALF_ROW(p, i, k) ((const uint16_t *)(p) + (i) * (k))

/* Scratch rows per block row: one per widened input (a cross-entropy
 * gradient is written over the widened x, which the kernels allow). */
static int fa_half_nbuf(const fa_args *a)
{
    return 1 + (a->y != NULL) + (a->b != NULL) + (a->tprob != NULL);
}

static void fa_half_part(const fa_args *A, int64_t r0, int64_t r1)
{
    const fa_half_job *J = (const fa_half_job *)A;
    const int64_t k = A->k, B = J->block;
    const int bf = J->bf16, cvt = J->cvt;
    int slot;
    char *own;
    /* A is the caller's (non-const) job */
    fa_slots *sc = &((fa_half_job *)A)->sc; /* A is the caller's (non-const) job */
    float *s = (float *)fa_slots_take(sc, &slot, &own);
    if (!s)
        return;
    float *xs = s, *p = s + B * k;
    float *ys = NULL, *bs = NULL, *ts = NULL;
    if (A->y) {
        ys = p;
        p += B * k;
    }
    if (A->b) {
        bs = p;
        p += B * k;
    }
    if (A->tprob) {
        ts = p;
        p += B * k;
    }
    float *gs = xs; /* the gradient in place over x */
    float *ro = p, *rs = p + B; /* logsumexp's per-row out and sign */
    for (int64_t i0 = r0; i0 < r1; i0 += B) {
        const int64_t m = r1 - i0 < B ? r1 - i0 : B, e = m * k;
        fa_args s2 = *A;
        s2.n = m;
        s2.stream = 0;
        fa_widen(cvt, FA_HALF_ROW(A->x, i0, k), xs, e, bf);
        s2.x = xs;
        if (ys) {
            fa_widen(cvt, FA_HALF_ROW(A->y, i0, k), ys, e, bf);
            s2.y = ys;
        }
        if (bs) {
            fa_widen(cvt, FA_HALF_ROW(A->b, i0, k), bs, e, bf);
            s2.b = bs;
        }
        if (ts) {
            fa_widen(cvt, FA_HALF_ROW(A->tprob, i0, k), ts, e, bf);
            s2.tprob = ts;
        }
        s2.mask = A->mask ? A->mask + i0 * k : NULL;
        s2.target = A->target ? A->target + i0 : NULL;
        s2.row_scale = A->row_scale ? (const float *)A->row_scale + i0 : NULL;
        s2.loss = A->loss ? (float *)A->loss + i0 : NULL;
        if (J->row_out) {
            s2.out = ro;
            s2.sign = A->sign ? rs : NULL;
        } else {
            s2.out = A->out ? xs : NULL;
            s2.sign = NULL;
        }
        s2.grad = A->grad ? gs : NULL;
        J->fn(&s2, 0, m);
        if (J->row_out) {
            fa_narrow(cvt, ro, (uint16_t *)A->out + i0, m, bf, 0);
            if (A->sign)
                fa_narrow(cvt, rs, (uint16_t *)A->sign + i0, m, bf, 0);
        } else if (A->out || A->grad) {
            uint16_t *o = (uint16_t *)(A->out ? A->out : A->grad) + i0 * k;
            fa_narrow(cvt, A->out ? xs : gs, o, e, bf, J->stream);
        }
    }
#if FA_X86
    if (J->stream && cvt >= FA_ISA_AVX2)
        _mm_sfence();
#endif
    fa_slots_give(sc, slot, own);
}

/* Runs the float32 kernel of `tab` over a's half rows (code: 2 float16,
 * 2 | FA_BF16 bfloat16); row_out: out/sign are per row (logsumexp).
 * Returns 0, or -1 when the scratch could not be allocated (then nothing was
 * written; -1 after a run only if an extra thread's own scratch failed). */
static int fa_half_run(const fa_rows_fn tab[3][2], int code, int isa, const fa_args *a,
                        int nthreads, int row_out)
{
    fa_half_job J;
    memset(&J, 0, sizeof J);
    J.a = *a;
    J.fn = fa_pick(tab, 4, isa);
    J.bf16 = (code & FA_BF16) != 0;
    J.cvt = fa_half_cvt_isa(isa);
    J.row_out = row_out;
    J.a.stream = 0;
    /* large outputs: non-temporal stores, from a quarter of FA_STREAM_BYTES of
     * half output (input + output then pass a core's share of the L3 as the
     * float32 ones do at FA_STREAM_BYTES); 1 thread, 4096x1000 float16
     * log_softmax 3.53 -> 3.28 ms (unstreamed at 8 MB of output) */
    J.stream = !row_out && (a->out || a->grad) && fa_stream_out(a->n, a->k, 8);
    const int nin = fa_half_nbuf(a);
    const int64_t k = a->k > 0 ? a->k : 1;
    const int64_t B = fa_block_rows(FA_HALF_SCRATCH, k, nin * (int64_t)sizeof(float));
    J.block = B;
    const int64_t nrow = row_out ? 2 * B : 0;
    if (fa_slots_alloc(&J.sc, (int)fa_threads(a->n, a->k, nthreads),
                       (size_t)(nin * B * k + nrow) * sizeof(float)))
        return -1;
    fa_run(fa_half_part, &J.a, nthreads);
    free(J.sc.mem);
    return J.sc.failed ? -1 : 0;
}
