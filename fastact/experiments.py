"""``fastact experiment NAME``: the experiments behind the question this package grew from.

``softmax-hidden``
    Is softmax acceptable as a hidden-layer activation in regression?  The
    network of that question — inputs 10000x20 and targets 10000x1 from a
    standard normal (validation 5000x20), Dense 512 relu, four hidden Dense
    layers of 256, 512, 256, 128 units, output Dense 1 linear, MSE, Adam
    (lr 1e-3), batch 32, 16 epochs — trained once with softmax in the four
    hidden layers and once with relu.  Prints training and validation loss per
    epoch for both; ``--plot FILE`` saves the curves.

``sigmoid-vs-softmax``
    One multi-class task (Gaussian clusters) trained with a softmax +
    cross-entropy output and with a sigmoid + binary-cross-entropy (one-vs-rest)
    output: accuracy, whether the outputs sum to 1, and the gradient magnitude
    at saturated logits — fastact's fused losses beside the naive composition
    ``-log(softmax(z))`` / ``-log(sigmoid(z))``.

Both train a NumPy MLP whose forward and backward passes write into buffers
allocated once (``out=``): a training step allocates no array memory.  Every
number and figure comes from the run.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

import fastact

# ----------------------------------------------------------------------------
# A NumPy MLP that allocates nothing per step
# ----------------------------------------------------------------------------

#: The activations an MLP layer may use; True where the backward takes the forward's
#: output (``softmax_backward(g, y)``, ``sigmoid_backward(g, y)``), False where it takes
#: the input (``<name>_backward(g, z)``).
_BACKWARD_FROM_OUTPUT = {"relu": False, "softmax": True, "sigmoid": True, "tanh": False,
                         "gelu": False, "silu": False}


class MLP:
    """Dense layers ``sizes[0] -> ... -> sizes[-1]`` with ``activations[i]`` after layer ``i``
    (``"linear"``: none), trained with Adam; every buffer is allocated here, once.

    ``forward(x)`` and ``backward(grad_out)`` take a batch of at most ``batch`` rows
    and work on views of the preallocated buffers; ``step()`` applies Adam to all
    parameters at once (they live in one flat array).  Init: Glorot uniform
    weights, zero biases (Keras' defaults).
    """

    def __init__(self, sizes, activations, batch, *, dtype=np.float32, seed=0, lr=1e-3,
                 betas=(0.9, 0.999), eps=1e-7, backend=None):
        assert len(activations) == len(sizes) - 1
        self.sizes, self.activations, self.batch = list(sizes), list(activations), batch
        self.dtype, self.backend = np.dtype(dtype), backend
        self.lr, (self.b1, self.b2), self.eps, self.t = lr, betas, eps, 0
        rng = np.random.default_rng(seed)
        shapes = [s for i, o in zip(sizes[:-1], sizes[1:]) for s in ((i, o), (o,))]
        total = sum(math.prod(s) for s in shapes)
        self.params = np.zeros(total, self.dtype)
        self.grads = np.zeros(total, self.dtype)
        self.m = np.zeros(total, self.dtype)
        self.v = np.zeros(total, self.dtype)
        self.tmp = np.zeros(total, self.dtype)
        self.W, self.b, self.dW, self.db = [], [], [], []
        off = 0
        for (fi, fo), _ in zip(shapes[::2], shapes[1::2]):
            k = fi * fo
            self.W.append(self.params[off:off + k].reshape(fi, fo))
            self.dW.append(self.grads[off:off + k].reshape(fi, fo))
            off += k
            self.b.append(self.params[off:off + fo])
            self.db.append(self.grads[off:off + fo])
            off += fo
            lim = math.sqrt(6.0 / (fi + fo))
            self.W[-1][...] = rng.uniform(-lim, lim, (fi, fo))
        # per layer: input a[i] (batch, sizes[i]), pre-activation z, its gradient gz;
        # the bias enters z as the outer product ones (batch, 1) @ b (1, out) by BLAS: a
        # broadcast add would make NumPy allocate a ufunc buffer every call
        self.ones = np.ones((batch, 1), self.dtype)
        self.bz = [np.zeros((batch, s), self.dtype) for s in sizes[1:]]
        self.a = [np.zeros((batch, s), self.dtype) for s in sizes]
        self.z = [np.zeros((batch, s), self.dtype) for s in sizes[1:]]
        self.ga = [np.zeros((batch, s), self.dtype) for s in sizes]
        self.gz = [np.zeros((batch, s), self.dtype) for s in sizes[1:]]

    def forward(self, x):
        """The network's output for the rows of ``x`` (a view into a buffer)."""
        n = x.shape[0]
        be = self.backend
        a0 = self.a[0][:n]
        a0[...] = x
        for i, act in enumerate(self.activations):
            z, bz = self.z[i][:n], self.bz[i][:n]
            np.matmul(self.a[i][:n], self.W[i], out=z)
            np.matmul(self.ones[:n], self.b[i].reshape(1, -1), out=bz)
            np.add(z, bz, out=z)
            if act == "linear":
                self.a[i + 1][:n] = z
            else:
                _BACKWARD_FROM_OUTPUT[act]  # KeyError for an unknown activation
                getattr(fastact, act)(z, out=self.a[i + 1][:n], backend=be)
        return self.a[-1][:n]

    def backward(self, grad_out):
        """Gradients of all parameters (into ``self.grads``) given d loss / d output."""
        n = grad_out.shape[0]
        be = self.backend
        self.ga[-1][:n] = grad_out
        for i in range(len(self.activations) - 1, -1, -1):
            act = self.activations[i]
            gz = self.gz[i][:n]
            if act == "linear":
                gz[...] = self.ga[i + 1][:n]
            else:
                s = self.a[i + 1][:n] if _BACKWARD_FROM_OUTPUT[act] else self.z[i][:n]
                getattr(fastact, act + "_backward")(self.ga[i + 1][:n], s, out=gz, backend=be)
            np.matmul(self.a[i][:n].T, gz, out=self.dW[i])
            np.sum(gz, axis=0, out=self.db[i])
            if i:
                np.matmul(gz, self.W[i].T, out=self.ga[i][:n])

    def step(self):
        """One Adam update of every parameter, in place (Keras' form of the bias correction)."""
        self.t += 1
        b1, b2 = self.b1, self.b2
        g, m, v, tmp = self.grads, self.m, self.v, self.tmp
        m *= b1
        np.multiply(g, 1.0 - b1, out=tmp)
        m += tmp
        v *= b2
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - b2
        v += tmp
        lr_t = self.lr * math.sqrt(1.0 - b2 ** self.t) / (1.0 - b1 ** self.t)
        np.sqrt(v, out=tmp)
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= lr_t
        self.params -= tmp


class MSE:
    """Mean squared error and its gradient into preallocated buffers."""

    def __init__(self, batch, dim, dtype):
        self.diff = np.zeros((batch, dim), dtype)
        self.grad = np.zeros((batch, dim), dtype)

    def __call__(self, pred, target):
        n = pred.shape[0]
        d = self.diff[:n]
        np.subtract(pred, target, out=d)
        flat = d.reshape(-1)
        loss = float(np.dot(flat, flat)) / d.size
        g = self.grad[:n]
        np.multiply(d, 2.0 / d.size, out=g)
        return loss, g


def train_step(model, loss_fn, xb, yb):
    """Forward, loss, backward and Adam for one batch; returns the batch loss."""
    out = model.forward(xb)
    loss, g = loss_fn(out, yb)
    model.backward(g)
    model.step()
    return loss


def _batches(n, batch, rng):
    """Shuffled index blocks of ``batch`` (the last one shorter), as Keras' fit does."""
    perm = rng.permutation(n)
    return [perm[i:i + batch] for i in range(0, n, batch)]


def _evaluate(model, loss_fn, x, y):
    total, bs = 0.0, model.batch
    for i in range(0, x.shape[0], bs):
        out = model.forward(x[i:i + bs])
        loss, _ = loss_fn(out, y[i:i + bs])
        total += loss * out.shape[0]
    return total / x.shape[0]


# ----------------------------------------------------------------------------
# softmax-hidden
# ----------------------------------------------------------------------------

HIDDEN = [512, 256, 512, 256, 128]


def softmax_hidden(args):
    rng = np.random.default_rng(args.seed)
    dt = np.float32
    xtr = rng.standard_normal((args.n_train, 20)).astype(dt)
    ytr = rng.standard_normal((args.n_train, 1)).astype(dt)
    xva = rng.standard_normal((args.n_val, 20)).astype(dt)
    yva = rng.standard_normal((args.n_val, 1)).astype(dt)
    sizes = [20] + HIDDEN + [1]
    runs = {}
    for hidden_act in ("softmax", "relu"):
        acts = ["relu"] + [hidden_act] * 4 + ["linear"]
        runs[hidden_act] = dict(
            model=MLP(sizes, acts, args.batch, dtype=dt, seed=args.seed + 1, lr=args.lr,
                      backend=args.backend),
            loss=MSE(args.batch, 1, dt), train=[], val=[], time=0.0)
    ebuf = np.zeros((args.batch, 20), dt)
    tbuf = np.zeros((args.batch, 1), dt)
    print(f"softmax-hidden: Dense 512 relu -> 4 x Dense(256, 512, 256, 128) with softmax or "
          f"relu -> Dense 1; MSE, Adam lr {args.lr:g}, batch {args.batch}, "
          f"{args.n_train}x20 train / {args.n_val}x20 validation, N(0,1) inputs and targets, "
          f"seed {args.seed}, backend {fastact.get_backend() if args.backend is None else args.backend}")
    print(f"{'epoch':>5}  {'softmax train':>13} {'softmax val':>11}  {'relu train':>10} "
          f"{'relu val':>8}")
    order_rng = {k: np.random.default_rng(args.seed + 2) for k in runs}
    for epoch in range(1, args.epochs + 1):
        for name, r in runs.items():
            t0 = time.perf_counter()
            model, lossf = r["model"], r["loss"]
            tot, cnt = 0.0, 0
            for idx in _batches(args.n_train, args.batch, order_rng[name]):
                n = idx.shape[0]
                xb, yb = ebuf[:n], tbuf[:n]
                np.take(xtr, idx, axis=0, out=xb)
                np.take(ytr, idx, axis=0, out=yb)
                tot += train_step(model, lossf, xb, yb) * n
                cnt += n
            r["train"].append(tot / cnt)
            r["val"].append(_evaluate(model, lossf, xva, yva))
            r["time"] += time.perf_counter() - t0
        s, q = runs["softmax"], runs["relu"]
        print(f"{epoch:5d}  {s['train'][-1]:13.4f} {s['val'][-1]:11.4f}  "
              f"{q['train'][-1]:10.4f} {q['val'][-1]:8.4f}", flush=True)
    for name, r in runs.items():
        print(f"{name}: {r['time']:.1f} s for {args.epochs} epochs")
    s, q = runs["softmax"], runs["relu"]
    print(f"final: softmax hidden train {s['train'][-1]:.4f} / val {s['val'][-1]:.4f}; "
          f"relu hidden train {q['train'][-1]:.4f} / val {q['val'][-1]:.4f} "
          f"(the targets are noise: predicting 0 scores {float(np.mean(yva ** 2)):.4f} "
          f"on validation)")
    if args.plot:
        _plot_softmax_hidden(runs, args)
        print(f"plot written to {args.plot}")
    return runs


def _plot_softmax_hidden(runs, args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    ep = np.arange(1, args.epochs + 1)
    for name, color in (("softmax", "tab:blue"), ("relu", "tab:orange")):
        ax.plot(ep, runs[name]["train"], "-o", color=color, ms=3, label=f"{name} hidden: train")
        ax.plot(ep, runs[name]["val"], "--s", color=color, ms=3, label=f"{name} hidden: validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE")
    ax.set_title("Softmax vs relu as hidden activation (regression on N(0,1) noise)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------
# sigmoid-vs-softmax
# ----------------------------------------------------------------------------

class SoftmaxCE:
    """Softmax cross-entropy (index targets), loss and gradient via fastact's fused kernel."""

    def __init__(self, batch, k, dtype, backend):
        self.grad = np.zeros((batch, k), dtype)
        self.backend = backend

    def __call__(self, logits, target):
        g = self.grad[:logits.shape[0]]
        loss, _ = fastact.softmax_cross_entropy_with_grad(logits, target, out=g,
                                                          backend=self.backend)
        return float(loss), g


class SigmoidBCE:
    """One-vs-rest sigmoid BCE against one-hot targets: summed over classes, mean over rows."""

    def __init__(self, batch, k, dtype, backend):
        self.grad = np.zeros((batch, k), dtype)
        self.onehot = np.zeros((batch, k), dtype)
        self.row_start = np.arange(batch) * k  # flat index of each row's first class
        self.flat = np.zeros(batch, np.intp)
        self.backend = backend

    def __call__(self, logits, target):
        n, k = logits.shape
        oh = self.onehot[:n]
        oh[...] = 0
        idx = self.flat[:n]
        np.add(self.row_start[:n], target, out=idx)
        np.put(oh.reshape(-1), idx, 1)
        g = self.grad[:n]
        loss, _ = fastact.sigmoid_binary_cross_entropy_with_grad(
            logits, oh, reduction="sum", out=g, backend=self.backend)
        g *= 1.0 / n
        return float(loss) / n, g


def _clusters(rng, n, k, d, centers, noise):
    y = rng.integers(0, k, n)
    x = centers[y] + noise * rng.standard_normal((n, d))
    return x.astype(np.float32), y


def _naive_grads(z, y):
    """d loss / d z by the textbook composition (probabilities first, then log, then the
    chain rule through the probabilities), in the dtype of ``z``: what a fused, stable
    loss avoids.  Returns (softmax-CE grad, sigmoid-BCE grad)."""
    dt = z.dtype.type
    n, k = z.shape
    oh = np.zeros_like(z)
    oh[np.arange(n), y] = 1
    with np.errstate(all="ignore"):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        # L = -log p_t ; dL/dp = -oh / p ; dL/dz = J^T dL/dp = p * (dL/dp - sum(dL/dp * p))
        gp = -oh / p
        g_soft = p * (gp - np.sum(gp * p, axis=1, keepdims=True))
        s = dt(1) / (dt(1) + np.exp(-z))
        # L = -(t log s + (1-t) log(1-s)) ; dL/ds = -t/s + (1-t)/(1-s) ; ds/dz = s(1-s)
        gs = -oh / s + (dt(1) - oh) / (dt(1) - s)
        g_sig = gs * s * (dt(1) - s)
    return g_soft, g_sig


def sigmoid_vs_softmax(args):
    rng = np.random.default_rng(args.seed)
    k, d = args.classes, 20
    centers = rng.standard_normal((k, d)) * 1.0
    xtr, ytr = _clusters(rng, args.n_train, k, d, centers, args.noise)
    xte, yte = _clusters(rng, args.n_val, k, d, centers, args.noise)
    dt = np.float32
    sizes, acts = [d, 128, k], ["relu", "linear"]
    runs = {
        "softmax+CE": dict(model=MLP(sizes, acts, args.batch, seed=args.seed + 1, lr=args.lr,
                                     backend=args.backend),
                           loss=SoftmaxCE(args.batch, k, dt, args.backend)),
        "sigmoid+BCE": dict(model=MLP(sizes, acts, args.batch, seed=args.seed + 1, lr=args.lr,
                                      backend=args.backend),
                            loss=SigmoidBCE(args.batch, k, dt, args.backend)),
    }
    print(f"sigmoid-vs-softmax: {k} Gaussian clusters in {d}-D (noise {args.noise:g}), "
          f"{args.n_train} train / {args.n_val} test, MLP {d}-128 relu-{k}, Adam lr {args.lr:g}, "
          f"batch {args.batch}, seed {args.seed}")
    print(f"{'epoch':>5}  " + "  ".join(f"{n + ' loss':>16} {'acc':>6}" for n in runs))
    xb = np.zeros((args.batch, d), dt)
    order_rng = {n: np.random.default_rng(args.seed + 2) for n in runs}
    for r in runs.values():
        r["acc"], r["train"], r["time"] = [], [], 0.0
    for epoch in range(1, args.epochs + 1):
        for name, r in runs.items():
            t0 = time.perf_counter()
            tot = 0.0
            for idx in _batches(args.n_train, args.batch, order_rng[name]):
                n = idx.shape[0]
                np.take(xtr, idx, axis=0, out=xb[:n])
                tot += train_step(r["model"], r["loss"], xb[:n], ytr[idx]) * n
            r["train"].append(tot / args.n_train)
            r["acc"].append(_accuracy(r["model"], xte, yte))
            r["time"] += time.perf_counter() - t0
        print(f"{epoch:5d}  " + "  ".join(f"{r['train'][-1]:16.4f} {r['acc'][-1]:6.3f}"
                                          for r in runs.values()), flush=True)
    # outputs on the test set
    sums = {}
    for name, r in runs.items():
        z = _logits(r["model"], xte)
        if name.startswith("softmax"):
            p = fastact.softmax(z, backend=args.backend)
        else:
            p = fastact.sigmoid(z, backend=args.backend)
        sums[name] = p.astype(np.float64).sum(axis=1)
        r["sums"] = sums[name]
    print()
    print(f"{'output':<12} {'accuracy':>8}  {'sum of outputs per row: mean':>28} "
          f"{'min':>7} {'max':>7}  {'rows with |sum-1| < 1e-3':>24}")
    for name, r in runs.items():
        s = r["sums"]
        print(f"{name:<12} {r['acc'][-1]:8.3f}  {s.mean():28.4f} {s.min():7.4f} {s.max():7.4f}  "
              f"{np.mean(np.abs(s - 1) < 1e-3):24.1%}")
    sat = _saturation_table(k, args.backend)
    if args.plot:
        _plot_sigmoid_vs_softmax(runs, sat, args)
        print(f"plot written to {args.plot}")
    return runs, sat


def _logits(model, x):
    out = np.empty((x.shape[0], model.sizes[-1]), model.dtype)
    for i in range(0, x.shape[0], model.batch):
        out[i:i + model.batch] = model.forward(x[i:i + model.batch])
    return out


def _accuracy(model, x, y):
    return float(np.mean(np.argmax(_logits(model, x), axis=1) == y))


def _saturation_table(k, backend):
    """|d loss / d logits| (L2 norm of a row) at saturated logits of size s, float32:
    confidently wrong (target logit -s, one other class +s) and confidently right."""
    print()
    print("gradient norm |dL/dz| at saturated logits (float32; one row of "
          f"{k} classes, target 0):")
    print(f"{'s':>6} {'case':>6}  {'softmax+CE fastact':>18} {'naive':>9}  "
          f"{'sigmoid+BCE fastact':>19} {'naive':>9}")
    rows = []
    for s in (5.0, 20.0, 50.0, 100.0, 1000.0):
        for case in ("wrong", "right"):
            z = np.full((1, k), -s, np.float32)
            if case == "wrong":
                z[0, 1] = s
            else:
                z[0, 0] = s
            y = np.array([0])
            oh = np.zeros_like(z)
            oh[0, 0] = 1
            _, gs = fastact.softmax_cross_entropy_with_grad(z, y, reduction="sum",
                                                            backend=backend)
            _, gb = fastact.sigmoid_binary_cross_entropy_with_grad(z, oh, reduction="sum",
                                                                   backend=backend)
            ns, nb = _naive_grads(z, y)
            vals = [float(np.linalg.norm(a.astype(np.float64))) for a in (gs, ns, gb, nb)]
            rows.append((s, case, *vals))
            print(f"{s:6g} {case:>6}  {vals[0]:18.3g} {vals[1]:9.3g}  {vals[2]:19.3g} "
                  f"{vals[3]:9.3g}")
    return rows


def _plot_sigmoid_vs_softmax(runs, sat, args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(13, 4))
    ep = np.arange(1, args.epochs + 1)
    allsums = np.concatenate([r["sums"] for r in runs.values()])
    bins = np.linspace(min(0.0, allsums.min()), max(2.0, allsums.max()), 81)
    for name, r in runs.items():
        a1.plot(ep, r["acc"], "-o", ms=3, label=name)
        a2.hist(r["sums"], bins=bins, alpha=0.6, label=name)
    a2.set_yscale("log")
    a1.set_xlabel("epoch")
    a1.set_ylabel("test accuracy")
    a1.set_title("accuracy")
    a1.legend()
    a1.grid(alpha=0.3)
    a2.set_xlabel("sum of the outputs of a row")
    a2.set_ylabel("rows")
    a2.set_title("do the outputs sum to 1?")
    a2.legend()
    wrong = [r for r in sat if r[1] == "wrong"]
    s = [r[0] for r in wrong]
    for j, label in ((2, "softmax+CE (fastact)"), (4, "sigmoid+BCE (fastact)")):
        a3.plot(s, [r[j] for r in wrong], "-o", ms=4, label=label)
    for j, label in ((3, "softmax+CE naive"), (5, "sigmoid+BCE naive")):
        v = [r[j] if math.isfinite(r[j]) else np.nan for r in wrong]
        a3.plot(s, v, "x--", ms=6, label=label + " (gaps: NaN/inf)")
    a3.set_xscale("log")
    a3.set_xlabel("logit size s (confidently wrong)")
    a3.set_ylabel("|dL/dz|")
    a3.set_title("gradient at saturated logits")
    a3.legend(fontsize=8)
    a3.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------

EXPERIMENTS = {"softmax-hidden": softmax_hidden, "sigmoid-vs-softmax": sigmoid_vs_softmax}


def _parser(name):
    p = argparse.ArgumentParser(prog=f"fastact experiment {name}",
                                description=__doc__.split("\n\n")[1 if name == "softmax-hidden"
                                                                   else 2].strip())
    hidden = name == "softmax-hidden"
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=16 if hidden else 10)
    p.add_argument("--plot", metavar="FILE", help="save the figure (PNG) here")
    p.add_argument("--n-train", type=int, default=10000 if hidden else 20000,
                   help="training rows")
    p.add_argument("--n-val", type=int, default=5000, help="validation / test rows")
    p.add_argument("--batch", type=int, default=32 if hidden else 64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--backend", default=None, help="fastact backend (default: auto)")
    p.add_argument("--threads", type=int, default=None, help="fastact threads")
    if not hidden:
        p.add_argument("--classes", type=int, default=10)
        p.add_argument("--noise", type=float, default=1.5)
    return p


class _blas_threads:
    """Run NumPy's BLAS (OpenBLAS) on ``n`` threads inside the block, best effort.

    The matmuls of these MLPs are small (batch 32): BLAS threads cost more than
    they give (measured here: 4.5 ms vs 1.4 ms per step on a busy 2-core machine).
    """

    _SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                "openblas_set_num_threads64_", "openblas_set_num_threads")

    def __init__(self, n):
        self.n, self.lib, self.old = n, None, None

    def _find(self):
        import ctypes

        try:
            with open("/proc/self/maps") as f:
                paths = sorted({ln.split()[-1] for ln in f if "openblas" in ln.lower()})
        except OSError:
            return None, None
        for path in paths:
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for name in self._SETTERS:
                if hasattr(lib, name):
                    getter = getattr(lib, name.replace("set_num", "get_num"), None)
                    return getattr(lib, name), getter
        return None, None

    def __enter__(self):
        self.set, get = self._find()
        if self.set is not None:
            self.old = get() if get is not None else None
            self.set(self.n)
        return self

    def __exit__(self, *exc):
        if self.set is not None and self.old:
            self.set(self.old)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in EXPERIMENTS:
        print(f"usage: fastact experiment {{{','.join(EXPERIMENTS)}}} [options]; "
              f"got {argv[:1]}", file=sys.stderr)
        return 2
    name = argv[0]
    args = _parser(name).parse_args(argv[1:])
    if args.threads:
        fastact.set_num_threads(args.threads)
    t0 = time.perf_counter()
    with _blas_threads(1):
        EXPERIMENTS[name](args)
    print(f"total time {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
