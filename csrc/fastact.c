/* fastact C kernels: ISA vocabularies, run-time dispatch and row threads.
 *
 * The kernels are written once in rows_template.c against a small vector
 * vocabulary (T, V, VL, v_add, v_fma, v_max, ...).  This file defines that
 * vocabulary for each (ISA, dtype) pair and includes the template once per
 * pair: baseline (plain C, VL = 1, left to the auto-vectoriser), AVX2+FMA and
 * AVX-512F, each for float32 and float64.  The x86 expansions are compiled
 * under a target pragma, so the file builds without -m flags and the choice
 * is made per call from what the CPU reports (fa_cpu_isa).
 */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fastact.h"

#if !defined(_WIN32)
#include <pthread.h>
#define FA_HAVE_PTHREADS 1
#else
#define FA_HAVE_PTHREADS 0
#endif

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define FA_X86 1
#ifndef FA_USE_TILES
#define FA_USE_TILES 1
#endif
#include <immintrin.h>
#else
#define FA_X86 0
#define FA_USE_TILES 0
#endif

/* For helpers called with constant flags, so that each call site gets its
 * own loop without the flag tests. */
#if defined(__GNUC__) || defined(__clang__)
#define FA_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define FA_ALWAYS_INLINE inline
#endif

/* Prefetch the cache lines of [p + j, p + j + bytes) (rw: 1 for a write).
 * Integer arithmetic: the lines may lie past the end of the array, where a
 * prefetch is harmless but pointer arithmetic would not be. */
#if defined(__GNUC__) || defined(__clang__)
#define FA_PREFETCH_LINES(p, j, rw, bytes)                                       \
    do {                                                                         \
        const uintptr_t fa_pa_ = (uintptr_t)(p) + (uintptr_t)(j) * sizeof(*(p)); \
        for (size_t fa_o_ = 0; fa_o_ < (bytes); fa_o_ += 64)                     \
            __builtin_prefetch((const void *)(fa_pa_ + fa_o_), (rw), 3);         \
    } while (0)
#else
#define FA_PREFETCH_LINES(p, j, rw, bytes) ((void)0)
#endif

/* Arguments of every row kernel; unused fields stay 0/NULL.  For the backward
 * kernels x is `grad`; for cross entropy with probabilities tprob is the
 * target. */
typedef struct fa_args {
    const void *x, *y, *b, *tprob, *weight, *row_scale;
    const unsigned char *mask;
    const int64_t *target;
    void *out, *sign, *loss, *grad;
    int64_t n, k, ignore_index;
    double eps, z_loss, a, b_coef, g, wsum;
    int stream; /* softmax/log_softmax: write the result with non-temporal stores */
} fa_args;

typedef void (*fa_rows_fn)(const fa_args *, int64_t r0, int64_t r1);

/* exp constants.  MAGIC_BIAS = 1.5 * 2^p + exponent bias: adding it rounds
 * x log2(e) to an integer n and leaves n + bias in the low mantissa bits,
 * ready to be shifted into the exponent field.  The fast path covers
 * [FAST_LO, FAST_HI] (2^n normal); other lanes take the slow path, which
 * clamps to [SLOW_LO, SLOW_HI] (below: 0, above: +inf). */
#define F32_LOG2E 0x1.715476p+0f
#define F32_MAGIC 0x1.8p23f
#define F32_MAGIC_BIAS 0x1.8000FEp23f
#define F32_LN2_HI 0x1.62E400p-1f
#define F32_LN2_LO 0x1.7F7D1Cp-20f
#define F64_LOG2E 0x1.71547652B82FEp+0
#define F64_MAGIC 0x1.8p52
#define F64_MAGIC_BIAS (0x1.8p52 + 1023.0)
#define F64_LN2_HI 6.93147180369123816490e-01
#define F64_LN2_LO 1.90821492927058770002e-10

static inline float fa_shl_exp_f32(float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    u <<= 23;
    memcpy(&v, &u, 4);
    return v;
}

static inline double fa_shl_exp_f64(double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    u <<= 52;
    memcpy(&v, &u, 8);
    return v;
}

/* ======================================================= baseline, VL = 1 */

#define T float
#define IS_F64 0
#define SFX f32_base
#define EXP_LOG2E F32_LOG2E
#define EXP_MAGIC F32_MAGIC
#define EXP_MAGIC_BIAS F32_MAGIC_BIAS
#define EXP_LN2_HI F32_LN2_HI
#define EXP_LN2_LO F32_LN2_LO
#define EXP_FAST_LO (-87.0f)
#define EXP_FAST_HI 88.0f
#define EXP_SLOW_LO (-104.0f)
#define EXP_SLOW_HI 89.0f
#define v_shl_exp(v) fa_shl_exp_f32(v)
#define V T
#define VM int
#define VTM int
#define VL 1
#define HAVE_GATHER 0
#define HAVE_TILES 0
#define HAVE_SCALEF 0
#define HAVE_EXP_LUT 0
#define v_zero() ((T)0)
#define v_set1(a) ((T)(a))
#define v_load(p) (*(p))
#define v_store(p, v) (*(p) = (v))
#define v_add(a, b) ((a) + (b))
#define v_sub(a, b) ((a) - (b))
#define v_mul(a, b) ((a) * (b))
#define v_div(a, b) ((a) / (b))
#define v_fma(a, b, c) ((a) * (b) + (c))
#define v_max(x, acc) ((x) > (acc) ? (x) : (acc))
#define v_min(a, b) ((a) < (b) ? (a) : (b))
#define v_lt(a, b) ((a) < (b))
#define v_gt(a, b) ((a) > (b))
#define v_ne(a, b) ((a) != (b))
#define m_or(a, b) ((a) | (b))
#define m_and(a, b) ((a) & (b))
#define m_any(m) (m)
#define m_true() 1
#define m_bytes(p) (*(p) != 0)
#define v_select(m, a, b) ((m) ? (a) : (b))
#define v_add_if(acc, m, e) ((m) ? (acc) + (e) : (acc))
#define v_add_neg(acc, d, e) (signbit(d) ? (acc) + (e) : (acc))
#define v_hmax(v) (v)
#define v_hsum_d(v) ((double)(v))
#define v_tailmask(n) ((int)(n))
#define m_tail(tm) ((tm) > 0)
#define v_load_tail(p, tm, fill) ((tm) > 0 ? *(p) : (fill))
#define v_store_tail(p, tm, v) ((tm) > 0 ? (void)(*(p) = (v)) : (void)0)
#define v_stream(p, v) (*(p) = (v))
#define v_sfence() ((void)0)
#include "rows_template.c"

