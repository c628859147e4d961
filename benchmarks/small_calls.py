"""Per-call time of fastact.softmax on tiny float32 arrays against torch.softmax,
interleaved in one process, 1 thread (the common call's fast path: a NumPy
array, the last axis, no where/b/backend=).

    python benchmarks/small_calls.py
"""

import timeit

import numpy as np
import torch

import fastact


def per_call(f, n=20000, repeat=7):
    return min(timeit.repeat(f, number=n, repeat=repeat)) / n * 1e6


def main():
    fastact.set_num_threads(1)
    torch.set_num_threads(1)
    print(f"fastact {fastact.__version__} (backend {fastact.get_backend()}), "
          f"torch {torch.__version__}; us per call, best of 7 x 20000")
    for shape in [(10,), (100,), (8, 10), (64, 100)]:
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        o = np.empty_like(x)
        t = torch.from_numpy(x)
        to = torch.empty_like(t)
        a = per_call(lambda: fastact.softmax(x))
        b = per_call(lambda: fastact.softmax(x, out=o))
        c = per_call(lambda: torch.softmax(t, -1))
        d = per_call(lambda: torch.softmax(t, -1, out=to))
        print(f"{str(shape):10s} fastact {a:6.2f}  out= {b:6.2f}   torch {c:6.2f}  out= {d:6.2f}"
              f"   ratio {a / c:4.2f} / {b / d:4.2f}")


if __name__ == "__main__":
    main()
