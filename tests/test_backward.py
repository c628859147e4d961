"""softmax_backward and log_softmax_backward against torch autograd (float64)."""

from __future__ import annotations

import numpy as np
import pytest

import fastact
from conftest import assert_close, layouts

torch = pytest.importorskip("torch")

FLOATS = [np.float32, np.float64]


def _torch_vjp(x, grad, axis, log):
    t = torch.tensor(np.asarray(x, np.float64), requires_grad=True)
    f = torch.log_softmax if log else torch.softmax
    y = f(t, dim=axis)
    y.backward(torch.tensor(np.asarray(grad, np.float64)))
    return y.detach().numpy(), t.grad.numpy()


@pytest.mark.parametrize("shape,axis", [((4, 9), -1), ((4, 9), 0), ((3, 4, 5), 1),
                                        ((70, 10), -1), ((2, 1000), -1)])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("log", [False, True])
def test_backward_vs_torch(backend, rng, shape, axis, dtype, log):
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    grad = rng.standard_normal(shape).astype(dtype)
    y64, expect = _torch_vjp(x, grad, axis, log)
    y = y64.astype(dtype)
    fn = fastact.log_softmax_backward if log else fastact.softmax_backward
    for name, gl in layouts(grad):
        got = fn(gl, y, axis=axis, backend=backend)
        assert got.dtype == dtype and got.shape == shape, name
        # the gradient is computed from y rounded to dtype: compare at that precision
        scale = np.max(np.abs(expect)) + 1
        np.testing.assert_allclose(got, expect, rtol=0,
                                   atol=(2e-5 if dtype == np.float32 else 1e-11) * scale)


@pytest.mark.parametrize("dtype", FLOATS)
def test_backward_exact_against_formula(backend, rng, dtype):
    """Same inputs, float64 formula from SPEC: y * (grad - sum(grad * y))."""
    x = rng.standard_normal((5, 37)).astype(dtype)
    y = fastact.softmax(x, backend="numpy")
    g = rng.standard_normal((5, 37)).astype(dtype)
    y64, g64 = y.astype(np.float64), g.astype(np.float64)
    expect = y64 * (g64 - np.sum(g64 * y64, axis=1, keepdims=True))
    got = fastact.softmax_backward(g, y, backend=backend)
    np.testing.assert_allclose(got, expect, rtol=0,
                               atol=(1e-6 if dtype == np.float32 else 1e-14))
    ly = fastact.log_softmax(x, backend="numpy")
    ly64 = ly.astype(np.float64)
    expect = g64 - np.exp(ly64) * np.sum(g64, axis=1, keepdims=True)
    got = fastact.log_softmax_backward(g, ly, backend=backend)
    np.testing.assert_allclose(got, expect, rtol=0,
                               atol=(1e-5 if dtype == np.float32 else 1e-13))


@pytest.mark.parametrize("dtype", FLOATS)
def test_backward_masked(backend, rng, dtype):
    """Zero gradient at masked positions and on fully masked rows."""
    x = rng.standard_normal((6, 12)).astype(dtype)
    m = rng.random((6, 12)) < 0.5
    m[0] = False
    m[1] = True
    g = rng.standard_normal((6, 12)).astype(dtype)
    y = fastact.softmax(x, where=m, backend=backend)
    gy = fastact.softmax_backward(g, y, backend=backend)
    assert (gy[~m] == 0).all() and (gy[0] == 0).all()
    ly = fastact.log_softmax(x, where=m, backend=backend)
    gl = fastact.log_softmax_backward(g, ly, where=m, backend=backend)
    assert (gl[~m] == 0).all() and (gl[0] == 0).all()
    assert np.isfinite(gl).all()
    # on the selected entries: the gradient of the softmax of the selected entries alone
    for i in range(1, 6):
        sel = m[i]
        if not sel.any():
            continue
        _, e = _torch_vjp(x[i, sel], g[i, sel], -1, True)
        np.testing.assert_allclose(gl[i, sel], e, rtol=0,
                                   atol=2e-5 if dtype == np.float32 else 1e-11)
        _, e = _torch_vjp(x[i, sel], g[i, sel], -1, False)
        np.testing.assert_allclose(gy[i, sel], e, rtol=0,
                                   atol=2e-5 if dtype == np.float32 else 1e-11)


def test_backward_out_in_place(backend, rng):
    x = rng.standard_normal((4, 8))
    y = fastact.softmax(x)
    g = rng.standard_normal((4, 8))
    expect = fastact.softmax_backward(g, y, backend="numpy")
    gg = g.copy()
    r = fastact.softmax_backward(gg, y, out=gg, backend=backend)
    assert r is gg
    assert_close(gg, expect, np.float64, "log")
    out = np.empty((8, 4)).T
    fastact.log_softmax_backward(g, np.log(y), out=out, backend=backend)
    assert_close(out, fastact.log_softmax_backward(g, np.log(y), backend="numpy"),
                 np.float64, "log")


def test_backward_empty_and_half(backend, rng):
    assert fastact.softmax_backward(np.zeros((0, 3)), np.zeros((0, 3)),
                                    backend=backend).shape == (0, 3)
    x = rng.standard_normal((3, 5)).astype(np.float16)
    y = fastact.softmax(x, backend=backend)
    g = np.ones_like(x)
    r = fastact.softmax_backward(g, y, backend=backend)
    assert r.dtype == np.float16
    np.testing.assert_allclose(r.astype(np.float64), 0, atol=2e-3)  # grad of sum(softmax) is 0
