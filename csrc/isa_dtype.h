/* The element type of one expansion of the row template and its exp
 * constants (vmath.h), from IS_F64 (0: float32, 1: float64), which the
 * includer defines with SFX.  Included by each isa_*.h, once per expansion
 * (no include guard: rows_template.c drops these names after each). */

#if IS_F64
#define T double
#define EXP_LOG2E F64_LOG2E
#define EXP_MAGIC F64_MAGIC
#define EXP_MAGIC_BIAS F64_MAGIC_BIAS
#define EXP_LN2_HI F64_LN2_HI
#define EXP_LN2_LO F64_LN2_LO
#define EXP_FAST_LO (-708.0)
#define EXP_FAST_HI 709.0
#define EXP_SLOW_LO (-746.0)
#define EXP_SLOW_HI 710.0
#else
#define T float
#define EXP_LOG2E F32_LOG2E
#define EXP_MAGIC F32_MAGIC
#define EXP_MAGIC_BIAS F32_MAGIC_BIAS
#define EXP_LN2_HI F32_LN2_HI
#define EXP_LN2_LO F32_LN2_LO
#define EXP_FAST_LO (-87.0f)
#define EXP_FAST_HI 88.0f
#define EXP_SLOW_LO (-104.0f)
#define EXP_SLOW_HI 89.0f
#endif
