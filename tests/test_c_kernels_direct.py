"""The C backend's row kernels called directly, against the NumPy reference.

Every kernel, float32 and float64, every ISA path this CPU can run (forced
with ``c_kernels.force_isa``), random data and the special values of the
contract, short rows (the tile path), long rows, aliasing and threads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from fastact._backends import numpy_ref as R

C = pytest.importorskip("fastact._backends.c_kernels", reason="C extension not built")

DTYPES = [np.float32, np.float64]
#: (rtol, atol) against the reference computed in float64
TOL = {np.float32: (2e-6, 4e-6), np.float64: (1e-12, 1e-12)}
# Shapes: single row, rows shorter than a vector, the tile path (k < 4 VL) with
# row counts that leave remainders, vector tails, blocks of BLOCK elements.
SHAPES = [(1, 1), (3, 5), (37, 10), (17, 63), (33, 64), (5, 100), (4, 1000),
          (2, 4099), (40, 17), (1, 70001)]


@pytest.fixture(params=C.available_isas())
def isa(request):
    with C.force_isa(request.param):
        yield request.param


def rng(seed=0):
    return np.random.default_rng(seed)


def assert_close(got, want, dtype, scale=1.0, what=""):
    """|got - want| <= atol*max(1,|want|)*scale + rtol*|want| with identical NaN/inf positions."""
    rtol, atol = TOL[dtype]
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, what
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"NaN positions {what}")
    inf = np.isinf(want)
    np.testing.assert_array_equal(got[inf], want[inf], err_msg=f"inf positions {what}")
    np.testing.assert_array_equal(np.isinf(got), inf, err_msg=f"inf positions {what}")
    fin = np.isfinite(want)
    err = np.abs(got[fin] - want[fin])
    bound = scale * (atol * np.maximum(1.0, np.abs(want[fin])) + rtol * np.abs(want[fin]))
    if err.size:
        i = np.argmax(err - bound)
        assert err[i] <= bound[i], (f"{what}: max excess at {i}: got {got[fin][i]!r} "
                                    f"want {want[fin][i]!r} err {err[i]:.3g} > {bound[i]:.3g}")


# ------------------------------------------------------------ module basics

def test_simd_level_and_isas():
    assert C.simd_level() in C.ISA_LEVELS
    assert C.available_isas()[0] == "baseline"
    assert C.simd_level() in C.available_isas()
    with pytest.raises(ValueError):
        with C.force_isa("sse9"):
            pass


@pytest.mark.parametrize("want", ["baseline", "avx2"])
def test_env_override(want):
    if want not in C.available_isas():
        pytest.skip(f"{want} not supported here")
    code = "from fastact._backends import c_kernels as C; print(C.simd_level())"
    env = dict(os.environ, FASTACT_C_ISA=want)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == want


def test_env_override_bad_value():
    code = "import fastact._backends.c_kernels"
    env = dict(os.environ, FASTACT_C_ISA="sse9")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "FASTACT_C_ISA" in r.stderr


# ---------------------------------------------------- random data, all kernels

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("masked", [False, True])
def test_softmax_log_softmax_random(isa, dtype, shape, masked):
    g = rng(hash(shape) % 1000)
    x = (g.standard_normal(shape) * 8).astype(dtype)
    mask = g.random(shape) > 0.3 if masked else None
    x64 = x.astype(np.float64)
    for name in ("softmax_rows", "log_softmax_rows"):
        want = np.empty_like(x64)
        getattr(R, name)(x64, mask, want)
        got = np.empty_like(x)
        getattr(C, name)(x, mask, got)
        assert_close(got, want, dtype, what=f"{name} {isa}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_b", [False, True])
@pytest.mark.parametrize("with_sign", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_logsumexp_random(isa, dtype, shape, with_b, with_sign, masked):
    g = rng(1)
    x = (g.standard_normal(shape) * 8).astype(dtype)
    b = g.standard_normal(shape).astype(dtype) if with_b else None
    if b is not None:
        b[g.random(shape) < 0.2] = 0
    mask = g.random(shape) > 0.3 if masked else None
    n = shape[0]
    want, got = np.empty(n), np.empty(n, dtype)
    ws = np.empty(n) if with_sign else None
    gs = np.empty(n, dtype) if with_sign else None
    R.logsumexp_rows(x.astype(np.float64), None if b is None else b.astype(np.float64), mask,
                     want, ws)
    C.logsumexp_rows(x, b, mask, got, gs)
    if b is not None and not with_sign:
        # a sum near 0 may be of either sign in float32; compare where clear
        pass
    # b of both signs: the sum can cancel; scale the tolerance by the condition
    scale = 1.0
    if b is not None:
        e = np.where(mask if mask is not None else True, np.abs(b.astype(np.float64)) *
                     np.exp(x.astype(np.float64) - x.max(axis=1, keepdims=True)), 0)
        s = np.abs(np.sum(np.where(mask if mask is not None else True,
                                   b * np.exp(x.astype(np.float64) - x.max(axis=1, keepdims=True)),
                                   0), axis=1))
        cond = np.sum(e, axis=1) / np.maximum(s, 1e-300)
        keep = cond < 1e3
        scale = 1e3
        got, want = got[keep], want[keep]
        if with_sign:
            gs, ws = gs[keep], ws[keep]
    assert_close(got, want, dtype, scale=scale, what=f"logsumexp {isa}")
    if with_sign:
        np.testing.assert_array_equal(gs, ws)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_softmax_backward_random(isa, dtype, shape):
    g = rng(2)
    x = (g.standard_normal(shape) * 3).astype(dtype)
    y = np.empty_like(x)
    R.softmax_rows(x, None, y)
    grad = g.standard_normal(shape).astype(dtype)
    want = np.empty(shape)
    R.softmax_backward_rows(grad.astype(np.float64), y.astype(np.float64), want)
    got = np.empty_like(x)
    C.softmax_backward_rows(grad, y, got)
    assert_close(got, want, dtype, scale=4 * np.sqrt(shape[1]), what="softmax_backward")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("masked", [False, True])
def test_log_softmax_backward_random(isa, dtype, shape, masked):
    g = rng(3)
    x = (g.standard_normal(shape) * 3).astype(dtype)
    mask = g.random(shape) > 0.3 if masked else None
    y = np.empty_like(x)
    R.log_softmax_rows(x, mask, y)
    grad = g.standard_normal(shape).astype(dtype)
    want = np.empty(shape)
    R.log_softmax_backward_rows(grad.astype(np.float64), y.astype(np.float64), mask, want)
    got = np.empty_like(x)
    C.log_softmax_backward_rows(grad, y, mask, got)
    assert_close(got, want, dtype, scale=4 * np.sqrt(shape[1]), what="log_softmax_backward")


def test_log_softmax_backward_large_y(isa):
    # exp(y) for y far outside the log-probability range: overflow to inf
    for dtype, big in [(np.float32, 100.0), (np.float64, 800.0)]:
        y = np.array([[0.0, -big, big, -np.inf, 1.0]], dtype)
        grad = np.ones_like(y)
        want, got = np.empty_like(y), np.empty_like(y)
        with np.errstate(over="ignore", invalid="ignore"):
            R.log_softmax_backward_rows(grad, y, None, want)
        C.log_softmax_backward_rows(grad, y, None, got)
        np.testing.assert_array_equal(got[np.isinf(want)], want[np.isinf(want)])
        assert_close(got, want, dtype)


def _ce_cases(k):
    g = rng(4)
    w = (g.random(k) + 0.1)
    for weight in (None, w):
        for eps in (0.0, 0.1):
            for z in (0.0, 1e-3):
                for scaled in (False, True):
                    yield weight, eps, z, scaled


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (37, 10), (17, 63), (5, 1000), (3, 4099)])
def test_cross_entropy_index_random(isa, dtype, shape):
    n, k = shape
    g = rng(5)
    x = (g.standard_normal(shape) * 4).astype(dtype)
    t = g.integers(0, k, n)
    t[::5] = -100
    for weight, eps, z, scaled in _ce_cases(k):
        rs = g.random(n) if scaled else None
        w = None if weight is None else weight.astype(dtype)
        lw, gw = np.empty(n), np.empty(shape)
        R.cross_entropy_index_rows(x.astype(np.float64), t, None if w is None else w.astype(np.float64),
                                   -100, eps, z, 0.5, 0.25, 2.0, rs, lw, gw)
        lg, gg = np.empty(n, dtype), np.empty(shape, dtype)
        C.cross_entropy_index_rows(x, t, w, -100, eps, z, 0.5, 0.25, 2.0,
                                   None if rs is None else rs.astype(dtype), lg, gg)
        what = f"ce index w={weight is not None} eps={eps} z={z} rs={scaled}"
        assert_close(lg, lw, dtype, scale=8, what=what + " loss")
        assert_close(gg, gw, dtype, scale=8, what=what + " grad")
        # loss only, grad only, grad in place of the logits
        l2 = np.empty(n, dtype)
        C.cross_entropy_index_rows(x, t, w, -100, eps, z, 0.5, 0.25, 2.0,
                                   None if rs is None else rs.astype(dtype), l2, None)
        np.testing.assert_array_equal(l2, lg)
        g2 = np.empty(shape, dtype)
        C.cross_entropy_index_rows(x, t, w, -100, eps, z, 0.5, 0.25, 2.0,
                                   None if rs is None else rs.astype(dtype), None, g2)
        np.testing.assert_array_equal(g2, gg)
        xi = x.copy()
        l3 = np.empty(n, dtype)
        C.cross_entropy_index_rows(xi, t, w, -100, eps, z, 0.5, 0.25, 2.0,
                                   None if rs is None else rs.astype(dtype), l3, xi)
        np.testing.assert_array_equal(l3, lg)
        np.testing.assert_array_equal(xi, gg)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (37, 10), (17, 63), (5, 1000), (3, 4099)])
def test_cross_entropy_prob_random(isa, dtype, shape):
    n, k = shape
    g = rng(6)
    x = (g.standard_normal(shape) * 4).astype(dtype)
    q = g.random(shape)
    q /= q.sum(axis=1, keepdims=True)
    q = q.astype(dtype)
    for weight, eps, z, scaled in _ce_cases(k):
        rs = g.random(n) if scaled else None
        w = None if weight is None else weight.astype(dtype)
        lw, gw = np.empty(n), np.empty(shape)
        R.cross_entropy_prob_rows(x.astype(np.float64), q.astype(np.float64),
                                  None if w is None else w.astype(np.float64),
                                  eps, z, 0.5, 0.25, 2.0, rs, lw, gw)
        lg, gg = np.empty(n, dtype), np.empty(shape, dtype)
        C.cross_entropy_prob_rows(x, q, w, eps, z, 0.5, 0.25, 2.0,
                                  None if rs is None else rs.astype(dtype), lg, gg)
        what = f"ce prob w={weight is not None} eps={eps} z={z} rs={scaled}"
        assert_close(lg, lw, dtype, scale=8, what=what + " loss")
        assert_close(gg, gw, dtype, scale=8, what=what + " grad")
        xi = x.copy()
        C.cross_entropy_prob_rows(xi, q, w, eps, z, 0.5, 0.25, 2.0,
                                  None if rs is None else rs.astype(dtype), None, xi)
        np.testing.assert_array_equal(xi, gg)


def test_check_targets():
    t = np.array([0, 3, -100, 2, 5, -1], np.int64)
    for k in (1, 4, 6, 7):
        assert C.check_targets(t, k, -100) == R.check_targets(t, k, -100)
    assert C.check_targets(np.array([1, 2], np.int64), 3, -100) == -1
    assert C.check_targets(np.array([-1], np.int64), 3, -1) == -1


# ------------------------------------------------------------ special values

def special_rows(dtype, k):
    """Rows of length k, one special case each (k >= 3)."""
    fi = np.finfo(dtype)
    big = 100.0 if dtype == np.float32 else 800.0  # spread beyond exp's range
    g = rng(7)
    rows = []

    def row(*vals, fill=None):
        r = g.standard_normal(k) if fill is None else np.full(k, fill)
        r[: len(vals)] = vals[:k]
        rows.append(r)

    row()                                        # plain
    row(-np.inf)                                 # one -inf: exactly 0 / -inf
    row(fill=-np.inf)                            # all -inf
    row(np.nan)                                  # NaN
    row(1.0, np.nan, 2.0)
    row(np.inf)                                  # +inf
    row(np.inf, np.nan)                          # +inf and NaN
    row(np.nan, np.inf)
    row(-np.inf, np.nan, fill=-np.inf)          # NaN among -inf
    row(np.inf, np.inf)                          # two +inf
    row(np.inf, -np.inf, fill=-np.inf)
    row(3e38 if dtype == np.float32 else 1e308, -3e38 if dtype == np.float32 else -1e308, 0.0)
    row(fi.max, -fi.max, fill=0.0)
    row(fi.max, fi.max, fill=-fi.max)
    row(0.0, -big, -2 * big)                     # spread beyond 88 / 709
    row(0.0, -big * 0.9, -big * 1.03, -big * 1.1, fill=-1e4)  # subnormal exp range
    row(1e4, 1e4 - 1, 1e4 - 50, fill=1e4 - 200)  # large |x|: (x - m) - log(s)
    row(fi.tiny, -fi.tiny, 0.0, fill=0.0)
    row(fill=5.0)                                # constant
    return np.array(rows, dtype)


def special_masks(x):
    g = rng(8)
    n, k = x.shape
    m = g.random((n, k)) > 0.4
    m[:, 0] = True
    m[2] = False                 # nothing selected
    m[5, 1:] = False             # only +inf selected
    m[6, 0] = False              # +inf masked out, NaN selected
    m[7, 0] = False              # NaN masked out, +inf selected
    m[3, 0] = False              # NaN masked out
    return m


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [3, 10, 37, 100])
@pytest.mark.parametrize("reps", [1, 4])
@pytest.mark.parametrize("masked", [False, True])
def test_special_values_softmax(isa, dtype, k, reps, masked):
    # reps > 1: enough rows for the tile path, special rows inside tiles
    x = np.tile(special_rows(dtype, k), (reps, 1))
    mask = np.tile(special_masks(special_rows(dtype, k)), (reps, 1)) if masked else None
    for name in ("softmax_rows", "log_softmax_rows"):
        want, got = np.empty_like(x), np.full_like(x, 7.0)
        getattr(R, name)(x, mask, want)
        getattr(C, name)(x, mask, got)
        assert_close(got, want, dtype, scale=4, what=f"{name} {isa} k={k}")
        # exact zeros / -inf where the reference has them
        exact = (want == 0) | np.isinf(want)
        np.testing.assert_array_equal(got[exact], want[exact])
    # in place
    for name in ("softmax_rows", "log_softmax_rows"):
        want = np.empty_like(x)
        getattr(R, name)(x, mask, want)
        xi = x.copy()
        getattr(C, name)(xi, mask, xi)
        assert_close(xi, want, dtype, scale=4, what=f"{name} in place")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [3, 10, 100])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("with_sign", [False, True])
@pytest.mark.parametrize("b_kind", [None, "pos", "mixed"])
def test_special_values_logsumexp(isa, dtype, k, masked, with_sign, b_kind):
    x = special_rows(dtype, k)
    n = x.shape[0]
    mask = special_masks(x) if masked else None
    b = None
    if b_kind is not None:
        g = rng(9)
        b = (g.random(x.shape) + 0.5).astype(dtype)
        if b_kind == "mixed":
            b[g.random(x.shape) < 0.3] *= -1
            b[g.random(x.shape) < 0.2] = 0
            b[5, 0] = -1.0   # +inf entry with a negative weight
            b[9, :2] = [1.0, -1.0]  # two +inf entries cancelling
        b[1, 0] = 0.0        # the -inf entry weighted 0
    want, got = np.empty(n, dtype), np.full(n, 7.0, dtype)
    ws = np.empty(n, dtype) if with_sign else None
    gs = np.full(n, 7.0, dtype) if with_sign else None
    with np.errstate(all="ignore"):
        R.logsumexp_rows(x, b, mask, want, ws)
    C.logsumexp_rows(x, b, mask, got, gs)
    assert_close(got, want, dtype, scale=4, what=f"logsumexp {isa}")
    if with_sign:
        np.testing.assert_array_equal(gs, ws)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [3, 10, 100])
def test_special_values_cross_entropy(isa, dtype, k):
    x = special_rows(dtype, k)
    n = x.shape[0]
    t = np.arange(n, dtype=np.int64) % k
    t[4] = -100
    g = rng(10)
    q = g.random(x.shape).astype(dtype)
    q /= q.sum(axis=1, keepdims=True)
    for w in (None, (g.random(k) + 0.5).astype(dtype)):
        for eps in (0.0, 0.2):
            for z in (0.0, 1e-2):
                lw, gw = np.empty(n, dtype), np.empty_like(x)
                lg, gg = np.empty(n, dtype), np.empty_like(x)
                with np.errstate(all="ignore"):
                    R.cross_entropy_index_rows(x, t, w, -100, eps, z, 1.0, 1.0, 1.0, None, lw, gw)
                C.cross_entropy_index_rows(x, t, w, -100, eps, z, 1.0, 1.0, 1.0, None, lg, gg)
                assert_close(lg, lw, dtype, scale=16, what=f"ce index loss eps={eps} z={z}")
                assert_close(gg, gw, dtype, scale=16, what=f"ce index grad eps={eps} z={z}")
                with np.errstate(all="ignore"):
                    R.cross_entropy_prob_rows(x, q, w, eps, z, 1.0, 1.0, 1.0, None, lw, gw)
                C.cross_entropy_prob_rows(x, q, w, eps, z, 1.0, 1.0, 1.0, None, lg, gg)
                assert_close(lg, lw, dtype, scale=16, what=f"ce prob loss eps={eps} z={z}")
                assert_close(gg, gw, dtype, scale=16, what=f"ce prob grad eps={eps} z={z}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_flt_max_row(isa, dtype):
    x = np.array([[3e38, -3e38, 0.0]], dtype)
    y = np.empty_like(x)
    C.softmax_rows(x, None, y)
    np.testing.assert_array_equal(y, [[1.0, 0.0, 0.0]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_over_the_whole_range(isa, dtype):
    # softmax([0, d]) = [1/(1+e^d), e^d/(1+e^d)]: exercises exp on every
    # magnitude down to the subnormal range and below (exact 0).
    lo = -110.0 if dtype == np.float32 else -750.0
    d = np.concatenate([np.linspace(lo, 0, 20001), [-np.inf]])
    x = np.stack([np.zeros_like(d), d], axis=1).astype(dtype)
    got = np.empty_like(x)
    C.softmax_rows(x, None, got)
    e = np.exp(x[:, 1].astype(np.float64))
    want = np.stack([1 / (1 + e), e / (1 + e)], axis=1)
    tiny = np.finfo(dtype).smallest_subnormal
    err = np.abs(got - want)
    assert np.all(err <= 2e-6 * want + tiny) if dtype == np.float32 else \
        np.all(err <= 1e-12 * want + tiny)
    assert got[-1, 1] == 0.0


# ---------------------------------------------- accuracy on a 1M-element row

@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_long_row_float32_accuracy(isa, scale):
    g = rng(11)
    x = (g.standard_normal((1, 1 << 20)) * scale).astype(np.float32)
    x64 = x.astype(np.float64)
    want = np.empty_like(x64)
    R.softmax_rows(x64, None, want)
    got = np.empty_like(x)
    C.softmax_rows(x, None, got)
    # relative to the float64 value; results in the subnormal range carry an
    # absolute precision of one subnormal step only, and float32 x - max
    # itself rounds by up to |x - max| 2^-24 (as in every float32 softmax)
    tiny = np.finfo(np.float32).smallest_subnormal
    shift_err = np.abs(x64 - x64.max()) * 2.0**-24
    excess = np.abs(got - want) - ((2e-6 + shift_err) * want + tiny)
    assert excess.max() <= 0, excess.max()
    R.log_softmax_rows(x64, None, want)
    C.log_softmax_rows(x, None, got)
    err = np.abs(got - want) / np.maximum(1, np.abs(want))
    assert err.max() <= 4e-6, err.max()
    lw, lg = np.empty(1), np.empty(1, np.float32)
    R.logsumexp_rows(x64, None, None, lw, None)
    C.logsumexp_rows(x, None, None, lg, None)
    assert abs(lg[0] - lw[0]) <= 4e-6 * max(1, abs(lw[0]))


def test_large_values_log_softmax(isa):
    # |x| large: (x - m) - log(s) keeps full accuracy, x - logsumexp would not
    g = rng(12)
    x = (1e5 + g.standard_normal((4, 1000)) * 3).astype(np.float32)
    want = np.empty(x.shape)
    R.log_softmax_rows(x.astype(np.float64), None, want)
    got = np.empty_like(x)
    C.log_softmax_rows(x, None, got)
    assert np.max(np.abs(got - want) / np.maximum(1, np.abs(want))) <= 4e-6


# --------------------------------------------------------- threads, aliasing

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4096, 100), (65536, 10), (8, 70000)])
def test_nthreads_same_result(isa, dtype, shape):
    g = rng(13)
    x = g.standard_normal(shape).astype(dtype)
    t = g.integers(0, shape[1], shape[0])
    for name in ("softmax_rows", "log_softmax_rows"):
        a, b = np.empty_like(x), np.empty_like(x)
        getattr(C, name)(x, None, a, 1)
        getattr(C, name)(x, None, b, 4)
        np.testing.assert_array_equal(a, b)
    la, lb = np.empty(shape[0], dtype), np.empty(shape[0], dtype)
    ga, gb = np.empty_like(x), np.empty_like(x)
    C.cross_entropy_index_rows(x, t, None, -100, 0.0, 0.0, 1.0, 1.0, 1.0, None, la, ga, 1)
    C.cross_entropy_index_rows(x, t, None, -100, 0.0, 0.0, 1.0, 1.0, 1.0, None, lb, gb, 3)
    np.testing.assert_array_equal(la, lb)
    np.testing.assert_array_equal(ga, gb)


def test_many_python_threads():
    g = rng(14)
    xs = [g.standard_normal((512, 300)).astype(np.float32) for _ in range(8)]
    wants = []
    for x in xs:
        w = np.empty_like(x)
        C.softmax_rows(x, None, w)
        wants.append(w)
    errors = []

    def work(i):
        try:
            for _ in range(20):
                o = np.empty_like(xs[i])
                C.softmax_rows(xs[i], None, o, 2)
                np.testing.assert_array_equal(o, wants[i])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors


@pytest.mark.parametrize("dtype", DTYPES)
def test_long_rows_special_values(isa, dtype):
    # rows past the chunked long-row path's threshold, specials in various chunks
    k = 50000
    g = rng(15)
    x = (g.standard_normal((9, k)) * 5).astype(dtype)
    x[1, :20000] = -np.inf                # leading chunks all -inf
    x[2, :20000] = -np.inf
    x[2, 100] = np.nan                    # NaN in an all -inf chunk
    x[3, 30000] = np.nan                  # NaN late
    x[4, 45000] = np.inf                  # +inf late
    x[5] = -np.inf                        # all -inf
    x[6, 10] = 200.0 if dtype == np.float32 else 2000.0  # running max jumps: rescaling
    x[7, 49999] = 300.0 if dtype == np.float32 else 3000.0
    x[8, ::7] = -np.inf
    for name in ("softmax_rows", "log_softmax_rows"):
        want = np.empty(x.shape)
        with np.errstate(all="ignore"):
            getattr(R, name)(x.astype(np.float64), None, want)
        got = np.empty_like(x)
        getattr(C, name)(x, None, got)
        assert_close(got, want, dtype, scale=4, what=f"{name} long")
        xi = x.copy()
        getattr(C, name)(xi, None, xi)
        np.testing.assert_array_equal(xi, got)


# ------------------------------------ large outputs: non-temporal stores

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1000, 70001])
def test_streaming_outputs(isa, dtype, k):
    # outputs of >= 12 MB are written with non-temporal stores (scratch for
    # the exp terms, head/body/tail around the alignment); unaligned out,
    # special rows and in-place calls must give the same results as small calls
    n = (16 << 20) // (k * np.dtype(dtype).itemsize) + 1
    g = rng(21)
    x = (g.standard_normal((n, k)) * 3).astype(dtype)
    x[1, 5] = np.nan
    x[2, :] = -np.inf
    x[3, k // 2] = np.inf
    x[4, : k // 2] = -np.inf
    x[5, k - 1] = 80.0
    buf = np.empty(n * k + 1, dtype)
    for name in ("softmax_rows", "log_softmax_rows"):
        got = np.empty_like(x)
        getattr(C, name)(x, None, got)
        small = np.empty_like(x[:8])
        getattr(C, name)(x[:8], None, small)          # below the threshold
        np.testing.assert_array_equal(got[:8], small)
        want = np.empty(x[:64].shape)
        with np.errstate(all="ignore"):
            getattr(R, name)(x[:64].astype(np.float64), None, want)
        assert_close(got[:64], want, dtype, scale=4, what=f"{name} streamed")
        un = buf[1:].reshape(n, k)                    # out not vector-aligned
        for nt in (1, 2):
            un[...] = 7
            getattr(C, name)(x, None, un, nt)
            np.testing.assert_array_equal(un, got)
        xi = x.copy()
        getattr(C, name)(xi, None, xi)
        np.testing.assert_array_equal(xi, got)


# ----------------------------- short rows in tiles: cross entropy, specials

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [65, 1000, 4097])
@pytest.mark.parametrize("stream", [False, True])
def test_mid_rows_next_max_special(isa, dtype, k, stream):
    # rows of 4 VL < k <= 16384 take each row's max in the previous row's
    # write pass: special rows first, last, back to back and after a normal
    # row, on 1 and 3 threads (row parts start and end anywhere), in place
    n = (16 << 20) // (k * np.dtype(dtype).itemsize) + 1 if stream else 40
    g = rng(31 + k)
    x = (g.standard_normal((n, k)) * 3).astype(dtype)
    for i in (0, 1, 7, 8, n // 3, n // 3 + 1, n - 2, n - 1):
        x[i, g.integers(k)] = (np.nan, np.inf, -np.inf)[i % 3]
    x[9, :] = -np.inf
    x[10, :] = np.nan
    x[11, -1] = np.inf
    rows = np.r_[0:16, n // 3 - 1:n // 3 + 3, n - 4:n]
    for name in ("softmax_rows", "log_softmax_rows"):
        want = np.empty(x[rows].shape)
        with np.errstate(all="ignore"):
            getattr(R, name)(x[rows].astype(np.float64), None, want)
        got = np.empty_like(x)
        getattr(C, name)(x, None, got)
        assert_close(got[rows], want, dtype, scale=4, what=f"{name} k={k}")
        for nt in (2, 3):
            other = np.full_like(x, 7.0)
            getattr(C, name)(x, None, other, nt)
            np.testing.assert_array_equal(other, got)
        xi = x.copy()
        getattr(C, name)(xi, None, xi)
        np.testing.assert_array_equal(xi, got)


def _tile_special_rows(dtype, k, g):
    """Rows whose max is finite but which hold special values (handled inside a
    row tile), and rows whose max is not (the tile falls back to the row path)."""
    fi = np.finfo(dtype)
    big = 100.0 if dtype == np.float32 else 800.0
    fin, bad = [], []

    def row(dest, *vals, fill=None):
        r = g.standard_normal(k) * 3 if fill is None else np.full(k, fill)
        r[: len(vals)] = vals[:k]
        dest.append(r)

    for _ in range(20):
        row(fin)
    row(fin, -np.inf)
    row(fin, 1.0, -np.inf)
    row(fin, 1.0, np.nan, 2.0)
    row(fin, 0.0, -big, -2 * big)
    row(fin, 0.0, -big * 0.9, -big * 1.03, -big * 1.1, fill=-1e4)
    row(fin, 1e4, 1e4 - 1, 1e4 - 50, fill=1e4 - 200)
    row(fin, fi.max, -fi.max, fill=0.0)
    row(fin, fill=5.0)
    row(bad, fill=-np.inf)
    row(bad, np.inf)
    row(bad, np.nan, fill=-np.inf)
    row(bad, fi.max, np.inf)
    return np.array(fin, dtype), np.array(bad, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 2, 3, 7, 8, 9, 10, 12, 15, 16, 17])
def test_short_rows_tiles_special(isa, dtype, k):
    # enough rows for many tiles (8 rows for AVX2 float32 and AVX-512 float64,
    # 16 for AVX-512 float32), tiles with only finite-max rows and tiles with a
    # row the tile path hands back to the row path; targets on -inf entries,
    # ignored rows, weights, z-loss, row scales, in place, loss or grad alone
    g = rng(31)
    fin, bad = _tile_special_rows(dtype, k, g)
    x = np.concatenate([fin[g.permutation(len(fin))] for _ in range(6)] + [bad, fin[:5]])
    n = x.shape[0]
    t = g.integers(0, k, n)
    t[::7] = -100
    t[20] = 0 if k == 1 else 1     # rows 20, 21: the -inf entry is the target
    t[21] = 0
    for name in ("softmax_rows", "log_softmax_rows"):
        want, got = np.empty_like(x), np.full_like(x, 7.0)
        with np.errstate(all="ignore"):
            getattr(R, name)(x, None, want)
        getattr(C, name)(x, None, got)
        assert_close(got, want, dtype, scale=4, what=f"{name} {isa} k={k}")
        exact = (want == 0) | np.isinf(want)
        np.testing.assert_array_equal(got[exact], want[exact])
    # logsumexp without b or mask (tiles), with and without the sign
    want, ws = np.empty(n, dtype), np.empty(n, dtype)
    with np.errstate(all="ignore"):
        R.logsumexp_rows(x, None, None, want, ws)
    for sign in (None, np.full(n, 7.0, dtype)):
        got = np.full(n, 7.0, dtype)
        C.logsumexp_rows(x, None, None, got, sign)
        assert_close(got, want, dtype, scale=4, what=f"logsumexp {isa} k={k}")
        if sign is not None:
            np.testing.assert_array_equal(sign, ws)
    w = (g.random(k) + 0.5).astype(dtype)
    for weight in (None, w):
        for z in (0.0, 1e-2):
            for rs in (None, g.random(n).astype(dtype)):
                args = (weight, -100, 0.0, z, 0.5, 0.25, 2.0, rs)
                # the reference in float64, rounded to dtype (so that a loss
                # beyond the float32 range is inf, as the kernel rounds it)
                lw, gw = np.empty(n), np.empty(x.shape)
                with np.errstate(all="ignore"):
                    R.cross_entropy_index_rows(
                        x.astype(np.float64), t, None if weight is None else weight.astype(np.float64),
                        -100, 0.0, z, 0.5, 0.25, 2.0, None if rs is None else rs.astype(np.float64),
                        lw, gw)
                    lw, gw = lw.astype(dtype), gw.astype(dtype)
                lg, gg = np.full(n, 7.0, dtype), np.full_like(x, 7.0)
                C.cross_entropy_index_rows(x, t, *args, lg, gg)
                what = f"ce tile k={k} w={weight is not None} z={z} rs={rs is not None}"
                assert_close(lg, lw, dtype, scale=16, what=what + " loss")
                assert_close(gg, gw, dtype, scale=16, what=what + " grad")
                np.testing.assert_array_equal(gg[t == -100], 0)
                np.testing.assert_array_equal(lg[t == -100], 0)
                l2, g2 = np.empty(n, dtype), np.empty_like(x)
                C.cross_entropy_index_rows(x, t, *args, l2, None)
                C.cross_entropy_index_rows(x, t, *args, None, g2)
                np.testing.assert_array_equal(l2, lg)
                np.testing.assert_array_equal(g2, gg)
                xi, l3 = x.copy(), np.empty(n, dtype)
                C.cross_entropy_index_rows(xi, t, *args, l3, xi)
                np.testing.assert_array_equal(l3, lg)
                np.testing.assert_array_equal(xi, gg)
    # one-class rows: a gradient of exactly 0
    if k == 1:
        gg = np.full_like(x, 7.0)
        C.cross_entropy_index_rows(x[:40], np.zeros(40, np.int64), None, -100, 0.0, 0.0,
                                   0.5, 0.0, 2.0, None, None, gg[:40])
        np.testing.assert_array_equal(gg[:40][np.isfinite(x[:40])], 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [3, 10, 12, 16])
def test_short_rows_tiles_nthreads(isa, dtype, k):
    # parts of the rows split at tile boundaries: the same results on any
    # number of threads (rows in a tile on one thread, in the tail on another)
    n = (1 << 17) // k + 5
    g = rng(32)
    x = (g.standard_normal((n, k)) * 3).astype(dtype)
    t = g.integers(0, k, n)
    for name in ("softmax_rows", "log_softmax_rows"):
        a, b = np.empty_like(x), np.empty_like(x)
        getattr(C, name)(x, None, a, 1)
        getattr(C, name)(x, None, b, 3)
        np.testing.assert_array_equal(a, b)
    la, lb = np.empty(n, dtype), np.empty(n, dtype)
    C.logsumexp_rows(x, None, None, la, None, 1)
    C.logsumexp_rows(x, None, None, lb, None, 3)
    np.testing.assert_array_equal(la, lb)
    ga, gb = np.empty_like(x), np.empty_like(x)
    C.cross_entropy_index_rows(x, t, None, -100, 0.0, 0.0, 1.0, 1.0, 1.0, None, la, ga, 1)
    C.cross_entropy_index_rows(x, t, None, -100, 0.0, 0.0, 1.0, 1.0, 1.0, None, lb, gb, 3)
    np.testing.assert_array_equal(la, lb)
    np.testing.assert_array_equal(ga, gb)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [16385, 70001])
@pytest.mark.parametrize("n", [6, "stream"])
def test_cross_entropy_long_rows(isa, dtype, k, n):
    # rows longer than 16384 without label smoothing: one pass over L1 chunks
    # (running max, chunk sums rescaled), the gradient scaled per chunk; with
    # a gradient of >= 12 MB per thread, exp terms in a scratch row and the
    # gradient streamed.  Special values in early and late chunks, ignored
    # rows, a target on a -inf entry, weights, z-loss, aliasing, loss alone.
    if n == "stream":
        n = (12 << 20) // (k * np.dtype(dtype).itemsize) + 2
    g = rng(33)
    x = (g.standard_normal((n, k)) * 3).astype(dtype)
    x[0, 5] = np.nan
    x[1, :] = -np.inf
    x[2, k - 3] = np.inf
    x[3, : k // 2] = -np.inf          # first chunks all -inf, max found later
    x[4, k - 1] = 80.0                # a late max: earlier chunks rescaled
    x[5, 10] = -np.inf
    x[5, 11] = -200.0
    t = g.integers(0, k, n)
    t[1] = 0
    t[3] = 2                          # target on a -inf entry
    t[n - 1] = -100
    w = (g.random(k) + 0.5).astype(dtype)
    for weight in (None, w):
        for z in (0.0, 1e-2):
            args = (weight, -100, 0.0, z, 0.5, 0.25, 2.0, None)
            lw, gw = np.empty(n), np.empty(x.shape)
            with np.errstate(all="ignore"):
                R.cross_entropy_index_rows(x.astype(np.float64), t,
                                           None if weight is None else weight.astype(np.float64),
                                           -100, 0.0, z, 0.5, 0.25, 2.0, None, lw, gw)
            lg, gg = np.full(n, 7.0, dtype), np.full_like(x, 7.0)
            C.cross_entropy_index_rows(x, t, *args, lg, gg)
            what = f"ce long k={k} n={n} w={weight is not None} z={z}"
            assert_close(lg, lw.astype(dtype), dtype, scale=16, what=what + " loss")
            assert_close(gg, gw.astype(dtype), dtype, scale=16, what=what + " grad")
            l2 = np.empty(n, dtype)
            C.cross_entropy_index_rows(x, t, *args, l2, None)
            np.testing.assert_array_equal(l2, lg)
            xi, l3 = x.copy(), np.empty(n, dtype)
            C.cross_entropy_index_rows(xi, t, *args, l3, xi)
            np.testing.assert_array_equal(l3, lg)
            np.testing.assert_array_equal(xi, gg)
            for nt in (2, 3):
                g2 = np.full_like(x, 7.0)
                C.cross_entropy_index_rows(x, t, *args, None, g2, nt)
                np.testing.assert_array_equal(g2, gg)


# ------------------------------------------- row tails around vector widths

#: Row lengths around the vector widths (AVX2: 8 float32 / 4 float64 lanes,
#: AVX-512: 16 / 8): short rows (up to 4 VL in registers), vector tails of
#: every length, and rows past a block of 4 VL vectors and of 64 VL elements.
TAIL_KS = list(range(1, 18)) + [23, 24, 25, 31, 33, 47, 49, 63, 64, 65, 66, 127, 129,
                                 255, 257, 1023, 1025, 1030]


def _tail_special_rows(dtype, k, g):
    """Rows of length k with special values in the last lanes (the vector
    tail), beside a plain row; k >= 1."""
    fi = np.finfo(dtype)
    big = 100.0 if dtype == np.float32 else 800.0
    rows = [g.standard_normal(k) * 3]
    specials = [-np.inf, np.nan, np.inf, fi.max, -fi.max, -big, -2 * big, 30.0]
    for pos in sorted({k - 1, max(k - 2, 0), max(k - 5, 0)}):
        for v in specials:
            r = g.standard_normal(k) * 3
            r[pos] = v
            rows.append(r)
    r = np.full(k, -np.inf)
    rows.append(r)                                 # all -inf
    r = np.full(k, -np.inf)
    r[-1] = 1.5
    rows.append(r)                                 # only the last lane finite
    r = g.standard_normal(k) * 3
    r[-(k // 3 + 1):] = -np.inf
    rows.append(r)                                 # -inf through the tail
    r = np.full(k, -big)
    r[0] = 0.0
    rows.append(r)                                 # every other lane below the fast range
    r = g.standard_normal(k)
    r[-1] = -fi.max
    r[0] = fi.max
    rows.append(r)
    return np.array(rows, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", TAIL_KS)
def test_row_tails_special(isa, dtype, k):
    """Special values in the last lanes of rows of every length around the
    vector widths, unmasked and masked, for every kernel with an exp over a
    row tail: the tail lanes are computed as exp(0) and zeroed, so they must
    never reach the results."""
    g = rng(11 + k)
    base = _tail_special_rows(dtype, k, g)
    # twice, shuffled: enough rows for the short-row tiles, special rows in them
    x = np.concatenate([base, base[g.permutation(len(base))]])
    n = x.shape[0]
    mask = g.random(x.shape) > 0.3
    mask[::4, -1] = False                         # the tail's special value masked out
    mask[1::4, :-1] = False                       # only the last lane selected
    mask[2::7] = False                            # nothing selected
    what = f"{isa} k={k}"
    with np.errstate(all="ignore"):
        for name in ("softmax_rows", "log_softmax_rows"):
            for m in (None, mask):
                want, got = np.empty_like(x), np.full_like(x, 7.0)
                getattr(R, name)(x, m, want)
                getattr(C, name)(x, m, got)
                assert_close(got, want, dtype, scale=4, what=f"{name} masked={m is not None} {what}")
                # exact zeros (softmax) and infinities where the reference has them
                exact = np.isinf(want) | ((want == 0) if name == "softmax_rows" else False)
                np.testing.assert_array_equal(got[exact], want[exact])
                xi = x.copy()
                getattr(C, name)(xi, m, xi)
                np.testing.assert_array_equal(xi, got)
        b = (g.random(x.shape) + 0.5).astype(dtype)
        b[g.random(x.shape) < 0.2] *= -1
        b[::3, -1] = 0.0
        for m in (None, mask):
            for bb in (None, b):
                want, got = np.empty(n, dtype), np.full(n, 7.0, dtype)
                ws, gs = np.empty(n, dtype), np.full(n, 7.0, dtype)
                for sg in (None, gs):
                    R.logsumexp_rows(x, bb, m, want, None if sg is None else ws)
                    C.logsumexp_rows(x, bb, m, got, sg)
                    assert_close(got, want, dtype, scale=4,
                                 what=f"logsumexp masked={m is not None} b={bb is not None} {what}")
                    if sg is not None:
                        np.testing.assert_array_equal(gs, ws)
        # log_softmax_backward: y with -inf and huge entries in the tail lanes
        for m in (None, mask):
            y = np.empty_like(x)
            R.log_softmax_rows(x, m, y)
            grad = g.standard_normal(x.shape).astype(dtype)
            want, got = np.empty_like(x), np.full_like(x, 7.0)
            R.log_softmax_backward_rows(grad, y, m, want)
            C.log_softmax_backward_rows(grad, y, m, got)
            assert_close(got, want, dtype, scale=4 * np.sqrt(k),
                         what=f"log_softmax_backward masked={m is not None} {what}")
        # cross entropy: targets in the tail (on the special values), ignored rows
        t = (k - 1 - np.arange(n) % 3).clip(0).astype(np.int64)
        t[5::6] = -100
        q = g.random(x.shape).astype(dtype)
        q /= q.sum(axis=1, keepdims=True)
        w = (g.random(k) + 0.5).astype(dtype)
        for ww in (None, w):
            for eps in (0.0, 0.1):
                lw, gw = np.empty(n, dtype), np.empty_like(x)
                lg, gg = np.full(n, 7.0, dtype), np.full_like(x, 7.0)
                R.cross_entropy_index_rows(x, t, ww, -100, eps, 0.0, 1.0, 1.0, 1.0, None, lw, gw)
                C.cross_entropy_index_rows(x, t, ww, -100, eps, 0.0, 1.0, 1.0, 1.0, None, lg, gg)
                tag = f"w={ww is not None} eps={eps} {what}"
                # with smoothing, sum_c w_c (m - x_c) over a row holding +-finfo.max
                # overflows in float32 or not depending on the order of the adds
                # (lanes summed in double on the vector paths): not compared
                ok = ~np.any(np.abs(x) == np.finfo(dtype).max, axis=1) if eps else slice(None)
                assert_close(lg[ok], lw[ok], dtype, scale=16, what=f"ce index loss {tag}")
                assert_close(gg, gw, dtype, scale=16, what=f"ce index grad {tag}")
                R.cross_entropy_prob_rows(x, q, ww, eps, 0.0, 1.0, 1.0, 1.0, None, lw, gw)
                C.cross_entropy_prob_rows(x, q, ww, eps, 0.0, 1.0, 1.0, 1.0, None, lg, gg)
                assert_close(lg, lw, dtype, scale=16, what=f"ce prob loss {tag}")
                assert_close(gg, gw, dtype, scale=16, what=f"ce prob grad {tag}")


# ------------------- the log of the exp sum near 0 (SPEC: relative accuracy)

#: relative tolerance on results near 0 (the log-sum log1p(r) of a row whose
#: max term is alone, r the sum of the others): float64 ~4 ulp, float32 the
#: exp's and log1pf's few ulp.
NEAR_RTOL = {np.float32: 1e-6, np.float64: 1e-15}
#: row lengths: tiles (k <= 16 float32, 8 float64 AVX-512), short rows in
#: registers (<= 4 VL), rows summed whole (mid rows for log_softmax), rows in
#: chunks (> 16384: the max in an early or a late chunk)
NEAR_KS = [1, 2, 5, 8, 16, 17, 31, 64, 100, 1000, 5000, 20000, 70001]


def _near_zero_rows(dtype, n, k, g, shift=True):
    """Rows of length k whose max term is alone and the others far below it:
    x = m + [0 (at a random place), -40 - d_i (another place, k > 1), -200 or
    -inf (the rest)], m and d_i multiples of 1/8, so that the row's log of its exp sum is log1p(~exp(-40))
    ~ 4.2e-18 (rounded 1 + r would be 0); every 5th row has ties at the max (a
    log-sum near log 2, compared as usual).  Returns x and the places of the
    max of the rows without ties (row index, column)."""
    x = np.full((n, k), -200.0)
    x[g.random((n, k)) < 0.1] = -np.inf
    rows = np.arange(n)
    top = g.integers(0, k, n)
    top[0] = 0
    top[1 % n] = k - 1
    if k > LONG_K_TEST:                     # max in the first or in a late chunk
        top[2 % n] = 3
        top[3 % n] = k - 5
    x[rows, top] = 0.0
    if k > 1:
        low = (top + 1 + g.integers(0, k - 1, n)) % k
        x[rows, low] = -40.0 - 0.375 * (rows % 7)
    ties = (rows % 5 == 4) & (k > 1)
    other = (top + 1) % k
    if k > 2:                               # the tie not on the -40 entry
        other = np.where(other == low, (top + 2) % k, other)
    x[ties, other[ties]] = 0.0
    if shift:
        # multiples of 1/8: x - m exact in float32 too (its rounding would
        # move exp(x - m) by up to 2e-6 relative, beyond this check)
        x += np.round(g.standard_normal(n) * 32)[:, None] / 8
    return x.astype(dtype), (rows[~ties], top[~ties])


LONG_K_TEST = 16384


def assert_rel(got, want, dtype, what=""):
    """|got - want| <= NEAR_RTOL * |want|, NaN where want is NaN."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"NaN positions {what}")
    got, want = got[~np.isnan(want)], want[~np.isnan(want)]
    if not want.size:
        return
    err = np.abs(got - want)
    bound = NEAR_RTOL[dtype] * np.abs(want)
    i = np.argmax(err - bound)
    assert err[i] <= bound[i], (f"{what}: at {i}: got {got[i]!r} want {want[i]!r} "
                                f"rel err {err[i] / abs(want[i]):.3g}")


