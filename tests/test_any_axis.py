"""Reductions over any axis (issue 18): every axis of 1-D to 4-D arrays, inner
sizes around the vector width, special values down columns, masks and ``b``,
in place, C and Fortran order, every backend and every C ISA path, against
float64 truths; cross entropy with ``axis=1`` against torch and against
``axis=-1`` on the moved array.

On the C and Numba backends a single non-last axis of a C- or
Fortran-contiguous array runs the strided kernels (csrc/strided.c,
_numba_strided.py); the NumPy backend moves the axis last.  All must agree
with the truths to SPEC.md's bounds.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastact
from conftest import assert_close, truth_logsumexp, truth_softmax

DTYPES = [np.float32, np.float64]

# (shape, axis): every axis of 1-D to 4-D arrays, and inner sizes 1, 2, 3, 15,
# 16, 17 and large behind the reduced axis
CASES = [((7,), 0)]
CASES += [((5, 6), a) for a in range(2)]
CASES += [((4, 3, 17), a) for a in range(3)]
CASES += [((2, 3, 4, 5), a) for a in range(4)]
CASES += [((3, 9, inner), 1) for inner in (1, 2, 3, 15, 16, 17, 300)]
CASES += [((40, inner), 0) for inner in (2, 16, 17, 1000)]
CASES += [((2, 1100, 24), 1)]  # rows longer than the tile budget: several tiles per outer


def _ids(c):
    return f"{c[0]}-ax{c[1]}".replace(" ", "")


def _isas():
    try:
        from fastact._backends import c_kernels as C
    except ImportError:
        return []
    return list(C.available_isas())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=_ids)
@pytest.mark.parametrize("order", ["C", "F"])
def test_forward_every_axis(backend, dtype, case, order):
    shape, axis = case
    g = np.random.default_rng(len(shape) * 100 + axis)
    x = np.asarray((g.standard_normal(shape) * 6).astype(dtype), order=order)
    mask = g.random(shape) > 0.3
    for where in (None, mask):
        y = fastact.softmax(x, axis=axis, where=where, backend=backend)
        assert y.dtype == dtype and y.shape == shape
        assert_close(y, truth_softmax(x, axis=axis, where=where), dtype, "prob")
        y = fastact.log_softmax(x, axis=axis, where=where, backend=backend)
        assert_close(y, truth_softmax(x, axis=axis, where=where, log=True), dtype, "log")
        r = fastact.logsumexp(x, axis=axis, where=where, backend=backend)
        assert_close(r, truth_logsumexp(x, axis=axis, where=where), dtype, "log")
        r = fastact.logsumexp(x, axis=axis, where=where, keepdims=True, backend=backend)
        assert_close(r, truth_logsumexp(x, axis=axis, where=where, keepdims=True), dtype, "log")
    # b >= 0 (no cancellation) with return_sign, against the float64 sum
    b = g.random(shape).astype(dtype)
    r, s = fastact.logsumexp(x, axis=axis, b=b, return_sign=True, backend=backend)
    x64 = x.astype(np.float64)
    m = x64.max(axis=axis, keepdims=True)
    want = np.log(np.sum(b * np.exp(x64 - m), axis=axis)) + np.squeeze(m, axis)
    assert_close(r, want, dtype, "log")
    np.testing.assert_array_equal(s, np.ones_like(want))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_backward_every_axis(backend, dtype, case):
    shape, axis = case
    g = np.random.default_rng(7 + axis)
    x = (g.standard_normal(shape) * 3).astype(dtype)
    grad = g.standard_normal(shape).astype(dtype)
    y = fastact.softmax(x, axis=axis, backend="numpy")
    y64, g64 = y.astype(np.float64), grad.astype(np.float64)
    want = y64 * (g64 - np.sum(g64 * y64, axis=axis, keepdims=True))
    got = fastact.softmax_backward(grad, y, axis=axis, backend=backend)
    k = shape[axis]
    bound = 4 * np.sqrt(k) * (1e-6 if dtype == np.float32 else 1e-14)
    np.testing.assert_allclose(got, want, rtol=0, atol=bound * (1 + np.abs(g64).max()))
    mask = g.random(shape) > 0.3
    ly = fastact.log_softmax(x, axis=axis, where=mask, backend="numpy")
    ly64 = ly.astype(np.float64)
    gm = np.where(mask, g64, 0.0)
    want = np.where(mask, g64 - np.exp(ly64) * np.sum(gm, axis=axis, keepdims=True), 0.0)
    got = fastact.log_softmax_backward(grad, ly, axis=axis, where=mask, backend=backend)
    np.testing.assert_allclose(got, want, rtol=0,
                               atol=bound * (1 + np.sum(np.abs(gm), axis=axis).max()))


def _special_columns(dtype, inner):
    """(k, inner) columns with the special values of the contract down each column."""
    fmax = np.finfo(dtype).max
    spread = 100.0 if dtype == np.float32 else 800.0  # beyond exp's range from the max
    cols = [
        [0.0, 1.0, 2.0, -1.0, 0.5],
        [np.nan, 1.0, 2.0, 0.0, 0.0],
        [np.inf, 1.0, 2.0, 0.0, 0.0],
        [-np.inf, 1.0, -np.inf, 0.0, 3.0],
        [-np.inf] * 5,
        [fmax, -fmax, 0.0, fmax, 1.0],
        [-fmax, -fmax, -fmax, -fmax, -fmax],
        [spread, 0.0, -spread, spread - 1, -2 * spread],
        [np.inf, -np.inf, np.inf, 0.0, 0.0],
    ]
    a = np.array([cols[j % len(cols)] for j in range(inner)], dtype=np.float64).T
    return a.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("inner", [1, 2, 3, 9, 16, 17, 40])
def test_special_values_down_columns(backend, dtype, inner):
    x = _special_columns(dtype, inner)  # reduced over axis 0: down the columns
    mask = np.ones(x.shape, bool)
    mask[1, ::2] = False
    mask[:, 3::7] = False  # some columns fully masked
    with np.errstate(all="ignore"):
        for where in (None, mask):
            for arr, ax in ((x, 0), (x[None], 1), (np.asfortranarray(x.T), 1)):
                w = where if where is None or ax == 0 else (
                    where[None] if arr.ndim == 3 else where.T)
                got = fastact.softmax(arr, axis=ax, where=w, backend=backend)
                assert_close(got, truth_softmax(arr, axis=ax, where=w), dtype, "prob")
                got = fastact.log_softmax(arr, axis=ax, where=w, backend=backend)
                assert_close(got, truth_softmax(arr, axis=ax, where=w, log=True), dtype, "log")
                got = fastact.logsumexp(arr, axis=ax, where=w, backend=backend)
                assert_close(got, truth_logsumexp(arr, axis=ax, where=w), dtype, "log")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", [((6, 17), 0), ((3, 20, 5), 1), ((2, 3, 4, 33), 2)])
def test_in_place(backend, dtype, shape, axis):
    g = np.random.default_rng(3)
    x = (g.standard_normal(shape) * 5).astype(dtype)
    for fn, kind, log in ((fastact.softmax, "prob", False), (fastact.log_softmax, "log", True)):
        o = x.copy()
        r = fn(o, axis=axis, out=o, backend=backend)
        assert r is o
        assert_close(o, truth_softmax(x, axis=axis, log=log), dtype, kind)
    grad = g.standard_normal(shape).astype(dtype)
    y = fastact.softmax(x, axis=axis, backend="numpy")
    want = fastact.softmax_backward(grad, y, axis=axis, backend="numpy")
    o = grad.copy()
    assert fastact.softmax_backward(o, y, axis=axis, out=o, backend=backend) is o
    np.testing.assert_allclose(o, want, rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-6 if dtype == np.float32 else 1e-14)
    # out in another layout than x, and an out= for logsumexp with keepdims
    of = np.empty(shape, dtype, order="F")
    fastact.softmax(x, axis=axis, out=of, backend=backend)
    assert_close(of, truth_softmax(x, axis=axis), dtype, "prob")
    rs = list(shape)
    rs[axis] = 1
    lo = np.empty(rs, dtype)
    assert fastact.logsumexp(x, axis=axis, keepdims=True, out=lo, backend=backend) is lo
    assert_close(lo, truth_logsumexp(x, axis=axis, keepdims=True), dtype, "log")


@pytest.mark.parametrize("isa", _isas())
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_c_isa(isa, dtype):
    from fastact._backends import c_kernels as C
    g = np.random.default_rng(11)
    with C.force_isa(isa):
        for shape, axis in CASES[1:]:
            x = (g.standard_normal(shape) * 6).astype(dtype)
            x.flat[::13] = -np.inf
            mask = g.random(shape) > 0.2
            for where in (None, mask):
                y = fastact.softmax(x, axis=axis, where=where, backend="c")
                assert_close(y, truth_softmax(x, axis=axis, where=where), dtype, "prob")
                y = fastact.log_softmax(x, axis=axis, where=where, backend="c")
                assert_close(y, truth_softmax(x, axis=axis, where=where, log=True), dtype, "log")
                r = fastact.logsumexp(x, axis=axis, where=where, backend="c")
                assert_close(r, truth_logsumexp(x, axis=axis, where=where), dtype, "log")


def test_threads_same_result():
    if "c" not in fastact.available_backends():
        pytest.skip("C backend not built")
    g = np.random.default_rng(5)
    x = g.standard_normal((4, 300, 700)).astype(np.float32)
    old = fastact.get_num_threads()
    try:
        fastact.set_num_threads(1)
        one = fastact.log_softmax(x, axis=1, backend="c")
        fastact.set_num_threads(2)
        two = fastact.log_softmax(x, axis=1, backend="c")
    finally:
        fastact.set_num_threads(old)
    np.testing.assert_array_equal(one, two)


def test_other_layouts_keep_working(backend):
    # tuples of axes, negative strides, arbitrary strides: the row path
    g = np.random.default_rng(9)
    x = g.standard_normal((4, 5, 6))
    for arr in (x[::-1], x[:, ::2], x.transpose(1, 0, 2)):
        for axis in (0, 1, (0, 2)):
            assert_close(fastact.softmax(arr, axis=axis, backend=backend),
                         truth_softmax(arr, axis=axis), np.float64, "prob")


# ------------------------------------------------------------ cross entropy

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _ce_inputs(g, dtype, prob, shape=(3, 5, 4, 6), ignore_index=-100):
    n, c = shape[0], shape[1]
    x = (g.standard_normal(shape) * 3).astype(dtype)
    if prob:
        t = g.random(shape).astype(dtype)
        t /= t.sum(1, keepdims=True)
    else:
        lead = (n,) + shape[2:]
        t = g.integers(0, c, lead)
        t[g.random(lead) < 0.2] = ignore_index
    return x, t


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("prob", [False, True], ids=["index", "prob"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.15])
def test_cross_entropy_axis1_vs_torch(backend, dtype, prob, reduction, weighted, label_smoothing):
    g = np.random.default_rng(21)
    ignore_index = 2 if not prob and weighted else -100
    x, t = _ce_inputs(g, dtype, prob, ignore_index=ignore_index)
    w = (g.random(x.shape[1]) + 0.1).astype(dtype) if weighted else None
    opts = dict(weight=w, reduction=reduction, label_smoothing=label_smoothing,
                ignore_index=ignore_index)
    xt = torch.tensor(x, requires_grad=True)
    ref = F.cross_entropy(xt, torch.tensor(t), weight=None if w is None else torch.tensor(w),
                          reduction=reduction, label_smoothing=label_smoothing,
                          ignore_index=ignore_index)
    gl = (g.standard_normal(ref.shape).astype(dtype) if reduction == "none"
          else np.asarray(1.0, dtype))
    ref.backward(torch.tensor(gl))
    tol = dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-13)
    loss, grad = fastact.softmax_cross_entropy_with_grad(x, t, axis=1, backend=backend, **opts)
    np.testing.assert_allclose(loss, ref.detach().numpy(), **tol)
    assert grad.shape == x.shape and grad.flags.c_contiguous
    gscaled = grad * (np.expand_dims(gl, 1) if reduction == "none" else gl)
    np.testing.assert_allclose(gscaled, xt.grad.numpy(), **tol)
    np.testing.assert_allclose(fastact.softmax_cross_entropy(x, t, axis=1, backend=backend, **opts),
                               loss, **tol)
    gb = fastact.softmax_cross_entropy_backward(x, t, gl, axis=1, backend=backend, **opts)
    np.testing.assert_allclose(gb, xt.grad.numpy(), **tol)
    # the same as axis=-1 on the moved array (z-loss too)
    for z in (0.0, 1e-2):
        xm = np.moveaxis(x, 1, -1)
        tm = np.moveaxis(t, 1, -1) if prob else t
        l1, g1 = fastact.softmax_cross_entropy_with_grad(x, t, axis=1, z_loss=z, backend=backend,
                                                         **opts)
        l2, g2 = fastact.softmax_cross_entropy_with_grad(xm, tm, z_loss=z, backend=backend,
                                                         **opts)
        np.testing.assert_allclose(l1, l2, **tol)
        np.testing.assert_allclose(np.moveaxis(g1, 1, -1), g2, **tol)
    # out=logits: the gradient overwrites the logits
    o = x.copy()
    lo, go = fastact.softmax_cross_entropy_with_grad(o, t, axis=1, out=o, backend=backend, **opts)
    assert go is o
    np.testing.assert_allclose(o, grad, **tol)
    np.testing.assert_allclose(lo, loss, **tol)


@pytest.mark.parametrize("axis", [0, 1, 2, -2])
def test_cross_entropy_other_axes(backend, axis):
    g = np.random.default_rng(4)
    x = g.standard_normal((4, 6, 5))
    c = x.shape[axis]
    lead = tuple(s for i, s in enumerate(x.shape) if i != axis % 3)
    t = g.integers(0, c, lead)
    xm = np.moveaxis(x, axis, -1)
    for red in ("mean", "none"):
        l1, g1 = fastact.softmax_cross_entropy_with_grad(x, t, axis=axis, reduction=red,
                                                         backend=backend)
        l2, g2 = fastact.softmax_cross_entropy_with_grad(xm, t, reduction=red, backend="numpy")
        np.testing.assert_allclose(l1, l2, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(np.moveaxis(g1, axis, -1), g2, rtol=1e-12, atol=1e-14)


def test_cross_entropy_axis_errors(backend):
    g = np.random.default_rng(0)
    x, t = _ce_inputs(g, np.float32, False)
    from numpy.exceptions import AxisError
    with pytest.raises(AxisError):
        fastact.softmax_cross_entropy(x, t, axis=4, backend=backend)
    with pytest.raises(ValueError, match="index target"):
        fastact.softmax_cross_entropy(x, t, axis=2, backend=backend)
    with pytest.raises(ValueError, match="weight"):
        fastact.softmax_cross_entropy(x, t, axis=1, weight=np.ones(4, np.float32),
                                      backend=backend)
    bad = t.copy()
    bad[1, 2, 3] = 5
    o = x.copy()
    with pytest.raises(IndexError, match="5"):
        fastact.softmax_cross_entropy_with_grad(o, bad, axis=1, out=o, backend=backend)
    np.testing.assert_array_equal(o, x)  # nothing written


@pytest.mark.parametrize("prob", [False, True], ids=["index", "prob"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_torch_cross_entropy_nchw(backend, prob, reduction):
    import fastact.torch as ft
    g = np.random.default_rng(8)
    x, t = _ce_inputs(g, np.float32, prob)
    with fastact.use_backend(backend):
        a = torch.tensor(x, requires_grad=True)
        la = ft.cross_entropy(a, torch.tensor(t), reduction=reduction, label_smoothing=0.1)
        b = torch.tensor(x, requires_grad=True)
        lb = F.cross_entropy(b, torch.tensor(t), reduction=reduction, label_smoothing=0.1)
        gl = torch.tensor(g.standard_normal(lb.shape).astype(np.float32))
        la.backward(gl)
        lb.backward(gl)
    np.testing.assert_allclose(la.detach().numpy(), lb.detach().numpy(), rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=2e-5, atol=2e-6)
