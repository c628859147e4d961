/* fastact C kernels: fused, numerically stable softmax-family row kernels.
 *
 * Plain C11, no Python headers.  The contract of every kernel (arguments,
 * special values, aliasing) is the docstring of fastact/_backends/numpy_ref.py;
 * here row data are C-contiguous (n, k) arrays, per-row data (n,), masks are
 * bytes (0 = masked out), targets int64.
 *
 *   itemsize  4 (float32) or 8 (float64): the dtype of every float array;
 *             2 (float16) or 2 | FA_BF16 (bfloat16): x, y, b, probability
 *             targets and out/grad/sign are of that half dtype and computed
 *             in float32 (half.c); weight, row_scale and loss are float32
 *   isa       FA_ISA_BASELINE / FA_ISA_AVX2 / FA_ISA_AVX512F; clamped to what
 *             the CPU supports (fa_cpu_isa())
 *   nthreads  upper bound on threads over rows; small work runs on the caller
 *
 * The row entry points (fa_*_rows) return 0, or -1 when the half-dtype path
 * could not allocate its float32 scratch (then no output was written).
 *
 * Pointers that may be NULL: mask, b, sign, weight, row_scale, loss, grad.
 * `out` (or `grad`) may be the same array as an input.  No global mutable
 * state: the functions may be called from many threads at once.
 *
 * This file is also the cffi cdef: the build script drops the lines that start
 * with '#', so keep declarations on non-preprocessor lines.
 */
#ifndef FASTACT_H
#define FASTACT_H

#include <stdint.h>

#define FA_ISA_BASELINE 0
#define FA_ISA_AVX2 1
#define FA_ISA_AVX512F 2

/* Flag in `itemsize`: 2 | FA_BF16 is bfloat16 (2 alone is float16). */
#define FA_BF16 0x100

/* The best ISA level this CPU (and OS) supports, and a level's name. */
int fa_cpu_isa(void);
const char *fa_isa_name(int isa);

/* out = exp(x - m) / sum(exp(x - m)) per row; masked-out entries 0. */
int fa_softmax_rows(int itemsize, int isa, const void *x, const void *mask,
                     void *out, int64_t n, int64_t k, int nthreads);

/* out = (x - m) - log(sum(exp(x - m))) per row; masked-out entries -inf. */
int fa_log_softmax_rows(int itemsize, int isa, const void *x, const void *mask,
                         void *out, int64_t n, int64_t k, int nthreads);

/* out[i] = log|sum_j b[i,j] exp(x[i,j])|, sign[i] its sign (b, mask, sign may be NULL). */
int fa_logsumexp_rows(int itemsize, int isa, const void *x, const void *b,
                       const void *mask, void *out, void *sign,
                       int64_t n, int64_t k, int nthreads);

/* out = y * (grad - sum(grad * y)) per row. */
int fa_softmax_backward_rows(int itemsize, int isa, const void *grad,
                              const void *y, void *out,
                              int64_t n, int64_t k, int nthreads);

/* out = grad - exp(y) * sum(grad) per row over selected entries; masked 0. */
int fa_log_softmax_backward_rows(int itemsize, int isa, const void *grad,
                                  const void *y, const void *mask, void *out,
                                  int64_t n, int64_t k, int nthreads);

/* Position of the first target outside [0, k) that is not ignore_index, or -1. */
int64_t fa_check_targets(const int64_t *target, int64_t n, int64_t k,
                         int64_t ignore_index);

/* Softmax cross entropy with index targets (n,): loss (n,) and/or grad (n, k)
 * in one pass; grad may be x (logits overwritten by their gradient). */
int fa_cross_entropy_index_rows(int itemsize, int isa, const void *x,
                                 const int64_t *target, const void *weight,
                                 int64_t ignore_index, double label_smoothing,
                                 double z_loss, double a, double b, double g,
                                 const void *row_scale, void *loss, void *grad,
                                 int64_t n, int64_t k, int nthreads);

/* Softmax cross entropy with probability targets (n, k). */
int fa_cross_entropy_prob_rows(int itemsize, int isa, const void *x,
                                const void *target, const void *weight,
                                double label_smoothing, double z_loss,
                                double a, double b, double g,
                                const void *row_scale, void *loss, void *grad,
                                int64_t n, int64_t k, int nthreads);