def test_logsumexp_0_m40(isa):
    # the SPEC's example, one row and many rows (tiles, rows summed whole)
    for dtype in DTYPES:
        for n, k in [(1, 2), (40, 2), (40, 3), (3, 50)]:
            x = np.full((n, k), -300.0, dtype)
            x[:, 0], x[:, 1] = 0.0, -40.0
            out = np.empty(n, dtype)
            C.logsumexp_rows(x, None, None, out, None)
            assert_rel(out, np.full(n, 4.2483542552915889e-18), dtype, f"{isa} {dtype} {n}x{k}")
            sg = np.empty(n, dtype)
            C.logsumexp_rows(x, np.ones_like(x), None, out, sg)
            assert_rel(out, np.full(n, 4.2483542552915889e-18), dtype, f"{isa} b {dtype} {n}x{k}")
            np.testing.assert_array_equal(sg, 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", NEAR_KS)
@pytest.mark.parametrize("masked", [False, True])
def test_near_zero_log_softmax(isa, dtype, k, masked):
    # the max entry of log_softmax is -log1p(r): tiles, short rows, mid rows
    # (pipelined), long rows in chunks, masked rows, in place
    g = rng(41 + k)
    n = 40 if k <= 5000 else 6
    x, (ri, ci) = _near_zero_rows(dtype, n, k, g)
    mask = None
    if masked:
        mask = (g.random(x.shape) > 0.3) | (x >= x.max(axis=1, keepdims=True)) | (x > -100)
        x[~mask & (x < -100)] = 50.0        # unselected entries above the max: ignored
    want = np.empty(x.shape)
    with np.errstate(all="ignore"):
        R.log_softmax_rows(x.astype(np.float64), mask, want)
    got = np.full_like(x, 7.0)
    C.log_softmax_rows(x, mask, got)
    what = f"log_softmax {isa} k={k} masked={masked}"
    assert_close(got, want, dtype, what=what)
    if k > 1:
        assert np.all(want[ri, ci] < 0)
        assert_rel(got[ri, ci], want[ri, ci], dtype, what)
    xi = x.copy()
    C.log_softmax_rows(xi, mask, xi)
    np.testing.assert_array_equal(xi, got)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1000, 20000])
