"""Transforms (scale=, softcap=, bias=) against the same op without them and
against torch composing the same steps, forward and forward+backward;
1 thread, float32, out= where the API takes it, interleaved in one process.

    python benchmarks/transforms.py
"""

import timeit

import numpy as np
import torch

import fastact


def best(f, n):
    return min(timeit.repeat(f, number=n, repeat=5)) / n


def main():
    fastact.set_num_threads(1)
    torch.set_num_threads(1)
    F = torch.nn.functional
    print(f"fastact {fastact.__version__} (backend {fastact.get_backend()}), torch "
          f"{torch.__version__}; ms, best of 5; ratio = with transform / without")
    rng = np.random.default_rng(0)
    print(f"{'shape':12s} {'op':28s} {'plain':>8s} {'xform':>8s} {'ratio':>6s} "
          f"{'torch':>8s} {'torch/xf':>8s}")
    for shape in [(65536, 10), (4096, 1000), (512, 32000)]:
        x = rng.standard_normal(shape, dtype=np.float32) * 3
        o = np.empty_like(x)
        g = rng.standard_normal(shape, dtype=np.float32)
        y = fastact.softmax(x)
        t = rng.integers(0, shape[1], shape[0])
        bias = np.where(rng.random(shape[1]) < 0.1, -np.inf, 0.0).astype(np.float32)
        xt, gt, tt, bt = (torch.from_numpy(a) for a in (x, g, t, bias))
        n = max(2, int(2e7 // x.size))
        cases = [
            ("softmax scale", lambda: fastact.softmax(x, out=o),
             lambda: fastact.softmax(x, scale=0.5, out=o),
             lambda: torch.softmax(xt * 0.5, -1)),
            ("softmax softcap", lambda: fastact.softmax(x, out=o),
             lambda: fastact.softmax(x, softcap=30.0, out=o),
             lambda: torch.softmax(torch.tanh(xt / 30.0) * 30.0, -1)),
            ("softmax scale+bias", lambda: fastact.softmax(x, out=o),
             lambda: fastact.softmax(x, scale=0.5, bias=bias, out=o),
             lambda: torch.softmax(xt * 0.5 + bt, -1)),
            ("log_softmax softcap", lambda: fastact.log_softmax(x, out=o),
             lambda: fastact.log_softmax(x, softcap=30.0, out=o),
             lambda: torch.log_softmax(torch.tanh(xt / 30.0) * 30.0, -1)),
            ("softmax_backward scale", lambda: fastact.softmax_backward(g, y, out=o),
             lambda: fastact.softmax_backward(g, y, scale=0.5, out=o), None),
            ("CE+grad softcap", lambda: fastact.softmax_cross_entropy_with_grad(x, t, out=o),
             lambda: fastact.softmax_cross_entropy_with_grad(x, t, softcap=30.0, out=o), None),
        ]
        for name, plain, xf, tor in cases:
            a = best(plain, n) * 1e3
            b = best(xf, n) * 1e3
            c = best(tor, n) * 1e3 if tor is not None else float("nan")
            print(f"{str(shape):12s} {name:28s} {a:8.3f} {b:8.3f} {b / a:6.2f} {c:8.3f} "
                  f"{c / b:8.2f}")
        # forward+backward against torch composing the steps (autograd)
        xr = xt.clone().requires_grad_(True)

        def torch_fb():
            z = torch.tanh(xr / 30.0) * 30.0
            F.cross_entropy(z, tt).backward()
            xr.grad = None

        def fast_fb():
            fastact.softmax_cross_entropy_with_grad(x, t, softcap=30.0, out=o)

        a, c = best(fast_fb, n) * 1e3, best(torch_fb, n) * 1e3
        print(f"{str(shape):12s} {'CE fwd+bwd softcap vs torch':28s} {'':8s} {a:8.3f} {'':6s} "
              f"{c:8.3f} {c / a:8.2f}")


if __name__ == "__main__":
    main()
