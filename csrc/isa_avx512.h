/* The vector vocabulary of the row template for AVX-512F: 16 floats or 8
 * doubles per vector, masks as __mmask, vscalef for exp's scaling, and a
 * table-driven float32 exp.  Included once per dtype (IS_F64 and SFX
 * defined) before rows_template.c, inside FA_TARGET_PUSH("avx512f,avx2,fma")
 * (dispatch.c). */

#include "isa_dtype.h"

#ifndef FA_ISA_AVX512_FNS
#define FA_ISA_AVX512_FNS

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

#endif /* FA_ISA_AVX512_FNS */

#if !IS_F64
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
#else
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
#endif
