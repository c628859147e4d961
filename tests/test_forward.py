"""softmax, log_softmax, logsumexp on every backend against float64 truths."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special as sps

import fastact
from conftest import (assert_close, assert_special_equal, layouts, special_matrix,
                      truth_logsumexp, truth_softmax)

FLOATS = [np.float32, np.float64]
SHAPES_AXES = [
    ((7,), -1),
    ((3, 5), -1),
    ((3, 5), 0),
    ((4, 3, 6), 1),
    ((4, 3, 6), (0, 2)),
    ((4, 3, 6), None),
    ((2, 3, 4, 5), (1, 3)),
    ((65, 10), -1),   # short rows: the across-rows path of the native kernels
    ((3, 1000), -1),
    ((2, 33), -1),    # lengths that are not a multiple of any vector width
    ((5, 1), -1),
]


def _rand(rng, shape, dtype, scale=4.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


@pytest.mark.parametrize("shape,axis", SHAPES_AXES)
@pytest.mark.parametrize("dtype", FLOATS)
def test_softmax_log_softmax_random(backend, rng, shape, axis, dtype):
    x = _rand(rng, shape, dtype)
    for name, xl in layouts(x):
        y = fastact.softmax(xl, axis=axis, backend=backend)
        assert y.dtype == dtype and y.shape == x.shape, name
        assert_close(y, truth_softmax(x, axis), dtype, "prob")
        ly = fastact.log_softmax(xl, axis=axis, backend=backend)
        assert ly.dtype == dtype
        assert_close(ly, truth_softmax(x, axis, log=True), dtype, "log")


@pytest.mark.parametrize("shape,axis", SHAPES_AXES)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("keepdims", [False, True])
def test_logsumexp_random(backend, rng, shape, axis, dtype, keepdims):
    x = _rand(rng, shape, dtype)
    for name, xl in layouts(x):
        r = fastact.logsumexp(xl, axis=axis, keepdims=keepdims, backend=backend)
        e = sps.logsumexp(x.astype(np.float64), axis=axis, keepdims=keepdims)
        assert np.shape(r) == np.shape(e), name
        assert np.asarray(r).dtype == dtype
        assert_close(r, e, dtype, "log")


@pytest.mark.parametrize("dtype", FLOATS)
def test_special_values(backend, dtype):
    """Spreads beyond 88/709, -inf, all -inf, NaN, +inf, ±finfo.max: SPEC semantics."""
    names, x = special_matrix(dtype)
    y = fastact.softmax(x, backend=backend)
    assert_close(y, truth_softmax(x), dtype, "prob")
    ly = fastact.log_softmax(x, backend=backend)
    assert_close(ly, truth_softmax(x, log=True), dtype, "log")
    r = fastact.logsumexp(x, backend=backend)
    assert_close(r, truth_logsumexp(x), dtype, "log")
    # -inf entries: probability exactly 0, log-probability exactly -inf
    ok = ~np.isnan(y).any(axis=1)
    neg = np.isneginf(x) & ok[:, None]
    assert (y[neg] == 0).all()
    assert np.isneginf(ly[neg]).all()
    rows = dict(zip(names, range(len(names))))
    assert np.isnan(y[rows["all_neg_inf"]]).all() and np.isnan(ly[rows["all_neg_inf"]]).all()
    assert np.isneginf(r[rows["all_neg_inf"]])
    for k in ("nan", "pos_inf", "two_pos_inf", "nan_and_inf"):
        assert np.isnan(y[rows[k]]).all() and np.isnan(ly[rows[k]]).all(), k
    assert np.isnan(r[rows["nan"]]) and np.isnan(r[rows["nan_and_inf"]])
    assert np.isposinf(r[rows["pos_inf"]]) and np.isposinf(r[rows["two_pos_inf"]])
    # the shift must be the max: a spread row sums to 1
    s = rows["spread"]
    assert abs(float(np.sum(y[s], dtype=np.float64)) - 1) < 1e-5


@pytest.mark.parametrize("dtype", FLOATS)
def test_finfo_max_row(backend, dtype):
    big = float(np.finfo(dtype).max) * 0.99
    x = np.array([[big, -big, 0.0]], dtype=dtype)
    y = fastact.softmax(x, backend=backend)
    np.testing.assert_array_equal(y, np.array([[1, 0, 0]], dtype=dtype))
    ly = fastact.log_softmax(x, backend=backend)
    assert ly[0, 0] == 0 and ly[0, 2] == dtype(-big)
    assert fastact.logsumexp(x, backend=backend)[0] == dtype(big)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("k", [3, 10, 40, 1000, 5000, 20000])
def test_subnormal_probabilities_kept(backend, dtype, k):
    """Entries whose probability is below finfo.tiny come out as the subnormals
    the float64 truth rounds to (within a few subnormal steps), not flushed to 0
    — in short-row tiles, mid-length rows and the long-row paths alike."""
    fi = np.finfo(dtype)
    lo = float(np.log(fi.tiny))                      # -87.3 (f32), -708.4 (f64)
    sub = float(np.log(fi.smallest_subnormal))       # -103.3 (f32), -744.4 (f64)
    rng = np.random.default_rng(k)
    x = rng.uniform(-1.0, 0.0, (4, k))
    x[:, 0] = 0.0                                    # a row max of 0, so x - max = x
    tail = np.linspace(lo - 0.5, sub + 1.0, k - 1)   # every such entry subnormal
    x[1:3, 1:] = tail[rng.permutation(k - 1)]
    x = x.astype(dtype)
    y = fastact.softmax(x, backend=backend)
    want = sps.softmax(x.astype(np.float64), axis=-1)
    small = want < fi.tiny
    assert small.sum() >= 2 * (k - 1) - 2
    assert np.all(y[small] > 0), "subnormal probabilities flushed to 0"
    step = float(fi.smallest_subnormal)
    np.testing.assert_array_less(np.abs(y[small] - want[small]), 4 * step + 1e-6 * want[small])
    assert_close(y[~small], want[~small], dtype, "prob")


@pytest.mark.parametrize("dtype", FLOATS)
def test_special_values_every_position(backend, dtype):
    """A special value at every position of rows of several lengths (every tail and
    vector lane of the native kernels)."""
    for k in (1, 3, 8, 17, 64, 100):
        for v in (np.nan, np.inf, -np.inf):
            x = np.zeros((k, k), dtype=dtype) + np.linspace(-1, 1, k, dtype=dtype)
            x[np.arange(k), np.arange(k)] = v
            assert_close(fastact.softmax(x, backend=backend), truth_softmax(x), dtype, "prob")
            assert_close(fastact.log_softmax(x, backend=backend), truth_softmax(x, log=True),
                         dtype, "log")
            assert_close(fastact.logsumexp(x, backend=backend), truth_logsumexp(x), dtype, "log")


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("k", [1, 7, 10, 64, 1000])
def test_masks(backend, rng, dtype, k):
    x = _rand(rng, (40, k), dtype)
    mask = rng.random((40, k)) < 0.6
    mask[0] = False                      # fully masked row: "safe softmax"
    mask[1] = True
    x[2, ~mask[2]] = np.inf              # masked-out entries hold anything
    x[3, ~mask[3]] = np.nan
    x[4, ~mask[4]] = np.finfo(dtype).max
    x[5, mask[5]] = -np.inf              # all selected are -inf: NaN on the selected
    if k > 1:
        x[6, :] = -np.inf
        x[6, 0] = 1.0
        mask[6, 0] = True
    y = fastact.softmax(x, where=mask, backend=backend)
    assert_close(y, truth_softmax(x, where=mask), dtype, "prob")
    assert (y[~mask] == 0).all()
    assert (y[0] == 0).all()
    ly = fastact.log_softmax(x, where=mask, backend=backend)
    assert_close(ly, truth_softmax(x, where=mask, log=True), dtype, "log")
    assert np.isneginf(ly[~mask]).all()
    r = fastact.logsumexp(x, where=mask, backend=backend)
    assert_close(r, truth_logsumexp(x, where=mask), dtype, "log")
    assert np.isneginf(r[0])


def test_mask_broadcast_and_axis(backend, rng):
    x = _rand(rng, (4, 6, 5), np.float64)
    mask = rng.random((6, 1)) < 0.5
    mask[0] = True
    y = fastact.softmax(x, axis=1, where=mask, backend=backend)
    assert_close(y, truth_softmax(x, axis=1, where=np.broadcast_to(mask, x.shape)),
                 np.float64, "prob")


@pytest.mark.parametrize("fn", ["softmax", "log_softmax", "logsumexp"])
def test_long_row_float32_accuracy(backend, rng, fn):
    """1M-element float32 rows: the sums must not drift (SPEC: 2e-6 / 4e-6)."""
    n = 1 << 20
    x = np.empty((2, n), np.float32)
    x[0] = rng.standard_normal(n) * 0.5          # every term ~1: a naive f32 sum drifts
    x[1] = rng.standard_normal(n) * 8
    got = getattr(fastact, fn)(x, backend=backend)
    if fn == "logsumexp":
        assert_close(got, truth_logsumexp(x), np.float32, "log")
    else:
        assert_close(got, truth_softmax(x, log=fn == "log_softmax"), np.float32,
                     "log" if fn == "log_softmax" else "prob")


def test_empty(backend):
    for shape in [(0, 5), (5, 0), (0,), (2, 0, 3)]:
        x = np.zeros(shape, np.float32)
        assert fastact.softmax(x, backend=backend).shape == shape
        assert fastact.log_softmax(x, backend=backend).shape == shape
    r = fastact.logsumexp(np.zeros((3, 0)), backend=backend)
    assert r.shape == (3,) and np.isneginf(r).all()
    r, s = fastact.logsumexp(np.zeros((3, 0)), return_sign=True, backend=backend)
    assert np.isneginf(r).all() and (s == 0).all()
    assert fastact.logsumexp(np.zeros((0, 4)), backend=backend).shape == (0,)
    assert np.isneginf(fastact.logsumexp(np.zeros(0), backend=backend))


def test_zero_d_and_scalar_results(backend):
    y = fastact.softmax(np.float64(3.0), backend=backend)
    assert y.shape == () and y == 1.0
    r = fastact.logsumexp(np.array([1.0, 2.0]), backend=backend)
    assert isinstance(r, np.float64)
    np.testing.assert_allclose(r, np.log(np.e + np.e ** 2))


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [-1, 0])
def test_out_and_in_place(backend, rng, fn, axis):
    x = _rand(rng, (6, 9), np.float32)
    expect = getattr(fastact, fn)(x, axis=axis, backend="numpy")
    out = np.full_like(x, 7.0)
    r = getattr(fastact, fn)(x, axis=axis, out=out, backend=backend)
    assert r is out
    assert_close(out, expect.astype(np.float64), np.float32, "prob" if fn == "softmax" else "log")
    # in place, contiguous and through a non-contiguous view
    for name, xl in layouts(x):
        xl = xl.copy(order="K") if name in ("c", "f") else xl
        r = getattr(fastact, fn)(xl, axis=axis, out=xl, backend=backend)
        assert r is xl
        assert_close(xl, expect.astype(np.float64), np.float32,
                     "prob" if fn == "softmax" else "log")
    # non-contiguous out
    big = np.zeros((6, 18), np.float32)
    o = big[:, ::2]
    getattr(fastact, fn)(x, axis=axis, out=o, backend=backend)
    assert_close(o, expect.astype(np.float64), np.float32, "prob" if fn == "softmax" else "log")
    assert (big[:, 1::2] == 0).all()


def test_logsumexp_out(backend, rng):
    x = _rand(rng, (5, 7), np.float64)
    out = np.empty(5)
    r = fastact.logsumexp(x, out=out, backend=backend)
    assert r is out
    assert_close(out, sps.logsumexp(x, axis=-1), np.float64, "log")
    out = np.empty((1, 7))
    fastact.logsumexp(x, axis=0, keepdims=True, out=out, backend=backend)
    assert_close(out, sps.logsumexp(x, axis=0, keepdims=True), np.float64, "log")


@pytest.mark.parametrize("dtype", FLOATS)
def test_logsumexp_b_and_sign(backend, rng, dtype):
    x = _rand(rng, (6, 11), dtype)
    b = rng.standard_normal((6, 11)).astype(dtype)
    b[0] = np.abs(b[0])
    b[1, :5] = 0
    b[2] = 0
    b[3] = -np.abs(b[3])
    r, s = fastact.logsumexp(x, b=b, return_sign=True, backend=backend)
    er, es = sps.logsumexp(x.astype(np.float64), axis=-1, b=b.astype(np.float64),
                           return_sign=True)
    assert_close(r, er, dtype, "log")
    np.testing.assert_array_equal(s, es)
    # without return_sign a negative sum is NaN (SciPy)
    r = fastact.logsumexp(x, b=b, backend=backend)
    with np.errstate(invalid="ignore"):
        er = sps.logsumexp(x.astype(np.float64), axis=-1, b=b.astype(np.float64))
    assert_close(r, er, dtype, "log")
    # b broadcasts
    bb = np.abs(b[0])
    r = fastact.logsumexp(x, b=bb, backend=backend)
    assert_close(r, sps.logsumexp(x.astype(np.float64), axis=-1, b=bb.astype(np.float64)),
                 dtype, "log")


def test_logsumexp_b_with_where(backend, rng):
    x = _rand(rng, (5, 8), np.float64)
    b = np.abs(rng.standard_normal((5, 8)))
    m = rng.random((5, 8)) < 0.5
    m[0] = False
    r = fastact.logsumexp(x, b=b, where=m, backend=backend)
    e = sps.logsumexp(np.where(m, x, -np.inf), axis=-1, b=np.where(m, b, 0))
    assert_close(r, e, np.float64, "log")


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
def test_half_precision(backend, rng, dtype_name):
    if dtype_name == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        dt = np.dtype(ml_dtypes.bfloat16)
    else:
        dt = np.dtype(np.float16)
    x = _rand(rng, (9, 13), np.float32).astype(dt)
    x64 = x.astype(np.float64)
    y = fastact.softmax(x, backend=backend)
    assert y.dtype == dt
    assert_close(y.astype(np.float64), truth_softmax(x64), dt, "prob")
    ly = fastact.log_softmax(x, backend=backend)
    assert ly.dtype == dt
    assert_close(ly.astype(np.float64), truth_softmax(x64, log=True), dt, "log")
    r = fastact.logsumexp(x, backend=backend)
    assert r.dtype == dt
    assert_close(r.astype(np.float64), truth_logsumexp(x64), dt, "log")
    out = np.empty_like(x)
    assert fastact.softmax(x, out=out, backend=backend) is out
    np.testing.assert_array_equal(out, y)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_])
def test_int_and_bool_promote_to_float64(backend, dtype):
    x = np.array([[1, 0, 1], [0, 0, 1]]).astype(dtype)
    y = fastact.softmax(x, backend=backend)
    assert y.dtype == np.float64
    assert_close(y, sps.softmax(x.astype(np.float64), axis=-1), np.float64, "prob")
    assert fastact.logsumexp(x, backend=backend).dtype == np.float64


def test_inputs_not_modified(backend, rng):
    x = _rand(rng, (5, 6), np.float32)
    keep = x.copy()
    m = rng.random((5, 6)) < 0.5
    fastact.softmax(x, where=m, backend=backend)
    fastact.log_softmax(x, axis=0, backend=backend)
    fastact.logsumexp(x, b=np.ones(6), backend=backend)
    np.testing.assert_array_equal(x, keep)


def test_read_only_input(backend, rng):
    x = _rand(rng, (5, 6), np.float64)
    x.flags.writeable = False
    assert_close(fastact.softmax(x, backend=backend), truth_softmax(x), np.float64, "prob")


def test_lists_accepted(backend):
    y = fastact.softmax([[1.0, 2.0, 3.0]], backend=backend)
    assert_close(y, sps.softmax([[1.0, 2.0, 3.0]], axis=-1), np.float64, "prob")
    assert_special_equal(y, y)
