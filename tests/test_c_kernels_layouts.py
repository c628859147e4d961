"""The C backend called directly (see test_c_kernels_direct.py): the strided
driver (any axis), float16 / bfloat16 rows and conversions (csrc/half.c), and
the half path's MemoryError when its scratch cannot be allocated; the
elementwise kernels (csrc/elementwise.c) on every ISA path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from _c_direct import C, DTYPES, assert_close, isa, rng  # noqa: F401


# ------------------------------------------- strided driver (any axis, issue 18)

def _moved_rows(a, k):
    """(outer, k, inner) -> (outer * inner, k) rows (a copy)."""
    return np.ascontiguousarray(a.transpose(0, 2, 1)).reshape(-1, k)


def _same_or_close(got, want, close):
    """got == want exactly, or (close) to 8 ulp of the dtype, special values exact."""
    if not close:
        np.testing.assert_array_equal(got, want)
        return
    eps = float(np.finfo(got.dtype).eps)
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
    np.testing.assert_array_equal(got[~np.isfinite(got)], want[~np.isfinite(want)])
    f = np.isfinite(want)
    big = max(1.0, float(np.abs(want[f]).max(initial=0)))
    probs = (want[f] >= 0).all()  # softmax: relative error, subnormals apart
    np.testing.assert_allclose(got[f], want[f], rtol=8 * eps,
                               atol=float(np.finfo(got.dtype).tiny) if probs else 8 * eps * big)


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

    # Unmasked softmax, log_softmax and logsumexp of slabs whose rows hold a
    # cache line run on the column kernels (csrc/rows_cols.c): the row kernels'
    # arithmetic summed in another order, so equal to a few ulp, not exactly.
    cols = i >= 64 // np.dtype(dtype).itemsize
    for name in ("softmax", "log_softmax"):
        for m, m_r in ((None, None), (mask, mr)):
            got = np.empty_like(x)
            getattr(C, name + "_strided")(x, m, got, o, k, i, 2)
            want = np.empty_like(xr)
            getattr(C, name + "_rows")(xr, m_r, want, 2)
            _same_or_close(got, back(want), cols and m is None)
    for bb, b_r in ((None, None), (b, br)):
        for m, m_r in ((None, None), (mask, mr)):
            got, gs = np.empty((o, i), dtype), np.empty((o, i), dtype)
            C.logsumexp_strided(x, bb, m, got, gs, o, k, i, 2)
            want, ws = np.empty(o * i, dtype), np.empty(o * i, dtype)
            C.logsumexp_rows(xr, b_r, m_r, want, ws, 2)
            _same_or_close(got.ravel(), want, cols and m is None and bb is None)
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
    for eps, z in ((0.0, 0.0), (0.0, 1e-3), (0.1, 1e-3)):
        gl, gg = np.empty((o, i), dtype), np.empty_like(x)
        C.cross_entropy_index_strided(xf, t, w, -100, eps, z, 0.5, 0.25, 2.0, rs, gl, gg,
                                      o, k, i, 2)
        wl, wg = np.empty(o * i, dtype), np.empty((o * i, k), dtype)
        C.cross_entropy_index_rows(_moved_rows(xf, k), t.ravel(), w, -100, eps, z, 0.5, 0.25,
                                   2.0, rs.ravel(), wl, wg, 2)
        # index targets without label smoothing: the column kernels as above
        _same_or_close(gl.ravel(), wl, cols and eps == 0)
        _same_or_close(gg, back(wg), cols and eps == 0)
        ip = xf.copy()
        C.cross_entropy_index_strided(ip, t, w, -100, eps, z, 0.5, 0.25, 2.0, rs, None, ip,
                                      o, k, i, 1)
        np.testing.assert_array_equal(ip, gg)
        C.cross_entropy_prob_strided(xf, tp, w, eps, z, 0.5, 0.25, 2.0, rs, gl, gg, o, k, i, 2)
        C.cross_entropy_prob_rows(_moved_rows(xf, k), _moved_rows(tp, k), w, eps, z, 0.5, 0.25,
                                  2.0, rs.ravel(), wl, wg, 2)
        np.testing.assert_array_equal(gl.ravel(), wl)
        np.testing.assert_array_equal(gg, back(wg))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("oki", [(1, 5, 1200), (2, 40, 700), (3, 17, 64), (1, 4200, 24),
                                 (1, 5000, 9)])
def test_column_kernels(isa, dtype, oki):
    """The column kernels (csrc/rows_cols.c) against the float64 truth: strips with
    and without special columns side by side (a strip with an all -inf or +inf
    column goes to the transposing path; NaN and spreads beyond exp's range stay),
    one block of rows or many, long columns (not packed), ragged last strips."""
    from conftest import assert_close as close, truth_logsumexp, truth_softmax
    o, k, i = oki
    g = rng(o + k + i)
    x = (g.standard_normal(oki) * 6).astype(dtype)
    c = [i // 2 + 1, i * 3 // 4, i - 2, i // 5]
    x[0, :, c[0]] = -np.inf                           # no finite entry
    x[-1, k // 2, c[1]] = np.inf
    x[0, k - 1, c[2]] = np.nan                        # finite max, NaN column
    x[-1, 0, c[3]] = 100.0 if dtype == np.float32 else 800.0  # beyond exp's range
    x[-1, 1, c[3]] = -np.inf
    with np.errstate(all="ignore"):
        for name, log in (("softmax", False), ("log_softmax", True)):
            for nt in (1, 2):
                got = np.empty_like(x)
                getattr(C, name + "_strided")(x, None, got, o, k, i, nt)
                close(got, truth_softmax(x, axis=1, log=log), dtype, "log" if log else "prob")
            ip = x.copy()                              # in place
            getattr(C, name + "_strided")(ip, None, ip, o, k, i, 2)
            np.testing.assert_array_equal(ip, got)
        got, gs = np.empty((o, i), dtype), np.empty((o, i), dtype)
        C.logsumexp_strided(x, None, None, got, gs, o, k, i, 2)
        want = truth_logsumexp(x, axis=1)
        close(got, want, dtype, "log")
        sign = np.where(np.isnan(want), np.nan, np.where(want == -np.inf, 0, 1))
        np.testing.assert_array_equal(gs, sign.astype(dtype))
        # cross entropy, index targets (some ignored, special columns among them),
        # weights, row scales, z-loss, loss or gradient alone, in place: against
        # the row kernels on the moved rows (tested against the reference)
        t = g.integers(0, k, (o, i))
        t[:, ::5] = -100
        t[:, c[1]] = -100
        w = (g.random(k) + 0.1).astype(dtype)
        rs = g.random((o, i)).astype(dtype)
        xr = _moved_rows(x, k)
        for z, ww, rr in ((0.0, None, None), (1e-3, w, rs)):
            gl, gg = np.empty((o, i), dtype), np.empty_like(x)
            C.cross_entropy_index_strided(x, t, ww, -100, 0.0, z, 0.5, 0.25, 2.0, rr, gl, gg,
                                          o, k, i, 2)
            wl, wg = np.empty(o * i, dtype), np.empty((o * i, k), dtype)
            C.cross_entropy_index_rows(xr, t.ravel(), ww, -100, 0.0, z, 0.5, 0.25, 2.0,
                                       None if rr is None else rr.ravel(), wl, wg, 2)
            _same_or_close(gl.ravel(), wl, True)
            _same_or_close(gg.reshape(o, k, i).transpose(0, 2, 1).reshape(-1, k), wg, True)
            lo = np.empty((o, i), dtype)
            C.cross_entropy_index_strided(x, t, ww, -100, 0.0, z, 0.5, 0.25, 2.0, rr, lo, None,
                                          o, k, i, 1)
            np.testing.assert_array_equal(lo, gl)
            ip = x.copy()
            C.cross_entropy_index_strided(ip, t, ww, -100, 0.0, z, 0.5, 0.25, 2.0, rr, None, ip,
                                          o, k, i, 2)
            np.testing.assert_array_equal(ip, gg)


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
def test_half_elementwise_blocks(isa, hdt, n):
    """fa_unary / fa_unary_backward on half arrays (block widening on the stack): the
    float32 loops' results rounded, bit for bit, across block boundaries, in place;
    at every ISA level (the conversions and the loops follow it)."""
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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc: Linux")
@pytest.mark.skipif("asan" in os.environ.get("LD_PRELOAD", ""),
                    reason="ASan reserves its shadow memory: no address-space limit under it")
def test_half_rows_scratch_failure_is_memory_error():
    """When the float32 scratch of the half path cannot be allocated, the call
    raises MemoryError and writes nothing (csrc/half.c allocates it all first)."""
    code = textwrap.dedent("""
        import resource
        import numpy as np
        from fastact._backends import c_kernels as C
        k = 1 << 24                       # one row: a 64 MB float32 scratch row
        x = np.ones((1, k), np.float16)
        out = np.full_like(x, 7)
        with open("/proc/self/status") as f:
            vm = [int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:")][0]
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (vm + (16 << 20), hard))
        try:
            C.softmax_rows(x, None, out, 1)
            result = "no error"
        except MemoryError:
            result = "MemoryError"
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        print(result, bool((out == 7).all()))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["MemoryError", "True"], r.stdout + r.stderr


# ------------------------------------ elementwise kernels on every ISA path

def _ew_inputs(dtype, n=3000):
    """Random values over the ranges of every branch, and the special values."""
    g = rng(7)
    x = np.concatenate([g.standard_normal(n) * 6, g.standard_normal(n) * 60,
                        [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-30, -1e-30, 20.0, -20.0,
                         88.5, -88.5, 104.0, -104.0, 700.0, -700.0, 750.0, -750.0, 1e30,
                         -1e30]])
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_elementwise_every_isa(isa, dtype):
    """fa_unary, fa_unary_backward and fa_bce at the forced ISA level (the same
    table as the row kernels: FASTACT_C_ISA and force_isa reach them), against
    the NumPy reference in float64; odd lengths leave vector tails."""
    from fastact._backends import c_elementwise as E
    from fastact._backends import numpy_elementwise as NE
    x = _ew_inputs(dtype)
    x64 = x.astype(np.float64)
    gr = rng(8).standard_normal(x.shape[0]).astype(dtype)
    for op in E.UNARY:
        got, want = np.empty_like(x), np.empty_like(x64)
        E.unary(op, x, got, 1)
        NE.unary(op, x64, want)
        assert_close(got, want, dtype, scale=10, what=f"{op} {isa}")
        s = got if op == "sigmoid" else x   # sigmoid's backward takes y
        s64 = want if op == "sigmoid" else x64
        got, want = np.empty_like(x), np.empty_like(x64)
        E.unary_backward(op, gr, s, got, 1)
        NE.unary_backward(op, gr.astype(np.float64), s64.astype(np.float64), want)
        assert_close(got, want, dtype, scale=10, what=f"{op} backward {isa}")
    fin = np.isfinite(x)
    xb = x[fin][:13 * 307]             # w and pw (13 long) repeat along it
    t = rng(9).random(xb.shape[0]).astype(dtype)
    w, pw = (rng(10).random(13) + 0.5).astype(dtype), (rng(11).random(13) + 0.5).astype(dtype)
    loss, grad = np.empty_like(xb), np.empty_like(xb)
    lw, gw = np.empty(xb.shape), np.empty(xb.shape)
    total = E.bce(xb, t, w, pw, 0.5, None, loss, grad, 1)
    want = NE.bce(xb.astype(np.float64), t.astype(np.float64), w.astype(np.float64),
                  pw.astype(np.float64), 0.5, None, lw, gw)
    assert_close(loss, lw, dtype, scale=10, what=f"bce loss {isa}")
    assert_close(grad, gw, dtype, scale=10, what=f"bce grad {isa}")
    assert_close(np.array([total]), np.array([want]), dtype, scale=10, what=f"bce sum {isa}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_elementwise_threads_every_isa(isa, dtype):
    """Large fa_unary / fa_unary_backward calls on the C pool (nthreads > 1) give
    the single-thread results bit for bit, for an op with a transcendental and
    relu (its own thread threshold); in place too."""
    from fastact._backends import c_elementwise as E
    n = (1 << 20) + 37
    g = rng(12)
    x = (g.standard_normal(n) * 6).astype(dtype)
    gr = g.standard_normal(n).astype(dtype)
    for op in ("gelu", "relu", "sigmoid"):
        one, two = np.empty_like(x), np.empty_like(x)
        E.unary(op, x, one, 1)
        E.unary(op, x, two, 2)
        np.testing.assert_array_equal(one, two, err_msg=op)
        xi = x.copy()
        E.unary(op, xi, xi, 2)
        np.testing.assert_array_equal(xi, one, err_msg=op)
        b1, b2 = np.empty_like(x), np.empty_like(x)
        E.unary_backward(op, gr, x, b1, 1)
        E.unary_backward(op, gr, x, b2, 2)
        np.testing.assert_array_equal(b1, b2, err_msg=op)
