"""fastact.torch vs torch.nn.functional on CPU tensors: forward + backward time.

    python benchmarks/bench_torch.py [--threads N]

Each case runs `loss(x).backward()` (cross_entropy, index targets, mean) or
`f(x, dim=-1).backward(g)` (softmax, log_softmax); the two implementations are
timed interleaved and the medians reported.  Threads: torch's and fastact's
defaults (all cores), or N for both.
"""

import argparse
import statistics
import time

import torch

import fastact
import fastact.torch as ft

F = torch.nn.functional
SHAPES = [((64, 10), 2000), ((256, 1000), 300), ((4096, 1000), 40), ((1024, 32000), 11)]


def _time(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, help="threads for torch and fastact alike")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        fastact.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), fastact "
          f"{fastact.__version__} (backend {fastact.get_backend()}, "
          f"{fastact.get_num_threads()} threads)")
    print(f"{'op':<14} {'shape':>13} {'dtype':>8} {'torch':>11} {'fastact':>11} {'speed-up':>8}")
    for dtype in (torch.float32, torch.float64):
        for shape, reps in SHAPES:
            x = (torch.randn(shape, dtype=dtype) * 3).requires_grad_(True)
            t = torch.randint(0, shape[-1], shape[:-1])
            g = torch.randn(shape, dtype=dtype)
            cases = [
                ("cross_entropy", lambda: ft.cross_entropy(x, t).backward(),
                 lambda: F.cross_entropy(x, t).backward()),
                ("softmax", lambda: ft.softmax(x, dim=-1).backward(g),
                 lambda: F.softmax(x, dim=-1).backward(g)),
                ("log_softmax", lambda: ft.log_softmax(x, dim=-1).backward(g),
                 lambda: F.log_softmax(x, dim=-1).backward(g)),
            ]
            for name, fast, ref in cases:
                for f in (fast, ref, fast, ref):  # warm up
                    f()
                tf, tr = [], []
                for _ in range(reps):
                    tf.append(_time(fast))
                    tr.append(_time(ref))
                    x.grad = None
                a, b = statistics.median(tr), statistics.median(tf)
                print(f"{name:<14} {str(shape):>13} {str(dtype)[6:]:>8} {a * 1e3:9.3f}ms "
                      f"{b * 1e3:9.3f}ms {a / b:7.2f}x", flush=True)


if __name__ == "__main__":
    main()