#define T double
#define IS_F64 1
#define SFX f64_base
#define EXP_LOG2E F64_LOG2E
#define EXP_MAGIC F64_MAGIC
#define EXP_MAGIC_BIAS F64_MAGIC_BIAS
#define EXP_LN2_HI F64_LN2_HI
#define EXP_LN2_LO F64_LN2_LO
#define EXP_FAST_LO (-708.0)
#define EXP_FAST_HI 709.0
#define EXP_SLOW_LO (-746.0)
#define EXP_SLOW_HI 710.0
#define v_shl_exp(v) fa_shl_exp_f64(v)
#define V T
#define VM int
#define VTM int
#define VL 1
#define HAVE_GATHER 0
#define HAVE_TILES 0
#define HAVE_SCALEF 0
#define HAVE_EXP_LUT 0
#define v_zero() ((T)0)
#define v_set1(a) ((T)(a))
#define v_load(p) (*(p))
#define v_store(p, v) (*(p) = (v))
#define v_add(a, b) ((a) + (b))
#define v_sub(a, b) ((a) - (b))
#define v_mul(a, b) ((a) * (b))
#define v_div(a, b) ((a) / (b))
#define v_fma(a, b, c) ((a) * (b) + (c))
#define v_max(x, acc) ((x) > (acc) ? (x) : (acc))
#define v_min(a, b) ((a) < (b) ? (a) : (b))
#define v_lt(a, b) ((a) < (b))
#define v_gt(a, b) ((a) > (b))
#define v_ne(a, b) ((a) != (b))
#define m_or(a, b) ((a) | (b))
#define m_and(a, b) ((a) & (b))
#define m_any(m) (m)
#define m_true() 1
#define m_bytes(p) (*(p) != 0)
#define v_select(m, a, b) ((m) ? (a) : (b))
#define v_add_if(acc, m, e) ((m) ? (acc) + (e) : (acc))
#define v_add_neg(acc, d, e) (signbit(d) ? (acc) + (e) : (acc))
#define v_hmax(v) (v)
#define v_hsum_d(v) ((double)(v))
#define v_tailmask(n) ((int)(n))
#define m_tail(tm) ((tm) > 0)
#define v_load_tail(p, tm, fill) ((tm) > 0 ? *(p) : (fill))
#define v_store_tail(p, tm, v) ((tm) > 0 ? (void)(*(p) = (v)) : (void)0)
#define v_stream(p, v) (*(p) = (v))
#define v_sfence() ((void)0)
#include "rows_template.c"

#if FA_X86
/* ======================================================== AVX2 + FMA */

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif

/* Row-end masks: n leading all-ones lanes start at fa_tail32 + 8 - n. */
static const int32_t fa_tail32[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
static const int64_t fa_tail64[8] = {-1, -1, -1, -1, 0, 0, 0, 0};

static inline float avx2_hmax_f32(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

static inline double avx2_hsum_d_f32(__m256 v)
{
    __m256d d = _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)),
                              _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(d), _mm256_extractf128_pd(d, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

static inline double avx2_hmax_f64(__m256d v)
{
    __m128d m = _mm_max_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_max_sd(m, _mm_unpackhi_pd(m, m)));
}

static inline double avx2_hsum_d_f64(__m256d v)
{
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

static inline __m256 avx2_mbytes_f32(const unsigned char *p)
{
    __m256i w = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
    __m256i z = _mm256_cmpeq_epi32(w, _mm256_setzero_si256());
    return _mm256_castsi256_ps(_mm256_xor_si256(z, _mm256_set1_epi32(-1)));
}

static inline __m256d avx2_mbytes_f64(const unsigned char *p)
{
    int32_t u;
    memcpy(&u, p, 4);
    __m256i w = _mm256_cvtepu8_epi64(_mm_cvtsi32_si128(u));
    __m256i z = _mm256_cmpeq_epi64(w, _mm256_setzero_si256());
    return _mm256_castsi256_pd(_mm256_xor_si256(z, _mm256_set1_epi64x(-1)));
}

/* Columns c0 .. c0 + w - 1 (w <= 8) of a tile of 8 rows of k floats (see
 * avx512_tile_cols_f32): 8 masked row loads and an 8x8 transpose (3 x 8
 * shuffles); columns c0 + 8 .. written as zeros past w. */
static inline void avx2_tile_cols8_f32(const float *x, int64_t k, int64_t c0, int64_t w, float *buf)
{
    const __m256i km = _mm256_loadu_si256((const __m256i *)(fa_tail32 + 8 - w));
    __m256 r[8], t[8];
    x += c0;
    buf += 8 * c0;
    for (int i = 0; i < 8; i++)
        r[i] = _mm256_maskload_ps(x + i * k, km);
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) { /* r[i + m], half h: column 4 h + m of rows i..i+3 */
        r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);
        r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);
    }
    for (int m = 0; m < 4; m++) {
        _mm256_storeu_ps(buf + 8 * m, _mm256_permute2f128_ps(r[m], r[4 + m], 0x20));
        _mm256_storeu_ps(buf + 8 * (4 + m), _mm256_permute2f128_ps(r[m], r[4 + m], 0x31));
    }
}

/* Columns of a tile of 8 rows of k <= 16 floats: one or two 8x8 transposes. */
static inline void avx2_tile_cols_f32(const float *x, int64_t k, float *buf)
{
    avx2_tile_cols8_f32(x, k, 0, k < 8 ? k : 8, buf);
    if (k > 8)
        avx2_tile_cols8_f32(x, k, 8, k - 8, buf);
}

