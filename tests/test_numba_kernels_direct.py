"""The numba backend's row kernels against ``numpy_ref``, called directly.

Special-value structure (NaN, +-inf, exact zeros) must match the reference on
the same dtype; values must be within the contract's accuracy of the
reference computed in float64.  Short rows (the transposed-tile path) and long
rows (the row path) are both covered, serial and threaded, in place and not.
"""

import numpy as np
import pytest

pytest.importorskip("numba")
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

from _numba_direct import (DTYPES, LSE_0_40, b_for, ce_index_inputs,  # noqa: E402
                           check_ce_calls, check_log_values, check_pattern, check_rel,
                           check_same, check_values, masks_for, near_zero_mask,
                           near_zero_rows, rtol0, special_rows, tol)
from fastact._backends import numpy_ref as R  # noqa: E402
from fastact._backends import numba_kernels as K  # noqa: E402

# short rows take the tile path (k < K._TILE_K), the others the row path
KS = [1, 5, K._TILE_K - 1, K._TILE_K, 517, 1100]
# rows longer than K._ONLINE: max and sum in one pass, chunk by chunk
KS_SOFTMAX = KS + [K._ONLINE, 2 * K._ONLINE + 37]


# ----------------------------------------------------------------------------
# softmax / log_softmax
# ----------------------------------------------------------------------------

@pytest.fixture(params=[False, True], ids=["cached", "streamed"])
def stream(request, monkeypatch):
    """Streamed: every output large enough for the non-temporal stores."""
    if request.param:
        monkeypatch.setattr(K, "_NT_BYTES", 0)
    return request.param


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", KS_SOFTMAX)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("name", ["softmax_rows", "log_softmax_rows"])
def test_softmax_like(name, masked, k, dtype, stream):
    rng = np.random.default_rng(k)
    x = special_rows(k, dtype, rng)
    mask = masks_for(x, rng) if masked else None
    got = np.full_like(x, 123.0)
    getattr(K, name)(x, mask, got, 1)
    want = np.empty_like(x)
    getattr(R, name)(x, mask, want)
    zero = (x == -np.inf) & np.isfinite(want)
    if mask is not None:
        zero |= ~mask
    if name == "softmax_rows":
        check_pattern(got, want, exact_zero=zero)
    else:
        check_pattern(got, want)
        assert np.all(got[zero] == -np.inf)
    want64 = np.empty(x.shape)
    getattr(R, name)(x.astype(np.float64), mask, want64)
    if name == "softmax_rows":
        check_values(got, want64, rtol=tol(dtype))
    else:
        check_log_values(got, want64, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_finfo_max_row(dtype):
    fmax = np.finfo(dtype).max
    for k in (3, 600):
        x = np.zeros((2, k), dtype)
        x[:, 0] = fmax
        x[:, 1] = -fmax
        out = np.empty_like(x)
        K.softmax_rows(x, None, out, 1)
        assert out[0, 0] == 1 and np.all(out[:, 1:] == 0)
        K.log_softmax_rows(x, None, out, 1)
        assert out[0, 0] == 0 and np.all(out[:, 1] == -np.inf)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [7, 300])
@pytest.mark.parametrize("name", ["softmax_rows", "log_softmax_rows"])
def test_in_place_and_threads(name, k, dtype):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((3000, k)) * 4).astype(dtype)
    x[5, 3] = np.nan
    x[9, :] = -np.inf
    want = np.empty_like(x)
    getattr(K, name)(x, None, want, 1)
    for nt in (1, 2, 3):
        y = x.copy()
        getattr(K, name)(y, None, y, nt)    # out is x
        # in place runs other machine code (one pointer): equal to rounding
        check_same(y, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["softmax_rows", "log_softmax_rows"])