/* The same kernels over the middle axis of C-contiguous (outer, k, inner)
 * arrays (row data; per-row data are (outer, inner)), without a whole-array
 * copy: tiles are transposed through a bounded per-thread scratch
 * (csrc/strided.c).  Return 0, or -1 when the scratch could not be allocated. */
int fa_softmax_strided(int itemsize, int isa, const void *x, const void *mask, void *out,
                       int64_t outer, int64_t k, int64_t inner, int nthreads);
int fa_log_softmax_strided(int itemsize, int isa, const void *x, const void *mask, void *out,
                           int64_t outer, int64_t k, int64_t inner, int nthreads);
int fa_logsumexp_strided(int itemsize, int isa, const void *x, const void *b,
                         const void *mask, void *out, void *sign,
                         int64_t outer, int64_t k, int64_t inner, int nthreads);
int fa_softmax_backward_strided(int itemsize, int isa, const void *grad, const void *y,
                                void *out, int64_t outer, int64_t k, int64_t inner,
                                int nthreads);
int fa_log_softmax_backward_strided(int itemsize, int isa, const void *grad, const void *y,
                                    const void *mask, void *out, int64_t outer, int64_t k,
                                    int64_t inner, int nthreads);
int fa_cross_entropy_index_strided(int itemsize, int isa, const void *x,
                                   const int64_t *target, const void *weight,
                                   int64_t ignore_index, double label_smoothing,
                                   double z_loss, double a, double b, double g,
                                   const void *row_scale, void *loss, void *grad,
                                   int64_t outer, int64_t k, int64_t inner, int nthreads);
int fa_cross_entropy_prob_strided(int itemsize, int isa, const void *x, const void *target,
                                  const void *weight, double label_smoothing, double z_loss,
                                  double a, double b, double g, const void *row_scale,
                                  void *loss, void *grad, int64_t outer, int64_t k,
                                  int64_t inner, int nthreads);

/* The row kernels (float32/float64) on z = x * scale of the logits x, in
 * blocks (csrc/transform.c); backwards and the cross-entropy gradient w.r.t.
 * x (times scale).  No mask.  Return 0, or -1 when the scratch could not be
 * allocated. */
int fa_softmax_rows_xf(int itemsize, int isa, double scale, const void *x, void *out, int64_t n,
                       int64_t k, int nthreads);
int fa_log_softmax_rows_xf(int itemsize, int isa, double scale, const void *x, void *out,
                           int64_t n, int64_t k, int nthreads);
int fa_logsumexp_rows_xf(int itemsize, int isa, double scale, const void *x, const void *b,
                         void *out, void *sign, int64_t n, int64_t k, int nthreads);
int fa_softmax_backward_rows_xf(int itemsize, int isa, double scale, const void *grad,
                                const void *y, void *out, int64_t n, int64_t k, int nthreads);
int fa_log_softmax_backward_rows_xf(int itemsize, int isa, double scale, const void *grad,
                                    const void *y, void *out, int64_t n, int64_t k,
                                    int nthreads);
int fa_cross_entropy_index_rows_xf(int itemsize, int isa, double scale, const void *x,
                                   const int64_t *target, const void *weight,
                                   int64_t ignore_index, double label_smoothing, double z_loss,
                                   double a, double b, double g, const void *row_scale,
                                   void *loss, void *grad, int64_t n, int64_t k, int nthreads);
int fa_cross_entropy_prob_rows_xf(int itemsize, int isa, double scale, const void *x,
                                  const void *target, const void *weight, double label_smoothing,
                                  double z_loss, double a, double b, double g,
                                  const void *row_scale, void *loss, void *grad, int64_t n,
                                  int64_t k, int nthreads);

/* float16 (code 2) or bfloat16 (2 | FA_BF16) <-> float32, n elements:
 * widening exact, narrowing to nearest-even with subnormals kept. */
void fa_half_widen(int code, int isa, const void *src, float *dst, int64_t n);
void fa_half_narrow(int code, int isa, const float *src, void *dst, int64_t n);

#endif
