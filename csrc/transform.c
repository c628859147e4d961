/* scale= (issue 21) for the float32/float64 row kernels: z = x * scale,
 * rounded in the dtype as fastact._backends.numpy_ref.transform does, the
 * kernels run on z, and the gradients w.r.t. the raw logits are those
 * w.r.t. z times scale (dz/dx).
 *
 * Included by fastact.c after the row entry points.  Like half.c, no kernel
 * is written again: the rows are split into blocks whose scratch stays in
 * L2, z of a block is computed into the scratch and the existing kernel runs
 * on it, writing its result straight into the caller's output (streamed as
 * the plain call's); backwards and the cross-entropy gradient multiply
 * their block's output by scale while it is in cache.  No mask, no bias, no
 * softcap here: those calls keep the Python block layer
 * (fastact/_transforms.py).  (softcap was tried here with the elementwise
 * tanh kernel: it is 2.4 ulp at worst against NumPy's 1.4, which a large
 * softcap magnifies past the transform tests' bounds, and at 1.4 ns per
 * element it costs more than the softmax it feeds.)
 *
 * Scratch per thread: FA_XF_SCRATCH bytes, allocated before the first block
 * (an allocation failure writes nothing): -1, MemoryError in Python.
 */

#ifndef FA_XF_SCRATCH
#define FA_XF_SCRATCH ((int64_t)128 << 10)
#endif

enum { FA_XF_FWD, FA_XF_BWD, FA_XF_CE };

typedef struct {
    fa_args a; /* first: fa_run hands &job->a to fa_xf_part */
    fa_rows_fn fn;
    int itemsize, isa, kind, row_out;
    double scale;
    int64_t block;
    fa_slots sc; /* the per-thread scratch (half.c) */
} fa_xf_job;

/* z = x * scale */
static void fa_xf_z(const fa_xf_job *J, const void *x, void *z, int64_t e)
{
    if (J->itemsize == 4) {
        const float *xs = (const float *)x;
        float *zs = (float *)z;
        const float s = (float)J->scale;
        for (int64_t j = 0; j < e; j++)
            zs[j] = xs[j] * s;
    } else {
        const double *xs = (const double *)x;
        double *zs = (double *)z;
        const double s = J->scale;
        for (int64_t j = 0; j < e; j++)
            zs[j] = xs[j] * s;
    }
}

/* g *= scale (nothing when scale is 1) */
static void fa_xf_times(const fa_xf_job *J, void *g, int64_t e)
{
    if (J->scale == 1.0)
        return;
    if (J->itemsize == 4) {
        float *gs = (float *)g;
        const float s = (float)J->scale;
        for (int64_t j = 0; j < e; j++)
            gs[j] = gs[j] * s;
    } else {
        double *gs = (double *)g;
        const double s = J->scale;
        for (int64_t j = 0; j < e; j++)
            gs[j] = gs[j] * s;
    }
}

#define FA_XF_AT(p, off) ((p) ? (const void *)((const char *)(p) + (off)) : NULL)
#define FA_XF_AT_W(p, off) ((p) ? (void *)((char *)(p) + (off)) : NULL)

static void fa_xf_part(const fa_args *A, int64_t r0, int64_t r1)
{
    const fa_xf_job *J = (const fa_xf_job *)A;
    const int64_t k = A->k, B = J->block, it = J->itemsize;
    int slot;
    char *own;
    fa_slots *sc = &((fa_xf_job *)A)->sc; /* A is the caller's (non-const) job */
    char *z = fa_slots_take(sc, &slot, &own);
    if (!z)
        return;
    for (int64_t i0 = r0; i0 < r1; i0 += B) {
        const int64_t m = r1 - i0 < B ? r1 - i0 : B, e = m * k;
        const int64_t ro = i0 * k * it, pr = i0 * it; /* byte offsets: rows, per-row data */
        fa_args s2 = *A;
        s2.n = m;
        s2.x = FA_XF_AT(A->x, ro);
        s2.y = FA_XF_AT(A->y, ro);
        s2.b = FA_XF_AT(A->b, ro);
        s2.tprob = FA_XF_AT(A->tprob, ro);
        s2.mask = NULL;
        s2.target = A->target ? A->target + i0 : NULL;
        s2.row_scale = FA_XF_AT(A->row_scale, pr);
        s2.loss = FA_XF_AT_W(A->loss, pr);
        s2.out = FA_XF_AT_W(A->out, J->row_out ? pr : ro);
        s2.sign = FA_XF_AT_W(A->sign, pr);
        s2.grad = FA_XF_AT_W(A->grad, ro);
        if (J->kind != FA_XF_BWD) {
            fa_xf_z(J, s2.x, z, e);
            s2.x = z;
        }
        J->fn(&s2, 0, m);
        void *g = J->kind == FA_XF_BWD ? s2.out : s2.grad;
        if (J->kind != FA_XF_FWD && g)
            fa_xf_times(J, g, e);
    }
    fa_slots_give(sc, slot, own);
}

/* The kernel of `tab` over a's rows (float32/float64) on z of the logits:
 * kind FA_XF_FWD (a->x the logits; row_out: logsumexp), FA_XF_CE (a->x the
 * logits; the gradient, if any, w.r.t. them), FA_XF_BWD (a->x, a->y: grad
 * and y, the output times scale).  Returns 0, or -1 when the scratch could
 * not be allocated (nothing written then). */
