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

from fastact._backends import numpy_ref as R  # noqa: E402
from fastact._backends import numba_kernels as K  # noqa: E402

DTYPES = [np.float32, np.float64]
# short rows take the tile path (k < K._TILE_K), the others the row path
KS = [1, 5, K._TILE_K - 1, K._TILE_K, 517, 1100]
# rows longer than K._ONLINE: max and sum in one pass, chunk by chunk
KS_SOFTMAX = KS + [K._ONLINE, 2 * K._ONLINE + 37]


def tol(dtype):
    return 2e-6 if dtype == np.float32 else 1e-12


def ltol(dtype):
    return 4e-6 if dtype == np.float32 else 1e-12


def special_rows(k, dtype, rng):
    """Rows of length k: random ones and every special value of the contract."""
    fmax = np.finfo(dtype).max
    big = 300.0 if dtype == np.float32 else 2000.0   # spread > 88 / > 709
    rows = []

    def rnd(scale=3.0):
        return (rng.standard_normal(k) * scale).astype(dtype)

    rows.append(rnd())
    rows.append(rnd(big))
    r = rnd(); r[k // 2] = -np.inf; rows.append(r)
    rows.append(np.full(k, -np.inf, dtype))
    r = rnd(); r[k - 1] = np.nan; rows.append(r)
    r = rnd(); r[0] = np.nan; rows.append(r)
    r = rnd(); r[k // 3] = np.inf; rows.append(r)
    r = rnd(); r[0] = np.inf; r[-1] = -np.inf; rows.append(r)
    r = rnd(); r[0] = np.inf; r[-1] = np.nan; rows.append(r)
    r = rnd(); r[0] = fmax; r[-1] = -fmax; rows.append(r)
    r = np.zeros(k, dtype); r[0] = 3e38 if dtype == np.float32 else 1e308
    r[-1] = -r[0]; rows.append(r)
    rows.append(np.full(k, 7.0, dtype))
    r = np.full(k, -np.inf, dtype); r[k // 2] = 2.5; rows.append(r)
    r = np.full(k, fmax, dtype); rows.append(r)
    r = rnd(); r[::2] = -200.0 if dtype == np.float32 else -1500.0; rows.append(r)
    r = rnd(); r[k // 2] = 1000.0; rows.append(r)
    for _ in range(20):   # enough rows for more than one tile
        rows.append(rnd())
    return np.array(rows, dtype=dtype)


def masks_for(x, rng):
    n, k = x.shape
    m = rng.random((n, k)) > 0.3
    m[0] = False                 # nothing selected
    m[2, :] = False              # only the -inf entry selected
    m[2, k // 2] = True
    m[4, :] = True               # the NaN hidden ...
    m[4, k - 1] = False
    m[6, :] = True               # ... and the +inf hidden
    m[6, k // 3] = False
    m[7, 0] = False              # +inf hidden, -inf kept
    m[-1] = True
    return m


def check_pattern(got, want, exact_zero=None):
    """NaN and +-inf exactly where the reference has them."""
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    inf = np.isinf(want)
    np.testing.assert_array_equal(np.isinf(got), inf)
    np.testing.assert_array_equal(got[inf], want[inf])
    if exact_zero is not None:
        assert np.all(got[exact_zero] == 0)


def check_values(got, want64, rtol=None, atol_scale=None):
    """Finite entries within rtol * |want| (+ atol_scale * max|want| when given).

    Only where the result is finite in both precisions (x - max can overflow
    in float32 and not in float64); the pattern check covers the rest.
    """
    fin = np.isfinite(want64) & np.isfinite(got)
    g = got[fin].astype(np.float64)
    w = want64[fin]
    lim = rtol * np.abs(w)
    if atol_scale is not None and w.size:
        lim = lim + atol_scale * max(np.max(np.abs(w)), 1e-2)
    tiny = np.finfo(got.dtype).tiny
    err = np.abs(g - w)
    assert np.all(err <= lim + tiny), f"max excess {np.max(err - lim)}"


def check_log_values(got, want64, dtype):
    fin = np.isfinite(want64) & np.isfinite(got)
    err = np.abs(got[fin].astype(np.float64) - want64[fin])
    lim = ltol(dtype) * np.maximum(1.0, np.abs(want64[fin]))
    assert np.all(err <= lim), f"max excess {np.max(err - lim)}"


def check_same(got, want):
    """In place or threaded against serial and out of place: the same up to
    rounding (other machine code may sum in another order)."""
    check_pattern(got, want)
    fin = np.isfinite(want)
    t = 4 * tol(want.dtype)
    scale = np.max(np.abs(want[fin])) if fin.any() else 0.0
    np.testing.assert_allclose(got[fin], want[fin], rtol=t, atol=t * scale)


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
    b = None
    if with_b:
        b = rng.standard_normal((n, k)).astype(dtype)
        b[rng.random((n, k)) < 0.2] = 0
        b[1] = np.abs(b[1])
        b[3, 0] = np.nan
        b[6] = -1.0                       # +inf entry with negative weight
        b[7] = 0.0                        # nothing takes part
        b[-1] = 1.0
        b[-2, :] = 0.5
        b[-2, 0] = -0.5                   # sums of mixed sign
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
    t = rng.integers(0, k, n).astype(np.int64)
    t[1] = -100
    t[3] = -100                          # an ignored special row
    w = (rng.random(k) + 0.5).astype(dtype) if weighted else None
    rs = rng.random(n).astype(dtype)
    a, b, g = 1.0 / n, 0.5, 1.5
    for row_scale in (None, rs):
        for want_loss, want_grad in ((True, True), (True, False), (False, True)):
            lg = np.full(n, 9.0, dtype) if want_loss else None
            gg = np.full_like(x, 9.0) if want_grad else None
            K.cross_entropy_index_rows(x, t, w, -100, eps, z, a, b, g, row_scale, lg, gg, 1)
            lw = np.empty(n, dtype) if want_loss else None
            gw = np.empty_like(x) if want_grad else None
            R.cross_entropy_index_rows(x, t, w, -100, eps, z, a, b, g, row_scale, lw, gw)
            x64 = x.astype(np.float64)
            l64 = np.empty(n) if want_loss else None
            g64 = np.empty(x.shape) if want_grad else None
            R.cross_entropy_index_rows(x64, t, w, -100, eps, z, a, b, g, row_scale, l64, g64)
            if want_loss:
                check_pattern(lg, lw)
                check_values(lg, l64, rtol=10 * tol(dtype), atol_scale=10 * tol(dtype))
            if want_grad:
                check_pattern(gg, gw)
                check_values(gg, g64, rtol=10 * tol(dtype), atol_scale=10 * tol(dtype))
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
    for row_scale in (None, rs):
        lg = np.empty(n, dtype)
        gg = np.empty_like(x)
        K.cross_entropy_prob_rows(x, q, w, eps, z, a, b, g, row_scale, lg, gg, 1)
        lw = np.empty(n, dtype)
        gw = np.empty_like(x)
        R.cross_entropy_prob_rows(x, q, w, eps, z, a, b, g, row_scale, lw, gw)
        check_pattern(lg, lw)
        check_pattern(gg, gw)
        l64 = np.empty(n)
        g64 = np.empty(x.shape)
        R.cross_entropy_prob_rows(x.astype(np.float64), q.astype(np.float64),
                                  None if w is None else w.astype(np.float64),
                                  eps, z, a, b, g, row_scale, l64, g64)
        check_values(lg, l64, rtol=10 * tol(dtype), atol_scale=10 * tol(dtype))
        check_values(gg, g64, rtol=10 * tol(dtype), atol_scale=10 * tol(dtype))
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

#: logsumexp([0, -40]) = log1p(exp(-40))
LSE_0_40 = 4.2483542552915889e-18
#: rows of each path: tiles, row path (pipelined log_softmax), long rows (online chunks)
KS_NEAR0 = [2, 5, K._TILE_K - 1, K._TILE_K, 517, K._ONLINE, K._ONLINE + 1,
            2 * K._ONLINE + 37]


def rtol0(dtype):
    return 1e-6 if dtype == np.float32 else 1e-15


def near_zero_rows(k, dtype):
    """Rows whose log(sum exp(x - max)) is near 0 (one term at the max, the
    others far below), some with ties at the max; every x - max exact.  For
    long rows the max is in an early chunk (0) or in the last one (k - 1),
    the -40 term before or after it (row 1: -40 is the first chunk's max,
    an ordinary term once the max moves)."""
    rest = -200.0
    rows = []

    def row(**at):
        r = np.full(k, rest)
        for j, v in at.items():
            r[int(j[1:]) % k] = v
        rows.append(r)

    row(p0=0.0, p1=-40.0)                      # [0, -40, ...]: LSE_0_40
    row(p0=-40.0, **{f"p{k - 1}": 0.0})        # max last, -40 first
    row(p0=0.0, **{f"p{k - 1}": -40.0})        # max first, -40 last
    row(**{f"p{k // 2}": 2.0, f"p{k // 2 + 1}": -38.0})   # max 2: m + 4.2e-18
    if k >= 3:
        row(p0=0.0, p1=-40.0, **{f"p{k - 1}": -41.0})
        row(p0=0.0, p1=-40.0, **{f"p{k - 1}": 0.0})         # a tie: log(2 + ...)
    else:
        row(p0=0.0, p1=0.0)
    row(p0=-1.0, **{f"p{k - 1}": 0.0})         # the early max -1 moves into r
    return np.array(rows, dtype=dtype)


def check_rel(got, want64, dtype, rtol=None):
    """Relative error, however small the value (specials must match)."""
    got = np.asarray(got)
    want64 = np.asarray(want64, np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want64))
    fin = np.isfinite(want64)
    np.testing.assert_array_equal(got[~fin], want64[~fin])
    err = np.abs(got[fin].astype(np.float64) - want64[fin])
    lim = (rtol0(dtype) if rtol is None else rtol) * np.abs(want64[fin])
    assert np.all(err <= lim), (f"worst {np.max(err / np.maximum(lim, 1e-300))} x the bound",
                                got[fin][err > lim][:4], want64[fin][err > lim][:4])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", KS_NEAR0)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("with_sign", [False, True])
def test_logsumexp_near_zero(with_sign, masked, k, dtype):
    x = near_zero_rows(k, dtype)
    n = x.shape[0]
    mask = None
    if masked:                  # a larger entry hidden: it must not reach either sum
        mask = np.ones(x.shape, bool)
        j = k // 3 if k >= 3 else 1
        hide = x[:, j] == -200
        x[hide, j] = 5.0
        mask[hide, j] = False
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
    mask = None
    if masked:
        mask = np.ones(x.shape, bool)
        j = k // 3 if k >= 3 else 1
        hide = x[:, j] == -200
        x[hide, j] = 5.0
        mask[hide, j] = False
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
