/* The vector vocabulary of the row template for plain C: VL = 1, a "vector"
 * is one T, masks are ints; the compiler's auto-vectoriser does the rest.
 * Included once per dtype (IS_F64 and SFX defined) before rows_template.c. */

#include "isa_dtype.h"

#if IS_F64
#define v_shl_exp(v) fa_shl_exp_f64(v)
#else
#define v_shl_exp(v) fa_shl_exp_f32(v)
#endif
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
