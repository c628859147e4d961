/* The row kernels for every ISA level, the table that picks one per call,
 * and what the CPU supports.
 *
 * The kernels are written once in rows_template.c against a small vector
 * vocabulary (T, V, VL, v_add, v_fma, v_max, ...).  isa_*.h define that
 * vocabulary for one ISA and one dtype; the template is included once per
 * pair: baseline (plain C, VL = 1, left to the auto-vectoriser), AVX2+FMA and
 * AVX-512F, each for float32 and float64.  The x86 expansions are compiled
 * under a target pragma, so the file builds without -m flags and the choice
 * is made per call from what the CPU reports (fa_cpu_isa).  The elementwise
 * kernels are expanded per level the same way (elementwise.c) and picked by
 * fa_isa_level, so FASTACT_C_ISA reaches every kernel.
 *
 * Not compiled on its own: included by fastact.c after fa_internal.h.
 */

#include "vmath.h"

/* ======================================================= baseline, VL = 1 */

#define IS_F64 0
#define SFX f32_base
#include "isa_base.h"
#include "rows_template.c"

#define IS_F64 1
#define SFX f64_base
#include "isa_base.h"
#include "rows_template.c"

#if FA_X86
/* ======================================================== AVX2 + FMA */

FA_TARGET_PUSH("avx2,fma")

#define IS_F64 0
#define SFX f32_avx2
#include "isa_avx2.h"
#include "rows_template.c"

#define IS_F64 1
#define SFX f64_avx2
#include "isa_avx2.h"
#include "rows_template.c"

FA_TARGET_POP()

/* ============================================================ AVX-512F */

FA_TARGET_PUSH("avx512f,avx2,fma")

#define IS_F64 0
#define SFX f32_avx512
#include "isa_avx512.h"
#include "rows_template.c"

#define IS_F64 1
#define SFX f64_avx512
#include "isa_avx512.h"
#include "rows_template.c"

FA_TARGET_POP()
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

/* tab[level][itemsize == 8]: the kernel per ISA level and dtype (off x86,
 * every level runs the baseline kernels). */
#if FA_X86
#define FA_SIMD_ROWS(name) {name##_f32_avx2, name##_f64_avx2}, {name##_f32_avx512, name##_f64_avx512}
#else
#define FA_SIMD_ROWS(name) {name##_f32_base, name##_f64_base}, {name##_f32_base, name##_f64_base}
#endif
#define FA_TABLE(name) \
    static const fa_rows_fn name##_tab[3][2] = {{name##_f32_base, name##_f64_base}, FA_SIMD_ROWS(name)}

FA_TABLE(softmax_rows);
FA_TABLE(log_softmax_rows);
FA_TABLE(logsumexp_rows);
FA_TABLE(softmax_backward_rows);
FA_TABLE(log_softmax_backward_rows);
FA_TABLE(cross_entropy_index_rows);
FA_TABLE(cross_entropy_prob_rows);

/* The column kernels (rows_cols.c), per ISA level and dtype as above. */
#if FA_X86
static const fa_cols_fn cols_tab[3][2] = {
    {cols_f32_base, cols_f64_base}, {cols_f32_avx2, cols_f64_avx2}, {cols_f32_avx512, cols_f64_avx512}};
#else
static const fa_cols_fn cols_tab[3][2] = {
    {cols_f32_base, cols_f64_base}, {cols_f32_base, cols_f64_base}, {cols_f32_base, cols_f64_base}};
#endif


/* The level to run at: isa clamped to [baseline, what the CPU supports]
 * (fa_internal.h: the elementwise kernels pick theirs by it too). */
int fa_isa_level(int isa)
{
    const int best = fa_cpu_isa();
    if (isa > best)
        isa = best;
    if (isa < 0)
        isa = 0;
    return isa;
}

static fa_rows_fn fa_pick(const fa_rows_fn tab[3][2], int itemsize, int isa)
{
    return tab[fa_isa_level(isa)][itemsize == 8];
}
