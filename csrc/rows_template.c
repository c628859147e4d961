/* Row kernels written once, expanded per (ISA, dtype) by fastact.c.
 *
 * Not compiled on its own: fastact.c defines the vector vocabulary (T, V, VL,
 * v_add, ...) for one ISA and one dtype, then includes this file.  Every
 * function here is static and named FN(name) = name_<SFX>.
 *
 * Numerics, shared by every kernel:
 * - m = row max over the selected entries, with a max that skips NaN
 *   (v_max(x, acc) keeps acc when x is NaN).  A NaN in a row with a finite m
 *   reaches the sum as exp(NaN) and makes the row NaN, as the reference does;
 *   a row with a non-finite m goes to a scalar path that mirrors the reference.
 * - exp(x - m) with x - m <= 0: our own exp (polynomial, 2^n built in the
 *   exponent bits), exact 0 for -inf, gradual underflow kept (slow path only
 *   for lanes below the normal range).
 * - Sums: several vector accumulators over blocks of BLOCK elements, each
 *   block folded into a double, so 1M-element float32 rows do not drift.
 * - log of a row's exp sum (log_softmax, logsumexp, cross entropy): the loops
 *   that sum the terms also sum, apart, the terms below the max (z = x - m <
 *   0: one compare and one masked add per vector), so that the row's log-sum
 *   is log1p of those when the max term is alone (log_sum, vlog_sum), as the
 *   reference: logsumexp([0, -40]) is 4.2e-18, not log(1 + 4.2e-18) = 0.
 */

#define FN(name) FN2(name, SFX)
#define FN2(a, b) FN3(a, b)
#define FN3(a, b) a##_##b

/* Elements per block of float accumulation (16 adds per lane and accumulator). */
#define BLOCK (16 * 4 * VL)

/* Software prefetch distance: the row kernels prefetch, while computing a row,
 * the row this many bytes ahead (at least the next one), so that its memory
 * traffic overlaps the arithmetic.  Measured on 4096 x 1000 float32: one row
 * (4 KB) ahead 1.85x the time of a copy, 8 KB ahead 1.45x (4-12 KB tried). */
#ifndef FA_PF_BYTES
#define FA_PF_BYTES 8192
#endif

/* Offset (in elements) of the row to prefetch, for rows of k elements. */
static inline int64_t FN(pf_off)(int64_t k)
{
    const int64_t rb = k * (int64_t)sizeof(T);
    return ((FA_PF_BYTES + rb - 1) / rb) * k;
}

/* The kernels, one file per family over shared parts (the order of the
 * definitions is the order of the one template this used to be). */
#include "rows_vmath.h"
#include "rows_reduce.h"
#include "rows_common.h"
#include "rows_softmax.c"
#include "rows_backward.c"
#include "rows_ce.c"
#include "rows_cols.c"

#undef BLOCK
#undef SCALE_VECTORS
#undef FN
#undef FN2
#undef FN3
#undef SHORT_K
#undef LONG_K
#undef LONG_CHUNK
#if HAVE_TILES
#undef TILE_K
#undef TILE_MAX_K
#undef GROUP_MAX_K
#endif

/* The vocabulary belongs to one expansion: drop it for the next. */
#undef T
#undef V
#undef VM
#undef VTM
#undef VL
#undef SFX
#undef IS_F64
#undef HAVE_GATHER
#undef HAVE_TILES
#undef HAVE_TILE_COLS
#undef v_tile_cols
#undef v_permute
#undef HAVE_SCALEF
#undef HAVE_EXP_LUT
#undef v_exp_lut
#undef v_round
#undef v_scalef
#undef v_zero
#undef v_set1
#undef v_load
#undef v_store
#undef v_add
#undef v_sub
#undef v_mul
#undef v_div
#undef v_fma
#undef v_max
#undef v_min
#undef v_lt
#undef v_gt
#undef v_ne
#undef m_or
#undef m_and
#undef m_any
#undef m_true
#undef m_bytes
#undef v_select
#undef v_add_if
#undef v_add_neg
#undef v_shl_exp
#undef v_hmax
#undef v_hsum_d
#undef v_tailmask
#undef m_tail
#undef v_load_tail
#undef v_store_tail
#undef v_stream
#undef v_sfence
#undef v_gather
#undef v_exp_field
#undef v_mant_half
#undef EXP_LOG2E
#undef EXP_MAGIC
#undef EXP_MAGIC_BIAS
#undef EXP_LN2_HI
#undef EXP_LN2_LO
#undef EXP_FAST_LO
#undef EXP_FAST_HI
#undef EXP_SLOW_LO
#undef EXP_SLOW_HI