def test_long_rows_growing_max(name, dtype, stream):
    """Long rows whose max grows chunk by chunk (spread > 88 and < 88 between
    chunks): the online rescaling of log_softmax, in place and threaded."""
    k = 3 * K._ONLINE + 11
    rng = np.random.default_rng(5)
    rows = [np.linspace(-300.0, 0.0, k), np.linspace(-60.0, 0.0, k),
            np.linspace(0.0, -300.0, k), rng.standard_normal(k) * 30]
    r = rng.standard_normal(k); r[: 2 * K._ONLINE] = -np.inf; rows.append(r)
    r = rng.standard_normal(k); r[-1] = np.nan; rows.append(r)
    r = rng.standard_normal(k); r[-1] = np.inf; rows.append(r)
    rows.append(np.full(k, -np.inf))
    x = np.array(rows * 6, dtype=dtype)
    want64 = np.empty(x.shape)
    getattr(R, name)(x.astype(np.float64), None, want64)
    want = np.empty_like(x)
    getattr(R, name)(x, None, want)
    got = np.empty_like(x)
    getattr(K, name)(x, None, got, 1)
    check_pattern(got, want)
    # float32 x - max is inexact beyond 16 below the max: check the values there
    near = x >= np.max(x, axis=1, keepdims=True) - 16
    if name == "softmax_rows":
        check_values(got[near], want64[near], rtol=tol(dtype))
    else:
        check_log_values(got[near], want64[near], dtype)
    for nt in (1, 2):
        y = x.copy()
        getattr(K, name)(y, None, y, nt)
        check_same(y, got)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["softmax_rows", "log_softmax_rows"])
@pytest.mark.parametrize("k", [K._TILE_K, 100, 1000, K._ONLINE + 1, K._ONLINE + 16,
                               2 * K._ONLINE + 37])
