"""Does a backend release the GIL?  Two Python threads each doing the work of one.

With the kernels single-threaded (fastact.set_num_threads(1)), one thread does
N calls; then two threads do N calls each (twice the work).  A backend that
releases the GIL takes about the same wall time for both (ratio ~1.0 on a
machine with 2 free cores); one that holds it takes twice as long (~2.0).

    python benchmarks/gil_release.py [--backends c,numba,numpy] [--calls 200]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import numpy as np

import fastact


def _wall(fns, calls):
    """Wall time for each of ``fns`` called ``calls`` times, each on its own thread."""
    barrier = threading.Barrier(len(fns) + 1)

    def worker(f):
        barrier.wait()
        for _ in range(calls):
            f()

    ts = [threading.Thread(target=worker, args=(f,)) for f in fns]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    return time.perf_counter() - t0


def measure(backend, calls=200, shape=(1024, 1000), repeats=5):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)

    def make():
        out = np.empty_like(x)  # each thread its own out buffer
        f = lambda: fastact.softmax(x, out=out, backend=backend)  # noqa: E731
        f()
        return f

    fns = [make(), make()]
    one = statistics.median(_wall(fns[:1], calls) for _ in range(repeats))
    two = statistics.median(_wall(fns, calls) for _ in range(repeats))
    return one, two


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default=",".join(fastact.available_backends()))
    p.add_argument("--calls", type=int, default=200)
    a = p.parse_args(argv)
    fastact.set_num_threads(1)
    print(f"softmax 1024x1000 float32, kernels single-threaded, {a.calls} calls per thread")
    print(f"{'backend':8s} {'1 thread':>10s} {'2 threads x2 work':>18s} {'ratio':>6s}")
    for be in a.backends.split(","):
        one, two = measure(be, a.calls)
        print(f"{be:8s} {one * 1e3:8.1f}ms {two * 1e3:16.1f}ms {two / one:6.2f}")


if __name__ == "__main__":
    main()