#define T float
#define IS_F64 0
#define SFX f32_avx2
#define EXP_LOG2E F32_LOG2E
#define EXP_MAGIC F32_MAGIC
#define EXP_MAGIC_BIAS F32_MAGIC_BIAS
#define EXP_LN2_HI F32_LN2_HI
#define EXP_LN2_LO F32_LN2_LO
#define EXP_FAST_LO (-87.0f)
#define EXP_FAST_HI 88.0f
#define EXP_SLOW_LO (-104.0f)
#define EXP_SLOW_HI 89.0f
#define V __m256
#define VM __m256
#define VTM __m256i
#define VL 8
#define HAVE_GATHER 1
#define HAVE_TILES 1
#define HAVE_SCALEF 0
#define HAVE_EXP_LUT 0
#define HAVE_TILE_COLS 1
#define v_tile_cols(x, k, buf) avx2_tile_cols_f32((x), (k), (buf))
#define TILE_MAX_K 16 /* two 8x8 transposes per tile */
#define v_permute(idx, v) _mm256_permutevar8x32_ps((v), _mm256_loadu_si256((const __m256i *)(idx)))
#define v_zero() _mm256_setzero_ps()
#define v_set1(a) _mm256_set1_ps((float)(a))
#define v_load(p) _mm256_loadu_ps(p)
#define v_store(p, v) _mm256_storeu_ps((p), (v))
#define v_add _mm256_add_ps
#define v_sub _mm256_sub_ps
#define v_mul _mm256_mul_ps
#define v_div _mm256_div_ps
#define v_fma _mm256_fmadd_ps
#define v_max _mm256_max_ps
#define v_min _mm256_min_ps
#define v_lt(a, b) _mm256_cmp_ps((a), (b), _CMP_LT_OQ)
#define v_gt(a, b) _mm256_cmp_ps((a), (b), _CMP_GT_OQ)
#define v_ne(a, b) _mm256_cmp_ps((a), (b), _CMP_NEQ_UQ)
#define m_or _mm256_or_ps
#define m_and _mm256_and_ps
#define m_any(m) (_mm256_movemask_ps(m) != 0)
#define m_true() _mm256_castsi256_ps(_mm256_set1_epi32(-1))
#define m_bytes(p) avx2_mbytes_f32(p)
#define v_select(m, a, b) _mm256_blendv_ps((b), (a), (m))
#define v_add_if(acc, m, e) _mm256_add_ps((acc), _mm256_and_ps((m), (e)))
#define v_add_neg(acc, d, e) _mm256_add_ps((acc), _mm256_blendv_ps(_mm256_setzero_ps(), (e), (d)))
#define v_shl_exp(v) _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(v), 23))
#define v_hmax(v) avx2_hmax_f32(v)
#define v_hsum_d(v) avx2_hsum_d_f32(v)
#define v_tailmask(n) _mm256_loadu_si256((const __m256i *)(fa_tail32 + 8 - (n)))
#define m_tail(tm) _mm256_castsi256_ps(tm)
#define v_load_tail(p, tm, fill) \
    _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps((p), (tm)), _mm256_castsi256_ps(tm))
#define v_store_tail(p, tm, v) _mm256_maskstore_ps((p), (tm), (v))
#define v_gather(base, idx) _mm256_i32gather_ps((base), _mm256_loadu_si256((const __m256i *)(idx)), 4)
#define v_exp_field(v) _mm256_cvtepi32_ps(_mm256_srli_epi32(_mm256_castps_si256(v), 23))
#define v_mant_half(v)                                                                   \
    _mm256_castsi256_ps(_mm256_or_si256(                                                 \
        _mm256_and_si256(_mm256_castps_si256(v), _mm256_set1_epi32(0x007FFFFF)), \
        _mm256_set1_epi32(0x3F000000)))
#define v_stream(p, v) _mm256_stream_ps((p), (v))
#define v_sfence() _mm_sfence()
#include "rows_template.c"

#define T double
#define IS_F64 1
#define SFX f64_avx2
#define EXP_LOG2E F64_LOG2E
#define EXP_MAGIC F64_MAGIC
#define EXP_MAGIC_BIAS F64_MAGIC_BIAS
#define EXP_LN2_HI F64_LN2_HI
#define EXP_LN2_LO F64_LN2_LO
#define EXP_FAST_LO (-708.0)
#define EXP_FAST_HI 709.0
#define EXP_SLOW_LO (-746.0)
#define EXP_SLOW_HI 710.0
#define V __m256d
#define VM __m256d
#define VTM __m256i
#define VL 4
#define HAVE_GATHER 1
#define HAVE_TILES 0
#define HAVE_SCALEF 0
#define HAVE_EXP_LUT 0
#define v_zero() _mm256_setzero_pd()
#define v_set1(a) _mm256_set1_pd((double)(a))
#define v_load(p) _mm256_loadu_pd(p)
#define v_store(p, v) _mm256_storeu_pd((p), (v))
#define v_add _mm256_add_pd
#define v_sub _mm256_sub_pd
#define v_mul _mm256_mul_pd
#define v_div _mm256_div_pd
#define v_fma _mm256_fmadd_pd
#define v_max _mm256_max_pd
#define v_min _mm256_min_pd
#define v_lt(a, b) _mm256_cmp_pd((a), (b), _CMP_LT_OQ)
#define v_gt(a, b) _mm256_cmp_pd((a), (b), _CMP_GT_OQ)
#define v_ne(a, b) _mm256_cmp_pd((a), (b), _CMP_NEQ_UQ)
#define m_or _mm256_or_pd
#define m_and _mm256_and_pd
#define m_any(m) (_mm256_movemask_pd(m) != 0)
#define m_true() _mm256_castsi256_pd(_mm256_set1_epi64x(-1))
#define m_bytes(p) avx2_mbytes_f64(p)
#define v_select(m, a, b) _mm256_blendv_pd((b), (a), (m))
#define v_add_if(acc, m, e) _mm256_add_pd((acc), _mm256_and_pd((m), (e)))
#define v_add_neg(acc, d, e) _mm256_add_pd((acc), _mm256_blendv_pd(_mm256_setzero_pd(), (e), (d)))
#define v_shl_exp(v) _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_castpd_si256(v), 52))
#define v_hmax(v) avx2_hmax_f64(v)
#define v_hsum_d(v) avx2_hsum_d_f64(v)
#define v_tailmask(n) _mm256_loadu_si256((const __m256i *)(fa_tail64 + 4 - (n)))
#define m_tail(tm) _mm256_castsi256_pd(tm)
#define v_load_tail(p, tm, fill) \
    _mm256_blendv_pd(_mm256_set1_pd(fill), _mm256_maskload_pd((p), (tm)), _mm256_castsi256_pd(tm))
