"""fastact.special: identical results to scipy.special, special values included."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special as sps

import fastact
import fastact.special as fsp
from conftest import assert_special_equal, special_matrix


def _same(a, e, dtype):
    assert np.shape(a) == np.shape(e)
    assert np.asarray(a).dtype == np.asarray(e).dtype
    assert_special_equal(a, e)
    rtol = 3e-6 if np.dtype(dtype) == np.float32 else 1e-12
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(e, np.float64), rtol=rtol,
                               atol=rtol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [None, 0, -1, (0, 1)])
def test_matches_scipy(backend, rng, dtype, axis):
    x = (rng.standard_normal((4, 6)) * 3).astype(dtype)
    with fastact.use_backend(backend):
        _same(fsp.softmax(x, axis=axis), sps.softmax(x, axis=axis), dtype)
        _same(fsp.log_softmax(x, axis=axis), sps.log_softmax(x, axis=axis), dtype)
        _same(fsp.logsumexp(x, axis=axis), sps.logsumexp(x, axis=axis), dtype)
        _same(fsp.logsumexp(x, axis=axis, keepdims=True),
              sps.logsumexp(x, axis=axis, keepdims=True), dtype)


def test_defaults_are_scipys(backend, rng):
    x = rng.standard_normal((3, 5))
    with fastact.use_backend(backend):
        _same(fsp.softmax(x), sps.softmax(x), np.float64)       # axis=None: the whole array
        _same(fsp.log_softmax(x), sps.log_softmax(x), np.float64)
        r = fsp.logsumexp(x)
        assert isinstance(r, np.float64)
        _same(r, sps.logsumexp(x), np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_values_like_scipy(backend, dtype):
    _, x = special_matrix(dtype)
    with fastact.use_backend(backend), np.errstate(all="ignore"):
        _same(fsp.softmax(x, axis=1), sps.softmax(x, axis=1), dtype)
        _same(fsp.log_softmax(x, axis=1), sps.log_softmax(x, axis=1), dtype)
        _same(fsp.logsumexp(x, axis=1), sps.logsumexp(x, axis=1), dtype)


def test_b_and_sign_like_scipy(backend, rng):
    x = rng.standard_normal((5, 7))
    b = rng.standard_normal((5, 7))
    b[0] = 0
    with fastact.use_backend(backend):
        r, s = fsp.logsumexp(x, axis=1, b=b, return_sign=True)
        er, es = sps.logsumexp(x, axis=1, b=b, return_sign=True)
        _same(r, er, np.float64)
        np.testing.assert_array_equal(s, es)
        r, s = fsp.logsumexp(x, b=b, return_sign=True)
        er, es = sps.logsumexp(x, b=b, return_sign=True)
        _same(r, er, np.float64)
        assert s == es


def test_int_input_like_scipy(backend):
    x = np.array([[1, 2, 3], [0, 0, 5]])
    with fastact.use_backend(backend):
        _same(fsp.softmax(x), sps.softmax(x), np.float64)
        _same(fsp.log_softmax(x, axis=1), sps.log_softmax(x, axis=1), np.float64)


def test_b_broadcasts_with_a(backend, rng):
    # SciPy broadcasts a and b together and reduces the broadcast result
    a = rng.standard_normal((4, 1, 2, 1))
    b = rng.random((3, 1, 5)) + 0.5
    with fastact.use_backend(backend):
        _same(fsp.logsumexp(a, b=b), sps.logsumexp(a, b=b), np.float64)
        for axis in (0, -1, (1, 2)):
            _same(fsp.logsumexp(a, axis=axis, b=b), sps.logsumexp(a, axis=axis, b=b), np.float64)
            _same(fastact.logsumexp(a, axis=axis, b=b), sps.logsumexp(a, axis=axis, b=b),
                  np.float64)
        r, s = fsp.logsumexp(a, axis=1, b=-b, return_sign=True)
        er, es = sps.logsumexp(a, axis=1, b=-b, return_sign=True)
        _same(r, er, np.float64)
        np.testing.assert_array_equal(s, es)
    with pytest.raises(ValueError, match="broadcast"):
        fsp.logsumexp(np.zeros((2, 3)), b=np.ones((4,)))


def test_python_scalar_b_is_weak(backend):
    # NEP 50 (SciPy 1.17): a Python scalar b keeps float32; a NumPy scalar promotes
    x = np.array([0.5, -1.0, 2.0], np.float32)
    with fastact.use_backend(backend):
        for f in (fsp.logsumexp, fastact.logsumexp):
            for b in (2.0, 2, True):
                r = f(x, b=b)
                e = sps.logsumexp(x, b=b)
                assert np.asarray(r).dtype == np.asarray(e).dtype == np.float32, (f, b)
                _same(r, e, np.float32)
            r = f(x, b=np.float64(2.0))
            assert np.asarray(r).dtype == np.asarray(sps.logsumexp(x, b=np.float64(2.0))).dtype
        r, s = fsp.logsumexp(x, b=-2.0, return_sign=True)
        assert r.dtype == s.dtype == np.float32 and s == -1


def test_scalar_input_gives_scalars(backend):
    with fastact.use_backend(backend):
        for f in (fsp.softmax, fsp.log_softmax):
            for v in (1000, 2.5, np.float32(-3.0)):
                r, e = f(v), getattr(sps, f.__name__)(v)
                assert type(r) is type(e) and np.ndim(r) == 0, (f, v, type(r))
                _same(r, e, np.asarray(e).dtype)
        r = fsp.logsumexp(3.0)
        assert type(r) is np.float64 and r == 3.0
