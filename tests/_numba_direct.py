"""Shared pieces of the Numba backend's direct tests (test_numba_kernels_direct.py,
test_numba_strided.py): rows with every special value of the contract, masks
and ``b`` for them, the checks against ``numpy_ref`` (special values exactly,
values to the contract's accuracy of the float64 reference), cross entropy's
inputs and checks, and the rows whose results lie near 0."""

from __future__ import annotations

import numpy as np

from fastact._backends import numpy_ref as R

DTYPES = [np.float32, np.float64]


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


def b_for(x, rng):
    """logsumexp's b for ``special_rows``: zeros, NaN, a negative weight on a
    +inf entry, a row of zeros, sums of mixed sign."""
    n, k = x.shape
    b = rng.standard_normal((n, k)).astype(x.dtype)
    b[rng.random((n, k)) < 0.2] = 0
    b[1] = np.abs(b[1])
    b[3, 0] = np.nan
    b[6] = -1.0                       # +inf entry with negative weight
    b[7] = 0.0                        # nothing takes part
    b[-1] = 1.0
    b[-2, :] = 0.5
    b[-2, 0] = -0.5                   # sums of mixed sign
    return b


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


def check_ce(lg, gg, x, t, w, eps, z, a, b, g, row_scale):
    """A cross entropy's loss ``lg`` and gradient ``gg`` (None: not computed) of
    rows ``x``, index targets ``t`` (ignore_index -100) or probabilities of
    ``x``'s shape, against the reference: the same specials, values to 10
    tol of the float64 reference."""
    n, dtype = x.shape[0], x.dtype
    lw = None if lg is None else np.empty(n, dtype)
    gw = None if gg is None else np.empty_like(x)
    l64 = None if lg is None else np.empty(n)
    g64 = None if gg is None else np.empty(x.shape)
    x64 = x.astype(np.float64)
    if t.ndim == 1:
        R.cross_entropy_index_rows(x, t, w, -100, eps, z, a, b, g, row_scale, lw, gw)
        R.cross_entropy_index_rows(x64, t, w, -100, eps, z, a, b, g, row_scale, l64, g64)
    else:
        R.cross_entropy_prob_rows(x, t, w, eps, z, a, b, g, row_scale, lw, gw)
        R.cross_entropy_prob_rows(x64, t.astype(np.float64),
                                  None if w is None else w.astype(np.float64),
                                  eps, z, a, b, g, row_scale, l64, g64)
    for got, want, want64 in ((lg, lw, l64), (gg, gw, g64)):
        if got is not None:
            check_pattern(got, want)
            check_values(got, want64, rtol=10 * tol(dtype), atol_scale=10 * tol(dtype))


def ce_index_inputs(x, rng, weighted):
    """Index targets for rows ``x`` (two ignored, one of them a special row),
    class weights or None, row scales, and the factors (a, b, g)."""
    n, k = x.shape
    t = rng.integers(0, k, n).astype(np.int64)
    t[1] = -100
    t[3] = -100                          # an ignored special row
    w = (rng.random(k) + 0.5).astype(x.dtype) if weighted else None
    return t, w, rng.random(n).astype(x.dtype), (1.0 / n, 0.5, 1.5)


def check_ce_calls(call, x, t, w, eps, z, abg, rs, grad_shape=None, rows=lambda a: a):
    """``call(row_scale, loss, grad)``, a cross entropy kernel over rows ``x``
    (or over another layout: gradients of ``grad_shape``, ``rows`` maps them to
    x's rows), for row scales None and ``rs``, loss and gradient together and
    alone: check_ce."""
    n, dtype = x.shape[0], x.dtype
    for row_scale in (None, rs):
        for want_loss, want_grad in ((True, True), (True, False), (False, True)):
            lg = np.full(n, 9.0, dtype) if want_loss else None
            gg = np.full(grad_shape or x.shape, 9.0, dtype) if want_grad else None
            call(row_scale, lg, gg)
            check_ce(lg, None if gg is None else rows(gg), x, t, w, eps, z, *abg, row_scale)


#: logsumexp([0, -40]) = log1p(exp(-40))
LSE_0_40 = 4.2483542552915889e-18


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


def near_zero_mask(x):
    """A mask for ``near_zero_rows`` that hides a larger entry (5, put in x in
    place of a -200) in each row: it must not reach either sum."""
    k = x.shape[1]
    mask = np.ones(x.shape, bool)
    j = k // 3 if k >= 3 else 1
    hide = x[:, j] == -200
    x[hide, j] = 5.0
    mask[hide, j] = False
    return mask


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
