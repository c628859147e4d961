"""Is any op slower at 2 threads than at 1?  Times each op x shape at 1 and 2
threads, interleaved (1, 2, 1, 2; best of each), ``out=`` preallocated, and
flags the cells where 2 threads take more than 1.05x the 1-thread time.

    python benchmarks/threads_scaling.py [c|numba]

The thresholds below which a call stays on one thread (per kernel family:
csrc/pool.c FA_MIN_ELEMS_PER_THREAD, numba_kernels._PAR_MIN_ELEMS and
_PAR_MIN_ELEMS_BWD, elementwise.MIN_CHUNK and MIN_CHUNK_CHEAP) were set from
this script's output.
"""

import sys
import time

import numpy as np

import fastact

SHAPES = [(8, 10), (64, 100), (256, 256), (65536, 10), (8192, 512), (4096, 1000),
          (512, 32000), (64, 128256)]


def best(f, seconds=0.15):
    f()
    f()
    b = float("inf")
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a = time.perf_counter()
        f()
        b = min(b, time.perf_counter() - a)
    return b


def main():
    be = sys.argv[1] if len(sys.argv) > 1 else "c"
    slower = 0
    for n, k in SHAPES:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, k), dtype=np.float32) * 2
        g = rng.standard_normal((n, k), dtype=np.float32)
        t = rng.integers(0, k, n)
        p = rng.random((n, k), dtype=np.float32)
        o, r = np.empty_like(x), np.empty(n, np.float32)
        ops = {
            "softmax": lambda: fastact.softmax(x, out=o, backend=be),
            "log_softmax": lambda: fastact.log_softmax(x, out=o, backend=be),
            "logsumexp": lambda: fastact.logsumexp(x, out=r, backend=be),
            "softmax_backward": lambda: fastact.softmax_backward(g, x, out=o, backend=be),
            "ce_with_grad": lambda: fastact.softmax_cross_entropy_with_grad(x, t, out=o,
                                                                            backend=be),
            "relu": lambda: fastact.relu(x, out=o, backend=be),
            "sigmoid": lambda: fastact.sigmoid(x, out=o, backend=be),
            "gelu": lambda: fastact.gelu(x, out=o, backend=be),
            "bce_with_grad": lambda: fastact.sigmoid_binary_cross_entropy_with_grad(
                x, p, out=o, backend=be),
        }
        for name, f in ops.items():
            tm = {}
            for th in (1, 2, 1, 2):
                fastact.set_num_threads(th)
                tm[th] = min(tm.get(th, float("inf")), best(f))
            flag = tm[2] > 1.05 * tm[1]
            slower += flag
            print(f"{name:18s} {n}x{k:<8d} 1 thread {tm[1] * 1e6:10.1f} us   2 threads "
                  f"{tm[2] * 1e6:10.1f} us   2/1 {tm[2] / tm[1]:5.2f}"
                  + ("   <-- slower at 2" if flag else ""))
    print(f"{slower} of {len(SHAPES) * 9} cells more than 5% slower at 2 threads ({be})")


if __name__ == "__main__":
    main()
