/* fastact C elementwise kernels: per ISA level and dtype, their tables, and
 * the API of elementwise.h.
 *
 * The kernels are written once (ew_template.c) and expanded, like the row
 * kernels (dispatch.c), for each ISA level under a target pragma: baseline,
 * AVX2 and AVX-512F, each float32 and float64, picked per call from the
 * caller's level clamped to the CPU's (fa_isa_level), so FASTACT_C_ISA and
 * c_kernels.force_isa reach them too.  The targets are "avx2" and "avx512f"
 * (as GCC's target_clones had them before).  The AVX2 target leaves out FMA,
 * so its loops round each multiply and add apart as the baseline does; GCC's
 * "avx512f" implies FMA, so the AVX-512 loops may contract multiply-adds and
 * differ from the other levels in the last bits (not run on the AVX2 machine
 * these kernels were last measured on).
 *
 * A translation unit of its own (the row kernels are fastact.c).
 */
#include "fa_internal.h"

#include "elementwise.h"
#include "vmath.h" /* the float32 exp polynomial, shared with the row kernels */

#define FA_EW_CAT_(a, b) a##b
#define FA_EW_CAT(a, b) FA_EW_CAT_(a, b)

#define FA_EW_ISA _base
#include "ew_expand.h"
#undef FA_EW_ISA

#if FA_X86
FA_TARGET_PUSH("avx2")
#define FA_EW_ISA _avx2
#include "ew_expand.h"
#undef FA_EW_ISA
FA_TARGET_POP()

FA_TARGET_PUSH("avx512f")
#define FA_EW_ISA _avx512
#include "ew_expand.h"
#undef FA_EW_ISA
FA_TARGET_POP()
#endif /* FA_X86 */

/* ------------------------------------------------------------- dispatch */

typedef void (*ew_fwd_fn)(const void *, void *, int64_t);
typedef void (*ew_bwd_fn)(const void *, const void *, void *, int64_t);
typedef double (*ew_bce_fn)(const void *, const void *, const void *, int64_t, const void *,
                            int64_t, int64_t, double, const void *, void *, void *, int64_t);

/* The kernels of one level and dtype (suffixes d, l: _f32, _avx2), in enum
 * fa_unary_op order. */