def test_near_zero_log_softmax_streamed(isa, dtype, k):
    # outputs of >= 12 MB: mid rows and long rows with non-temporal stores,
    # the long rows pipelined (row i's sums beside row i - 1's writes)
    n = (12 << 20) // (k * np.dtype(dtype).itemsize) + 2
    g = rng(43)
    x, (ri, ci) = _near_zero_rows(dtype, n, k, g)
    got = np.full_like(x, 7.0)
    C.log_softmax_rows(x, None, got)
    want = np.empty(x.shape)
    with np.errstate(all="ignore"):
        R.log_softmax_rows(x.astype(np.float64), None, want)
    what = f"log_softmax streamed {isa} k={k}"
    assert_close(got, want, dtype, what=what)
    assert_rel(got[ri, ci], want[ri, ci], dtype, what)
    small = np.empty_like(x[:8])
    C.log_softmax_rows(x[:8], None, small)
    np.testing.assert_array_equal(got[:8], small)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", NEAR_KS)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("b_kind", [None, "ones", "halves", "mixed"])
def test_near_zero_logsumexp(isa, dtype, k, masked, b_kind):
    # logsumexp = log1p(r) for rows with max 0: tiles (no b, no mask), rows
    # summed whole, masked, with b (the ties' weights c apart: c = 1 from two
    # halves; b of both signs: log|c| + log1p(r / c), c = -1, c = 0), sign
    g = rng(47 + k)
    n = 40 if k <= 5000 else 6
    x, _ = _near_zero_rows(dtype, n, k, g, shift=False)
    mask = None
    if masked:
        mask = (g.random(x.shape) > 0.3) | (x > -100)
        x[~mask & (x < -100)] = 50.0
    b = None
    if b_kind is not None:
        b = np.ones_like(x)
        top = x == 0
        if b_kind == "halves":               # ties weighted 1/2 each: c = 1
            tt = top & (top.sum(axis=1) == 2)[:, None]
            b[tt] = 0.5
        elif b_kind == "mixed":
            b[(x < 0) & (g.random(x.shape) < 0.5)] = -1.0   # r of either sign
            b[5 % n][top[5 % n]] = -1.0     # c = -1 (or -2 with a tie)
            if k > 2:                        # row 9: ties weighted +1 and -1, c = 0
                x[9 % n] = -200.0
                x[9 % n, :3] = [0.0, 0.0, -40.0]
                b[9 % n] = 1.0
                b[9 % n, 1:3] = [-1.0, 0.75]
                if mask is not None:
                    mask[9 % n] = True
    for with_sign in (False, True):
        want, got = np.empty(n), np.full(n, 7.0, dtype)
        ws, gs = (np.empty(n), np.full(n, 7.0, dtype)) if with_sign else (None, None)
        with np.errstate(all="ignore"):
            R.logsumexp_rows(x.astype(np.float64), None if b is None else b.astype(np.float64),
                             mask, want, ws)
        C.logsumexp_rows(x, b, mask, got, gs)
        what = f"logsumexp {isa} k={k} masked={masked} b={b_kind} sign={with_sign}"
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=what)
        fin = np.isfinite(want)
        np.testing.assert_array_equal(got[~fin], want[~fin], err_msg=what)
        assert_rel(got[fin], want[fin], dtype, what)
        if with_sign:
            np.testing.assert_array_equal(gs, ws, err_msg=what)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", NEAR_KS)
