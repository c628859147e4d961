"""fastact.torch: autograd functions with torch.nn.functional's signatures, values and
gradients; gradcheck in float64; a small model trained with them matches torch's own."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest

import fastact

torch = pytest.importorskip("torch")
ft = pytest.importorskip("fastact.torch")
F = torch.nn.functional

DTYPES = [torch.float32, torch.float64]

assert ft.MIN_NUMEL == 0, "conftest.py runs fastact.torch's tests on fastact's kernels"


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-13)


def _both(fn_fast, fn_torch, x, *args, **kw):
    """(value, grad) of fn_fast and fn_torch at x with the same upstream gradient."""
    out = []
    g = None
    for fn in (fn_fast, fn_torch):
        xx = x.detach().clone().requires_grad_(True)
        y = fn(xx, *args, **kw)
        if g is None:
            g = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(1))
        y.backward(g)
        out.append((y.detach(), xx.grad))
    return out


def test_import_fastact_does_not_import_torch():
    code = "import sys, fastact; fastact.sigmoid([1.0]); print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,dim", [((4, 7), 1), ((4, 7), 0), ((2, 3, 5), -1),
                                       ((2, 3, 5), 1), ((6,), 0)])
def test_softmax_log_softmax_vs_torch(backend, dtype, shape, dim):
    x = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(0)) * 5
    with fastact.use_backend(backend):
        for fast, ref in ((ft.softmax, F.softmax), (ft.log_softmax, F.log_softmax)):
            (y, g), (ey, eg) = _both(fast, ref, x, dim=dim)
            assert y.dtype == dtype and g.dtype == dtype
            torch.testing.assert_close(y, ey, **_tol(dtype))
            torch.testing.assert_close(g, eg, **_tol(dtype))


def test_softmax_dtype_argument_and_implicit_dim():
    x = torch.randn(3, 4)
    y = ft.softmax(x, dim=1, dtype=torch.float64)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, F.softmax(x, dim=1, dtype=torch.float64))
    with pytest.warns(UserWarning, match="Implicit dimension"):
        y = ft.log_softmax(x)
    torch.testing.assert_close(y, F.log_softmax(x, dim=1))


def test_small_tensors_go_to_torch(monkeypatch):
    """Below ``MIN_NUMEL`` elements torch's own functions run (same values and
    gradients); at and above it fastact's."""
    calls = []
    real = fastact.softmax_cross_entropy_with_grad

    def spy(*a, **kw):
        calls.append(a[0].size)
        return real(*a, **kw)

    monkeypatch.setattr(fastact, "softmax_cross_entropy_with_grad", spy)
    monkeypatch.setattr(ft, "MIN_NUMEL", 40)
    for n in (7, 8):  # 7x5 = 35 elements: torch; 8x5 = 40: fastact
        x = torch.randn(n, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
        t = torch.arange(n) % 5
        (y, g), (ey, eg) = _both(ft.cross_entropy, F.cross_entropy, x, t)
        torch.testing.assert_close(y, ey, **_tol(torch.float64))
        torch.testing.assert_close(g, eg, **_tol(torch.float64))
        (y, g), (ey, eg) = _both(ft.softmax, F.softmax, x, dim=1)
        torch.testing.assert_close(g, eg, **_tol(torch.float64))
    assert calls == [40]


def test_unsupported_tensors_go_to_torch():
    x = torch.randn(3, 4).to(torch.bfloat16).requires_grad_(True)
    y = ft.softmax(x, dim=-1)
    assert y.dtype == torch.bfloat16
    y.sum().backward()
    assert x.grad is not None
    t = torch.tensor([0, 1, 3])
    torch.testing.assert_close(ft.cross_entropy(x, t), F.cross_entropy(x, t))


CE_CASES = [
    dict(),
    dict(reduction="sum"),
    dict(reduction="none"),
    dict(label_smoothing=0.1),
    dict(ignore_index=2),
    dict(weight="w"),
    dict(weight="w", label_smoothing=0.2, reduction="none", ignore_index=1),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opts", CE_CASES)
@pytest.mark.parametrize("kind", ["index", "prob", "kdim", "unbatched"])
def test_cross_entropy_vs_torch(backend, dtype, opts, kind):
    gen = torch.Generator().manual_seed(3)
    c = 5
    if kind == "kdim":
        x = torch.randn(4, c, 3, 2, dtype=dtype, generator=gen) * 3
        t = torch.randint(0, c, (4, 3, 2), generator=gen)
    elif kind == "unbatched":
        x = torch.randn(c, dtype=dtype, generator=gen) * 3
        t = torch.tensor(3)
    else:
        x = torch.randn(8, c, dtype=dtype, generator=gen) * 3
        t = torch.randint(0, c, (8,), generator=gen)
    if kind == "prob":
        t = torch.softmax(torch.randn(8, c, dtype=dtype, generator=gen), -1)
        opts = {k: v for k, v in opts.items() if k != "ignore_index"}
    opts = dict(opts)
    if opts.get("weight") == "w":
        opts["weight"] = torch.rand(c, dtype=dtype, generator=gen) + 0.2
    with fastact.use_backend(backend):
        (y, g), (ey, eg) = _both(ft.cross_entropy, F.cross_entropy, x, t, **opts)
    assert y.shape == ey.shape and y.dtype == dtype
    torch.testing.assert_close(y, ey, **_tol(dtype))
    torch.testing.assert_close(g, eg, **_tol(dtype))


def test_cross_entropy_legacy_reduction_arguments():
    x = torch.randn(5, 3)
    t = torch.tensor([0, 1, 2, 1, 0])
    with pytest.warns(UserWarning, match="deprecated"):
        torch.testing.assert_close(ft.cross_entropy(x, t, size_average=False),
                                   F.cross_entropy(x, t, reduction="sum"))
    with pytest.warns(UserWarning, match="deprecated"):
        assert ft.cross_entropy(x, t, reduce=False).shape == (5,)


def test_gradcheck_float64(backend):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(4, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    x3 = torch.randn(2, 6, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    t = torch.tensor([0, 5, -100, 2])
    t3 = torch.randint(0, 6, (2, 3), generator=gen)
    p = torch.softmax(torch.randn(4, 6, dtype=torch.float64, generator=gen), -1)
    w = torch.rand(6, dtype=torch.float64, generator=gen) + 0.1
    with fastact.use_backend(backend):
        checks = [
            (lambda a: ft.softmax(a, dim=1), x),
            (lambda a: ft.softmax(a, dim=0), x),
            (lambda a: ft.log_softmax(a, dim=-1), x),
            (lambda a: ft.log_softmax(a, dim=1), x3),
            (lambda a: ft.cross_entropy(a, t), x),
            (lambda a: ft.cross_entropy(a, t, weight=w, label_smoothing=0.1), x),
            (lambda a: ft.cross_entropy(a, t, reduction="none"), x),
            (lambda a: ft.cross_entropy(a, p, reduction="sum"), x),
            (lambda a: ft.cross_entropy(a, t3, weight=w), x3),
        ]
        for fn, inp in checks:
            assert torch.autograd.gradcheck(fn, (inp,), eps=1e-6, atol=1e-7)


def test_zero_copy(monkeypatch):
    """Tensors reach the kernels as NumPy views of their memory, and results come back
    as tensors over the kernels' arrays (no copies either way)."""
    seen = {}
    real_softmax, real_ce = fastact.softmax, fastact.softmax_cross_entropy_with_grad

    def spy_softmax(x, **kw):
        seen["in"] = x
        seen["out"] = real_softmax(x, **kw)
        return seen["out"]

    def spy_ce(x, t, **kw):
        seen["ce_in"] = x
        loss, grad = real_ce(x, t, **kw)
        seen["ce_grad"] = grad
        return loss, grad

    monkeypatch.setattr(fastact, "softmax", spy_softmax)
    monkeypatch.setattr(fastact, "softmax_cross_entropy_with_grad", spy_ce)
    x = torch.randn(16, 10, requires_grad=True)
    y = ft.softmax(x, dim=-1)
    assert np.shares_memory(seen["in"], x.detach().numpy())
    assert np.shares_memory(y.detach().numpy(), seen["out"])
    loss = ft.cross_entropy(x, torch.randint(0, 10, (16,)), reduction="sum")
    assert np.shares_memory(seen["ce_in"], x.detach().numpy())
    loss.backward()
    np.testing.assert_array_equal(x.grad.numpy(), seen["ce_grad"])


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = torch.nn.Linear(20, 32)
        self.l2 = torch.nn.Linear(32, 5)

    def forward(self, x, log_softmax=None):
        z = self.l2(torch.relu(self.l1(x)))
        return z if log_softmax is None else log_softmax(z, dim=1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_training_loop_matches_torch(backend, dtype):
    """A small model trained 8 steps (Adam) with fastact.torch's loss gives torch's losses
    and parameters."""
    torch.manual_seed(0)
    net = _Net().to(dtype)
    data = [(torch.randn(16, 20, dtype=dtype), torch.randint(0, 5, (16,))) for _ in range(8)]

    def train(loss_kind):
        model = copy.deepcopy(net)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        losses = []
        for xb, yb in data:
            opt.zero_grad()
            if loss_kind == "torch":
                loss = F.cross_entropy(model(xb), yb, label_smoothing=0.05)
            elif loss_kind == "fastact":
                loss = ft.cross_entropy(model(xb), yb, label_smoothing=0.05)
            else:  # fastact log_softmax + torch's nll_loss
                loss = F.nll_loss(model(xb, ft.log_softmax), yb)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        return losses, model

    with fastact.use_backend(backend):
        lt, mt = train("torch")
        lf, mf = train("fastact")
        ln, _ = train("nll")
    rtol = 1e-4 if dtype == torch.float32 else 1e-10
    np.testing.assert_allclose(lf, lt, rtol=rtol)
    assert lf[-1] < lf[0]
    for a, b in zip(mf.parameters(), mt.parameters()):
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol)
    assert np.isfinite(ln).all() and ln[-1] < ln[0]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_gradient_buffer_and_retained_graph(backend, reduction):
    # loss.backward() hands the fused kernel's gradient buffer to autograd (no
    # copy); a second backward through the retained graph recomputes it, even
    # after the first gradient was changed in place
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(64, 100, dtype=torch.float64, generator=gen)
    t = torch.randint(0, 100, (64,), generator=gen)
    t[5] = -100
    with fastact.use_backend(backend):
        a = x.clone().requires_grad_(True)
        la = ft.cross_entropy(a, t, reduction=reduction)
        la = la.sum() if reduction == "none" else la
        la.backward(retain_graph=True)
        b = x.clone().requires_grad_(True)
        lb = F.cross_entropy(b, t, reduction=reduction)
        lb = lb.sum() if reduction == "none" else lb
        lb.backward()
        torch.testing.assert_close(a.grad, b.grad, **_tol(torch.float64))
        a.grad.mul_(0.5)
        (la * 3).backward()
        torch.testing.assert_close(a.grad, 3.5 * b.grad, **_tol(torch.float64))