static int fa_xf_run(const fa_rows_fn tab[3][2], int itemsize, int isa, const fa_args *a,
                     int nthreads, int kind, int row_out, double scale)
{
    if (itemsize != 4 && itemsize != 8)
        return -1;
    if (a->n <= 0 || a->k <= 0)
        return 0;
    fa_xf_job J;
    memset(&J, 0, sizeof J);
    J.a = *a;
    J.fn = fa_pick(tab, itemsize, isa);
    J.itemsize = itemsize;
    J.isa = isa;
    J.kind = kind;
    J.row_out = row_out;
    J.scale = scale;
    /* results written straight to the caller's output: streamed as the
     * plain call's, unless a pass multiplies them afterwards */
    if (kind != FA_XF_FWD)
        J.a.stream = 0;
    const int64_t k = a->k;
    J.block = fa_block_rows(FA_XF_SCRATCH, k, itemsize);
    if (fa_slots_alloc(&J.sc, (int)fa_threads(a->n, a->k, nthreads),
                       (size_t)(J.block * k * itemsize)))
        return -1;
    fa_run(fa_xf_part, &J.a, nthreads);
    free(J.sc.mem);
    return J.sc.failed ? -1 : 0;
}

/* A softmax-family call of fa_row_args's arguments on z (as fa_rows_call) */
static int fa_xf_rows(const fa_rows_fn tab[3][2], int itemsize, int isa, double scale,
                      const void *x, const void *y, const void *b, void *out, void *sign,
                      int64_t n, int64_t k, int nthreads, int kind, int row_out, int stream)
{
    fa_args a;
    fa_row_args(&a, x, y, b, NULL, out, sign);
    a.n = n;
    a.k = k;
    a.stream = stream && fa_stream_out(n, k, itemsize);
    return fa_xf_run(tab, itemsize, isa, &a, nthreads, kind, row_out, scale);
}

int fa_softmax_rows_xf(int itemsize, int isa, double scale, const void *x,
                       void *out, int64_t n, int64_t k, int nthreads)
{
    return fa_xf_rows(softmax_rows_tab, itemsize, isa, scale, x, NULL, NULL, out, NULL, n, k,
                      nthreads, FA_XF_FWD, 0, 1);
}

int fa_log_softmax_rows_xf(int itemsize, int isa, double scale, const void *x,
                           void *out, int64_t n, int64_t k, int nthreads)
{
    return fa_xf_rows(log_softmax_rows_tab, itemsize, isa, scale, x, NULL, NULL, out, NULL, n,
                      k, nthreads, FA_XF_FWD, 0, 1);
}

int fa_logsumexp_rows_xf(int itemsize, int isa, double scale, const void *x,
                         const void *b, void *out, void *sign, int64_t n, int64_t k,
                         int nthreads)
{
    return fa_xf_rows(logsumexp_rows_tab, itemsize, isa, scale, x, NULL, b, out, sign, n, k,
                      nthreads, FA_XF_FWD, 1, 0);
}

int fa_softmax_backward_rows_xf(int itemsize, int isa, double scale,
                                const void *grad, const void *y, void *out,
                                int64_t n, int64_t k, int nthreads)
{
    return fa_xf_rows(softmax_backward_rows_tab, itemsize, isa, scale, grad, y, NULL, out, NULL,
                      n, k, nthreads, FA_XF_BWD, 0, 0);
}

int fa_log_softmax_backward_rows_xf(int itemsize, int isa, double scale,
                                    const void *grad, const void *y, void *out,
                                    int64_t n, int64_t k, int nthreads)
{
    return fa_xf_rows(log_softmax_backward_rows_tab, itemsize, isa, scale, grad, y, NULL, out,
                      NULL, n, k, nthreads, FA_XF_BWD, 0, 0);
}

int fa_cross_entropy_index_rows_xf(int itemsize, int isa, double scale,
                                   const void *x, const int64_t *target, const void *weight,
                                   int64_t ignore_index, double label_smoothing, double z_loss,
                                   double a_, double b, double g, const void *row_scale,
                                   void *loss, void *grad, int64_t n, int64_t k, int nthreads)
{
    fa_args a;
    if (!loss && !grad)
        return 0;
    fa_ce_args(&a, itemsize, x, target, NULL, weight, ignore_index, label_smoothing, z_loss, a_,
               b, g, row_scale, loss, grad, k);
    a.n = n;
    a.k = k;
    return fa_xf_run(cross_entropy_index_rows_tab, itemsize, isa, &a, nthreads, FA_XF_CE, 0,
                     scale);
}

int fa_cross_entropy_prob_rows_xf(int itemsize, int isa, double scale,
                                  const void *x, const void *target, const void *weight,
                                  double label_smoothing, double z_loss, double a_, double b,
                                  double g, const void *row_scale, void *loss, void *grad,
                                  int64_t n, int64_t k, int nthreads)
{
    fa_args a;
    if (!loss && !grad)
        return 0;
    fa_ce_args(&a, itemsize, x, NULL, target, weight, 0, label_smoothing, z_loss, a_, b, g,
               row_scale, loss, grad, k);
    a.n = n;
    a.k = k;
    return fa_xf_run(cross_entropy_prob_rows_tab, itemsize, isa, &a, nthreads, FA_XF_CE, 0,
                     scale);
}