def test_near_zero_cross_entropy(isa, dtype, k):
    # target on the max: the loss is (m - x_t) + log(s) = log1p(r), relative;
    # index targets on tiles, rows summed whole, rows in chunks; weights,
    # z-loss (lse = m + log(s)), loss alone and with the gradient, in place;
    # probability targets one-hot on the max
    g = rng(53 + k)
    n = 40 if k <= 5000 else 6
    x, (ri, ci) = _near_zero_rows(dtype, n, k, g)
    t = np.argmax(x, axis=1)
    t[ri] = ci
    keep = np.zeros(n, bool)
    keep[ri] = True
    x64 = x.astype(np.float64)
    w = (g.random(k) + 0.5).astype(dtype)
    for weight in (None, w):
        for z in (0.0, 1e-3):
            for eps in (0.0, 0.1):
                args = (weight, -100, eps, z, 1.0, 0.5, 1.0, None)
                lw, gw = np.empty(n), np.empty(x.shape)
                with np.errstate(all="ignore"):
                    R.cross_entropy_index_rows(x64, t, None if weight is None else weight.astype(np.float64),
                                               -100, eps, z, 1.0, 0.5, 1.0, None, lw, gw)
                lg, gg = np.full(n, 7.0, dtype), np.full_like(x, 7.0)
                C.cross_entropy_index_rows(x, t, *args, lg, gg)
                what = f"ce index {isa} k={k} w={weight is not None} z={z} eps={eps}"
                assert_close(lg, lw, dtype, scale=16, what=what)
                if eps == 0 and k > 1:
                    assert_rel(lg[keep], lw[keep], dtype, what)
                l2 = np.empty(n, dtype)
                C.cross_entropy_index_rows(x, t, *args, l2, None)
                np.testing.assert_array_equal(l2, lg, err_msg=what)
                xi, l3 = x.copy(), np.empty(n, dtype)
                C.cross_entropy_index_rows(xi, t, *args, l3, xi)
                np.testing.assert_array_equal(xi, gg, err_msg=what)
                if eps == 0:
                    np.testing.assert_array_equal(l3, lg, err_msg=what)
                else:
                    # in place, the smoothing sum is taken in double before the
                    # gradient overwrites x (a row holding -inf: an infinite loss)
                    assert_close(l3, lw, dtype, scale=16, what=what + " in place")
                g2 = np.empty_like(x)
                C.cross_entropy_index_rows(x, t, *args, None, g2)
                np.testing.assert_array_equal(g2, gg, err_msg=what)
            q = np.zeros_like(x)
            q[np.arange(n), t] = 1.0
            lw, lg = np.empty(n), np.full(n, 7.0, dtype)
            R.cross_entropy_prob_rows(x64, q.astype(np.float64),
                                      None if weight is None else weight.astype(np.float64),
                                      0.0, z, 1.0, 0.5, 1.0, None, lw, None)
            C.cross_entropy_prob_rows(x, q, weight, 0.0, z, 1.0, 0.5, 1.0, None, lg, None)
            what = f"ce prob {isa} k={k} w={weight is not None} z={z}"
            if k > 1:
                assert_rel(lg[keep], lw[keep], dtype, what)


