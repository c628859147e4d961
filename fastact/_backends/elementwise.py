"""Registry of the elementwise kernel modules (sigmoid family, activations, BCE).

``load(name)`` maps a backend name ("numpy", "numba", "c") to its elementwise
module, imported on first use (the contract is ``numpy_elementwise``'s
docstring).  ``chunked`` is what the native backends use for threads: their
kernels release the GIL, so a large call is split into contiguous chunks run
concurrently on a small shared pool.
"""

from __future__ import annotations

import importlib
import threading

_MODULES = {
    "numpy": "fastact._backends.numpy_elementwise",
    "numba": "fastact._backends.numba_elementwise",
    "c": "fastact._backends.c_elementwise",
}
_loaded: dict = {}
_errors: dict = {}
_lock = threading.Lock()

#: Below this many elements per thread a call runs on the caller's thread only
#: (starting work on the pool costs ~20 us; one thread does ~2e5 elements in that).
MIN_CHUNK = 1 << 16


def load(name):
    """The elementwise module of backend ``name``; ``RuntimeError`` saying why if unavailable."""
    mod = _loaded.get(name)
    if mod is not None:
        return mod
    if name not in _MODULES:
        raise ValueError(f"unknown backend {name!r}; expected one of {tuple(_MODULES)}")
    with _lock:
        if name in _loaded:
            return _loaded[name]
        if name in _errors:
            raise RuntimeError(f"backend {name!r} has no elementwise kernels: {_errors[name]}")
        try:
            mod = importlib.import_module(_MODULES[name])
        except Exception as e:  # ImportError, an extension built without the kernels ...
            _errors[name] = f"{type(e).__name__}: {e}"
            raise RuntimeError(
                f"backend {name!r} has no elementwise kernels: {_errors[name]}") from None
        _loaded[name] = mod
        return mod


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
    parts = chunks(n, nthreads, min_chunk)
    if len(parts) == 1:
        return [fn(0, n)]
    pool = _executor(len(parts) - 1)
    futs = [pool.submit(fn, a, b) for a, b in parts[1:]]
    first = fn(*parts[0])
    return [first] + [f.result() for f in futs]
