"""sigmoid_binary_cross_entropy (+ backward, + fused with_grad) against
torch.nn.functional.binary_cross_entropy_with_logits and its autograd gradient (float64)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import fastact
from conftest import check_loss_functions

torch = pytest.importorskip("torch")
F = torch.nn.functional

FLOATS = [np.float32, np.float64]


def torch_bce(x, t, *, weight=None, pos_weight=None, reduction="mean", grad_loss=1.0):
    """(loss, d loss / d x) by torch autograd in float64."""
    xt = torch.tensor(np.asarray(x, np.float64), requires_grad=True)
    tt = torch.tensor(np.asarray(t, np.float64))
    w = None if weight is None else torch.tensor(np.asarray(weight, np.float64))
    pw = None if pos_weight is None else torch.tensor(np.asarray(pos_weight, np.float64))
    loss = F.binary_cross_entropy_with_logits(xt, tt, weight=w, pos_weight=pw,
                                              reduction=reduction)
    if reduction == "none":
        gl = torch.tensor(np.broadcast_to(np.asarray(grad_loss, np.float64), x.shape).copy())
        loss.backward(gl)
        return loss.detach().numpy(), xt.grad.numpy()
    loss.backward(torch.tensor(float(grad_loss), dtype=torch.float64))
    return float(loss.detach()), xt.grad.numpy()


def check(got_loss, got_grad, exp_loss, exp_grad, dtype):
    rtol = 2e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(np.asarray(got_loss, np.float64), exp_loss, rtol=rtol,
                               atol=rtol)
    if got_grad is not None:
        scale = np.max(np.abs(exp_grad)) if np.size(exp_grad) else 1.0
        np.testing.assert_allclose(got_grad, exp_grad, rtol=rtol, atol=rtol * scale)


def make_case(rng, dtype, shape=(13, 7), soft=True, spread=4.0):
    x = (rng.standard_normal(shape) * spread).astype(dtype)
    if soft:  # multi-label probabilities in [0, 1]
        t = rng.random(shape)
    else:     # multi-label hard 0/1 targets
        t = (rng.random(shape) < 0.3).astype(np.float64)
    return x, t.astype(dtype)


def weights(rng, kind, shape, dtype):
    k = shape[-1]
    if kind is None:
        return None
    if kind == "class":
        return (rng.random(k) + 0.2).astype(dtype)
    if kind == "scalar":
        return np.asarray(1.7, dtype)
    if kind == "row":  # (N, 1): per sample
        return (rng.random(shape[:-1] + (1,)) + 0.2).astype(dtype)
    if kind == "full":
        return (rng.random(shape) + 0.2).astype(dtype)
    raise AssertionError(kind)


OPTIONS = list(itertools.product(
    [None, "class", "row", "full"],         # weight
    [None, "class", "scalar", "full"],      # pos_weight
    ["mean", "sum", "none"],                # reduction
))


@pytest.mark.parametrize("wk,pk,reduction", OPTIONS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_bce_vs_torch(backend, rng, dtype, wk, pk, reduction):
    soft = OPTIONS.index((wk, pk, reduction)) % 2 == 0  # soft and hard multi-label targets
    x, t = make_case(rng, dtype, soft=soft)
    w = weights(rng, wk, x.shape, dtype)
    pw = weights(rng, pk, x.shape, dtype)
    opts = dict(weight=w, pos_weight=pw, reduction=reduction)
    check_loss_functions("sigmoid_binary_cross_entropy", x, t, opts, backend=backend,
                         dtype=dtype, rng=rng, truth=torch_bce, check=check,
                         loss_shape=x.shape)


@pytest.mark.parametrize("dtype", FLOATS)
def test_saturated_logits(backend, dtype):
    """±1000 and ±finfo.max logits: exact losses and gradients, no NaN (no log(0), no
    inf - inf), for both targets and a soft one; a loss is inf only where its true value
    exceeds finfo.max (pos_weight 3 times a logit of -finfo.max)."""
    fmax = float(np.finfo(dtype).max)
    xs = [1000.0, -1000.0, 100.0, -100.0, 40.0, -40.0, fmax, -fmax, fmax / 3, -fmax / 3, 0.0]
    x = np.array([v for v in xs for _ in range(3)], dtype)
    t = np.array([0.0, 1.0, 0.5] * len(xs), dtype)
    for pw in (None, np.asarray(3.0, dtype)):
        el, eg = torch_bce(x, t, pos_weight=pw, reduction="none")
        l, g = fastact.sigmoid_binary_cross_entropy_with_grad(x, t, pos_weight=pw,
                                                              reduction="none", backend=backend)
        assert np.isfinite(g).all() and not np.isnan(l).any()
        assert np.array_equal(np.isinf(l), np.abs(el) > fmax)
        fin = np.isfinite(l)
        check(l[fin], g, el[fin], eg, dtype)
        # the loss of a confidently wrong logit is the logit itself, not inf
        assert l[0] == 1000 and l[4] == 1000 * (1 if pw is None else 3)


def test_special_logits_as_torch(backend):
    x = np.array([np.inf, np.inf, -np.inf, -np.inf, np.nan, np.inf])
    t = np.array([0.0, 1.0, 0.0, 1.0, 0.5, 0.5])
    el, eg = torch_bce(x, t, reduction="none")
    l, g = fastact.sigmoid_binary_cross_entropy_with_grad(x, t, reduction="none",
                                                          backend=backend)
    np.testing.assert_array_equal(l, el)  # NaN and inf where torch has them
    np.testing.assert_array_equal(g, eg)


@pytest.mark.parametrize("shape", [(), (5,), (2, 3, 4), (1, 1)])
def test_shapes_and_broadcast_weights(backend, rng, shape):
    x, t = make_case(rng, np.float64, shape=shape)
    k = shape[-1] if shape else 1
    for w in (None, np.float64(0.5), rng.random(k) + 0.1, rng.random(shape) + 0.1):
        if shape == () and w is not None and np.ndim(w) > 0:
            continue
        el, eg = torch_bce(x, t, weight=w, pos_weight=w)
        l, g = fastact.sigmoid_binary_cross_entropy_with_grad(x, t, weight=w, pos_weight=w,
                                                              backend=backend)
        check(l, g, el, eg, np.float64)


def test_layouts_and_out(backend, rng):
    x, t = make_case(rng, np.float64, shape=(6, 9))
    el, eg = torch_bce(x, t, pos_weight=np.arange(1, 10.0))
    opts = dict(pos_weight=np.arange(1, 10.0), backend=backend)
    for name, (xv, tv) in {"f": (np.asfortranarray(x), np.asfortranarray(t)),
                           "t": (np.ascontiguousarray(x.T).T, t),
                           "strided": (np.repeat(x, 2, axis=1)[:, ::2], t[:, ::-1][:, ::-1])}.items():
        keep = xv.copy()
        l, g = fastact.sigmoid_binary_cross_entropy_with_grad(xv, tv, **opts)
        check(l, g, el, eg, np.float64)
        np.testing.assert_array_equal(xv, keep)
    # out= the logits themselves: overwritten with the gradient
    xx = x.copy()
    l, g = fastact.sigmoid_binary_cross_entropy_with_grad(xx, t, out=xx, **opts)
    assert g is xx
    check(l, xx, el, eg, np.float64)
    # through a non-contiguous out
    big = np.zeros((6, 18))
    v = big[:, ::2]
    v[...] = x
    l, g = fastact.sigmoid_binary_cross_entropy_with_grad(v, t, out=v, **opts)
    assert g is v
    check(l, v, el, eg, np.float64)
    assert (big[:, 1::2] == 0).all()
    o = np.empty((6, 9), order="F")
    assert fastact.sigmoid_binary_cross_entropy_backward(x, t, out=o, **opts) is o
    check(l, o, el, eg, np.float64)


def test_dtypes(backend, rng):
    x, t = make_case(rng, np.float32)
    el, eg = torch_bce(x.astype(np.float16).astype(np.float64), t)
    l, g = fastact.sigmoid_binary_cross_entropy_with_grad(x.astype(np.float16), t,
                                                          backend=backend)
    assert l.dtype == np.float32 and g.dtype == np.float16
    np.testing.assert_allclose(l, el, rtol=1e-5)
    np.testing.assert_allclose(g.astype(np.float64), eg, atol=1e-4)
    ln = fastact.sigmoid_binary_cross_entropy(x.astype(np.float16), t, reduction="none",
                                              backend=backend)
    assert ln.dtype == np.float32
    # integer logits and bool targets: float64
    li = fastact.sigmoid_binary_cross_entropy(np.array([-2, 0, 3]), np.array([0, 1, 1], bool),
                                              backend=backend)
    assert li.dtype == np.float64
    np.testing.assert_allclose(li, torch_bce(np.array([-2.0, 0, 3]), np.array([0.0, 1, 1]))[0])


def test_empty(backend):
    x = np.zeros((0, 4))
    assert np.isnan(fastact.sigmoid_binary_cross_entropy(x, x, backend=backend))
    assert fastact.sigmoid_binary_cross_entropy(x, x, reduction="sum", backend=backend) == 0
    assert fastact.sigmoid_binary_cross_entropy(x, x, reduction="none",
                                                backend=backend).shape == (0, 4)
    l, g = fastact.sigmoid_binary_cross_entropy_with_grad(x, x, backend=backend)
    assert np.isnan(l) and g.shape == (0, 4)


def test_errors_write_nothing(backend, rng):
    x, t = make_case(rng, np.float64, shape=(4, 3))
    o = np.full_like(x, 7.0)
    calls = [
        (ValueError, r"\(4, 2\)", dict(target=t[:, :2])),
        (ValueError, r"\(2,\)", dict(weight=np.ones(2))),
        (ValueError, r"\(5, 3\)", dict(pos_weight=np.ones((5, 3)))),
        (ValueError, "reduction", dict(reduction="avg")),
        (TypeError, "complex", dict(target=t.astype(np.complex128))),
        (ValueError, "grad_loss", dict(grad_loss=np.ones(4))),
        (ValueError, r"\(3, 4\)", dict(out=np.zeros((3, 4)))),
    ]
    for exc, msg, kw in calls:
        args = dict(logits=x, target=t, out=o)
        args.update(kw)
        gl = args.pop("grad_loss", 1.0)
        with pytest.raises(exc, match=msg):
            fastact.sigmoid_binary_cross_entropy_backward(args.pop("logits"), args.pop("target"),
                                                          gl, backend=backend, **args)
        assert (o == 7.0).all()
    with pytest.raises(TypeError, match="complex"):
        fastact.sigmoid_binary_cross_entropy(x.astype(np.complex64), t, backend=backend)
    with pytest.raises(ValueError, match="grad_loss"):
        fastact.sigmoid_binary_cross_entropy_backward(x, t, np.ones((2, 2)), reduction="none",
                                                      backend=backend)
    ro = x.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        fastact.sigmoid_binary_cross_entropy_with_grad(x, t, out=ro, backend=backend)


def test_large_threaded_sum(backend, rng):
    """A call split over threads: the same loss and gradient (float64 accumulation)."""
    x = (rng.standard_normal((3001, 101)) * 3).astype(np.float32)
    t = (rng.random(x.shape) < 0.2).astype(np.float32)
    pw = (rng.random(101) + 0.5).astype(np.float32)
    old = fastact.get_num_threads()
    try:
        fastact.set_num_threads(1)
        l1, g1 = fastact.sigmoid_binary_cross_entropy_with_grad(x, t, pos_weight=pw,
                                                                backend=backend)
        fastact.set_num_threads(4)
        l4, g4 = fastact.sigmoid_binary_cross_entropy_with_grad(x, t, pos_weight=pw,
                                                                backend=backend)
    finally:
        fastact.set_num_threads(old)
    np.testing.assert_array_equal(g1, g4)
    np.testing.assert_allclose(l1, l4, rtol=1e-6)
    el, _ = torch_bce(x, t, pos_weight=pw)
    np.testing.assert_allclose(l4, el, rtol=1e-6)