@pytest.mark.parametrize("dtype", DTYPES)
def test_near_zero_cross_entropy_long_streamed(isa, dtype):
    # rows in chunks with a gradient of >= 12 MB: the exp terms in a scratch
    # row, the gradient streamed; the loss still log1p(r)
    k = 20000
    n = (12 << 20) // (k * np.dtype(dtype).itemsize) + 2
    g = rng(59)
    x, (ri, ci) = _near_zero_rows(dtype, n, k, g)
    t = np.argmax(x, axis=1)
    t[ri] = ci
    lw = np.empty(8)
    R.cross_entropy_index_rows(x[:8].astype(np.float64), t[:8], None, -100, 0.0, 0.0, 1.0, 0.0,
                               1.0, None, lw, None)
    lg, gg = np.empty(n, dtype), np.empty_like(x)
    C.cross_entropy_index_rows(x, t, None, -100, 0.0, 0.0, 1.0, 0.0, 1.0, None, lg, gg)
    sel = ri[ri < 8]
    assert_rel(lg[sel], lw[sel], dtype, f"ce long streamed {isa}")


# ------------------------------------------- strided driver (any axis, issue 18)

def _moved_rows(a, k):
    """(outer, k, inner) -> (outer * inner, k) rows (a copy)."""
    return np.ascontiguousarray(a.transpose(0, 2, 1)).reshape(-1, k)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("oki", [(2, 5, 1), (3, 7, 2), (2, 9, 3), (1, 33, 17), (2, 20, 40),
                                 (1, 2100, 20)])
