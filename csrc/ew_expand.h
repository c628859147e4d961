/* The elementwise template (ew_template.c) for float32 and float64 at one ISA
 * level: FA_EW_ISA is the level's name suffix (_base, _avx2, _avx512), the
 * includer's target pragma its instruction set.  No include guard: included
 * once per level by elementwise.c. */

#define FA_EW_T float
#define FA_EW_SFX FA_EW_CAT(_f32, FA_EW_ISA)
#define FA_EW_F64 0
#define EW_ERFC erfcf
#define EW_FABS fabsf
#include "ew_template.c"
#undef FA_EW_T
#undef FA_EW_SFX
#undef FA_EW_F64
#undef EW_ERFC
#undef EW_FABS

#define FA_EW_T double
#define FA_EW_SFX FA_EW_CAT(_f64, FA_EW_ISA)
#define FA_EW_F64 1
#define EW_ERFC erfc
#define EW_FABS fabs
#include "ew_template.c"
#undef FA_EW_T
#undef FA_EW_SFX
#undef FA_EW_F64
#undef EW_ERFC
#undef EW_FABS
