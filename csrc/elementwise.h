/* fastact C elementwise kernels: the sigmoid family, hidden-layer activations
 * and binary cross-entropy with logits.
 *
 * Plain C11, no Python headers.  The contract of every kernel (formulas,
 * special values, aliasing) is the docstring of
 * fastact/_backends/numpy_elementwise.py; here every array is flat and
 * C-contiguous with n elements of one float dtype:
 *
 *   itemsize  4 (float32) or 8 (float64); fa_unary and fa_unary_backward
 *             also 2 (float16) or 2 | FA_BF16 (bfloat16, fastact.h): computed
 *             in float32 over blocks, results rounded to the half dtype
 *   op        a fa_unary_op (the index of the name in UNARY)
 *   isa       FA_ISA_BASELINE / FA_ISA_AVX2 / FA_ISA_AVX512F (fastact.h): the
 *             level of the loops, clamped to what the CPU supports, as for
 *             the row kernels
 *
 * `out` (or `grad`) may be the same array as an input.  No global mutable
 * state.  fa_unary and fa_unary_backward run large arrays on up to nthreads
 * threads of the row kernels' pool (pool.c); fa_bce runs on the caller's
 * thread: its caller splits large arrays into chunks and calls from several
 * threads at once (cffi releases the GIL).
 *
 * This file is also the cffi cdef: the build script drops the lines that start
 * with '#', so keep declarations on non-preprocessor lines.
 */
#ifndef FASTACT_ELEMENTWISE_H
#define FASTACT_ELEMENTWISE_H

#include <stdint.h>

enum fa_unary_op {
    FA_SIGMOID = 0,
    FA_LOG_SIGMOID = 1,
    FA_RELU = 2,
    FA_TANH = 3,
    FA_SOFTSIGN = 4,
    FA_GELU = 5,
    FA_GELU_TANH = 6,
    FA_SILU = 7
};

/* out[i] = f(x[i]).  Returns 0, or -1 for an unknown op or itemsize. */
int fa_unary(int itemsize, int isa, int op, const void *x, void *out, int64_t n,
             int nthreads);

/* out[i] = grad[i] * f'(s[i]), s the forward input x; for FA_SIGMOID s is the
 * forward output y and out = grad * (1 - y) * y.  Returns 0, or -1. */
int fa_unary_backward(int itemsize, int isa, int op, const void *grad, const void *s,
                      void *out, int64_t n, int nthreads);

/* Binary cross-entropy with logits over elements offset .. offset+n-1 of the
 * full arrays (x, t, gscale, loss, grad point at element `offset`):
 *   l_i    = w ((1 - t) x + lw softplus(-x)),  lw = 1 + (pw - 1) t
 *   grad_i = c * gscale_i * w (lw sigmoid(x) - pw t)
 * with w = w[(offset+i) % w_len] (all ones when w is NULL), likewise pw.
 * gscale, loss, grad may be NULL.  Returns sum_i l_i (float64 accumulation),
 * NaN for an unknown itemsize. */
double fa_bce(int itemsize, int isa, const void *x, const void *t, const void *w,
              int64_t w_len, const void *pw, int64_t pw_len, int64_t offset,
              double c, const void *gscale, void *loss, void *grad, int64_t n);

#endif