def test_strided_kernels(isa, dtype, oki):
    """*_strided over (outer, k, inner) == the row kernels on the moved rows, exactly."""
    o, k, i = oki
    g = rng(o * 1000 + k + i)
    x = (g.standard_normal(oki) * 6).astype(dtype)
    x[0, k // 2, ::3] = -np.inf
    mask = g.random(oki) > 0.3
    b = g.random(oki).astype(dtype)
    xr, mr, br = _moved_rows(x, k), _moved_rows(mask, k), _moved_rows(b, k)

    def back(r):  # (outer * inner, k) rows -> (outer, k, inner)
        return r.reshape(o, i, k).transpose(0, 2, 1)

    for name in ("softmax", "log_softmax"):
        for m, m_r in ((None, None), (mask, mr)):
            got = np.empty_like(x)
            getattr(C, name + "_strided")(x, m, got, o, k, i, 2)
            want = np.empty_like(xr)
            getattr(C, name + "_rows")(xr, m_r, want, 2)
            np.testing.assert_array_equal(got, back(want))
    for bb, b_r in ((None, None), (b, br)):
        for m, m_r in ((None, None), (mask, mr)):
            got, gs = np.empty((o, i), dtype), np.empty((o, i), dtype)
            C.logsumexp_strided(x, bb, m, got, gs, o, k, i, 2)
            want, ws = np.empty(o * i, dtype), np.empty(o * i, dtype)
            C.logsumexp_rows(xr, b_r, m_r, want, ws, 2)
            np.testing.assert_array_equal(got.ravel(), want)
            np.testing.assert_array_equal(gs.ravel(), ws)
    y = np.empty_like(x)
    C.softmax_strided(np.where(np.isinf(x), 0, x).astype(dtype), None, y, o, k, i, 1)
    grad = g.standard_normal(oki).astype(dtype)
    got = np.empty_like(x)
    C.softmax_backward_strided(grad, y, got, o, k, i, 2)
    want = np.empty_like(xr)
    C.softmax_backward_rows(_moved_rows(grad, k), _moved_rows(y, k), want, 2)
    np.testing.assert_array_equal(got, back(want))
    got = np.empty_like(x)
    C.log_softmax_backward_strided(grad, np.log(y), mask, got, o, k, i, 2)
    want = np.empty_like(xr)
    C.log_softmax_backward_rows(_moved_rows(grad, k), _moved_rows(np.log(y), k), mr, want, 2)
    np.testing.assert_array_equal(got, back(want))
    # cross entropy, index and probability targets, loss and gradient (in place too)
    t = g.integers(0, k, (o, i))
    t[:, ::4] = -100
    w = (g.random(k) + 0.1).astype(dtype)
    rs = g.random((o, i)).astype(dtype)
    tp = g.random(oki).astype(dtype)
    xf = np.where(np.isinf(x), 0, x).astype(dtype)
    for eps, z in ((0.0, 0.0), (0.1, 1e-3)):
        gl, gg = np.empty((o, i), dtype), np.empty_like(x)
        C.cross_entropy_index_strided(xf, t, w, -100, eps, z, 0.5, 0.25, 2.0, rs, gl, gg,
                                      o, k, i, 2)
        wl, wg = np.empty(o * i, dtype), np.empty((o * i, k), dtype)
        C.cross_entropy_index_rows(_moved_rows(xf, k), t.ravel(), w, -100, eps, z, 0.5, 0.25,
                                   2.0, rs.ravel(), wl, wg, 2)
        np.testing.assert_array_equal(gl.ravel(), wl)
        np.testing.assert_array_equal(gg, back(wg))
        ip = xf.copy()
        C.cross_entropy_index_strided(ip, t, w, -100, eps, z, 0.5, 0.25, 2.0, rs, None, ip,
                                      o, k, i, 1)
        np.testing.assert_array_equal(ip, gg)
        C.cross_entropy_prob_strided(xf, tp, w, eps, z, 0.5, 0.25, 2.0, rs, gl, gg, o, k, i, 2)
        C.cross_entropy_prob_rows(_moved_rows(xf, k), _moved_rows(tp, k), w, eps, z, 0.5, 0.25,
                                  2.0, rs.ravel(), wl, wg, 2)
        np.testing.assert_array_equal(gl.ravel(), wl)
        np.testing.assert_array_equal(gg, back(wg))


# ------------------------------------------------- float16 / bfloat16 rows (csrc/half.c)

def _half_dtypes():
    out = [np.float16]
    try:
        import ml_dtypes
        out.append(ml_dtypes.bfloat16)
    except ImportError:  # pragma: no cover
        pass
    return out


@pytest.mark.parametrize("hdt", _half_dtypes(), ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(1, 1), (37, 10), (40, 17), (17, 63), (3, 4099), (1, 70001),
                                   (70, 1000)])
