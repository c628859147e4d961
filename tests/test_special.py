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