#define EW_FWD(d, l)                                                                   \
    {(ew_fwd_fn)ew_sigmoid##d##l, (ew_fwd_fn)ew_log_sigmoid##d##l,                     \
     (ew_fwd_fn)ew_relu##d##l, (ew_fwd_fn)ew_tanh##d##l, (ew_fwd_fn)ew_softsign##d##l, \
     (ew_fwd_fn)ew_gelu##d##l, (ew_fwd_fn)ew_gelu_tanh##d##l, (ew_fwd_fn)ew_silu##d##l}
#define EW_BWD(d, l)                                                                   \
    {(ew_bwd_fn)ew_sigmoid_bwd##d##l, (ew_bwd_fn)ew_log_sigmoid_bwd##d##l,             \
     (ew_bwd_fn)ew_relu_bwd##d##l, (ew_bwd_fn)ew_tanh_bwd##d##l,                       \
     (ew_bwd_fn)ew_softsign_bwd##d##l, (ew_bwd_fn)ew_gelu_bwd##d##l,                   \
     (ew_bwd_fn)ew_gelu_tanh_bwd##d##l, (ew_bwd_fn)ew_silu_bwd##d##l}
#define EW_BCE(d, l) (ew_bce_fn) ew_bce##d##l
#define EW_NOPS 8

/* tab[level][itemsize == 8], as the row kernels' FA_TABLE (off x86, every
 * level runs the baseline loops). */
#if FA_X86
#define EW_LEVELS(M) {M(_f32, _base), M(_f64, _base)}, {M(_f32, _avx2), M(_f64, _avx2)}, \
                     {M(_f32, _avx512), M(_f64, _avx512)}
#else
#define EW_LEVELS(M) {M(_f32, _base), M(_f64, _base)}, {M(_f32, _base), M(_f64, _base)}, \
                     {M(_f32, _base), M(_f64, _base)}
#endif

static const ew_fwd_fn ew_fwd_tab[3][2][EW_NOPS] = {EW_LEVELS(EW_FWD)};
static const ew_bwd_fn ew_bwd_tab[3][2][EW_NOPS] = {EW_LEVELS(EW_BWD)};
static const ew_bce_fn ew_bce_tab[3][2] = {EW_LEVELS(EW_BCE)};

/* float16 / bfloat16 (itemsize 2, | FA_BF16): the float32 loops over blocks
 * widened into stack buffers (in place: out may be an input), narrowed to
 * nearest-even with subnormals kept, as the row kernels do (half.c). */
#define EW_HALF_BLK 1024

static void ew_half_unary(int code, int isa, ew_fwd_fn f, const void *x, void *out, int64_t n)
{
    float buf[EW_HALF_BLK];
    for (int64_t i = 0; i < n; i += EW_HALF_BLK) {
        const int64_t m = n - i < EW_HALF_BLK ? n - i : EW_HALF_BLK;
        fa_half_widen(code, isa, (const uint16_t *)x + i, buf, m);
        f(buf, buf, m);
        fa_half_narrow(code, isa, buf, (uint16_t *)out + i, m);
    }
}

static void ew_half_unary_backward(int code, int isa, ew_bwd_fn f, const void *grad,
                                   const void *s, void *out, int64_t n)
{
    float gb[EW_HALF_BLK], sb[EW_HALF_BLK];
    for (int64_t i = 0; i < n; i += EW_HALF_BLK) {
        const int64_t m = n - i < EW_HALF_BLK ? n - i : EW_HALF_BLK;
        fa_half_widen(code, isa, (const uint16_t *)grad + i, gb, m);
        fa_half_widen(code, isa, (const uint16_t *)s + i, sb, m);
        f(gb, sb, gb, m);
        fa_half_narrow(code, isa, gb, (uint16_t *)out + i, m);
    }
}

/* ------------------------------------------------------------- threads */

/* Large unary calls run on the row kernels' pool (fa_run) in parts of
 * whole blocks of EW_PART_BLK elements: fa_run sees "rows" of EW_PART_BLK, so that
 * its threshold (FA_MIN_ELEMS_PER_THREAD elements a thread, pool.c) is in
 * elements; relu and its backward move memory more than they compute and
 * take a thread per EW_CHEAP_MIN elements only (measured on a 2-core AVX2
 * VM, float32: relu on 65536x10 84 us on one thread, 100 us on two).  Each
 * element's result is the same whatever the split. */
#define EW_PART_BLK 64
#define EW_CHEAP_MIN ((int64_t)1 << 19)

typedef struct {
    fa_args a; /* first: what fa_run sees (n blocks of k = EW_PART_BLK) */
    ew_fwd_fn f;
    ew_bwd_fn b; /* backward when set */
    int code, isa;
    const void *x, *s; /* forward: x; backward: grad, s */
    void *out;
    int64_t len;
} ew_job;

static void ew_part(const fa_args *A, int64_t r0, int64_t r1)
{
    const ew_job *J = (const ew_job *)A;
    const int64_t i0 = r0 * EW_PART_BLK;
    const int64_t i1 = r1 * EW_PART_BLK < J->len ? r1 * EW_PART_BLK : J->len;
    const size_t es = (size_t)(J->code & 0xff), off = (size_t)i0 * es;
    const char *x = (const char *)J->x + off;
    char *out = (char *)J->out + off;
    if (J->b) {
        const char *s = (const char *)J->s + off;
        if (es == 2)
            ew_half_unary_backward(J->code, J->isa, J->b, x, s, out, i1 - i0);
        else
            J->b(x, s, out, i1 - i0);
    } else if (es == 2) {
        ew_half_unary(J->code, J->isa, J->f, x, out, i1 - i0);
    } else {
        J->f(x, out, i1 - i0);
    }
}

/* Checks the call and runs the kernel of `op` (f forward, or b backward from
 * tab) over n elements on up to nthreads threads.  Returns 0, or -1. */
static int ew_run(int itemsize, int isa, int op, const void *x, const void *s, void *out,
                  int64_t n, int nthreads, int backward)
{
    if (op < 0 || op >= EW_NOPS || n < 0)
        return -1;
    const int half = (itemsize & ~FA_BF16) == 2;
    if (!half && itemsize != 4 && itemsize != 8)
        return -1;
    ew_job J;
    memset(&J, 0, sizeof J);
    J.isa = fa_isa_level(isa);
    const int f64 = itemsize == 8;
    if (backward)
        J.b = ew_bwd_tab[J.isa][f64][op];
    else
        J.f = ew_fwd_tab[J.isa][f64][op];
    J.code = itemsize;
    J.x = x;
    J.s = s;
    J.out = out;
    J.len = n;
    J.a.n = (n + EW_PART_BLK - 1) / EW_PART_BLK;
    J.a.k = EW_PART_BLK;
    if (op == FA_RELU && nthreads > n / EW_CHEAP_MIN)
        nthreads = (int)(n / EW_CHEAP_MIN);
    fa_run(ew_part, &J.a, nthreads);
    return 0;
}

int fa_unary(int itemsize, int isa, int op, const void *x, void *out, int64_t n, int nthreads)
{
    return ew_run(itemsize, isa, op, x, NULL, out, n, nthreads, 0);
}

int fa_unary_backward(int itemsize, int isa, int op, const void *grad, const void *s,
                      void *out, int64_t n, int nthreads)
{
    return ew_run(itemsize, isa, op, grad, s, out, n, nthreads, 1);
}

double fa_bce(int itemsize, int isa, const void *x, const void *t, const void *w,
              int64_t w_len, const void *pw, int64_t pw_len, int64_t offset,
              double c, const void *gscale, void *loss, void *grad, int64_t n)
{
    if (n <= 0)
        return 0.0;
    if ((w && w_len < 1) || (pw && pw_len < 1) || offset < 0)
        return NAN;
    if (itemsize != 4 && itemsize != 8)
        return NAN;
    return ew_bce_tab[fa_isa_level(isa)][itemsize == 8](x, t, w, w_len, pw, pw_len, offset, c,
                                                       gscale, loss, grad, n);
}