def test_half_rows_every_kernel(isa, hdt, shape):
    """Every entry point with half rows (block widening): the float32 kernel's result on
    the widened rows, rounded (nearest-even, subnormals kept), bit for bit; in place;
    masks, b, sign, probability targets, per-row float32 losses; 2 threads."""
    hdt = np.dtype(hdt)
    g = rng(7)
    n, k = shape
    x = (g.standard_normal(shape) * 4).astype(hdt)
    x[0, 0] = np.inf if k > 1 else x[0, 0]
    x[-1, -1] = -np.inf
    x32 = x.astype(np.float32)
    mask = g.random(shape) < 0.7
    b = g.uniform(-0.3, 1.0, shape).astype(hdt)

    def same(h, f, what):
        with np.errstate(over="ignore", invalid="ignore"):
            want = np.asarray(f).astype(hdt)
        np.testing.assert_array_equal(np.isnan(h.astype(np.float32)), np.isnan(want.astype(np.float32)),
                                      err_msg=what)
        ok = ~np.isnan(want.astype(np.float32))
        np.testing.assert_array_equal(h.view(np.uint16)[ok], want.view(np.uint16)[ok], err_msg=what)

    for name in ("softmax_rows", "log_softmax_rows"):
        for m in (None, mask):
            o, o32 = np.empty_like(x), np.empty_like(x32)
            getattr(C, name)(x, m, o, 2)
            getattr(C, name)(x32, m, o32, 2)
            same(o, o32, name)
            xi = x.copy()
            getattr(C, name)(xi, m, xi, 2)
            same(xi, o32, name + " in place")
    for bb, m, sg in ((None, None, False), (b, None, True), (None, mask, True), (b, mask, False)):
        r, r32 = np.empty(n, hdt), np.empty(n, np.float32)
        s, s32 = (np.empty(n, hdt), np.empty(n, np.float32)) if sg else (None, None)
        C.logsumexp_rows(x, bb, m, r, s, 2)
        C.logsumexp_rows(x32, None if bb is None else bb.astype(np.float32), m, r32, s32, 2)
        same(r, r32, "logsumexp")
        if sg:
            same(s, s32, "logsumexp sign")
    gr = (g.standard_normal(shape)).astype(hdt)
    y = np.empty_like(x)
    C.softmax_rows(x, None, y, 1)
    o, o32 = np.empty_like(x), np.empty_like(x32)
    C.softmax_backward_rows(gr, y, o, 2)
    C.softmax_backward_rows(gr.astype(np.float32), y.astype(np.float32), o32, 2)
    same(o, o32, "softmax_backward")
    C.log_softmax_rows(x, None, y, 1)
    C.log_softmax_backward_rows(gr, y, mask, o, 2)
    C.log_softmax_backward_rows(gr.astype(np.float32), y.astype(np.float32), mask, o32, 2)
    same(o, o32, "log_softmax_backward")
    t = g.integers(0, k, n)
    t[::3] = -100
    w = g.uniform(0.5, 2, k).astype(np.float32)
    rs = g.uniform(0.5, 2, n).astype(np.float32)
    for eps, ww, rr in ((0.0, None, None), (0.1, w, rs)):
        loss, loss32 = np.empty(n, np.float32), np.empty(n, np.float32)
        gx, gx32 = np.empty_like(x), np.empty_like(x32)
        C.cross_entropy_index_rows(x, t, ww, -100, eps, 1e-3, 0.5, 0.5, 1.0, rr, loss, gx, 2)
        C.cross_entropy_index_rows(x32, t, ww, -100, eps, 1e-3, 0.5, 0.5, 1.0, rr, loss32, gx32, 2)
        np.testing.assert_array_equal(loss, loss32)
        same(gx, gx32, "cross entropy index grad")
        xi = x.copy()
        C.cross_entropy_index_rows(xi, t, ww, -100, eps, 1e-3, 0.5, 0.5, 1.0, rr, None, xi, 2)
        same(xi, gx32, "cross entropy grad = logits")
        q = g.random(shape)
        q = (q / q.sum(1, keepdims=True)).astype(hdt)
        C.cross_entropy_prob_rows(x, q, ww, eps, 0.0, 0.5, 0.5, 1.0, rr, loss, gx, 2)
        C.cross_entropy_prob_rows(x32, q.astype(np.float32), ww, eps, 0.0, 0.5, 0.5, 1.0, rr,
                                  loss32, gx32, 2)
        np.testing.assert_array_equal(loss, loss32)
        same(gx, gx32, "cross entropy prob grad")


