/* The vector vocabulary of the row template for AVX2 + FMA: 8 floats or 4
 * doubles per vector, masks as vectors, tails by maskload/maskstore.
 * Included once per dtype (IS_F64 and SFX defined) before rows_template.c,
 * inside FA_TARGET_PUSH("avx2,fma") (dispatch.c). */

#include "isa_dtype.h"

#ifndef FA_ISA_AVX2_FNS
#define FA_ISA_AVX2_FNS

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

#endif /* FA_ISA_AVX2_FNS */

#if !IS_F64
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
#else
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
#endif
