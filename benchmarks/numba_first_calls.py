"""First-call (Numba compilation) and cached-call (load from the disk cache)
seconds of each row function on the Numba backend.

Each op runs in a fresh process with an empty NUMBA_CACHE_DIR (the first call),
then in another fresh process with the same directory (the cached call); the
time is that of the call alone (``import fastact`` and loading the backend
module are before it).  Compare two trees with PYTHONPATH:

    python benchmarks/numba_first_calls.py [--shape 64x100] [--threads 1] [op ...]
"""

import argparse
import os
import subprocess
import sys
import tempfile

OPS = {
    "softmax": "fastact.softmax(x, backend='numba')",
    "log_softmax": "fastact.log_softmax(x, backend='numba')",
    "logsumexp": "fastact.logsumexp(x, axis=-1, backend='numba')",
    "softmax_backward": "fastact.softmax_backward(g, y, backend='numba')",
    "log_softmax_backward": "fastact.log_softmax_backward(g, y, backend='numba')",
    "softmax_cross_entropy": "fastact.softmax_cross_entropy(x, t, backend='numba')",
    "softmax_cross_entropy_backward":
        "fastact.softmax_cross_entropy_backward(x, t, backend='numba')",
    "softmax_cross_entropy_with_grad":
        "fastact.softmax_cross_entropy_with_grad(x, t, backend='numba')",
}

CHILD = """
import time, numpy as np, fastact
from fastact import _backends
n, k = {n}, {k}
rng = np.random.default_rng(0)
x = rng.standard_normal((n, k)).astype('{dtype}')
g = rng.standard_normal((n, k)).astype('{dtype}')
y = fastact.softmax(x, backend='numpy')
t = rng.integers(0, k, n)
fastact.set_num_threads({threads})
_backends.load('numba')
t0 = time.perf_counter()
{call}
print(time.perf_counter() - t0)
"""


def call_seconds(op, cache, args):
    n, k = map(int, args.shape.split("x"))
    code = CHILD.format(n=n, k=k, dtype=args.dtype, threads=args.threads, call=OPS[op])
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    # cwd: the cache directory, so that ``-c``'s first sys.path entry (the working
    # directory) does not shadow the tree PYTHONPATH names
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True, cwd=cache)
    return float(out.stdout.split()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ops", nargs="*", default=list(OPS))
    ap.add_argument("--shape", default="64x100")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    print(f"{args.shape} {args.dtype}, {args.threads} thread(s); seconds")
    print(f"{'op':34s} {'first':>7s} {'cached':>7s}")
    total = [0.0, 0.0]
    for op in args.ops:
        with tempfile.TemporaryDirectory() as cache:
            first = call_seconds(op, cache, args)
            cached = call_seconds(op, cache, args)
        total = [total[0] + first, total[1] + cached]
        print(f"{op:34s} {first:7.2f} {cached:7.3f}", flush=True)
    print(f"{'total':34s} {total[0]:7.2f} {total[1]:7.3f}")


if __name__ == "__main__":
    main()