@pytest.mark.parametrize("hdt", _half_dtypes(), ids=lambda d: np.dtype(d).name)
def test_half_conversions(isa, hdt):
    """The kernels' own conversions: every half value widens as astype does; float32
    values at and around every half rounding boundary narrow as astype does."""
    hdt = np.dtype(hdt)
    allh = np.arange(65536, dtype=np.uint16).view(hdt)
    w = C.widen_half(allh)
    want = allh.astype(np.float32)
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(w), nan)
    np.testing.assert_array_equal(w[~nan].view(np.uint32), want[~nan].view(np.uint32))
    fin = np.sort(np.unique(want[np.isfinite(want)].astype(np.float64)))
    mid = ((fin[1:] + fin[:-1]) / 2).astype(np.float32)
    u = mid.view(np.uint32)
    v = np.concatenate([mid, (u + 1).view(np.float32), (u - 1).view(np.float32),
                        np.array([np.inf, -np.inf, np.nan, 3.4028235e38, 1e-45], np.float32)])
    for n in (v.size, 13, 16, 31):
        vv = v[-n:]
        with np.errstate(over="ignore", invalid="ignore"):
            exp = vv.astype(hdt)
        got = C.narrow_half(vv, hdt)
        en = np.isnan(exp.astype(np.float32))
        np.testing.assert_array_equal(np.isnan(got.astype(np.float32)), en)
        np.testing.assert_array_equal(got.view(np.uint16)[~en], exp.view(np.uint16)[~en])


@pytest.mark.parametrize("hdt", _half_dtypes(), ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n", [1, 7, 1023, 1025, 5000])
def test_half_elementwise_blocks(hdt, n):
    """fa_unary / fa_unary_backward on half arrays (block widening on the stack): the
    float32 loops' results rounded, bit for bit, across block boundaries, in place."""
    from fastact._backends import c_elementwise as E
    hdt = np.dtype(hdt)
    g = rng(n)
    x = (g.standard_normal(n) * 5).astype(hdt)
    x[0] = np.nan
    gr = g.standard_normal(n).astype(hdt)
    for op in E.UNARY:
        o, o32 = np.empty_like(x), np.empty(n, np.float32)
        E.unary(op, x, o, 2)
        E.unary(op, x.astype(np.float32), o32, 2)
        want = o32.astype(hdt)
        ok = ~np.isnan(want.astype(np.float32))
        np.testing.assert_array_equal(np.isnan(o.astype(np.float32)), ~ok, err_msg=op)
        np.testing.assert_array_equal(o.view(np.uint16)[ok], want.view(np.uint16)[ok], err_msg=op)
        xi = x.copy()
        E.unary(op, xi, xi, 1)
        np.testing.assert_array_equal(xi.view(np.uint16)[ok], want.view(np.uint16)[ok], err_msg=op)
        b, b32 = np.empty_like(x), np.empty(n, np.float32)
        E.unary_backward(op, gr, x, b, 2)
        E.unary_backward(op, gr.astype(np.float32), x.astype(np.float32), b32, 2)
        want = b32.astype(hdt)
        ok = ~np.isnan(want.astype(np.float32))
        np.testing.assert_array_equal(b.view(np.uint16)[ok], want.view(np.uint16)[ok], err_msg=op)


@pytest.mark.parametrize("hdt", _half_dtypes(), ids=lambda d: np.dtype(d).name)
def test_half_rows_streamed_output(isa, hdt):
    """Half outputs large enough for non-temporal stores (rows of odd length: every
    alignment of a block's start), softmax and cross entropy's gradient in place."""
    hdt = np.dtype(hdt)
    g = rng(3)
    n, k = 5, 400001
    x = (g.standard_normal((n, k)) * 3).astype(hdt)
    x32 = x.astype(np.float32)
    o, o32 = np.empty_like(x), np.empty_like(x32)
    C.softmax_rows(x, None, o, 2)
    C.softmax_rows(x32, None, o32, 2)
    np.testing.assert_array_equal(o.view(np.uint16), o32.astype(hdt).view(np.uint16))
    t = g.integers(0, k, n)
    loss, loss32 = np.empty(n, np.float32), np.empty(n, np.float32)
    C.cross_entropy_index_rows(x, t, None, -100, 0.0, 0.0, 1.0, 1.0, 1.0, None, loss, x, 2)
    C.cross_entropy_index_rows(x32, t, None, -100, 0.0, 0.0, 1.0, 1.0, 1.0, None, loss32, x32, 2)
    np.testing.assert_array_equal(loss, loss32)
    np.testing.assert_array_equal(x.view(np.uint16), x32.astype(hdt).view(np.uint16))
