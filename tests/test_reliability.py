"""Reliability: no allocation with out=, no memory growth, many threads at once,
memory-mapped and read-only inputs, arrays beyond 2**31 elements."""

from __future__ import annotations

import concurrent.futures as cf
import gc
import os
import tracemalloc

import numpy as np
import pytest

import fastact
from conftest import assert_close, truth_logsumexp, truth_softmax

def _calls(backend, rng, n=512, k=2048):
    """Every kernel with out= preallocated: (name, call) pairs."""
    x = rng.standard_normal((n, k)).astype(np.float32)
    g = rng.standard_normal((n, k)).astype(np.float32)
    y = fastact.softmax(x, backend="numpy")
    ly = fastact.log_softmax(x, backend="numpy")
    mask = rng.random((n, k)) < 0.9
    t = rng.integers(0, k, n)
    out = np.empty_like(x)
    lse = np.empty(n, np.float32)
    buf = x.copy()
    return [
        ("softmax", lambda: fastact.softmax(x, out=out, backend=backend)),
        ("softmax_masked", lambda: fastact.softmax(x, where=mask, out=out, backend=backend)),
        ("log_softmax", lambda: fastact.log_softmax(x, out=out, backend=backend)),
        ("logsumexp", lambda: fastact.logsumexp(x, out=lse, backend=backend)),
        ("softmax_backward", lambda: fastact.softmax_backward(g, y, out=out, backend=backend)),
        ("log_softmax_backward",
         lambda: fastact.log_softmax_backward(g, ly, out=out, backend=backend)),
        ("ce_with_grad_in_place", lambda: fastact.softmax_cross_entropy_with_grad(
            buf, t, label_smoothing=0.1, out=buf, backend=backend)),
        ("ce_backward", lambda: fastact.softmax_cross_entropy_backward(
            x, t, out=out, backend=backend)),
        ("ce_loss", lambda: fastact.softmax_cross_entropy(x, t, backend=backend)),
    ]


def test_out_calls_allocate_nothing_that_grows(native_backend, rng):
    backend = native_backend
    """With out= given, a call's traced allocations (NumPy's data included) stay
    far below the array size: ~4 MiB of input, a bound of 64 KiB."""
    for name, call in _calls(backend, rng):
        call()  # warm-up: compile, load
        gc.collect()
        tracemalloc.start()
        try:
            call()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 64 * 1024, f"{name}: {peak} bytes traced during one call"


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_no_resident_memory_growth(native_backend, rng):
    backend = native_backend
    calls = _calls(backend, rng, n=256, k=1024)
    for _, c in calls:
        c()
    gc.collect()
    before = _rss()
    for _ in range(200):
        for _, c in calls:
            c()
    gc.collect()
    grown = _rss() - before
    assert grown < 8 * 2 ** 20, f"resident memory grew by {grown / 2**20:.1f} MiB over 1800 calls"


def test_many_threads_at_once(rng):
    """16 Python threads, every kernel and backend mixed, each checks its own answer."""
    backends = fastact.available_backends()
    cases = []
    for i in range(24):
        x = (rng.standard_normal((64, 100 + i)) * 5).astype(np.float32 if i % 2 else np.float64)
        t = rng.integers(0, x.shape[1], 64)
        cases.append((x, t, fastact.softmax(x, backend="numpy"),
                      fastact.logsumexp(x, backend="numpy"),
                      fastact.softmax_cross_entropy(x, t, backend="numpy")))

    def work(j):
        x, t, ey, el, ece = cases[j % len(cases)]
        be = backends[j % len(backends)]
        for _ in range(20):
            assert_close(fastact.softmax(x, backend=be), ey.astype(np.float64), x.dtype, "prob")
            assert_close(fastact.logsumexp(x, backend=be), el.astype(np.float64), x.dtype, "log")
            ce = fastact.softmax_cross_entropy(x, t, backend=be)
            np.testing.assert_allclose(ce, ece, rtol=1e-5)
        return j

    with cf.ThreadPoolExecutor(16) as ex:
        done = list(ex.map(work, range(64)))
    assert done == list(range(64))


def test_memory_mapped_and_read_only_inputs(backend, rng, tmp_path):
    a = (rng.standard_normal((50, 33)) * 10).astype(np.float32)
    path = tmp_path / "x.bin"
    a.tofile(path)
    mm = np.memmap(path, dtype=np.float32, mode="r", shape=a.shape)
    assert_close(fastact.softmax(mm, backend=backend), truth_softmax(a), np.float32, "prob")
    assert_close(fastact.logsumexp(mm, axis=0, backend=backend), truth_logsumexp(a, 0),
                 np.float32, "log")
    t = rng.integers(0, 33, 50)
    el = fastact.softmax_cross_entropy(a, t, backend="numpy")
    np.testing.assert_allclose(fastact.softmax_cross_entropy(mm, t, backend=backend), el,
                               rtol=1e-5)
    np.testing.assert_array_equal(np.fromfile(path, np.float32).reshape(a.shape), a)


def _mem_available():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


HUGE_NEEDS = 14 * 2 ** 30


@pytest.mark.huge
@pytest.mark.skipif(_mem_available() < HUGE_NEEDS,
                    reason=f"needs {HUGE_NEEDS / 2**30:.0f} GiB of available memory")
def test_beyond_2_31_elements(native_backend):
    backend = native_backend
    """Rows longer than 2**31 elements, and row offsets beyond 2**31 (64-bit indexing)."""
    # one row of 2**31 + 64 elements, softmax in place
    n = 2 ** 31 + 64
    x = np.zeros((1, n), np.float32)
    x[0, n - 5] = 2.0
    x[0, 7] = -np.inf
    r = fastact.logsumexp(x, backend=backend)
    s = (n - 2) + np.exp(2.0)
    np.testing.assert_allclose(r[0], np.log(s), rtol=0, atol=4e-6 * np.log(s))
    fastact.softmax(x, out=x, backend=backend)
    np.testing.assert_allclose(x[0, [0, 2 ** 31 - 1, 2 ** 31, n - 1]], 1 / s, rtol=2e-6)
    np.testing.assert_allclose(x[0, n - 5], np.exp(2.0) / s, rtol=2e-6)
    assert x[0, 7] == 0
    del x
    # three rows of 2**30: the third row starts past 2**31
    k = 2 ** 30
    x = np.zeros((3, k), np.float32)
    x[2, k - 1] = 3.0
    x[1, 0] = 1.0
    fastact.log_softmax(x, out=x, backend=backend)
    s2 = (k - 1) + np.exp(3.0)
    np.testing.assert_allclose(x[2, [0, k - 1]], [-np.log(s2), 3.0 - np.log(s2)], rtol=0,
                               atol=4e-6 * np.log(s2))
    s1 = (k - 1) + np.e
    np.testing.assert_allclose(x[1, [0, 5]], [1 - np.log(s1), -np.log(s1)], rtol=0,
                               atol=4e-6 * np.log(s1))
    np.testing.assert_allclose(x[0, [0, k - 1]], -np.log(k), rtol=0, atol=4e-6 * np.log(k))
