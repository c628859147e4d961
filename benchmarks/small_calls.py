"""Per-call time of fastact.softmax on tiny float32 arrays against torch.softmax,
interleaved in one process, 1 thread (the common call's fast path: a NumPy
array, the last axis, no where/b/backend=); then fastact.torch's forward+backward
against torch.nn.functional's, on fastact's kernels at every size
(``MIN_NUMEL = 0``: where the crossover lies, what sets ``fastact.torch.MIN_NUMEL``)
and as a user meets it (the default ``MIN_NUMEL``).

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


def torch_fwd_bwd():
    import fastact.torch as ft

    F = torch.nn.functional
    default = ft.MIN_NUMEL
    print(f"\nfastact.torch forward+backward / torch's (us per call, best of 7 x 500; "
          f"MIN_NUMEL default {default})")
    print(f"{'shape':12s} {'op':14s} {'kernels':>9s} {'default':>9s} {'torch':>9s}  "
          f"ratio kernels/torch, default/torch")
    gen = torch.Generator().manual_seed(0)
    for shape in [(8, 10), (64, 100), (128, 128), (256, 256), (512, 512), (4096, 1000)]:
        x = torch.randn(shape, generator=gen).requires_grad_(True)
        t = torch.randint(0, shape[1], shape[:1], generator=gen)
        g = torch.randn(shape, generator=gen)
        n = 500 if x.numel() < 1 << 18 else 20
        cases = [("softmax", lambda f: f.softmax(x, dim=-1).backward(g), ft, F),
                 ("log_softmax", lambda f: f.log_softmax(x, dim=-1).backward(g), ft, F),
                 ("cross_entropy", lambda f: f.cross_entropy(x, t).backward(), ft, F)]
        for op, step, fast, ref in cases:
            def run(f):
                def call():
                    step(f)
                    x.grad = None
                return per_call(call, n=n)
            ft.MIN_NUMEL = 0
            k = run(fast)
            ft.MIN_NUMEL = default
            d = run(fast)
            r = run(ref)
            print(f"{str(shape):12s} {op:14s} {k:9.2f} {d:9.2f} {r:9.2f}  {k / r:5.2f}  {d / r:5.2f}")


if __name__ == "__main__":
    main()
    torch_fwd_bwd()