#define v_store_tail(p, tm, v) _mm256_maskstore_pd((p), (tm), (v))
#define v_gather(base, idx) _mm256_i32gather_pd((base), _mm_loadu_si128((const __m128i *)(idx)), 8)
#define v_stream(p, v) _mm256_stream_pd((p), (v))
#define v_sfence() _mm_sfence()
#include "rows_template.c"

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

/* ============================================================ AVX-512F */

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#endif

static inline double avx512_hsum_d_f32(__m512 v)
{
    __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    return _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
}

static inline __mmask16 avx512_mbytes_f32(const unsigned char *p)
{
    __m512i w = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm512_test_epi32_mask(w, w);
}

static inline __mmask8 avx512_mbytes_f64(const unsigned char *p)
{
    __m512i w = _mm512_cvtepu8_epi64(_mm_loadl_epi64((const __m128i *)p));
    return _mm512_test_epi64_mask(w, w);
}

/* 2^(j/32) rounded to float32, minus j << 18 in the bit pattern: adding the
 * bits of n = MAGIC + N shifted left by 18 then adds (N >> 5) to the exponent
 * field and cancels the j = N & 31 left in bits 18..22 (see vexp_nonpos). */
static const int32_t fa_exp2_lut32[32] = {
    0x3F800000, 0x3F7ECD87, 0x3F7DAAC3, 0x3F7C980F, 0x3F7B95C2, 0x3F7AA43A, 0x3F79C3D3, 0x3F78F4F0,
    0x3F7837F0, 0x3F778D3A, 0x3F76F532, 0x3F767043, 0x3F75FED7, 0x3F75A15B, 0x3F75583F, 0x3F7523F6,
    0x3F7504F3, 0x3F74FBAF, 0x3F7508A4, 0x3F752C4D, 0x3F75672A, 0x3F75B9BE, 0x3F76248C, 0x3F76A81E,
    0x3F7744FD, 0x3F77FBB8, 0x3F78CCDF, 0x3F79B907, 0x3F7AC0C7, 0x3F7BE4BA, 0x3F7D257D, 0x3F7E83B3,
};

/* 2^(N/32) for n = MAGIC + N (N in the low mantissa bits, -4032 <= N <= 0). */
static inline __m512 avx512_exp_lut_f32(__m512 n)
{
    const __m512i nb = _mm512_castps_si512(n);
    const __m512i tb = _mm512_permutex2var_epi32(_mm512_loadu_si512((const void *)fa_exp2_lut32), nb,
                                                 _mm512_loadu_si512((const void *)(fa_exp2_lut32 + 16)));
    return _mm512_castsi512_ps(_mm512_add_epi32(tb, _mm512_slli_epi32(nb, 18)));
}

/* Columns of a tile of 16 rows of k <= 16 floats at x (row r at x + r k):
 * column j (lanes = rows) stored at buf + 16 j, for all 16 j (columns at or
 * past k hold zeros).  16 masked row loads and a 16x16 transpose in registers
 * (4 x 16 shuffles) instead of k gathers (~5x faster per column here). */
static inline void avx512_tile_cols_f32(const float *x, int64_t k, float *buf)
{
    const __mmask16 km = (__mmask16)((1u << k) - 1u);
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++)
        r[i] = _mm512_maskz_loadu_ps(km, x + i * k);
    for (int i = 0; i < 16; i += 2) { /* per 128-bit lane: a0 b0 a1 b1 / a2 b2 a3 b3 */
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) { /* r[i + m], lane L: column 4 L + m of rows i..i+3 */
        const __m512d t0 = _mm512_castps_pd(t[i]), t1 = _mm512_castps_pd(t[i + 1]);
        const __m512d t2 = _mm512_castps_pd(t[i + 2]), t3 = _mm512_castps_pd(t[i + 3]);
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
    }
    for (int m = 0; m < 4; m++) {
        const __m512 ab0 = _mm512_shuffle_f32x4(r[m], r[4 + m], 0x88);   /* lanes 0, 2 */
        const __m512 ab1 = _mm512_shuffle_f32x4(r[m], r[4 + m], 0xdd);   /* lanes 1, 3 */
        const __m512 cd0 = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0x88);
        const __m512 cd1 = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0xdd);
        _mm512_storeu_ps(buf + 16 * m, _mm512_shuffle_f32x4(ab0, cd0, 0x88));
        _mm512_storeu_ps(buf + 16 * (8 + m), _mm512_shuffle_f32x4(ab0, cd0, 0xdd));
        _mm512_storeu_ps(buf + 16 * (4 + m), _mm512_shuffle_f32x4(ab1, cd1, 0x88));
        _mm512_storeu_ps(buf + 16 * (12 + m), _mm512_shuffle_f32x4(ab1, cd1, 0xdd));
    }
}

