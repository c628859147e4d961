"""The C backend's row kernels called directly (see test_c_kernels_direct.py):
short rows in tiles with special values and cross entropy, row tails around
every vector width, and the log of the exp sum near 0 (relative accuracy).
"""

from __future__ import annotations


import numpy as np
import pytest

from fastact._backends import numpy_ref as R

from _c_direct import C, DTYPES, assert_close, check_vs_ref, isa, rng  # noqa: F401


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
@pytest.mark.parametrize("k", [1, 2, 3, 7, 8, 9, 10, 12, 15, 16, 17, 21, 33, 64, 65])
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
@pytest.mark.parametrize("k", [3, 10, 12, 16, 21, 40, 64])
def test_short_rows_tiles_nthreads(isa, dtype, k):
    # parts of the rows split at tile boundaries: the same results on any
    # number of threads (rows in a tile on one thread, in the tail on another);
    # rows past the tiles in groups of VL (rows_group), split anywhere: the
    # same arithmetic for every row however the groups fall
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
    what = f"log_softmax {isa} k={k} masked={masked}"
    got, want = check_vs_ref("log_softmax_rows", x, mask, dtype, what, fill=7.0)
    if k > 1:
        assert np.all(want[ri, ci] < 0)
        assert_rel(got[ri, ci], want[ri, ci], dtype, what)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1000, 20000])
def test_near_zero_log_softmax_streamed(isa, dtype, k):
    # outputs of >= 12 MB: mid rows and long rows with non-temporal stores,
    # the long rows pipelined (row i's sums beside row i - 1's writes)
    n = (12 << 20) // (k * np.dtype(dtype).itemsize) + 2
    g = rng(43)
    x, (ri, ci) = _near_zero_rows(dtype, n, k, g)
    what = f"log_softmax streamed {isa} k={k}"
    got, want = check_vs_ref("log_softmax_rows", x, None, dtype, what, fill=7.0, inplace=False)
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
