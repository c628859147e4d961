/* fastact C kernels: the row API (fastact.h).  Each entry point marshals its
 * arguments into an fa_args and hands it to the kernel of its table for the
 * dtype and ISA level (dispatch.c), on the thread pool (pool.c).  With the
 * .c files of the rows that it includes, one translation unit (see
 * fa_internal.h).
 */
#include "fa_internal.h"

#include "dispatch.c" /* the row kernels per ISA and dtype, fa_pick */

/* ======================================================== the C API */

/* Outputs of at least FA_STREAM_BYTES are written with non-temporal stores,
 * as glibc's memcpy does for large copies: input and output together then
 * exceed a core's share of a typical last-level cache, so the result would
 * not stay cached for the caller anyway, and streaming saves reading each
 * output line before writing it.  (A fixed size: cache sizes reported inside
 * VMs are unreliable; this one reported 384 MB for a 32 MB L3.)  Measured
 * (1 thread, time vs np.copyto): 512x32000 softmax 1.40x -> 1.26x, 64x128256
 * 1.70x -> 1.51x, 4096x1000 (16 MB) 1.51x -> 1.40x.  Smaller results stay in
 * cache for whoever reads them next.  (Tried: a threshold per thread, so
 * that 16 MB results are not streamed on 2 threads and stay in the L3: on
 * this shared VM, with another job on one of the 2 cores, 4096x1000 and
 * 8192x512 on 2 threads were 0.95-1.1x as fast as streamed, not faster.) */
#ifndef FA_STREAM_BYTES
#define FA_STREAM_BYTES ((int64_t)12 << 20)
#endif

static int fa_stream_out(int64_t n, int64_t k, int itemsize)
{
    return n * k * (int64_t)itemsize >= (int64_t)FA_STREAM_BYTES;
}

/* float16 / bfloat16: the float32 kernels over blocks of widened rows */
#include "half.c"

/* The kernel of `tab` for the dtype code over a's rows: float32/float64 as
 * they are, half dtypes through fa_half_run; row_out: out/sign per row.
 * Returns 0, or -1 when fa_half_run could not allocate its scratch. */
static int fa_dispatch(const fa_rows_fn tab[3][2], int code, int isa, const fa_args *a,
                       int nthreads, int row_out)
{
    if ((code & 0xff) == 2)
        return fa_half_run(tab, code, isa, a, nthreads, row_out);
    fa_run(fa_pick(tab, code, isa), a, nthreads);
    return 0;
}

/* The fa_args of a softmax-family call (fields a kernel does not read stay
 * 0; n, k and stream are the caller's), shared by the row entry points below
 * and the strided ones (strided.c). */
static void fa_row_args(fa_args *a, const void *x, const void *y, const void *b,
                        const void *mask, void *out, void *sign)
{
    *a = (fa_args){.x = x, .y = y, .b = b, .mask = (const unsigned char *)mask, .out = out,
                   .sign = sign};
}

static double fa_weight_sum(int itemsize, const void *weight, int64_t k);

/* The fa_args of a cross-entropy call, index targets (target) or
 * probabilities (tprob); as fa_row_args. */
static void fa_ce_args(fa_args *a, int itemsize, const void *x, const int64_t *target,
                       const void *tprob, const void *weight, int64_t ignore_index,
                       double label_smoothing, double z_loss, double a_, double b, double g,
                       const void *row_scale, void *loss, void *grad, int64_t k)
{
    *a = (fa_args){.x = x, .target = target, .tprob = tprob, .weight = weight,
                   .ignore_index = ignore_index, .eps = label_smoothing, .z_loss = z_loss,
                   .a = a_, .b_coef = b, .g = g, .row_scale = row_scale, .loss = loss,
                   .grad = grad};
    if (target && label_smoothing != 0)
        a->wsum = fa_weight_sum(itemsize, weight, k);
}

/* One row call: the fa_args of fa_row_args over n rows of k, the output
 * streamed when `stream` asks and it is large (fa_stream_out), run on the
 * kernel of `tab`; row_out: out and sign are per row (logsumexp). */
static FA_ALWAYS_INLINE int fa_rows_call(const fa_rows_fn tab[3][2], int itemsize, int isa,
                                           const void *x, const void *y, const void *b,
                                           const void *mask, void *out, void *sign, int64_t n,
                                           int64_t k, int nthreads, int stream, int row_out)
{
    fa_args a;
    fa_row_args(&a, x, y, b, mask, out, sign);
    a.n = n;
    a.k = k;
    a.stream = stream && fa_stream_out(n, k, itemsize);
    return fa_dispatch(tab, itemsize, isa, &a, nthreads, row_out);
}