#define T float
#define IS_F64 0
#define SFX f32_avx512
#define EXP_LOG2E F32_LOG2E
#define EXP_MAGIC F32_MAGIC
#define EXP_MAGIC_BIAS F32_MAGIC_BIAS
#define EXP_LN2_HI F32_LN2_HI
#define EXP_LN2_LO F32_LN2_LO
#define EXP_FAST_LO (-87.0f)
#define EXP_FAST_HI 88.0f
#define EXP_SLOW_LO (-104.0f)
#define EXP_SLOW_HI 89.0f
#define V __m512
#define VM __mmask16
#define VTM __mmask16
#define VL 16
#define HAVE_GATHER 1
#define HAVE_TILES 1
#define HAVE_SCALEF 1
#define HAVE_EXP_LUT 1
#define HAVE_TILE_COLS 1
#define v_tile_cols(x, k, buf) avx512_tile_cols_f32((x), (k), (buf))
#define v_exp_lut(n) avx512_exp_lut_f32(n)
#define v_permute(idx, v) _mm512_permutexvar_ps(_mm512_loadu_si512((const void *)(idx)), (v))
#define v_round(v) _mm512_roundscale_ps((v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define v_scalef _mm512_scalef_ps
#define v_zero() _mm512_setzero_ps()
#define v_set1(a) _mm512_set1_ps((float)(a))
#define v_load(p) _mm512_loadu_ps(p)
#define v_store(p, v) _mm512_storeu_ps((p), (v))
#define v_add _mm512_add_ps
#define v_sub _mm512_sub_ps
#define v_mul _mm512_mul_ps
#define v_div _mm512_div_ps
#define v_fma _mm512_fmadd_ps
#define v_max _mm512_max_ps
#define v_min _mm512_min_ps
#define v_lt(a, b) _mm512_cmp_ps_mask((a), (b), _CMP_LT_OQ)
#define v_gt(a, b) _mm512_cmp_ps_mask((a), (b), _CMP_GT_OQ)
#define v_ne(a, b) _mm512_cmp_ps_mask((a), (b), _CMP_NEQ_UQ)
#define m_or(a, b) ((__mmask16)((a) | (b)))
#define m_and(a, b) ((__mmask16)((a) & (b)))
#define m_any(m) ((m) != 0)
#define m_true() ((__mmask16)0xFFFF)
#define m_bytes(p) avx512_mbytes_f32(p)
#define v_select(m, a, b) _mm512_mask_blend_ps((m), (b), (a))
#define v_add_if(acc, m, e) _mm512_mask_add_ps((acc), (m), (acc), (e))
#define v_add_neg(acc, d, e) _mm512_mask_add_ps((acc), _mm512_cmp_ps_mask((d), _mm512_setzero_ps(), _CMP_LT_OQ), (acc), (e))
#define v_shl_exp(v) _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_castps_si512(v), 23))
#define v_hmax(v) _mm512_reduce_max_ps(v)
#define v_hsum_d(v) avx512_hsum_d_f32(v)
#define v_tailmask(n) ((__mmask16)((1u << (n)) - 1u))
#define m_tail(tm) (tm)
#define v_load_tail(p, tm, fill) _mm512_mask_loadu_ps(_mm512_set1_ps(fill), (tm), (p))
#define v_store_tail(p, tm, v) _mm512_mask_storeu_ps((p), (tm), (v))
#define v_gather(base, idx) _mm512_i32gather_ps(_mm512_loadu_si512((const void *)(idx)), (base), 4)
#define v_exp_field(v) _mm512_cvtepi32_ps(_mm512_srli_epi32(_mm512_castps_si512(v), 23))
#define v_mant_half(v)                                                                   \
    _mm512_castsi512_ps(_mm512_or_si512(                                                 \
        _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x007FFFFF)), \
        _mm512_set1_epi32(0x3F000000)))
#define v_stream(p, v) _mm512_stream_ps((p), (v))
#define v_sfence() _mm_sfence()
#include "rows_template.c"

#define T double
#define IS_F64 1
#define SFX f64_avx512
#define EXP_LOG2E F64_LOG2E
#define EXP_MAGIC F64_MAGIC
#define EXP_MAGIC_BIAS F64_MAGIC_BIAS
#define EXP_LN2_HI F64_LN2_HI
#define EXP_LN2_LO F64_LN2_LO
#define EXP_FAST_LO (-708.0)
#define EXP_FAST_HI 709.0
#define EXP_SLOW_LO (-746.0)
#define EXP_SLOW_HI 710.0
#define V __m512d
#define VM __mmask8
#define VTM __mmask8
#define VL 8
#define HAVE_GATHER 1
#define HAVE_TILES 1
#define HAVE_SCALEF 1
#define HAVE_EXP_LUT 0
#define v_permute(idx, v) \
    _mm512_permutexvar_pd(_mm512_cvtepu32_epi64(_mm256_loadu_si256((const __m256i *)(idx))), (v))
#define v_round(v) _mm512_roundscale_pd((v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define v_scalef _mm512_scalef_pd
#define v_zero() _mm512_setzero_pd()
#define v_set1(a) _mm512_set1_pd((double)(a))
#define v_load(p) _mm512_loadu_pd(p)
#define v_store(p, v) _mm512_storeu_pd((p), (v))
#define v_add _mm512_add_pd
#define v_sub _mm512_sub_pd
#define v_mul _mm512_mul_pd
#define v_div _mm512_div_pd
#define v_fma _mm512_fmadd_pd
#define v_max _mm512_max_pd
#define v_min _mm512_min_pd
#define v_lt(a, b) _mm512_cmp_pd_mask((a), (b), _CMP_LT_OQ)
#define v_gt(a, b) _mm512_cmp_pd_mask((a), (b), _CMP_GT_OQ)
#define v_ne(a, b) _mm512_cmp_pd_mask((a), (b), _CMP_NEQ_UQ)
#define m_or(a, b) ((__mmask8)((a) | (b)))
#define m_and(a, b) ((__mmask8)((a) & (b)))
#define m_any(m) ((m) != 0)
#define m_true() ((__mmask8)0xFF)
#define m_bytes(p) avx512_mbytes_f64(p)
#define v_select(m, a, b) _mm512_mask_blend_pd((m), (b), (a))
#define v_add_if(acc, m, e) _mm512_mask_add_pd((acc), (m), (acc), (e))
#define v_add_neg(acc, d, e) _mm512_mask_add_pd((acc), _mm512_cmp_pd_mask((d), _mm512_setzero_pd(), _CMP_LT_OQ), (acc), (e))
#define v_shl_exp(v) _mm512_castsi512_pd(_mm512_slli_epi64(_mm512_castpd_si512(v), 52))
#define v_hmax(v) _mm512_reduce_max_pd(v)
#define v_hsum_d(v) _mm512_reduce_add_pd(v)
#define v_tailmask(n) ((__mmask8)((1u << (n)) - 1u))
#define m_tail(tm) (tm)
#define v_load_tail(p, tm, fill) _mm512_mask_loadu_pd(_mm512_set1_pd(fill), (tm), (p))
#define v_store_tail(p, tm, v) _mm512_mask_storeu_pd((p), (tm), (v))
#define v_gather(base, idx) _mm512_i32gather_pd(_mm256_loadu_si256((const __m256i *)(idx)), (base), 8)
#define v_stream(p, v) _mm512_stream_pd((p), (v))
#define v_sfence() _mm_sfence()
#include "rows_template.c"

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif /* FA_X86 */

