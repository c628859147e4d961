"""Results near 0 keep their relative accuracy (SPEC.md; SciPy's gh-18295):
logsumexp is ``m + log(c) + log1p(r / c)`` with ``c`` the weight of the terms at
the max (ties counted) and ``r`` the others, so ``logsumexp([0, -40])`` is
4.2483542552915889e-18, not 0; the max entry of log_softmax and the per-row
cross-entropy loss with the target at the max get the same accuracy.  Every
backend, every row-length path (tiles, short, mid, long, streamed), masks,
``b``, ties, in place.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastact

# row lengths across the kernels' paths: tiles / registers, mid rows, long rows
LENGTHS = [2, 5, 16, 33, 100, 1000, 4097, 20000]


def _rows(rng, n, k, dtype, pos):
    """Rows with one 0 at ``pos`` (first, middle, last, random) and the rest in
    [-45, -40]: the sum of the other terms r is ~k * 4e-18, far below 1 ulp of 1."""
    x = (-40.0 - 5.0 * rng.random((n, k))).astype(dtype)
    if pos == "first":
        at = np.zeros(n, np.int64)
    elif pos == "last":
        at = np.full(n, k - 1)
    elif pos == "middle":
        at = np.full(n, k // 2)
    else:
        at = rng.integers(0, k, n)
    x[np.arange(n), at] = 0
    return x, at


def _r(x, sel=None, w=None):
    """float64 sum of the terms other than the max one, per row (exact enough: fsum)."""
    out = []
    for i, row in enumerate(np.asarray(x, np.float64)):
        s = sel[i] if sel is not None else np.ones(row.shape, bool)
        ww = w[i] if w is not None else np.ones(row.shape)
        out.append(math.fsum(ww[j] * math.exp(row[j]) for j in range(row.size) if s[j] and row[j] < 0))
    return np.array(out)


def _rel(a, e, dtype):
    rtol = 2e-13 if np.dtype(dtype) == np.float64 else 4e-6
    a = np.asarray(a, np.float64)
    np.testing.assert_allclose(a, e, rtol=rtol, atol=0)


def test_gh18295(backend):
    with fastact.use_backend(backend):
        r = fastact.logsumexp(np.array([0.0, -40.0]))
        assert abs(r - 4.2483542552915889e-18) <= 1e-15 * 4.2483542552915889e-18, r
        r32 = fastact.logsumexp(np.array([0.0, -40.0], np.float32))
        assert r32.dtype == np.float32
        _rel(r32, math.exp(np.float32(-40.0)), np.float32)
        y = fastact.log_softmax(np.array([0.0, -40.0]))
        _rel(y[0], -4.2483542552915889e-18, np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", LENGTHS)
def test_logsumexp_log_softmax_ce_near_zero(backend, rng, dtype, k):
    n = 37  # more than a tile of rows, with a tail
    for pos in ("first", "middle", "last", "random"):
        x, at = _rows(rng, n, k, dtype, pos)
        r = _r(x)
        with fastact.use_backend(backend):
            _rel(fastact.logsumexp(x), np.log1p(r), dtype)
            y = fastact.log_softmax(x)
            _rel(y[np.arange(n), at], -np.log1p(r), dtype)
            loss = fastact.softmax_cross_entropy(x, at, reduction="none")
            _rel(loss, np.log1p(r), dtype)
            loss2, _ = fastact.softmax_cross_entropy_with_grad(x, at, reduction="none")
            _rel(loss2, np.log1p(r), dtype)
            xi = x.copy()
            fastact.log_softmax(xi, out=xi)  # in place
            _rel(xi[np.arange(n), at], -np.log1p(r), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [5, 33, 1000, 20000])
def test_masked_and_b_near_zero(backend, rng, dtype, k):
    n = 19
    x, at = _rows(rng, n, k, dtype, "random")
    where = rng.random((n, k)) < 0.7
    where[np.arange(n), at] = True
    x[~where] = np.where(rng.random(np.count_nonzero(~where)) < 0.5, 1e30, np.nan)
    r = _r(x, sel=where)
    b = (0.5 + rng.random((n, k))).astype(dtype)
    b[np.arange(n), at] = 1
    rb = _r(np.where(where, x, -np.inf), w=b)
    with fastact.use_backend(backend), np.errstate(invalid="ignore"):
        _rel(fastact.logsumexp(x, where=where), np.log1p(r), dtype)
        y = fastact.log_softmax(x, where=where)
        _rel(y[np.arange(n), at], -np.log1p(r), dtype)
        xb = np.where(where, x, -np.inf).astype(dtype)
        _rel(fastact.logsumexp(xb, b=b), np.log1p(rb), dtype)
        v, s = fastact.logsumexp(xb, b=b, return_sign=True)
        _rel(v, np.log1p(rb), dtype)
        assert (s == 1).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [3, 16, 100, 5000, 20000])
def test_ties_at_the_max(backend, rng, dtype, k):
    # two or three entries at the max: log(c) + log1p(r / c), c the number of ties
    n = 21
    x, at = _rows(rng, n, k, dtype, "random")
    ties = np.zeros(n, np.int64)
    for i in range(n):
        c = 1 + i % 3
        j = rng.choice(k, size=min(c, k), replace=False)
        x[i, j] = 0
        ties[i] = np.count_nonzero(x[i] == 0)
    r = _r(x)
    with fastact.use_backend(backend):
        _rel(fastact.logsumexp(x), np.log(ties) + np.log1p(r / ties), dtype)
        y = fastact.log_softmax(x)
        _rel(y[np.arange(n), at], -(np.log(ties) + np.log1p(r / ties)), dtype)
