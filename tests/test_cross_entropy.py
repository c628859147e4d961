"""softmax_cross_entropy (+ backward, + fused with_grad) against torch (float64)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import fastact
from conftest import ce_case, check_loss_functions

torch = pytest.importorskip("torch")
F = torch.nn.functional

FLOATS = [np.float32, np.float64]
IGNORE = -100


def torch_ce(logits, target, *, weight=None, ignore_index=IGNORE, reduction="mean",
             label_smoothing=0.0, z_loss=0.0, grad_loss=1.0):
    """Loss and d loss / d logits by torch autograd in float64 (+ the z-loss term)."""
    c = logits.shape[-1]
    lead = logits.shape[:-1]
    x = torch.tensor(np.asarray(logits, np.float64).reshape(-1, c), requires_grad=True)
    index = np.asarray(target).dtype.kind in "iu"
    if index:
        t = torch.tensor(np.asarray(target, np.int64).reshape(-1))
        valid = t != ignore_index
    else:
        t = torch.tensor(np.asarray(target, np.float64).reshape(-1, c))
        valid = torch.ones(x.shape[0], dtype=torch.bool)
    w = None if weight is None else torch.tensor(np.asarray(weight, np.float64))
    loss = F.cross_entropy(x, t, weight=w, ignore_index=ignore_index, reduction=reduction,
                           label_smoothing=label_smoothing)
    if z_loss:
        zl = z_loss * torch.logsumexp(x, dim=-1) ** 2 * valid
        if reduction == "none":
            loss = loss + zl
        elif reduction == "sum":
            loss = loss + zl.sum()
        else:
            loss = loss + zl.sum() / valid.sum()
    if reduction == "none":
        gl = torch.tensor(np.broadcast_to(np.asarray(grad_loss, np.float64), lead).reshape(-1))
        loss.backward(gl)
        return loss.detach().numpy().reshape(lead), x.grad.numpy().reshape(logits.shape)
    loss.backward(torch.tensor(float(grad_loss), dtype=torch.float64))
    return float(loss.detach()), x.grad.numpy().reshape(logits.shape)



def check(got_loss, got_grad, exp_loss, exp_grad, dtype):
    rtol = 2e-5 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(np.asarray(got_loss, np.float64), exp_loss, rtol=rtol,
                               atol=rtol)
    if got_grad is not None:
        scale = np.max(np.abs(exp_grad)) + 1e-30
        np.testing.assert_allclose(got_grad, exp_grad, rtol=0, atol=rtol * scale)


OPTIONS = list(itertools.product(
    [True, False],            # index targets / probability targets
    [False, True],            # weight
    [0.0, 0.1],               # label_smoothing
    ["mean", "sum", "none"],  # reduction
    [0.0, 1e-3],              # z_loss
))


@pytest.mark.parametrize("index,use_w,ls,reduction,z", OPTIONS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_cross_entropy_vs_torch(backend, rng, dtype, index, use_w, ls, reduction, z):
    x, t = ce_case(rng, dtype, index=index)
    w = rng.random(x.shape[-1]).astype(dtype) + 0.1 if use_w else None
    opts = dict(weight=w, reduction=reduction, label_smoothing=ls, z_loss=z)
    check_loss_functions("softmax_cross_entropy", x, t, opts, backend=backend, dtype=dtype,
                         rng=rng, truth=torch_ce, check=check, loss_shape=x.shape[:-1])


@pytest.mark.parametrize("dtype", FLOATS)
def test_multi_dim_and_long_rows(backend, rng, dtype):
    x, t = ce_case(rng, dtype, lead=(2, 3, 4), c=5)
    for opts in (dict(), dict(reduction="none", label_smoothing=0.2)):
        el, eg = torch_ce(x, t, **opts)
        l, g = fastact.softmax_cross_entropy_with_grad(x, t, backend=backend, **opts)
        check(l, g, el, eg, dtype)
    x, t = ce_case(rng, dtype, lead=(3,), c=50000, spread=10)
    el, eg = torch_ce(x, t, label_smoothing=0.05, weight=None)
    l, g = fastact.softmax_cross_entropy_with_grad(x, t, label_smoothing=0.05, backend=backend)
    check(l, g, el, eg, dtype)


@pytest.mark.parametrize("dtype", FLOATS)
def test_large_spread_and_neg_inf_logits(backend, rng, dtype):
    """Spread beyond 88/709 and -inf logits (not at the target) stay finite and exact."""
    big = 200.0 if dtype == np.float32 else 1500.0
    x = np.array([[big, 0, -big, 1], [-big, big, 0, -np.inf], [0, 0, 0, 0],
                  [np.finfo(dtype).max / 2, 0, -np.finfo(dtype).max / 2, 1]], dtype)
    t = np.array([2, 0, 3, 2])
    el, eg = torch_ce(x, t, reduction="none")
    l, g = fastact.softmax_cross_entropy_with_grad(x, t, reduction="none", backend=backend)
    assert np.isfinite(l).all() and np.isfinite(g).all()
    check(l, g, el, eg, dtype)


@pytest.mark.parametrize("index", [True, False])
def test_label_smoothing_near_finfo_max(backend, index):
    """float32 logits at -+finfo.max: m - x_c overflows float32, the smoothed
    loss (about eps * finfo.max) does not; it matches the float64 result."""
    fmax = float(np.finfo(np.float32).max)
    x = np.array([[fmax, 0, -fmax, 1], [0, -fmax, 2, fmax], [3, 1, 0, 2]], np.float32)
    t = np.array([0, 3, 1])
    if not index:
        t = np.eye(4)[t] * 0.75 + 0.0625           # every class has mass
    opts = dict(label_smoothing=0.1, reduction="none")
    l, g = fastact.softmax_cross_entropy_with_grad(x, t, backend=backend, **opts)
    el, eg = fastact.softmax_cross_entropy_with_grad(x.astype(np.float64), t,
                                                    backend="numpy", **opts)
    assert np.all(el < fmax) and np.all(np.isfinite(l)) and np.all(np.isfinite(g))
    np.testing.assert_allclose(l, el, rtol=1e-5)
    np.testing.assert_allclose(g, eg, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_rows_ignored(backend, rng, reduction):
    x, _ = ce_case(rng, np.float32)
    t = np.full(x.shape[:-1], IGNORE)
    l, g = fastact.softmax_cross_entropy_with_grad(x, t, reduction=reduction, z_loss=1e-2,
                                                   label_smoothing=0.1, backend=backend)
    if reduction == "mean":
        assert np.isnan(l)
    elif reduction == "sum":
        assert l == 0
    else:
        assert (l == 0).all()
    assert (g == 0).all()


def test_custom_ignore_index_and_combination(backend, rng):
    """weight + label_smoothing + ignore_index together (broke PyTorch more than once)."""
    x, t = ce_case(rng, np.float64, lead=(40,), c=6, ignored=0.0)
    t[::3] = 2
    w = rng.random(6) + 0.2
    for ii in (2, -1, 5):
        opts = dict(weight=w, label_smoothing=0.3, ignore_index=ii, z_loss=0.01)
        el, eg = torch_ce(x, t, **opts)
        l, g = fastact.softmax_cross_entropy_with_grad(x, t, backend=backend, **opts)
        check(l, g, el, eg, np.float64)


def test_in_place_gradient(backend, rng):
    x, t = ce_case(rng, np.float32, lead=(9,), c=11)
    el, eg = torch_ce(x, t, label_smoothing=0.1)
    xx = x.copy()
    l, g = fastact.softmax_cross_entropy_with_grad(xx, t, label_smoothing=0.1, out=xx,
                                                   backend=backend)
    assert g is xx
    check(l, xx, el, eg, np.float32)
    # through a non-contiguous array
    big = np.zeros((9, 22), np.float32)
    v = big[:, ::2]
    v[...] = x
    l, g = fastact.softmax_cross_entropy_with_grad(v, t, label_smoothing=0.1, out=v,
                                                   backend=backend)
    check(l, v, el, eg, np.float32)
    assert (big[:, 1::2] == 0).all()


def test_half_precision_losses_are_float32(backend, rng):
    x, t = ce_case(rng, np.float32)
    xh = x.astype(np.float16)
    l = fastact.softmax_cross_entropy(xh, t, backend=backend)
    assert l.dtype == np.float32
    el, eg = torch_ce(xh.astype(np.float64), t)
    l, g = fastact.softmax_cross_entropy_with_grad(xh, t, backend=backend)
    assert l.dtype == np.float32 and g.dtype == np.float16
    np.testing.assert_allclose(l, el, rtol=1e-5)
    np.testing.assert_allclose(g.astype(np.float64), eg, atol=2e-3)


def test_unbatched_and_empty(backend, rng):
    x = rng.standard_normal(5)
    el, eg = torch_ce(x[None], np.array([3]))
    l, g = fastact.softmax_cross_entropy_with_grad(x, np.array(3), backend=backend)
    check(l, g.reshape(1, 5), el, eg, np.float64)
    x = np.zeros((0, 5))
    t = np.zeros(0, np.int64)
    assert np.isnan(fastact.softmax_cross_entropy(x, t, backend=backend))
    assert fastact.softmax_cross_entropy(x, t, reduction="sum", backend=backend) == 0
    assert fastact.softmax_cross_entropy(x, t, reduction="none", backend=backend).shape == (0,)
    assert fastact.softmax_cross_entropy_backward(x, t, backend=backend).shape == (0, 5)


def test_target_out_of_range_nothing_written(backend, rng):
    x, t = ce_case(rng, np.float32, ignored=0)
    for bad in (7, -1, 1000, -101):
        tt = t.copy()
        tt[5] = bad
        out = np.full_like(x, 3.0)
        with pytest.raises(IndexError, match=str(bad)):
            fastact.softmax_cross_entropy_with_grad(x, tt, out=out, backend=backend)
        assert (out == 3.0).all()
        xx = x.copy()
        with pytest.raises(IndexError, match=str(bad)):
            fastact.softmax_cross_entropy_with_grad(xx, tt, out=xx, backend=backend)
        np.testing.assert_array_equal(xx, x)
        with pytest.raises(IndexError):
            fastact.softmax_cross_entropy(x, tt, backend=backend)


def test_logits_not_modified(backend, rng):
    x, t = ce_case(rng, np.float64)
    keep = x.copy()
    fastact.softmax_cross_entropy_with_grad(x, t, backend=backend)
    fastact.softmax_cross_entropy_backward(x, t, backend=backend)
    np.testing.assert_array_equal(x, keep)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_many_rows_span_several_blocks(backend, rng, reduction):
    """More rows than one kernel block (the API runs the kernels block by block)."""
    x, t = ce_case(rng, np.float32, lead=(300_000,), c=4, ignored=0.1)
    w = np.array([0.5, 1.0, 2.0, 1.5], np.float32)
    opts = dict(weight=w, reduction=reduction, label_smoothing=0.1, z_loss=1e-3)
    el, eg = torch_ce(x, t, **opts)
    l, g = fastact.softmax_cross_entropy_with_grad(x, t, backend=backend, **opts)
    check(l, g, el, eg, np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("index", [True, False])
def test_label_smoothing_in_place_row_with_neg_inf(backend, dtype, index):
    # out=logits with label smoothing: the smoothing term sum_c w_c (m - x_c) is
    # infinite for a row holding -inf, in place as out of place (the in-place
    # kernel once re-read x after the gradient had overwritten it)
    x = np.array([[0, -1, -np.inf, 2, 1], [0.5, -1, 3, 2, 1]], dtype)
    t = np.array([1, 2]) if index else np.array([[.1, .5, .1, .2, .1], [0, 0, 1, 0, 0]], dtype)
    with np.errstate(all="ignore"):
        l, g = fastact.softmax_cross_entropy_with_grad(x, t, label_smoothing=0.1, reduction="none",
                                                       backend=backend)
        xi = x.copy()
        li, gi = fastact.softmax_cross_entropy_with_grad(xi, t, label_smoothing=0.1,
                                                         reduction="none", out=xi, backend=backend)
    assert gi is xi
    assert np.isposinf(l[0]) and np.isposinf(li[0])
    np.testing.assert_allclose(li, l, rtol=1e-6 if dtype == np.float32 else 1e-13)
    np.testing.assert_array_equal(np.isnan(gi), np.isnan(g))
