"""A native backend over an axis that is not the last (issue 18): its strided
kernels (the axis reduced where it lies) against the same op over the last
axis of a C-contiguous array of the same size, the copy path (the axis moved
last by a copy: the backend's table without strided kernels), np.copyto of
the same bytes and torch over the same dim.  float32, ``out=`` preallocated,
one thread (``--threads N`` for more); per variant the best of ``--reps``
interleaved rounds of a few calls each.

    python benchmarks/any_axis.py [--backend c|numba] [--reps 5] [--threads 1]
"""

import argparse
import dataclasses
import importlib
import sys
import time

import numpy as np
import torch

import fastact

#: the backend (``--backend``, read before the module loads: its table is swapped below)
BE = sys.argv[sys.argv.index("--backend") + 1] if "--backend" in sys.argv else "c"
K = importlib.import_module({"c": "fastact._backends.c_kernels",
                             "numba": "fastact._backends.numba_kernels"}[BE])

CASES = [((1000, 4096), 0), ((32000, 512), 0), ((64, 1000, 64), 1), ((8, 21, 128, 128), 1)]
CE_CASE = ((8, 21, 128, 128), 1)
VARIANTS = ("strided", "last", "copy", "np.copyto", "torch")

#: The backend's table without strided kernels: the API then moves the axis last (a copy).
NO_STRIDED = dataclasses.replace(
    K.KERNELS, **{f.name: dataclasses.replace(getattr(K.KERNELS, f.name), strided=None)
                  for f in dataclasses.fields(K.KERNELS) if f.type == "RowOp"})


def timed(f, calls):
    best = float("inf")
    for _ in range(calls):
        t0 = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t0)
    return best


def run(fns, reps):
    """Best time (ms) of each of ``fns`` (name -> callable), interleaved."""
    for f in fns.values():   # compile, warm the caches
        f()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(reps):
        for name, f in fns.items():
            best[name] = min(best[name], timed(f, 3))
    return {k: v * 1e3 for k, v in best.items()}


def copy_path(f):
    """``f`` run with the backend's table without strided kernels."""
    def g():
        K.KERNELS, saved = NO_STRIDED, K.KERNELS
        try:
            f()
        finally:
            K.KERNELS = saved
    return g


def forward_cases(reps):
    rows = []
    for shape, ax in CASES:
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32) * 3
        xl = np.ascontiguousarray(np.moveaxis(x, ax, -1))
        t = torch.from_numpy(x)
        o, ol = np.empty_like(x), np.empty_like(xl)
        r, rl = np.empty(np.delete(shape, ax), np.float32), np.empty(xl.shape[:-1], np.float32)
        tr = torch.empty(r.shape)
        for op in ("softmax", "log_softmax", "logsumexp"):
            fn = getattr(fastact, op)
            out, outl = (r, rl) if op == "logsumexp" else (o, ol)
            tf = {"softmax": lambda: torch.softmax(t, ax),
                  "log_softmax": lambda: torch.log_softmax(t, ax),
                  "logsumexp": lambda: torch.logsumexp(t, ax, out=tr)}[op]
            strided = (lambda fn=fn, out=out, ax=ax:
                       fn(x, axis=ax, out=out, backend=BE))
            fns = {"strided": strided,
                   "last": lambda fn=fn, outl=outl: fn(xl, axis=-1, out=outl, backend=BE),
                   "copy": copy_path(strided),
                   "np.copyto": lambda: np.copyto(ol, xl),
                   "torch": tf}
            rows.append((f"{shape} axis {ax}", op, run(fns, reps)))
    return rows


def cross_entropy_case(reps):
    shape, ax = CE_CASE
    g = np.random.default_rng(1)
    x = g.standard_normal(shape, dtype=np.float32) * 3
    lead = shape[:ax] + shape[ax + 1:]
    t = g.integers(0, shape[ax], lead)
    xl = np.ascontiguousarray(np.moveaxis(x, ax, -1))
    o, ol = np.empty_like(x), np.empty_like(xl)
    xt, tt = torch.from_numpy(x.copy()).requires_grad_(True), torch.from_numpy(t)

    def torch_fwd_bwd():
        xt.grad = None
        torch.nn.functional.cross_entropy(xt, tt).backward()

    def strided():
        fastact.softmax_cross_entropy_with_grad(x, t, axis=ax, out=o, backend=BE)

    import fastact.torch as FT
    ft = torch.from_numpy(x.copy()).requires_grad_(True)

    def fastact_torch_fwd_bwd():  # the wrapper over the same tensor layout, dim 1
        ft.grad = None
        with fastact.use_backend(BE):
            FT.cross_entropy(ft, tt).backward()

    fns = {"strided": strided,
           "last": lambda: fastact.softmax_cross_entropy_with_grad(xl, t, out=ol, backend=BE),
           "copy": copy_path(strided),
           "np.copyto": lambda: np.copyto(ol, xl),
           "torch": torch_fwd_bwd}
    wrap = dict(fns, strided=fastact_torch_fwd_bwd)
    return [(f"{shape} axis {ax}", "ce_with_grad", run(fns, reps)),
            (f"{shape} axis {ax}", "fastact.torch", run(wrap, reps))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backend", choices=("c", "numba"), default="c")
    a = ap.parse_args()
    fastact.set_num_threads(a.threads)
    torch.set_num_threads(a.threads)
    rows = forward_cases(a.reps) + cross_entropy_case(a.reps)
    print(f"fastact {BE} backend, float32, out= given, {a.threads} thread(s), torch "
          f"{torch.__version__}; ms, best of {a.reps} interleaved rounds x 3 calls")
    print(f"{'case':24s} {'op':13s}" + "".join(f"{v:>10s}" for v in VARIANTS)
          + "   strided/last  /copy  /np.copyto  /torch")
    for case, op, t in rows:
        print(f"{case:24s} {op:13s}" + "".join(f"{t[v]:10.2f}" for v in VARIANTS)
              + f"   {t['strided'] / t['last']:12.2f} {t['strided'] / t['copy']:6.2f}"
              f" {t['strided'] / t['np.copyto']:11.2f}"
              f" {t['strided'] / t['torch']:6.2f}")


if __name__ == "__main__":
    main()
