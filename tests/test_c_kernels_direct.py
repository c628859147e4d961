"""The C backend's row kernels called directly, against the NumPy reference.

Every kernel, float32 and float64, every ISA path this CPU can run (forced
with ``c_kernels.force_isa``), random data and the special values of the
contract, long rows, aliasing, threads and streamed outputs.  More in
test_c_kernels_rows.py (short rows in tiles, row tails, the log near 0) and
test_c_kernels_layouts.py (the strided driver, half dtypes, the elementwise
kernels per ISA); shared pieces in _c_direct.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading


import numpy as np
import pytest

from fastact._backends import numpy_ref as R

from _c_direct import C, DTYPES, SHAPES, assert_close, check_vs_ref, isa, rng  # noqa: F401


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


CE_SHAPES = [(1, 1), (37, 10), (17, 63), (5, 1000), (3, 4099)]


def _ce_logits(seed, shape, dtype):
    """The generator of seed and logits of the shape drawn from it."""
    g = rng(seed)
    return g, (g.standard_normal(shape) * 4).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", CE_SHAPES)
def test_cross_entropy_index_random(isa, dtype, shape):
    (n, k), g, x = shape, *_ce_logits(5, shape, dtype)
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
@pytest.mark.parametrize("shape", CE_SHAPES)
def test_cross_entropy_prob_random(isa, dtype, shape):
    (n, k), g, x = shape, *_ce_logits(6, shape, dtype)
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
        check_vs_ref(name, x, None, dtype, f"{name} long", scale=4)


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
    buf = np.empty(n * k + 2 * 64, dtype)
    line = 64 // np.dtype(dtype).itemsize
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
        # out off a vector and off a cache line: streamed lines and the
        # ordinary stores around them (shared lines) must meet exactly
        base = (-(buf.ctypes.data // buf.itemsize)) % line
        for off in (1, line // 4, line // 2, line - 1):
            un = buf[base + off:base + off + n * k].reshape(n, k)
            for nt in (1, 2):
                un[...] = 7
                getattr(C, name)(x, None, un, nt)
                np.testing.assert_array_equal(un, got, err_msg=f"offset {off} threads {nt}")
        xi = x.copy()
        getattr(C, name)(xi, None, xi)
        np.testing.assert_array_equal(xi, got)
