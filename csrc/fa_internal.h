/* What every part of the C kernels shares (not part of the API): includes,
 * the platform switches, small macros, and the arguments of a row kernel.
 *
 * The row kernels are one translation unit, fastact.c, which includes the
 * other .c files of the rows in order: the vector vocabularies (isa_*.h) and
 * the row template per ISA (dispatch.c), the half and strided drivers.  The
 * thread pool is its own (pool.c).  One translation unit keeps every kernel static and
 * inlined as one file would.  The elementwise kernels are the other
 * (elementwise.c, expanding ew_template.c per ISA through ew_expand.h); they
 * share the ISA levels (fa_isa_level) and the thread pool (fa_run).
 */
#ifndef FA_INTERNAL_H
#define FA_INTERNAL_H

#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fastact.h"

#if !defined(_WIN32)
#include <pthread.h>
#define FA_HAVE_PTHREADS 1
#else
#define FA_HAVE_PTHREADS 0
#endif

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define FA_X86 1
#ifndef FA_USE_TILES
#define FA_USE_TILES 1
#endif
#include <immintrin.h>
#else
#define FA_X86 0
#define FA_USE_TILES 0
#endif

/* For helpers called with constant flags, so that each call site gets its
 * own loop without the flag tests. */
#if defined(__GNUC__) || defined(__clang__)
#define FA_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define FA_ALWAYS_INLINE inline
#endif

/* Prefetch the cache lines of [p + j, p + j + bytes) (rw: 1 for a write).
 * Integer arithmetic: the lines may lie past the end of the array, where a
 * prefetch is harmless but pointer arithmetic would not be. */
#if defined(__GNUC__) || defined(__clang__)
#define FA_PREFETCH_LINES(p, j, rw, bytes)                                       \
    do {                                                                         \
        const uintptr_t fa_pa_ = (uintptr_t)(p) + (uintptr_t)(j) * sizeof(*(p)); \
        for (size_t fa_o_ = 0; fa_o_ < (bytes); fa_o_ += 64)                     \
            __builtin_prefetch((const void *)(fa_pa_ + fa_o_), (rw), 3);         \
    } while (0)
#else
#define FA_PREFETCH_LINES(p, j, rw, bytes) ((void)0)
#endif

/* Arguments of every row kernel; unused fields stay 0/NULL.  For the backward
 * kernels x is `grad`; for cross entropy with probabilities tprob is the
 * target. */
typedef struct fa_args {
    const void *x, *y, *b, *tprob, *weight, *row_scale;
    const unsigned char *mask;
    const int64_t *target;
    void *out, *sign, *loss, *grad;
    int64_t n, k, ignore_index;
    double eps, z_loss, a, b_coef, g, wsum;
    int stream; /* softmax/log_softmax: write the result with non-temporal stores */
} fa_args;

typedef void (*fa_rows_fn)(const fa_args *, int64_t r0, int64_t r1);

/* Widest strip of columns (elements) of the column kernels (rows_cols.c). */
#define COLS_MAX 512

/* A strip of w columns of a (k, inner) slab for the column kernels
 * (rows_cols.c: softmax, log_softmax, logsumexp and index-target cross
 * entropy without label smoothing over an axis that is not the last;
 * strided.c drives them).  x, out (softmax, log_softmax) and grad point at
 * the strip's element (0, 0), at row stride inner; logsumexp's out and sign
 * (NULL: none), cross entropy's target, row_scale (NULL: 1) and loss (NULL:
 * none) at its w per-column values; weight (NULL: 1) per class.  scratch:
 * NULL or k x (w rounded up to the vector length) elements, the packed strip.
 * op: 0 softmax, 1 log_softmax, 2 logsumexp, 3 cross entropy (a, bz = b z,
 * g: fa_args' coefficients).  Returns 1 (nothing written) for a strip with
 * a column whose max is not finite, else 0. */
typedef struct fa_cols_args {
    const void *x;
    void *out, *sign, *scratch;
    int64_t k, inner, w;
    int op;
    const int64_t *target;
    const void *weight, *row_scale;
    void *loss, *grad;
    int64_t ignore_index;
    double a, bz, g;
} fa_cols_args;

typedef int (*fa_cols_fn)(const fa_cols_args *);

/* Compile the functions that follow for an x86 target ("avx2,fma", ...) up
 * to FA_TARGET_POP, with GCC or clang, without -m flags for the file. */
#define FA_PRAGMA(x) _Pragma(#x)
#if defined(__clang__)
#define FA_TARGET_PUSH(t) FA_PRAGMA(clang attribute push(__attribute__((target(t))), apply_to = function))
#define FA_TARGET_POP() FA_PRAGMA(clang attribute pop)
#else
#define FA_TARGET_PUSH(t) FA_PRAGMA(GCC push_options) FA_PRAGMA(GCC target(t))
#define FA_TARGET_POP() FA_PRAGMA(GCC pop_options)
#endif

/* Not part of the API, shared by the translation units (hidden in the
 * shared library where the compiler can say so). */
#if defined(__GNUC__) || defined(__clang__)
#define FA_HIDDEN __attribute__((visibility("hidden")))
#else
#define FA_HIDDEN
#endif

/* isa (FA_ISA_*) clamped to [baseline, fa_cpu_isa()] (dispatch.c). */
FA_HIDDEN int fa_isa_level(int isa);

/* fn over a's rows 0 .. a->n - 1 on up to nthreads threads of the pool
 * (pool.c): the row kernels' and the elementwise kernels' one pool. */
FA_HIDDEN void fa_run(fa_rows_fn fn, const fa_args *a, int nthreads);

/* The threads fa_run uses for n rows of k elements (at most nthreads). */
FA_HIDDEN int64_t fa_threads(int64_t n, int64_t k, int nthreads);

/* Short rows (k <= FA_TILE_ROWS) are split between threads at multiples of
 * FA_TILE_ROWS rows (pool.c's fa_part; half.c's blocks follow them). */
#define FA_TILE_ROWS 16

#endif
