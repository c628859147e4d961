"""How close can a softmax get to PyTorch's, at a given thread count?

softmax and log_softmax read the (n, k) input once and write an output of the
same size, so no kernel can take less time than copying those bytes with the
same number of threads.  This script times, in one run and per thread count:

- ``np.copyto`` (one thread: the bench's "copy" column),
- ``torch.Tensor.copy_`` with ``torch.set_num_threads(t)``: a copy of the same
  bytes that uses t threads, the memory wall at t threads,
- ``torch.softmax`` / ``torch.log_softmax`` with ``out=`` at t threads,
- fastact's softmax / log_softmax with ``out=`` at t threads (each backend).

and prints every time as a multiple of the 1-thread ``np.copyto``, the time a
kernel needs to be 2x faster than torch (in the same unit), and torch time /
t-thread copy time: the speed-up over torch of a kernel that moves its bytes
exactly as fast as the t-thread copy.

    python benchmarks/memory_wall.py [--threads 1,2] [--shapes 4096x1000,...]
"""

from __future__ import annotations

import argparse

import numpy as np

import fastact
from fastact.bench import measure, parse_shapes

try:
    import torch
except ImportError:  # pragma: no cover - the script needs torch
    raise SystemExit("memory_wall.py needs torch (pip install '.[peers]')")


def _times(shape, threads, backends, min_time):
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    y = np.empty_like(x)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    copy1 = measure(lambda: np.copyto(y, x), min_time=min_time).median_s
    rows = []
    for t in threads:
        torch.set_num_threads(t)
        fastact.set_num_threads(t)
        r = {"copy_t": measure(lambda: ty.copy_(tx), min_time=min_time).median_s}
        for op in ("softmax", "log_softmax"):
            tf = getattr(torch, op)
            r[f"torch {op}"] = measure(lambda: tf(tx, -1, out=ty), min_time=min_time).median_s
            f = getattr(fastact, op)
            for b in backends:
                r[f"{b} {op}"] = measure(lambda: f(x, axis=-1, out=y, backend=b),
                                         min_time=min_time).median_s
        rows.append((t, r))
    return copy1, rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--shapes", default="standard")
    ap.add_argument("--backends", default=",".join(
        b for b in ("c", "numba") if b in fastact.available_backends()))
    ap.add_argument("--min-time", type=float, default=0.3)
    a = ap.parse_args(argv)
    threads = [int(t) for t in a.threads.split(",")]
    backends = [b for b in a.backends.split(",") if b]
    shapes = parse_shapes(a.shapes)
    print("times as multiples of a 1-thread np.copyto of the same float32 array")
    for shape in shapes:
        copy1, rows = _times(tuple(shape), threads, backends, a.min_time)
        for t, r in rows:
            cells = "  ".join(f"{k} {v / copy1:.2f}" for k, v in r.items())
            walls = "  ".join(
                f"{op}: 2x torch needs {r['torch ' + op] / 2 / copy1:.2f}, "
                f"a copy-speed kernel gets {r['torch ' + op] / r['copy_t']:.2f}x torch"
                for op in ("softmax", "log_softmax"))
            print(f"{shape[0]}x{shape[1]} threads={t}: {cells}  | {walls}")


if __name__ == "__main__":
    main()