def test_streamed_unaligned_out(name, k, dtype, monkeypatch):
    """Non-temporal stores into rows at every alignment (scalar head and tail
    around the 64-byte vectors), out of place and in place."""
    monkeypatch.setattr(K, "_NT_BYTES", 0)
    rng = np.random.default_rng(k)
    n = 5
    # softmax: a spread where float32 x - max is exact enough for its 2e-6
    x = (rng.standard_normal((n, k)) * (3 if name == "softmax_rows" else 5)).astype(dtype)
    x[1, k // 2] = -np.inf
    want64 = np.empty(x.shape)
    getattr(R, name)(x.astype(np.float64), None, want64)
    for off in (0, 1, 3, 7):
        buf = np.full(n * k + 16, 77.0, dtype)
        out = buf[off:off + n * k].reshape(n, k)
        getattr(K, name)(x, None, out, 1)
        assert np.all(buf[:off] == 77) and np.all(buf[off + n * k:] == 77)
        assert np.all(out[1, k // 2] == (0 if name == "softmax_rows" else -np.inf))
        if name == "softmax_rows":
            check_values(out, want64, rtol=tol(dtype))
        else:
            check_log_values(out, want64, dtype)
        buf[off:off + n * k] = x.reshape(-1)
        getattr(K, name)(out, None, out, 1)
        if name == "softmax_rows":
            check_values(out, want64, rtol=tol(dtype))
        else:
            check_log_values(out, want64, dtype)


# ----------------------------------------------------------------------------
# logsumexp
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("with_b", [False, True])
@pytest.mark.parametrize("with_sign", [False, True])
def test_logsumexp(with_sign, with_b, masked, k, dtype):
    rng = np.random.default_rng(k + 7)
    x = special_rows(k, dtype, rng)
    n = x.shape[0]
    mask = masks_for(x, rng) if masked else None
    b = b_for(x, rng) if with_b else None
    got = np.full(n, 5.0, dtype)
    want = np.empty(n, dtype)
    gs = np.full(n, 5.0, dtype) if with_sign else None
    ws = np.empty(n, dtype) if with_sign else None
    K.logsumexp_rows(x, b, mask, got, gs, 1)
    R.logsumexp_rows(x, b, mask, want, ws)
    check_pattern(got, want)
    want64 = np.empty(n)
    ws64 = np.empty(n) if with_sign else None
    R.logsumexp_rows(x.astype(np.float64), None if b is None else b.astype(np.float64),
                     mask, want64, ws64)
    # exact cancellations (a zero sum) can differ in the last bit: compare where both agree
    ok = np.isfinite(want64) & np.isfinite(want)
    check_log_values(got[ok], want64[ok], dtype)
    if with_sign:
        check_pattern(gs, ws)
        np.testing.assert_array_equal(gs[ok], ws[ok])


def test_logsumexp_threads():
    rng = np.random.default_rng(3)
    for k in (5, 800):
        x = rng.standard_normal((4000, k)).astype(np.float32)
        a = np.empty(4000, np.float32)
        b = np.empty(4000, np.float32)
        K.logsumexp_rows(x, None, None, a, None, 1)
        K.logsumexp_rows(x, None, None, b, None, 2)
        check_same(b, a)


def test_exp_nonpos_f32():
    """The softmax exp (x - max <= 0): ~3e-7 relative down to finfo.tiny,
    subnormal results as exact as their spacing allows (2**n applied by an exact
    scaling, as np.exp gives them), NaN kept, -inf -> 0, 0 -> 1."""
    from numba import njit

    @njit
    def apply(z, o):
        for j in range(z.shape[0]):
            o[j] = K._exp_nonpos_f32(z[j])

    z = np.concatenate([-np.linspace(0.0, 110.0, 400_001),
                        [np.nan, -np.inf, -0.0, 0.0, -87.0, -87.3365, -87.3366, -103.5]]).astype(np.float32)
    o = np.empty_like(z)
    apply(z, o)
    want = np.exp(z.astype(np.float64))
    tiny = np.finfo(np.float32).tiny
    sub_ulp = 2.0 ** -149                                   # spacing of the subnormals
    normal = (want >= tiny) & ~np.isnan(z)
    assert np.max(np.abs(o[normal] - want[normal]) / want[normal]) < 3e-7
    small = (want < tiny) & ~np.isnan(z)
    assert np.any(small & (o > 0))                          # subnormals, not flushed
    assert np.all(np.abs(o[small] - want[small]) <= sub_ulp + 3e-7 * want[small])
    assert np.isnan(o[-8]) and o[-7] == 0 and o[-6] == 1 and o[-5] == 1


# ----------------------------------------------------------------------------
# long rows do not drift
# ----------------------------------------------------------------------------

def test_million_element_row():
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((1, 1 << 20)) * 2).astype(np.float32)
    x64 = x.astype(np.float64)
    m = x64.max()
    e = np.exp(x64 - m)
    s = np.sum(e)
    want = e / s
    out = np.empty_like(x)
    K.softmax_rows(x, None, out, 1)
    assert np.max(np.abs(out - want) / want) < 2e-6
    K.log_softmax_rows(x, None, out, 1)
    lw = (x64 - m) - np.log(s)
    assert np.max(np.abs(out - lw) / np.maximum(1, np.abs(lw))) < 4e-6
    r = np.empty(1, np.float32)
    K.logsumexp_rows(x, None, None, r, None, 1)
    assert abs(r[0] - (m + np.log(s))) < 4e-6 * max(1, abs(m + np.log(s)))


# ----------------------------------------------------------------------------
# backward
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", KS)
def test_softmax_backward(k, dtype):
    rng = np.random.default_rng(k + 1)
    x = rng.standard_normal((40, k)).astype(dtype)
    y = np.empty_like(x)
    R.softmax_rows(x, None, y)
    g = rng.standard_normal((40, k)).astype(dtype)
    got = np.empty_like(x)
    K.softmax_backward_rows(g, y, got, 1)
    want64 = np.empty(x.shape)
    R.softmax_backward_rows(g.astype(np.float64), y.astype(np.float64), want64)
    check_values(got, want64, rtol=10 * tol(dtype), atol_scale=10 * tol(dtype))
    # in place, on either input
    g2 = g.copy()
    K.softmax_backward_rows(g2, y, g2, 1)
    check_same(g2, got)
    y2 = y.copy()
    K.softmax_backward_rows(g, y2, y2, 2)
    check_same(y2, got)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("masked", [False, True])
def test_log_softmax_backward(masked, k, dtype):
    rng = np.random.default_rng(k + 2)
    x = rng.standard_normal((40, k)).astype(dtype)
    mask = masks_for(x, rng) if masked else None
    y = np.empty_like(x)
    R.log_softmax_rows(x, mask, y)
    g = rng.standard_normal((40, k)).astype(dtype)
    if masked:
        g[~mask] = np.nan                 # never read
    got = np.empty_like(x)
    K.log_softmax_backward_rows(g, y, mask, got, 1)
    want = np.empty_like(x)
    R.log_softmax_backward_rows(g, y, mask, want)
    check_pattern(got, want)
    want64 = np.empty(x.shape)
    R.log_softmax_backward_rows(g.astype(np.float64), y.astype(np.float64), mask, want64)
    check_values(got, want64, rtol=10 * tol(dtype), atol_scale=10 * tol(dtype))
    if masked:
        assert np.all(got[~mask] == 0)
    g2 = g.copy()
    K.log_softmax_backward_rows(g2, y, mask, g2, 2)
    check_same(g2, got)


def test_log_softmax_backward_extreme_y():
    # exp(y) over its whole range, including overflow and -inf
    y = np.array([[-np.inf, -200.0, -90.0, 0.0, 50.0, 88.0, 89.0, 1000.0]], np.float32)
    g = np.ones_like(y)
    got = np.empty_like(y)
    want = np.empty_like(y)
    K.log_softmax_backward_rows(g, y, None, got, 1)
    R.log_softmax_backward_rows(g, y, None, want)
    check_pattern(got, want)
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=1e-6)


# ----------------------------------------------------------------------------
# cross entropy
# ----------------------------------------------------------------------------

def test_check_targets():
    t = np.array([0, 3, -100, 2, 5, -1], np.int64)
    assert K.check_targets(t, 4, -100) == R.check_targets(t, 4, -100) == 4
    assert K.check_targets(t[:4], 4, -100) == -1
    assert K.check_targets(t, 4, 5) == R.check_targets(t, 4, 5) == 2


def _ce_cases():
    for dtype in DTYPES:
        for k in (1, 6, K._TILE_K - 1, 300):
            for weighted in (False, True):
                for eps in (0.0, 0.1):
                    for z in (0.0, 1e-3):
                        yield dtype, k, weighted, eps, z


@pytest.mark.parametrize("dtype,k,weighted,eps,z", list(_ce_cases()))
def test_cross_entropy_index(dtype, k, weighted, eps, z):
    rng = np.random.default_rng(k)
    x = special_rows(k, dtype, rng)
    n = x.shape[0]
    t, w, rs, (a, b, g) = ce_index_inputs(x, rng, weighted)
    check_ce_calls(lambda rs_, lg, gg: K.cross_entropy_index_rows(x, t, w, -100, eps, z, a, b, g,
                                                                  rs_, lg, gg, 1),
                   x, t, w, eps, z, (a, b, g), rs)
    # fused, in place: the gradient overwrites the logits
    lg = np.empty(n, dtype)
    gg = np.empty_like(x)
    K.cross_entropy_index_rows(x, t, w, -100, eps, z, a, b, g, None, lg, gg, 1)
    for nt in (1, 2):
        xi = x.copy()
        li = np.empty(n, dtype)
        K.cross_entropy_index_rows(xi, t, w, -100, eps, z, a, b, g, None, li, xi, nt)
        check_same(li, lg)
        check_same(xi, gg)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 6, 300])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("eps,z", [(0.0, 0.0), (0.2, 1e-3)])
