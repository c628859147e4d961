"""Threads for the elementwise kernels (sigmoid family, activations, BCE).

``chunked`` is what the native backends use: their kernels release the GIL,
so a large call is split into contiguous chunks run concurrently on a small
shared pool.  (The modules themselves are loaded by ``fastact._backends.load(name,
"elementwise")``; their contract is ``numpy_elementwise``'s docstring.)
"""

from __future__ import annotations

import threading

#: Below this many elements per thread a call runs on the caller's thread only
#: (starting work on the pool costs ~20 us; one thread does ~2e5 elements in that).
MIN_CHUNK = 1 << 16
#: The same for ops without a transcendental function (relu and its backward),
#: which move memory more than they compute: measured here (2-core AVX2 VM,
#: float32), relu on 65536x10 took 84 us on one thread and 100 us on two; on
#: 8192x512 (4M elements) two threads take 0.41x the time.
MIN_CHUNK_CHEAP = 1 << 19
CHEAP_OPS = frozenset({"relu"})


def min_chunk(op):
    """The per-thread minimum of elementwise op ``op`` (a name of UNARY)."""
    return MIN_CHUNK_CHEAP if op in CHEAP_OPS else MIN_CHUNK


_pool = None
_pool_size = 0
_pool_lock = threading.Lock()


def _executor(workers):
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < workers:
            from concurrent.futures import ThreadPoolExecutor

            old = _pool
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fastact")
            _pool_size = workers
            if old is not None:
                old.shutdown(wait=False)
        return _pool


def chunks(n, nthreads, min_chunk=MIN_CHUNK):
    """``[(start, stop), ...]``: at most ``nthreads`` contiguous chunks of at least
    ``min_chunk`` elements (one chunk when ``n`` is small), multiples of 64 apart."""
    parts = max(1, min(int(nthreads), n // max(min_chunk, 1)))
    if parts == 1:
        return [(0, n)]
    step = -(-n // parts)
    step = -(-step // 64) * 64
    return [(i, min(n, i + step)) for i in range(0, n, step)]


def chunked(fn, n, nthreads, min_chunk=MIN_CHUNK):
    """``[fn(start, stop) for each chunk]``, the chunks after the first run on the pool
    (``fn`` must release the GIL to gain anything)."""
    return run_ranges(fn, chunks(n, nthreads, min_chunk))


def run_ranges(fn, parts):
    """``[fn(start, stop) for (start, stop) in parts]``, the parts after the first
    on the pool."""
    if len(parts) == 1:
        return [fn(*parts[0])]
    pool = _executor(len(parts) - 1)
    futs = [pool.submit(fn, a, b) for a, b in parts[1:]]
    first = fn(*parts[0])
    return [first] + [f.result() for f in futs]