/* ============================================================ dispatch */

int fa_cpu_isa(void)
{
#if FA_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return FA_ISA_AVX512F;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return FA_ISA_AVX2;
#endif
    return FA_ISA_BASELINE;
}

const char *fa_isa_name(int isa)
{
    switch (isa) {
    case FA_ISA_AVX512F:
        return "avx512f";
    case FA_ISA_AVX2:
        return "avx2";
    default:
        return "baseline";
    }
}

#if FA_X86
#define FA_TABLE(name)                                                  \
    static const fa_rows_fn name##_tab[3][2] = {                        \
        {name##_f32_base, name##_f64_base},                             \
        {name##_f32_avx2, name##_f64_avx2},                             \
        {name##_f32_avx512, name##_f64_avx512},                         \
    }
#else
#define FA_TABLE(name)                                                  \
    static const fa_rows_fn name##_tab[3][2] = {                        \
        {name##_f32_base, name##_f64_base},                             \
        {name##_f32_base, name##_f64_base},                             \
        {name##_f32_base, name##_f64_base},                             \
    }
#endif

FA_TABLE(softmax_rows);
FA_TABLE(log_softmax_rows);
FA_TABLE(logsumexp_rows);
FA_TABLE(softmax_backward_rows);
FA_TABLE(log_softmax_backward_rows);
FA_TABLE(cross_entropy_index_rows);
FA_TABLE(cross_entropy_prob_rows);

static fa_rows_fn fa_pick(const fa_rows_fn tab[3][2], int itemsize, int isa)
{
    const int best = fa_cpu_isa();
    if (isa > best)
        isa = best;
    if (isa < 0)
        isa = 0;
    return tab[isa][itemsize == 8];
}

/* ============================================================== threads */

/* Rows are split into contiguous parts.  Threads come from a persistent pool
 * (started on first use, woken per call: ~5-10 us instead of ~20-50 us for
 * pthread_create + join), and the caller works too: it takes parts from the
 * same counter as the workers, so a worker that is slow to wake (a busy
 * machine) costs at most its parts' time, never a stall.  Each thread gets at
 * least FA_MIN_ELEMS_PER_THREAD elements; there are up to FA_PARTS_PER_THREAD
 * parts per thread for balance.  Calls from several threads at once are
 * safe: a call that finds the pool busy runs on its own thread alone. */
#define FA_MIN_ELEMS_PER_THREAD ((int64_t)1 << 16)
#define FA_MIN_ELEMS_PER_PART ((int64_t)1 << 15)
#ifndef FA_PARTS_PER_THREAD
#define FA_PARTS_PER_THREAD 4
#endif
#define FA_MAX_THREADS 64

#if FA_HAVE_PTHREADS
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    int nworkers;       /* started and waiting on `work` */
    uint64_t gen;       /* bumped per job */
    fa_rows_fn fn;
    const fa_args *a;
    int64_t n, align, nparts, next, remaining;
} fa_pool_t;

static fa_pool_t fa_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                            PTHREAD_COND_INITIALIZER, 0, 0, NULL, NULL, 0, 1, 0, 0, 0};
static pthread_mutex_t fa_pool_owner = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t fa_pool_once = PTHREAD_ONCE_INIT;

/* Part p of nparts over n rows, in units of `align` rows (the last part
 * takes the remainder): short rows (k <= FA_TILE_ROWS) are split at multiples
 * of FA_TILE_ROWS, so that every row falls in the same row tile (or the same
 * tail) whatever the number of threads, and results do not depend on it. */
#define FA_TILE_ROWS 16
static void fa_part(int64_t n, int64_t align, int64_t nparts, int64_t p, int64_t *r0, int64_t *r1)
{
    const int64_t nb = n / align, q = nb / nparts, r = nb % nparts;
    *r0 = (q * p + (p < r ? p : r)) * align;
    *r1 = p == nparts - 1 ? n : *r0 + (q + (p < r)) * align;
}

/* Takes and runs parts of the current job until none is left; called and
 * returns with fa_pool.mu held. */
static void fa_pool_drain(void)
{
    while (fa_pool.next < fa_pool.nparts) {
        const int64_t p = fa_pool.next++;
        const fa_rows_fn fn = fa_pool.fn;
        const fa_args *a = fa_pool.a;
        int64_t r0, r1;
        fa_part(fa_pool.n, fa_pool.align, fa_pool.nparts, p, &r0, &r1);
        pthread_mutex_unlock(&fa_pool.mu);
        fn(a, r0, r1);
        pthread_mutex_lock(&fa_pool.mu);
        if (--fa_pool.remaining == 0)
            pthread_cond_signal(&fa_pool.done);
    }
}

static void *fa_worker_main(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&fa_pool.mu);
    uint64_t seen = fa_pool.gen;
    for (;;) {
        while (fa_pool.gen == seen)
            pthread_cond_wait(&fa_pool.work, &fa_pool.mu);
        seen = fa_pool.gen;
        fa_pool_drain();
    }
    return NULL;
}

/* In a child after fork() the workers are gone: start afresh. */
static void fa_pool_atfork_child(void)
{
    pthread_mutex_init(&fa_pool.mu, NULL);
    pthread_cond_init(&fa_pool.work, NULL);
    pthread_cond_init(&fa_pool.done, NULL);
    pthread_mutex_init(&fa_pool_owner, NULL);
    fa_pool.nworkers = 0;
    fa_pool.nparts = fa_pool.next = fa_pool.remaining = 0;
}

static void fa_pool_init(void)
{
    pthread_atfork(NULL, NULL, fa_pool_atfork_child);
}

/* Runs fn over the rows on nt threads (the caller and nt - 1 workers);
 * returns 0 when the pool is busy (the caller then runs alone). */
static int fa_pool_run(fa_rows_fn fn, const fa_args *a, int64_t nt, int64_t nparts)
{
    pthread_once(&fa_pool_once, fa_pool_init);
    if (pthread_mutex_trylock(&fa_pool_owner) != 0)
        return 0;
    pthread_mutex_lock(&fa_pool.mu);
    while (fa_pool.nworkers < nt - 1) {
        pthread_t th;
        pthread_attr_t attr;
        int ok = pthread_attr_init(&attr) == 0;
        if (ok) {
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            ok = pthread_create(&th, &attr, fa_worker_main, NULL) == 0;
            pthread_attr_destroy(&attr);
        }
        if (!ok)
            break; /* fewer workers: the caller takes their parts */
        fa_pool.nworkers++;
    }
    fa_pool.fn = fn;
    fa_pool.a = a;
    fa_pool.n = a->n;
    fa_pool.align = a->k <= FA_TILE_ROWS ? FA_TILE_ROWS : 1;
    fa_pool.nparts = nparts;
    fa_pool.next = 0;
    fa_pool.remaining = nparts;
    fa_pool.gen++;
    /* Wake only as many workers as this call wants (a pool started for more
     * threads keeps its extra workers asleep). */
    if (fa_pool.nworkers > 0) {
        if (nt - 1 >= fa_pool.nworkers)
            pthread_cond_broadcast(&fa_pool.work);
        else
            for (int64_t t = 0; t < nt - 1; t++)
                pthread_cond_signal(&fa_pool.work);
    }
    fa_pool_drain();
    while (fa_pool.remaining > 0)
        pthread_cond_wait(&fa_pool.done, &fa_pool.mu);
    fa_pool.fn = NULL;
    fa_pool.a = NULL;
    pthread_mutex_unlock(&fa_pool.mu);
    pthread_mutex_unlock(&fa_pool_owner);
    return 1;
}
#endif

/* Threads for n rows of k elements (at most nthreads). */
static int64_t fa_threads(int64_t n, int64_t k, int nthreads)
{
    int64_t nt = nthreads < 1 ? 1 : nthreads;
    const int64_t by_work = n * k / FA_MIN_ELEMS_PER_THREAD;
    if (nt > by_work)
        nt = by_work;
    if (nt > n)
        nt = n;
    if (nt > FA_MAX_THREADS)
        nt = FA_MAX_THREADS;
    return nt < 1 ? 1 : nt;
}

static void fa_run(fa_rows_fn fn, const fa_args *a, int nthreads)
{
    const int64_t n = a->n;
    const int64_t nt = fa_threads(n, a->k, nthreads);
    const int64_t work = n * a->k;
#if FA_HAVE_PTHREADS
    if (nt > 1) {
        int64_t nparts = nt * FA_PARTS_PER_THREAD;
        if (nparts > work / FA_MIN_ELEMS_PER_PART)
            nparts = work / FA_MIN_ELEMS_PER_PART;
        if (nparts > n)
            nparts = n;
        if (nparts < nt)
            nparts = nt;
        if (fa_pool_run(fn, a, nt, nparts))
            return;
    }
#endif
    fn(a, 0, n);
}

/* ======================================================== the C API */

/* Outputs of at least FA_STREAM_BYTES are written with non-temporal stores,
 * as glibc's memcpy does for large copies: input and output together then
 * exceed a core's share of a typical last-level cache, so the result would
 * not stay cached for the caller anyway, and streaming saves reading each
 * output line before writing it.  (A fixed size: cache sizes reported inside
 * VMs are unreliable; this one reported 384 MB for a 32 MB L3.)  Measured
 * (1 thread, time vs np.copyto): 512x32000 softmax 1.40x -> 1.26x, 64x128256
 * 1.70x -> 1.51x, 4096x1000 (16 MB) 1.51x -> 1.40x.  Smaller results stay in
 * cache for whoever reads them next.  (Tried: a threshold per thread, so
 * that 16 MB results are not streamed on 2 threads and stay in the L3: on
 * this shared VM, with another job on one of the 2 cores, 4096x1000 and
 * 8192x512 on 2 threads were 0.95-1.1x as fast as streamed, not faster.) */
#ifndef FA_STREAM_BYTES
#define FA_STREAM_BYTES ((int64_t)12 << 20)
#endif

static int fa_stream_out(int64_t n, int64_t k, int itemsize)
{
    return n * k * (int64_t)itemsize >= (int64_t)FA_STREAM_BYTES;
}

/* float16 / bfloat16: the float32 kernels over blocks of widened rows */
#include "half.c"

/* The kernel of `tab` for the dtype code over a's rows: float32/float64 as
 * they are, half dtypes through fa_half_run; row_out: out/sign per row. */
static void fa_dispatch(const fa_rows_fn tab[3][2], int code, int isa, const fa_args *a,
                        int nthreads, int row_out)
{
    if ((code & 0xff) == 2)
        fa_half_run(tab, code, isa, a, nthreads, row_out);
    else
        fa_run(fa_pick(tab, code, isa), a, nthreads);
}



/* The fa_args of a softmax-family call (fields a kernel does not read stay
 * 0; n, k and stream are the caller's), shared by the row entry points below
 * and the strided ones (strided.c). */
static void fa_row_args(fa_args *a, const void *x, const void *y, const void *b,
                        const void *mask, void *out, void *sign)
{
    memset(a, 0, sizeof *a);
    a->x = x;
    a->y = y;
    a->b = b;
    a->mask = (const unsigned char *)mask;
    a->out = out;
    a->sign = sign;
}

static double fa_weight_sum(int itemsize, const void *weight, int64_t k);

/* The fa_args of a cross-entropy call, index targets (target) or
 * probabilities (tprob); as fa_row_args. */
static void fa_ce_args(fa_args *a, int itemsize, const void *x, const int64_t *target,
                       const void *tprob, const void *weight, int64_t ignore_index,
                       double label_smoothing, double z_loss, double a_, double b, double g,
                       const void *row_scale, void *loss, void *grad, int64_t k)
{
    memset(a, 0, sizeof *a);
    a->x = x;
    a->target = target;
    a->tprob = tprob;
    a->weight = weight;
    a->ignore_index = ignore_index;
    a->eps = label_smoothing;
    a->z_loss = z_loss;
    a->a = a_;
    a->b_coef = b;
    a->g = g;
    a->row_scale = row_scale;
    a->loss = loss;
    a->grad = grad;
    if (target && label_smoothing != 0)
        a->wsum = fa_weight_sum(itemsize, weight, k);
}

void fa_softmax_rows(int itemsize, int isa, const void *x, const void *mask,
                     void *out, int64_t n, int64_t k, int nthreads)
{
    fa_args a;
    fa_row_args(&a, x, NULL, NULL, mask, out, NULL);
    a.n = n;
    a.k = k;
    a.stream = fa_stream_out(n, k, itemsize);
    fa_dispatch(softmax_rows_tab, itemsize, isa, &a, nthreads, 0);
}

void fa_log_softmax_rows(int itemsize, int isa, const void *x, const void *mask,
                         void *out, int64_t n, int64_t k, int nthreads)
{
    fa_args a;
    fa_row_args(&a, x, NULL, NULL, mask, out, NULL);
    a.n = n;
    a.k = k;
    a.stream = fa_stream_out(n, k, itemsize);
    fa_dispatch(log_softmax_rows_tab, itemsize, isa, &a, nthreads, 0);
}

void fa_logsumexp_rows(int itemsize, int isa, const void *x, const void *b,
                       const void *mask, void *out, void *sign,
                       int64_t n, int64_t k, int nthreads)
{
    fa_args a;
    fa_row_args(&a, x, NULL, b, mask, out, sign);
    a.n = n;
    a.k = k;
    fa_dispatch(logsumexp_rows_tab, itemsize, isa, &a, nthreads, 1);
}

void fa_softmax_backward_rows(int itemsize, int isa, const void *grad,
                              const void *y, void *out,
                              int64_t n, int64_t k, int nthreads)
{
    fa_args a;
    fa_row_args(&a, grad, y, NULL, NULL, out, NULL);
    a.n = n;
    a.k = k;
    fa_dispatch(softmax_backward_rows_tab, itemsize, isa, &a, nthreads, 0);
}

void fa_log_softmax_backward_rows(int itemsize, int isa, const void *grad,
                                  const void *y, const void *mask, void *out,
                                  int64_t n, int64_t k, int nthreads)
{
    fa_args a;
    fa_row_args(&a, grad, y, NULL, mask, out, NULL);
    a.n = n;
    a.k = k;
    fa_dispatch(log_softmax_backward_rows_tab, itemsize, isa, &a, nthreads, 0);
}

int64_t fa_check_targets(const int64_t *target, int64_t n, int64_t k,
                         int64_t ignore_index)
{
    for (int64_t i = 0; i < n; i++) {
        const int64_t t = target[i];
        if ((t < 0 || t >= k) && t != ignore_index)
            return i;
    }
    return -1;
}

static double fa_weight_sum(int itemsize, const void *weight, int64_t k)
{
    double s = 0.0;
    if (!weight)
        return (double)k;
    if (itemsize == 8)
        for (int64_t j = 0; j < k; j++)
            s += ((const double *)weight)[j];
    else
        for (int64_t j = 0; j < k; j++)
            s += ((const float *)weight)[j];
    return s;
}

void fa_cross_entropy_index_rows(int itemsize, int isa, const void *x,
                                 const int64_t *target, const void *weight,
                                 int64_t ignore_index, double label_smoothing,
                                 double z_loss, double a_, double b, double g,
                                 const void *row_scale, void *loss, void *grad,
                                 int64_t n, int64_t k, int nthreads)
{
    fa_args a;
    fa_ce_args(&a, itemsize, x, target, NULL, weight, ignore_index, label_smoothing, z_loss, a_,
               b, g, row_scale, loss, grad, k);
    a.n = n;
    a.k = k;
    a.stream = grad != NULL && fa_stream_out(n, k, itemsize);
    if (!loss && !grad)
        return;
    fa_dispatch(cross_entropy_index_rows_tab, itemsize, isa, &a, nthreads, 0);
}

void fa_cross_entropy_prob_rows(int itemsize, int isa, const void *x,
                                const void *target, const void *weight,
                                double label_smoothing, double z_loss,
                                double a_, double b, double g,
                                const void *row_scale, void *loss, void *grad,
                                int64_t n, int64_t k, int nthreads)
{
    fa_args a;
    fa_ce_args(&a, itemsize, x, NULL, target, weight, 0, label_smoothing, z_loss, a_, b, g,
               row_scale, loss, grad, k);
    a.n = n;
    a.k = k;
    if (!loss && !grad)
        return;
    fa_dispatch(cross_entropy_prob_rows_tab, itemsize, isa, &a, nthreads, 0);
}

/* Any axis: the strided driver over the row kernels above. */
#include "strided.c"
