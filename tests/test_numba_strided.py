"""The numba backend's strided kernels (any axis, issue 18) called directly:
``*_strided`` over ``(outer, k, inner)`` against ``numpy_ref``'s rows and the
numba row kernels on the moved rows (``(outer * inner, k)``), and against the
C backend's strided kernels when it is built.

The rows of ``_numba_direct`` (every special value of the contract: NaN,
+-inf, nothing selected, spreads > 88 / > 709, finfo.max) are laid down the
columns; inner sizes around the vector width, short and long columns, both
paths of softmax-like kernels (blocks, chunks), streamed outputs, in place,
two threads.
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

#: (k, inner): inner sizes 2, 3, 7, 8, 9, 16, 17 and large; short columns (the
#: row kernels' tile path), long ones (several chunks of the chunked path, and
#: narrow blocks for the kernels without it)
KI = [(5, 2), (39, 3), (7, 7), (40, 8), (33, 9), (517, 16), (6, 17), (1100, 300), (3, 1000),
      (5000, 3), (4100, 17)]
#: inner 1: the row kernels themselves
KI_ALL = KI + [(9, 1)]


def _ids(ki):
    return f"k{ki[0]}-in{ki[1]}"


def to_cols(rows, inner):
    """(n, k) rows -> an (outer, k, inner) array whose moved rows are ``rows``
    cycled, ``outer`` (> 1) large enough to hold every row once."""
    n, k = rows.shape
    outer = max(2, -(-n // inner))
    idx = np.arange(outer * inner) % n
    return np.ascontiguousarray(rows[idx].reshape(outer, inner, k).transpose(0, 2, 1))


def moved(a):
    """(outer, k, inner) -> (outer * inner, k) rows (a copy)."""
    o, k, i = a.shape
    return np.ascontiguousarray(a.transpose(0, 2, 1)).reshape(o * i, k)


def oki(a):
    return a.shape


def _outer(inner):
    """At least 3 outer indices and 8 columns in all (masks_for's rows)."""
    return max(3, -(-8 // inner))


@pytest.fixture(params=["blocks", "chunks"])
def path(request, monkeypatch):
    """Every softmax-like call on one path: a k x W block at a time, or the
    chunked path of long columns."""
    big = request.param == "chunks"
    monkeypatch.setattr(K, "_CHUNK_BELOW", dict.fromkeys(K._CHUNK_BELOW, 1 << 40 if big else 0))
    return request.param


@pytest.fixture
def streamed(monkeypatch):
    """Every softmax-like output without a mask written with non-temporal stores."""
    monkeypatch.setattr(K, "_STRIDED_NT_BYTES", 0)
    monkeypatch.setattr(K, "_NT_ROW_BYTES", 0)


@pytest.fixture
def threaded(monkeypatch):
    """Every call large enough for threads: the parallel kernels run."""
    monkeypatch.setattr(K, "_PAR_MIN_ELEMS", 0)
    monkeypatch.setattr(K, "_PAR_MIN_ELEMS_BWD", 0)


# ----------------------------------------------------------------------------
# softmax, log_softmax
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ki", KI_ALL, ids=_ids)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_like(name, masked, ki, dtype, path):
    k, inner = ki
    rng = np.random.default_rng(k + inner)
    rows = special_rows(k, dtype, rng)
    x = to_cols(rows, inner)
    mask = to_cols(masks_for(rows, rng), inner) if masked else None
    xr = moved(x)
    mr = None if mask is None else moved(mask)
    got = np.full_like(x, 123.0)
    getattr(K, name + "_strided")(x, mask, got, *oki(x), 1)
    got = moved(got)
    want = np.empty_like(xr)
    getattr(R, name + "_rows")(xr, mr, want)
    zero = (xr == -np.inf) & np.isfinite(want)
    if mr is not None:
        zero |= ~mr
    want64 = np.empty(xr.shape)
    getattr(R, name + "_rows")(xr.astype(np.float64), mr, want64)
    if name == "softmax":
        check_pattern(got, want, exact_zero=zero)
        check_values(got, want64, rtol=tol(dtype))
    else:
        check_pattern(got, want)
        assert np.all(got[zero] == -np.inf)
        check_log_values(got, want64, dtype)
    rk = np.empty_like(xr)
    getattr(K, name + "_rows")(xr, mr, rk, 1)
    check_same(got, rk)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ki", [(7, 9), (300, 17), (5000, 3)], ids=_ids)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_like_in_place_threads(name, ki, dtype, threaded, path):
    k, inner = ki
    rng = np.random.default_rng(1)
    rows = special_rows(k, dtype, rng)
    x = to_cols(np.concatenate([rows] * 3), inner)
    mask = to_cols(np.concatenate([masks_for(rows, rng)] * 3), inner)
    f = getattr(K, name + "_strided")
    for m in (None, mask):
        want = np.empty_like(x)
        f(x, m, want, *oki(x), 1)
        for nt in (1, 2):
            y = x.copy()
            f(y, m, y, *oki(x), nt)       # out is x
            check_same(y, want)
            o = np.empty_like(x)
            f(x, m, o, *oki(x), nt)
            check_same(o, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ki", [(5, 7), (40, 300), (5000, 17)], ids=_ids)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_streamed(name, ki, dtype, path, streamed):
    """Non-temporal stores, in place too, out at every offset within a cache
    line: the ordinary stores' result; special columns after the stream."""
    k, inner = ki
    rng = np.random.default_rng(k)
    x = to_cols(special_rows(k, dtype, rng), inner)
    f = getattr(K, name + "_strided")
    want = np.empty_like(x)
    K._STRIDED_NT_BYTES = 1 << 60
    f(x, None, want, *oki(x), 1)
    K._STRIDED_NT_BYTES = 0
    for off in range(0, 64 // x.itemsize, 3):
        o = np.empty(x.size + off, dtype)[off:].reshape(x.shape)
        f(x, None, o, *oki(x), 1)
        check_same(o, want)
    y = x.copy()
    f(y, None, y, *oki(x), 1)
    check_same(y, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ki", [(2, 16), (5, 9), (517, 8), (5000, 3)], ids=_ids)
@pytest.mark.parametrize("masked", [False, True])
def test_near_zero(masked, ki, dtype, path):
    """log(sum) near 0 keeps its relative accuracy (log1p of the terms below
    the max) down the columns: logsumexp and log_softmax."""
    k, inner = ki
    rows = near_zero_rows(k, dtype)
    mr = near_zero_mask(rows) if masked else None
    x = to_cols(rows, inner)
    mask = None if mr is None else to_cols(mr, inner)
    n = rows.shape[0]
    outer = x.shape[0]
    got = np.full(outer * inner, 7.0, dtype)
    sg = np.full(outer * inner, 7.0, dtype)
    K.logsumexp_strided(x, None, mask, got, sg, *oki(x), 1)
    want64 = np.empty(n)
    R.logsumexp_rows(rows.astype(np.float64), None, mr, want64, None)
    cyc = np.arange(outer * inner) % n
    check_rel(got, want64[cyc], dtype)
    if not masked or k >= 3:
        assert abs(got[0] - LSE_0_40) <= rtol0(dtype) * LSE_0_40
    assert np.all(sg == 1)
    ls = np.empty_like(x)
    K.log_softmax_strided(x, mask, ls, *oki(x), 1)
    ls = moved(ls)
    w64 = np.empty(rows.shape)
    R.log_softmax_rows(rows.astype(np.float64), mr, w64)
    sel = np.isfinite(w64[cyc]) & (np.abs(w64[cyc]) < 1e-3)   # the entries at the max
    check_rel(ls[sel], w64[cyc][sel], dtype, rtol=4 * rtol0(dtype))


# ----------------------------------------------------------------------------
# logsumexp
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ki", KI_ALL, ids=_ids)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("with_b", [False, True])
def test_logsumexp(with_b, masked, ki, dtype, path):
    k, inner = ki
    rng = np.random.default_rng(k + 7)
    rows = special_rows(k, dtype, rng)
    mr = masks_for(rows, rng) if masked else None
    br = b_for(rows, rng) if with_b else None
    x = to_cols(rows, inner)
    outer = x.shape[0]
    mask = None if mr is None else to_cols(mr, inner)
    b = None if br is None else to_cols(br, inner)
    xr, mr, br = moved(x), None if mask is None else moved(mask), None if b is None else moved(b)
    m = outer * inner
    for with_sign in (False, True):
        got = np.full((outer, inner), 5.0, dtype)
        gs = np.full((outer, inner), 5.0, dtype) if with_sign else None
        K.logsumexp_strided(x, b, mask, got, gs, *oki(x), 1)
        want, ws = np.empty(m, dtype), np.empty(m, dtype) if with_sign else None
        R.logsumexp_rows(xr, br, mr, want, ws)
        got = got.ravel()
        check_pattern(got, want)
        want64 = np.empty(m)
        R.logsumexp_rows(xr.astype(np.float64), None if br is None else br.astype(np.float64),
                         mr, want64, None)
        ok = np.isfinite(want64) & np.isfinite(want)
        check_log_values(got[ok], want64[ok], dtype)
        if with_sign:
            gs = gs.ravel()
            check_pattern(gs, ws)
            np.testing.assert_array_equal(gs[ok], ws[ok])
        rk, rs = np.empty(m, dtype), np.empty(m, dtype) if with_sign else None
        K.logsumexp_rows(xr, br, mr, rk, rs, 1)
        check_same(got, rk)


def test_logsumexp_threads(threaded):
    rng = np.random.default_rng(3)
    for k, inner in ((5, 40), (800, 24), (5000, 17)):
        x = rng.standard_normal((3, k, inner)).astype(np.float32)
        a = np.empty((3, inner), np.float32)
        b = np.empty((3, inner), np.float32)
        K.logsumexp_strided(x, None, None, a, None, 3, k, inner, 1)
        K.logsumexp_strided(x, None, None, b, None, 3, k, inner, 2)
        check_same(b, a)


# ----------------------------------------------------------------------------
# backwards
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ki", KI_ALL, ids=_ids)
def test_softmax_backward(ki, dtype, threaded):
    k, inner = ki
    rng = np.random.default_rng(k + 1)
    x = rng.standard_normal((_outer(inner), k, inner)).astype(dtype)
    y = np.empty_like(x)
    K.softmax_strided(x, None, y, *oki(x), 1)
    g = rng.standard_normal(x.shape).astype(dtype)
    got = np.empty_like(x)
    K.softmax_backward_strided(g, y, got, *oki(x), 1)
    want64 = np.empty((x.size // k, k))
    R.softmax_backward_rows(moved(g).astype(np.float64), moved(y).astype(np.float64), want64)
    check_values(moved(got), want64, rtol=10 * tol(dtype), atol_scale=10 * tol(dtype))
    # in place, on either input; two threads
    g2 = g.copy()
    K.softmax_backward_strided(g2, y, g2, *oki(x), 1)
    check_same(g2, got)
    y2 = y.copy()
    K.softmax_backward_strided(g, y2, y2, *oki(x), 2)
    check_same(y2, got)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ki", KI_ALL, ids=_ids)
@pytest.mark.parametrize("masked", [False, True])
def test_log_softmax_backward(masked, ki, dtype, threaded):
    k, inner = ki
    rng = np.random.default_rng(k + 2)
    x = rng.standard_normal((_outer(inner), k, inner)).astype(dtype)
    xr = moved(x)
    mr = masks_for(xr, rng) if masked else None
    mask = None if mr is None else np.ascontiguousarray(
        mr.reshape(x.shape[0], inner, k).transpose(0, 2, 1))
    y = np.empty_like(x)
    K.log_softmax_strided(x, mask, y, *oki(x), 1)
    g = rng.standard_normal(x.shape).astype(dtype)
    if masked:
        g[~mask] = np.nan                 # never read
    got = np.empty_like(x)
    K.log_softmax_backward_strided(g, y, mask, got, *oki(x), 1)
    want = np.empty_like(xr)
    R.log_softmax_backward_rows(moved(g), moved(y), mr, want)
    check_pattern(moved(got), want)
    want64 = np.empty(xr.shape)
    R.log_softmax_backward_rows(moved(g).astype(np.float64), moved(y).astype(np.float64), mr,
                                want64)
    check_values(moved(got), want64, rtol=10 * tol(dtype), atol_scale=10 * tol(dtype))
    if masked:
        assert np.all(got[~mask] == 0)
    g2 = g.copy()
    K.log_softmax_backward_strided(g2, y, mask, g2, *oki(x), 2)
    check_same(g2, got)


# ----------------------------------------------------------------------------
# cross entropy
# ----------------------------------------------------------------------------

def _ce_cases():
    for dtype in DTYPES:
        for ki in ((1, 7), (6, 2), (39, 17), (300, 9), (9, 1), (4100, 3)):
            for weighted, eps, z in ((False, 0.0, 0.0), (True, 0.1, 1e-3), (True, 0.0, 0.0),
                                     (False, 0.1, 0.0)):
                yield dtype, ki, weighted, eps, z


@pytest.mark.parametrize("dtype,ki,weighted,eps,z", list(_ce_cases()))
def test_cross_entropy_index(dtype, ki, weighted, eps, z, threaded):
    k, inner = ki
    rng = np.random.default_rng(k + inner)
    rows = special_rows(k, dtype, rng)
    x = to_cols(rows, inner)
    xr = moved(x)
    n = xr.shape[0]
    t, w, rs, (a, b, g) = ce_index_inputs(xr, rng, weighted)
    check_ce_calls(lambda rs_, lg, gg: K.cross_entropy_index_strided(
        x, t, w, -100, eps, z, a, b, g, rs_, lg, gg, *oki(x), 1),
        xr, t, w, eps, z, (a, b, g), rs, x.shape, moved)
    # fused, in place (the gradient overwrites the logits), one and two threads
    lg = np.empty(n, dtype)
    gg = np.empty_like(x)
    K.cross_entropy_index_strided(x, t, w, -100, eps, z, a, b, g, None, lg, gg, *oki(x), 1)
    lr, gr = np.empty(n, dtype), np.empty_like(xr)
    K.cross_entropy_index_rows(xr, t, w, -100, eps, z, a, b, g, None, lr, gr, 1)
    check_same(lg, lr)
    check_same(moved(gg), gr)
    for nt in (1, 2):
        xi = x.copy()
        li = np.empty(n, dtype)
        K.cross_entropy_index_strided(xi, t, w, -100, eps, z, a, b, g, None, li, xi, *oki(x), nt)
        check_same(li, lg)
        check_same(xi, gg)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ki", [(1, 3), (6, 17), (300, 8), (9, 1), (4100, 2)], ids=_ids)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("eps,z", [(0.0, 0.0), (0.2, 1e-3)])
def test_cross_entropy_prob(dtype, ki, weighted, eps, z, threaded):
    k, inner = ki
    rng = np.random.default_rng(k + 5)
    rows = special_rows(k, dtype, rng)
    qr = rng.random(rows.shape).astype(dtype)
    qr /= qr.sum(axis=1, keepdims=True)
    x, q = to_cols(rows, inner), to_cols(qr, inner)
    xr, qr = moved(x), moved(q)
    n = xr.shape[0]
    w = (rng.random(k) + 0.5).astype(dtype) if weighted else None
    rs = rng.random(n).astype(dtype)
    a, b, g = 1.0 / n, 0.5, 0.7
    check_ce_calls(lambda rs_, lg, gg: K.cross_entropy_prob_strided(
        x, q, w, eps, z, a, b, g, rs_, lg, gg, *oki(x), 1),
        xr, qr, w, eps, z, (a, b, g), rs, x.shape, moved)
    # in place on two threads
    lg, gg = np.empty(n, dtype), np.empty_like(x)
    K.cross_entropy_prob_strided(x, q, w, eps, z, a, b, g, None, lg, gg, *oki(x), 1)
    xi = x.copy()
    li = np.empty(n, dtype)
    K.cross_entropy_prob_strided(xi, q, w, eps, z, a, b, g, None, li, xi, *oki(x), 2)
    check_same(xi, gg)
    check_same(li, lg)


# ----------------------------------------------------------------------------
# the C backend's strided kernels: the same results to rounding
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 5, 3), (3, 40, 17), (2, 700, 64), (1, 4100, 9)])
def test_against_c(shape, dtype):
    try:
        from fastact._backends import c_kernels as C
    except ImportError:
        pytest.skip("C backend not built")
    rng = np.random.default_rng(sum(shape))
    o, k, i = shape
    x = (rng.standard_normal(shape) * 6).astype(dtype)
    x[0, k // 2, ::3] = -np.inf
    x[-1, :, 1] = -np.inf
    mask = rng.random(shape) > 0.3
    b = rng.random(shape).astype(dtype)
    grad = rng.standard_normal(shape).astype(dtype)
    t = rng.integers(0, k, (o, i))
    t[:, ::4] = -100
    wts = (rng.random(k) + 0.1).astype(dtype)
    tp = rng.random(shape).astype(dtype)
    xf = np.where(np.isinf(x), 0, x).astype(dtype)

    def both(name, *args):
        outs = []
        for be in (K, C):
            out = np.empty(shape, dtype)
            getattr(be, name)(*args, out, o, k, i, 2)
            outs.append(out)
        check_same(*outs)
        return outs[0]

    for m in (None, mask):
        both("softmax_strided", x, m)
        y = both("log_softmax_strided", x, m)
        both("log_softmax_backward_strided", grad, y, m)
        for bb in (None, b):
            ours, theirs = np.empty((o, i), dtype), np.empty((o, i), dtype)
            K.logsumexp_strided(x, bb, m, ours, None, o, k, i, 1)
            C.logsumexp_strided(x, bb, m, theirs, None, o, k, i, 1)
            check_same(ours, theirs)
    y = both("softmax_strided", xf, None)
    both("softmax_backward_strided", grad, y)
    for eps, z in ((0.0, 0.0), (0.1, 1e-3)):
        res = []
        for be in (K, C):
            lo, gr = np.empty((o, i), dtype), np.empty(shape, dtype)
            be.cross_entropy_index_strided(xf, t, wts, -100, eps, z, 0.5, 0.25, 2.0, None, lo, gr,
                                           o, k, i, 2)
            lp, gp = np.empty((o, i), dtype), np.empty(shape, dtype)
            be.cross_entropy_prob_strided(xf, tp, wts, eps, z, 0.5, 0.25, 2.0, None, lp, gp,
                                          o, k, i, 2)
            res.append((lo, gr, lp, gp))
        for a_, c_ in zip(*res):
            check_same(a_, c_)