def test_cross_entropy_prob(dtype, k, weighted, eps, z):
    rng = np.random.default_rng(k + 5)
    x = special_rows(k, dtype, rng)
    n = x.shape[0]
    q = rng.random((n, k)).astype(dtype)
    q /= q.sum(axis=1, keepdims=True)
    w = (rng.random(k) + 0.5).astype(dtype) if weighted else None
    rs = rng.random(n).astype(dtype)
    a, b, g = 1.0 / n, 0.5, 0.7
    check_ce_calls(lambda rs_, lg, gg: K.cross_entropy_prob_rows(x, q, w, eps, z, a, b, g, rs_,
                                                                 lg, gg, 1),
                   x, q, w, eps, z, (a, b, g), rs)
    lg = np.empty(n, dtype)
    gg = np.empty_like(x)
    xi = x.copy()
    li = np.empty(n, dtype)
    K.cross_entropy_prob_rows(xi, q, w, eps, z, a, b, g, None, li, xi, 2)
    K.cross_entropy_prob_rows(x, q, w, eps, z, a, b, g, None, lg, gg, 1)
    check_same(xi, gg)
    check_same(li, lg)


def test_cross_entropy_large_threads():
    rng = np.random.default_rng(5)
    for k in (10, 2000):
        n = 200_000 // k
        x = rng.standard_normal((n, k)).astype(np.float32)
        t = rng.integers(0, k, n).astype(np.int64)
        out = [None, None]
        for q, nt in enumerate((1, 2)):
            lg = np.empty(n, np.float32)
            gg = np.empty_like(x)
            K.cross_entropy_index_rows(x, t, None, -100, 0.0, 0.0, 1.0 / n, 0.0, 1.0, None,
                                       lg, gg, nt)
            out[q] = (lg, gg)
        check_same(out[1][0], out[0][0])
        check_same(out[1][1], out[0][1])


# ----------------------------------------------------------------------------
# results near 0 keep their relative accuracy (SPEC, as SciPy's logsumexp):
# log(sum) = log1p(terms below the max) when one term is at the max
# ----------------------------------------------------------------------------

