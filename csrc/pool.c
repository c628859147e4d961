/* The thread pool that runs every threaded C kernel (fa_run: the row
 * kernels, the half and strided drivers, the elementwise kernels), and how
 * many threads a call gets.  A translation unit of its own. */
#include "fa_internal.h"

/* ============================================================== threads */

/* Rows are split into contiguous parts.  Threads come from a persistent pool
 * (started on first use, woken per call: ~5-10 us instead of ~20-50 us for
 * pthread_create + join), and the caller works too: it takes parts from the
 * same counter as the workers, so a worker that is slow to wake (a busy
 * machine) costs at most its parts' time, never a stall.  Each thread gets at
 * least FA_MIN_ELEMS_PER_THREAD elements; there are up to FA_PARTS_PER_THREAD
 * parts per thread for balance.  Calls from several threads at once are
 * safe: a call that finds the pool busy runs on its own thread alone. */
#define FA_MIN_ELEMS_PER_THREAD ((int64_t)1 << 16)
#define FA_MIN_ELEMS_PER_PART ((int64_t)1 << 15)
#ifndef FA_PARTS_PER_THREAD
#define FA_PARTS_PER_THREAD 4
#endif
#define FA_MAX_THREADS 64

#if FA_HAVE_PTHREADS
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    int nworkers;       /* started and waiting on `work` */
    uint64_t gen;       /* bumped per job */
    fa_rows_fn fn;
    const fa_args *a;
    int64_t n, align, nparts, next, remaining;
} fa_pool_t;

static fa_pool_t fa_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                            PTHREAD_COND_INITIALIZER, 0, 0, NULL, NULL, 0, 1, 0, 0, 0};
static pthread_mutex_t fa_pool_owner = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t fa_pool_once = PTHREAD_ONCE_INIT;

/* Part p of nparts over n rows, in units of `align` rows (the last part
 * takes the remainder): short rows (k <= FA_TILE_ROWS) are split at multiples
 * of FA_TILE_ROWS, so that every row falls in the same row tile (or the same
 * tail) whatever the number of threads, and results do not depend on it. */
static void fa_part(int64_t n, int64_t align, int64_t nparts, int64_t p, int64_t *r0, int64_t *r1)
{
    const int64_t nb = n / align, q = nb / nparts, r = nb % nparts;
    *r0 = (q * p + (p < r ? p : r)) * align;
    *r1 = p == nparts - 1 ? n : *r0 + (q + (p < r)) * align;
}

/* Takes and runs parts of the current job until none is left; called and
 * returns with fa_pool.mu held. */
static void fa_pool_drain(void)
{
    while (fa_pool.next < fa_pool.nparts) {
        const int64_t p = fa_pool.next++;
        const fa_rows_fn fn = fa_pool.fn;
        const fa_args *a = fa_pool.a;
        int64_t r0, r1;
        fa_part(fa_pool.n, fa_pool.align, fa_pool.nparts, p, &r0, &r1);
        pthread_mutex_unlock(&fa_pool.mu);
        fn(a, r0, r1);
        pthread_mutex_lock(&fa_pool.mu);
        if (--fa_pool.remaining == 0)
            pthread_cond_signal(&fa_pool.done);
    }
}

static void *fa_worker_main(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&fa_pool.mu);
    uint64_t seen = fa_pool.gen;
    for (;;) {
        while (fa_pool.gen == seen)
            pthread_cond_wait(&fa_pool.work, &fa_pool.mu);
        seen = fa_pool.gen;
        fa_pool_drain();
    }
    return NULL;
}

/* In a child after fork() the workers are gone: start afresh. */
static void fa_pool_atfork_child(void)
{
    pthread_mutex_init(&fa_pool.mu, NULL);
    pthread_cond_init(&fa_pool.work, NULL);
    pthread_cond_init(&fa_pool.done, NULL);
    pthread_mutex_init(&fa_pool_owner, NULL);
    fa_pool.nworkers = 0;
    fa_pool.nparts = fa_pool.next = fa_pool.remaining = 0;
}

static void fa_pool_init(void)
{
    pthread_atfork(NULL, NULL, fa_pool_atfork_child);
}

/* Runs fn over the rows on nt threads (the caller and nt - 1 workers);
 * returns 0 when the pool is busy (the caller then runs alone). */
static int fa_pool_run(fa_rows_fn fn, const fa_args *a, int64_t nt, int64_t nparts)
{
    pthread_once(&fa_pool_once, fa_pool_init);
    if (pthread_mutex_trylock(&fa_pool_owner) != 0)
        return 0;
    pthread_mutex_lock(&fa_pool.mu);
    while (fa_pool.nworkers < nt - 1) {
        pthread_t th;
        pthread_attr_t attr;
        int ok = pthread_attr_init(&attr) == 0;
        if (ok) {
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            ok = pthread_create(&th, &attr, fa_worker_main, NULL) == 0;
            pthread_attr_destroy(&attr);
        }
        if (!ok)
            break; /* fewer workers: the caller takes their parts */
        fa_pool.nworkers++;
    }
    fa_pool.fn = fn;
    fa_pool.a = a;
    fa_pool.n = a->n;
    fa_pool.align = a->k <= FA_TILE_ROWS ? FA_TILE_ROWS : 1;
    fa_pool.nparts = nparts;
    fa_pool.next = 0;
    fa_pool.remaining = nparts;
    fa_pool.gen++;
    /* Wake only as many workers as this call wants (a pool started for more
     * threads keeps its extra workers asleep). */
    if (fa_pool.nworkers > 0) {
        if (nt - 1 >= fa_pool.nworkers)
            pthread_cond_broadcast(&fa_pool.work);
        else
            for (int64_t t = 0; t < nt - 1; t++)
                pthread_cond_signal(&fa_pool.work);
    }
    fa_pool_drain();
    while (fa_pool.remaining > 0)
        pthread_cond_wait(&fa_pool.done, &fa_pool.mu);
    fa_pool.fn = NULL;
    fa_pool.a = NULL;
    pthread_mutex_unlock(&fa_pool.mu);
    pthread_mutex_unlock(&fa_pool_owner);
    return 1;
}
#endif

/* Threads for n rows of k elements (at most nthreads). */
int64_t fa_threads(int64_t n, int64_t k, int nthreads)
{
    int64_t nt = nthreads < 1 ? 1 : nthreads;
    const int64_t by_work = n * k / FA_MIN_ELEMS_PER_THREAD;
    if (nt > by_work)
        nt = by_work;
    if (nt > n)
        nt = n;
    if (nt > FA_MAX_THREADS)
        nt = FA_MAX_THREADS;
    return nt < 1 ? 1 : nt;
}

void fa_run(fa_rows_fn fn, const fa_args *a, int nthreads)
{
    const int64_t n = a->n;
    const int64_t nt = fa_threads(n, a->k, nthreads);
    const int64_t work = n * a->k;
#if FA_HAVE_PTHREADS
    if (nt > 1) {
        int64_t nparts = nt * FA_PARTS_PER_THREAD;
        if (nparts > work / FA_MIN_ELEMS_PER_PART)
            nparts = work / FA_MIN_ELEMS_PER_PART;
        if (nparts > n)
            nparts = n;
        if (nparts < nt)
            nparts = nt;
        if (fa_pool_run(fn, a, nt, nparts))
            return;
    }
#endif
    fn(a, 0, n);
}