int fa_softmax_rows(int itemsize, int isa, const void *x, const void *mask,
                     void *out, int64_t n, int64_t k, int nthreads)
{
    return fa_rows_call(softmax_rows_tab, itemsize, isa, x, NULL, NULL, mask, out, NULL, n, k,
                        nthreads, 1, 0);
}

int fa_log_softmax_rows(int itemsize, int isa, const void *x, const void *mask,
                         void *out, int64_t n, int64_t k, int nthreads)
{
    return fa_rows_call(log_softmax_rows_tab, itemsize, isa, x, NULL, NULL, mask, out, NULL, n,
                        k, nthreads, 1, 0);
}

int fa_logsumexp_rows(int itemsize, int isa, const void *x, const void *b,
                       const void *mask, void *out, void *sign,
                       int64_t n, int64_t k, int nthreads)
{
    return fa_rows_call(logsumexp_rows_tab, itemsize, isa, x, NULL, b, mask, out, sign, n, k,
                        nthreads, 0, 1);
}

int fa_softmax_backward_rows(int itemsize, int isa, const void *grad,
                              const void *y, void *out,
                              int64_t n, int64_t k, int nthreads)
{
    return fa_rows_call(softmax_backward_rows_tab, itemsize, isa, grad, y, NULL, NULL, out,
                        NULL, n, k, nthreads, 0, 0);
}

int fa_log_softmax_backward_rows(int itemsize, int isa, const void *grad,
                                  const void *y, const void *mask, void *out,
                                  int64_t n, int64_t k, int nthreads)
{
    return fa_rows_call(log_softmax_backward_rows_tab, itemsize, isa, grad, y, NULL, mask, out,
                        NULL, n, k, nthreads, 0, 0);
}

int64_t fa_check_targets(const int64_t *target, int64_t n, int64_t k,
                         int64_t ignore_index)
{
    for (int64_t i = 0; i < n; i++) {
        const int64_t t = target[i];
        if ((t < 0 || t >= k) && t != ignore_index)
            return i;
    }
    return -1;
}

static double fa_weight_sum(int itemsize, const void *weight, int64_t k)
{
    double s = 0.0;
    if (!weight)
        return (double)k;
    if (itemsize == 8)
        for (int64_t j = 0; j < k; j++)
            s += ((const double *)weight)[j];
    else
        for (int64_t j = 0; j < k; j++)
            s += ((const float *)weight)[j];
    return s;
}

/* One cross-entropy row call (index targets or probabilities tprob), as
 * fa_rows_call; nothing to do without loss and grad. */
static FA_ALWAYS_INLINE int fa_ce_call(const fa_rows_fn tab[3][2], int itemsize, int isa,
                                         const void *x, const int64_t *target, const void *tprob,
                                         const void *weight, int64_t ignore_index,
                                         double label_smoothing, double z_loss, double a_,
                                         double b, double g, const void *row_scale, void *loss,
                                         void *grad, int64_t n, int64_t k, int nthreads,
                                         int stream)
{
    fa_args a;
    if (!loss && !grad)
        return 0;
    fa_ce_args(&a, itemsize, x, target, tprob, weight, ignore_index, label_smoothing, z_loss,
               a_, b, g, row_scale, loss, grad, k);
    a.n = n;
    a.k = k;
    a.stream = stream && grad != NULL && fa_stream_out(n, k, itemsize);
    return fa_dispatch(tab, itemsize, isa, &a, nthreads, 0);
}

int fa_cross_entropy_index_rows(int itemsize, int isa, const void *x,
                                 const int64_t *target, const void *weight,
                                 int64_t ignore_index, double label_smoothing,
                                 double z_loss, double a_, double b, double g,
                                 const void *row_scale, void *loss, void *grad,
                                 int64_t n, int64_t k, int nthreads)
{
    return fa_ce_call(cross_entropy_index_rows_tab, itemsize, isa, x, target, NULL, weight,
                      ignore_index, label_smoothing, z_loss, a_, b, g, row_scale, loss, grad, n,
                      k, nthreads, 1);
}

int fa_cross_entropy_prob_rows(int itemsize, int isa, const void *x,
                                const void *target, const void *weight,
                                double label_smoothing, double z_loss,
                                double a_, double b, double g,
                                const void *row_scale, void *loss, void *grad,
                                int64_t n, int64_t k, int nthreads)
{
    return fa_ce_call(cross_entropy_prob_rows_tab, itemsize, isa, x, NULL, target, weight, 0,
                      label_smoothing, z_loss, a_, b, g, row_scale, loss, grad, n, k, nthreads,
                      0);
}

/* scale= and softcap=: the row kernels above on blocks of transformed rows. */
#include "transform.c"

/* Any axis: the strided driver over the row kernels above. */
#include "strided.c"