#: rows of each path: tiles, row path (pipelined log_softmax), long rows (online chunks)
KS_NEAR0 = [2, 5, K._TILE_K - 1, K._TILE_K, 517, K._ONLINE, K._ONLINE + 1,
            2 * K._ONLINE + 37]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", KS_NEAR0)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("with_sign", [False, True])
def test_logsumexp_near_zero(with_sign, masked, k, dtype):
    x = near_zero_rows(k, dtype)
    n = x.shape[0]
    mask = near_zero_mask(x) if masked else None
    got = np.full(n, 7.0, dtype)
    sg = np.full(n, 7.0, dtype) if with_sign else None
    K.logsumexp_rows(x, None, mask, got, sg, 1)
    want64 = np.empty(n)
    R.logsumexp_rows(x.astype(np.float64), None, mask, want64, None)
    check_rel(got, want64, dtype)
    if not masked or k >= 3:
        assert abs(got[0] - LSE_0_40) <= rtol0(dtype) * LSE_0_40
    if with_sign:
        assert np.all(sg == 1)
    # many such rows: the tiles and threads
    xs = np.repeat(x, 700 // n + 1, axis=0)
    ms = None if mask is None else np.repeat(mask, 700 // n + 1, axis=0)
    got2 = np.empty(xs.shape[0], dtype)
    K.logsumexp_rows(xs, None, ms, got2, None, 2)
    check_rel(got2, np.repeat(want64, 700 // n + 1), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [3, 5, 600])
@pytest.mark.parametrize("masked", [False, True])
def test_logsumexp_near_zero_b_and_sign(masked, k, dtype):
    """With b: c (the weights at the max, ties summed) and r (the others)
    apart, as numpy_ref._log_sum: t = r / c, sign(c) sign(t + 1), t < -1 ->
    -t - 2, c == 0 -> log|r|."""
    rows, bs = [], []

    def row(xv, bv):
        r = np.full(k, -200.0)
        b = np.ones(k)
        r[:len(xv)] = xv
        b[:len(bv)] = bv
        rows.append(r)
        bs.append(b)

    row([0.0, -40.0], [1.0])                      # 4.2e-18, +
    row([0.0, 0.0, -40.0], [0.5, 0.5])            # ties: c = 1, 4.2e-18
    row([0.0, -40.0], [1.0, -1.0])                # log(1 - e^-40): -4.2e-18, +
    row([0.0, -40.0], [-1.0, 1.0])                # c = -1: -4.2e-18, - (NaN without sign)
    row([0.0, 0.0, -40.0], [1.0, -1.0])           # c = 0: log(r) = -40 (+ the rest)
    row([0.0, 0.0, -40.0], [1.0, -1.0, -1.0])     # c = 0, r < 0: -40, -
    row([0.0, -1.0], [1.0, -3.0])                 # t < -1: log(3/e - 1), -
    row([0.0, -1.0], [1.0, -np.e])                # 1 - e/e: cancels, -inf or tiny (t = -1)
    row([0.0, -40.0], [2.0, 1.0])                 # log 2 + ...
    x = np.array(rows, dtype=dtype)
    b = np.array(bs, dtype=dtype)
    b[:, 3:][x[:, 3:] == -200] = 0.5
    mask = None
    if masked:
        mask = np.ones(x.shape, bool)
        hide = x[:, k - 1] == -200
        x[hide, k - 1] = 3.0                      # hidden, with b != 0
        mask[hide, k - 1] = False
    n = x.shape[0]
    want64 = np.empty(n)
    ws64 = np.empty(n)
    R.logsumexp_rows(x.astype(np.float64), b.astype(np.float64), mask, want64, ws64)
    got = np.full(n, 7.0, dtype)
    sg = np.full(n, 7.0, dtype)
    K.logsumexp_rows(x, b, mask, got, sg, 1)
    keep = np.ones(n, bool)
    keep[7] = False                               # the cancellation: rounding decides
    check_rel(got[keep], want64[keep], dtype)
    np.testing.assert_array_equal(sg[keep], ws64[keep])
    for i in (0, 1):
        assert abs(got[i] - LSE_0_40) <= rtol0(dtype) * LSE_0_40
    assert abs(got[3] + LSE_0_40) <= rtol0(dtype) * LSE_0_40 and sg[3] == -1
    nosign = np.full(n, 7.0, dtype)
    K.logsumexp_rows(x, b, mask, nosign, None, 1)
    want = np.where(ws64 < 0, np.nan, want64)
    check_rel(nosign[keep], want[keep], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", KS_NEAR0)
@pytest.mark.parametrize("masked", [False, True])
def test_log_softmax_near_zero(masked, k, dtype, stream):
    """The max entry is -log1p(r): relative accuracy on every path (tiles,
    pipelined rows, long rows with the max in an early or a late chunk,
    streamed, masked), in place and threaded."""
    x = near_zero_rows(k, dtype)
    mask = near_zero_mask(x) if masked else None
    want64 = np.empty(x.shape)
    R.log_softmax_rows(x.astype(np.float64), mask, want64)
    got = np.full_like(x, 7.0)
    K.log_softmax_rows(x, mask, got, 1)
    check_rel(got, want64, dtype)
    if not masked or k >= 3:
        assert abs(got[0, 0] + LSE_0_40) <= rtol0(dtype) * LSE_0_40
    # many rows (tiles, threads), in place
    reps = max(1, 40000 // (k * x.shape[0]))
    xs = np.repeat(x, reps, axis=0)
    ms = None if mask is None else np.repeat(mask, reps, axis=0)
    w = np.repeat(want64, reps, axis=0)
    for nt in (1, 2):
        y = xs.copy()
        K.log_softmax_rows(y, ms, y, nt)
        check_rel(y, w, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [2, 5, K._TILE_K - 1, K._TILE_K, 517, 2 * K._ONLINE + 37])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("z", [0.0, 1e-3])
def test_cross_entropy_index_near_zero(z, weighted, k, dtype):
    """The per-row loss (m - x_t) + log(sum) with x_t the max: log1p(r), on
    the tile and row paths, with the gradient stored or not, in place."""
    x = near_zero_rows(k, dtype)
    n = x.shape[0]
    t = np.argmax(x, axis=1).astype(np.int64)
    w = np.linspace(0.5, 2.0, k).astype(dtype) if weighted else None
    a, b, g = 1.0, 0.5, 1.0
    l64 = np.empty(n)
    R.cross_entropy_index_rows(x.astype(np.float64), t, None if w is None else w.astype(np.float64),
                               -100, 0.0, z, a, b, g, None, l64, None)
    reps = max(1, 40000 // (k * n))
    xs = np.repeat(x, reps, axis=0)
    ts = np.repeat(t, reps)
    ws = np.repeat(l64, reps)
    for want_grad in (False, True):
        lg = np.full(n, 7.0, dtype)
        gg = np.empty_like(x) if want_grad else None
        K.cross_entropy_index_rows(x, t, w, -100, 0.0, z, a, b, g, None, lg, gg, 1)
        check_rel(lg, l64, dtype)
        if z == 0 and not weighted:
            assert abs(lg[0] - LSE_0_40) <= rtol0(dtype) * LSE_0_40
    for nt in (1, 2):
        xi = xs.copy()
        li = np.empty(xs.shape[0], dtype)
        K.cross_entropy_index_rows(xi, ts, w, -100, 0.0, z, a, b, g, None, li, xi, nt)
        check_rel(li, ws, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [2, 5, 517, 2 * K._ONLINE + 37])
@pytest.mark.parametrize("z", [0.0, 1e-3])
def test_cross_entropy_prob_near_zero(z, k, dtype):
    """Probability targets, one-hot at the max: the loss is log1p(r)."""
    x = near_zero_rows(k, dtype)
    n = x.shape[0]
    q = np.zeros(x.shape, dtype)
    q[np.arange(n), np.argmax(x, axis=1)] = 1
    a, b, g = 1.0, 0.5, 1.0
    l64 = np.empty(n)
    R.cross_entropy_prob_rows(x.astype(np.float64), q.astype(np.float64), None, 0.0, z,
                              a, b, g, None, l64, None)
    for want_grad in (False, True):
        lg = np.full(n, 7.0, dtype)
        gg = np.empty_like(x) if want_grad else None
        K.cross_entropy_prob_rows(x, q, None, 0.0, z, a, b, g, None, lg, gg, 1)
        check_rel(lg, l64, dtype)
        if z == 0:
            assert abs(lg[0] - LSE_0_40) <= rtol0(dtype) * LSE_0_40
    xi = x.copy()
    li = np.empty(n, dtype)
    K.cross_entropy_prob_rows(xi, q, None, 0.0, z, a, b, g, None, li, xi, 1)
    check_rel(li, l64, dtype)
