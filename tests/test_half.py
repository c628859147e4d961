"""float16 and bfloat16 (ml_dtypes) through every routed function, on every backend.

SPEC.md: each half output is the float32 result rounded to nearest-even in the
half type, subnormals kept.  Two checks per result:
- against the NumPy reference computed in float32 on the widened input and
  rounded (``astype``): within one half ulp (the float32 kernels agree with
  the float32 reference to a few float32 ulps, which can move a rounding by
  one half ulp), and NaN/inf exactly;
- bit-exactly against the same backend's own float32 result rounded: this is
  what the C backend's block widening must give (the float32 kernel on the
  widened rows), and what the other backends' NumPy conversions give.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import fastact

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
HALVES = [pytest.param(F16, id="float16"), pytest.param(BF16, id="bfloat16")]
F32 = np.float32


def _ordered(a):
    """Half bit patterns as integers ordered like the values (-0 and +0 both 0)."""
    u = np.ascontiguousarray(a).view(np.uint16).astype(np.int32)
    return np.where(u & 0x8000, -(u & 0x7FFF), u)


def assert_half_equal(got, want, ulps=0, what=""):
    """Same half dtype and shape; NaN where and only where want is NaN; elsewhere
    within ``ulps`` units in the last place (0: bit-identical but the NaN payload)."""
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.dtype == want.dtype, (what, got.dtype, want.dtype)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    gn = np.isnan(got.astype(F32))
    wn = np.isnan(want.astype(F32))
    assert np.array_equal(gn, wn), f"{what}: NaN at {np.argwhere(gn != wn)[:5].tolist()}"
    d = np.abs(_ordered(got) - _ordered(want))[~wn]
    if d.size:
        i = int(np.argmax(d))
        assert d[i] <= ulps, (f"{what}: {d[i]} ulps apart: got {got[~wn][i]!r}, "
                              f"want {want[~wn][i]!r}")


def rounded(a, dt):
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(a, F32).astype(dt)


def both(fn, x_half, dt, backend, **kw):
    """(half result, reference rounded, same backend's float32 result rounded)."""
    got = fn(x_half, backend=backend, **kw)
    ref = fn(x_half.astype(F32), backend="numpy", **kw)
    own = fn(x_half.astype(F32), backend=backend, **kw)
    return got, rounded(ref, dt), rounded(own, dt)


def half_rows(dt, rng, shape, scale=3.0):
    return (rng.standard_normal(shape) * scale).astype(dt)


def special_half(dt):
    """Rows of special values for a half dtype (SPEC.md), 7 wide."""
    fmax = float(ml_dtypes.finfo(dt).max)
    big = 60000.0 if dt == F16 else 1e38  # spread beyond the half range
    inf, nan = np.inf, np.nan
    rows = [
        [big, -big, 0.0, 3.0, big - 64.0, -1.0, 2.0],
        [1.0, -inf, 2.0, -inf, 0.5, 0.0, 1.0],
        [-inf] * 7,
        [1.0, nan, 2.0, 0.0, -1.0, 3.0, 4.0],
        [1.0, inf, 2.0, -inf, 0.0, 5.0, 6.0],
        [inf, nan, 0.0, -inf, 1.0, 2.0, 3.0],
        [fmax, -fmax, 0.0, fmax * 0.5, -1.0, 1.0, 2.0],
        [-fmax] * 7,
        [-inf, -inf, 7.0, -inf, -inf, -inf, -inf],
        [3.0] * 7,
        [0.0, -10.0, -17.0, -20.0, -25.0, -87.5, -95.0],  # subnormal probabilities
    ]
    return np.array(rows, dtype=np.float64).astype(dt)


SHAPES = [(1, 1), (3, 5), (37, 10), (17, 63), (5, 100), (4, 1000), (2, 4099), (40, 17),
          (1, 70001), (9, 33)]


# ---------------------------------------------------------------- forward

@pytest.mark.parametrize("dt", HALVES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("fn", [fastact.softmax, fastact.log_softmax], ids=["softmax", "log_softmax"])
def test_forward_random(backend, dt, shape, fn):
    x = half_rows(dt, np.random.default_rng(sum(shape)), shape)
    got, ref, own = both(fn, x, dt, backend)
    assert_half_equal(got, ref, 1, "vs reference")
    assert_half_equal(got, own, 0, "vs own float32")


@pytest.mark.parametrize("dt", HALVES)
@pytest.mark.parametrize("fn", [fastact.softmax, fastact.log_softmax], ids=["softmax", "log_softmax"])
def test_forward_special(backend, dt, fn):
    x = special_half(dt)
    got, ref, own = both(fn, x, dt, backend)
    assert_half_equal(got, ref, 1, "vs reference")
    assert_half_equal(got, own, 0, "vs own float32")
    # tiles of short rows and vector tails: the special rows among random ones
    rng = np.random.default_rng(3)
    for k in (7, 9, 16, 17, 40):
        xs = half_rows(dt, rng, (48, k))
        sp = special_half(dt)
        xs[5:5 + len(sp), :7] = sp
        got, ref, own = both(fn, xs, dt, backend)
        assert_half_equal(got, ref, 1, f"k={k} vs reference")
        assert_half_equal(got, own, 0, f"k={k} vs own float32")


@pytest.mark.parametrize("dt", HALVES)
def test_subnormal_outputs_kept(backend, dt):
    """Softmax over many classes gives probabilities below the smallest normal
    (float16: 6.1e-5); bfloat16 subnormals from exp(-88..-100)."""
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((3, 40001)) * 0.5).astype(dt)
    x[2, 50:] = -np.inf
    x[2, 0] = 0
    lo, hi = (-9.8, -17.0) if dt == F16 else (-80.0, -100.0)  # below the smallest normal
    x[2, 1:50] = np.linspace(lo, hi, 49).astype(dt)
    got, ref, own = both(fastact.softmax, x, dt, backend)
    tiny = float(ml_dtypes.finfo(dt).smallest_normal)
    g = got.astype(F32)
    if dt == F16:
        assert ((g[:2] > 0) & (g[:2] < tiny)).sum() > 1000  # subnormals present, not flushed
    assert ((g[2] > 0) & (g[2] < tiny)).sum() >= 3  
    assert_half_equal(got, ref, 1, "vs reference")
    assert_half_equal(got, own, 0, "vs own float32")


@pytest.mark.parametrize("dt", HALVES)
@pytest.mark.parametrize("shape", [(37, 10), (5, 100), (2, 4099), (1, 70001)])
def test_where(backend, dt, shape):
    rng = np.random.default_rng(11)
    x = half_rows(dt, rng, shape)
    w = rng.random(shape) < 0.7
    w[0] = False
    for fn in (fastact.softmax, fastact.log_softmax):
        got, ref, own = both(fn, x, dt, backend, where=w)
        assert_half_equal(got, ref, 1, f"{fn.__name__} vs reference")
        assert_half_equal(got, own, 0, f"{fn.__name__} vs own float32")


@pytest.mark.parametrize("dt", HALVES)
@pytest.mark.parametrize("shape", [(37, 10), (40, 17), (5, 100), (2, 4099)])
@pytest.mark.parametrize("variant", ["plain", "where", "b", "b_sign", "keepdims"])
def test_logsumexp(backend, dt, shape, variant):
    rng = np.random.default_rng(13)
    x = half_rows(dt, rng, shape)
    kw = {}
    if variant == "where":
        kw["where"] = rng.random(shape) < 0.6
    if variant.startswith("b"):
        b = rng.uniform(-0.2, 1.0, shape).astype(dt)
        kw["b"] = b
        kw["return_sign"] = variant == "b_sign"
    if variant == "keepdims":
        kw["keepdims"] = True
    got = fastact.logsumexp(x, backend=backend, **kw)
    kw32 = dict(kw)
    if "b" in kw:
        kw32["b"] = kw["b"].astype(F32)
    ref = fastact.logsumexp(x.astype(F32), backend="numpy", **kw32)
    own = fastact.logsumexp(x.astype(F32), backend=backend, **kw32)
    if variant == "b_sign":
        assert_half_equal(got[1], rounded(ref[1], dt), 0, "sign")
        got, ref, own = got[0], ref[0], own[0]
    assert_half_equal(got, rounded(ref, dt), 1, "vs reference")
    assert_half_equal(got, rounded(own, dt), 0, "vs own float32")


@pytest.mark.parametrize("dt", HALVES)
def test_logsumexp_special_and_out(backend, dt):
    x = special_half(dt)
    got, ref, own = both(fastact.logsumexp, x, dt, backend)
    assert_half_equal(got, ref, 1, "vs reference")
    assert_half_equal(got, own, 0, "vs own float32")
    out = np.full(x.shape[0], 5, dt)
    r = fastact.logsumexp(x, out=out, backend=backend)
    assert r is out
    assert_half_equal(out, got, 0, "out=")


# ---------------------------------------------------------------- out=, in place, layouts

@pytest.mark.parametrize("dt", HALVES)
@pytest.mark.parametrize("shape", [(37, 10), (4, 1000), (1, 70001)])
def test_out_and_in_place(backend, dt, shape):
    x = half_rows(dt, np.random.default_rng(17), shape)
    for fn in (fastact.softmax, fastact.log_softmax):
        want = fn(x, backend=backend)
        out = np.empty_like(x)
        assert fn(x, out=out, backend=backend) is out
        assert_half_equal(out, want, 0, "out=")
        y = x.copy()
        assert fn(y, out=y, backend=backend) is y
        assert_half_equal(y, want, 0, "in place")


@pytest.mark.parametrize("dt", HALVES)
def test_layouts_and_axes(backend, dt):
    rng = np.random.default_rng(19)
    x = half_rows(dt, rng, (6, 7, 33))
    for axis in (0, 1, -1, (0, 2)):
        for xl in (x, np.asfortranarray(x), x[:, ::-1, :]):
            got, ref, own = both(fastact.softmax, xl, dt, backend, axis=axis)
            assert_half_equal(got, ref, 1, f"axis {axis}")
            assert_half_equal(got, own, 0, f"axis {axis} own")
            out = np.empty(xl.shape, dt, order="F")
            fastact.log_softmax(xl, axis=axis, out=out, backend=backend)
            assert_half_equal(out, fastact.log_softmax(xl, axis=axis, backend=backend), 0, "F out")


# ---------------------------------------------------------------- backward

@pytest.mark.parametrize("dt", HALVES)
@pytest.mark.parametrize("shape", [(1, 1), (37, 10), (17, 63), (5, 100), (2, 4099), (1, 70001)])
def test_backward(backend, dt, shape):
    rng = np.random.default_rng(23)
    x = half_rows(dt, rng, shape)
    g = half_rows(dt, rng, shape, 1.0)
    for fwd, bwd in ((fastact.softmax, fastact.softmax_backward),
                     (fastact.log_softmax, fastact.log_softmax_backward)):
        y = fwd(x, backend=backend)
        got = bwd(g, y, backend=backend)
        ref = rounded(bwd(g.astype(F32), y.astype(F32), backend="numpy"), dt)
        own = rounded(bwd(g.astype(F32), y.astype(F32), backend=backend), dt)
        # y * (g - sum(g y)) cancels: the float32 sums of the kernel and the
        # reference may differ by a few float32 ulps of the sum
        assert_half_equal(got, own, 0, f"{bwd.__name__} vs own float32")
        gf, rf = got.astype(np.float64), ref.astype(np.float64)
        fin = np.isfinite(rf)
        eps = float(ml_dtypes.finfo(dt).eps)
        assert np.all(np.abs(gf[fin] - rf[fin]) <= eps * np.maximum(1, np.abs(rf[fin])) * 2)
        out = g.copy()
        bwd(out, y, out=out, backend=backend)  # in place on grad
        assert_half_equal(out, got, 0, "in place")


@pytest.mark.parametrize("dt", HALVES)
def test_log_softmax_backward_where(backend, dt):
    rng = np.random.default_rng(29)
    x = half_rows(dt, rng, (9, 33))
    w = rng.random(x.shape) < 0.5
    g = half_rows(dt, rng, x.shape, 1.0)
    y = fastact.log_softmax(x, where=w, backend=backend)
    got = fastact.log_softmax_backward(g, y, where=w, backend=backend)
    own = fastact.log_softmax_backward(g.astype(F32), y.astype(F32), where=w, backend=backend)
    assert_half_equal(got, rounded(own, dt), 0)
    assert np.all(got[~w] == 0)


# ---------------------------------------------------------------- cross entropy

def _ce_all(x, t, backend, **kw):
    loss, grad = fastact.softmax_cross_entropy_with_grad(x, t, backend=backend, **kw)
    loss2 = fastact.softmax_cross_entropy(x, t, backend=backend, **kw)
    grad2 = fastact.softmax_cross_entropy_backward(x, t, backend=backend, **kw)
    return loss, grad, loss2, grad2


CE_OPTIONS = [{}, {"label_smoothing": 0.1}, {"weight": True}, {"reduction": "none"},
              {"reduction": "sum", "weight": True, "label_smoothing": 0.2}, {"z_loss": 1e-3}]


@pytest.mark.parametrize("dt", HALVES)
@pytest.mark.parametrize("shape", [(1, 1), (40, 17), (9, 1000), (2, 70001)])
@pytest.mark.parametrize("index", [True, False], ids=["index", "prob"])
@pytest.mark.parametrize("opt", range(len(CE_OPTIONS)))
def test_cross_entropy(backend, dt, shape, index, opt):
    rng = np.random.default_rng(31 + opt)
    n, c = shape
    x = half_rows(dt, rng, shape)
    if index:
        t = rng.integers(0, c, n)
        t[rng.random(n) < 0.2] = -100
    else:
        t = rng.random(shape)
        t = (t / t.sum(-1, keepdims=True)).astype(dt)
    kw = dict(CE_OPTIONS[opt])
    if kw.get("weight"):
        kw["weight"] = rng.uniform(0.5, 2.0, c).astype(F32)
    t32 = t if index else t.astype(F32)
    loss, grad, loss2, grad2 = _ce_all(x, t, backend, **kw)
    rl, rg, _, _ = _ce_all(x.astype(F32), t32, "numpy", **kw)
    ol, og, _, _ = _ce_all(x.astype(F32), t32, backend, **kw)
    assert np.asarray(loss).dtype == F32 and grad.dtype == dt
    np.testing.assert_allclose(loss, rl, rtol=2e-5, atol=1e-5)
    np.testing.assert_array_equal(loss, ol)
    np.testing.assert_allclose(loss2, loss, rtol=1e-6)  # numba: its own loss-only sums
    assert_half_equal(grad, rounded(og, dt), 0, "grad vs own float32")
    assert_half_equal(grad2, grad, 0, "backward vs with_grad")
    gf, rf = grad.astype(np.float64), rg.astype(np.float64)
    eps = float(ml_dtypes.finfo(dt).eps)
    assert np.all(np.abs(gf - rf) <= eps * np.abs(rf) + 1e-7 + 1e-6 * np.abs(rf).max())
    # out=logits: the logits overwritten by their gradient
    xx = x.copy()
    l3, g3 = fastact.softmax_cross_entropy_with_grad(xx, t, out=xx, backend=backend, **kw)
    assert g3 is xx
    assert_half_equal(xx, grad, 0, "out=logits")
    np.testing.assert_allclose(l3, loss, rtol=1e-6)
    out = np.empty_like(x)
    fastact.softmax_cross_entropy_backward(x, t, out=out, backend=backend, **kw)
    assert_half_equal(out, grad, 0, "backward out=")


@pytest.mark.parametrize("dt", HALVES)
def test_cross_entropy_special(backend, dt):
    x = special_half(dt)
    t = np.arange(x.shape[0]) % x.shape[1]
    for red in ("none", "sum"):
        loss, grad = fastact.softmax_cross_entropy_with_grad(x, t, reduction=red, backend=backend)
        ol, og = fastact.softmax_cross_entropy_with_grad(x.astype(F32), t, reduction=red,
                                                         backend=backend)
        np.testing.assert_array_equal(loss, ol)
        assert_half_equal(grad, rounded(og, dt), 0)


@pytest.mark.parametrize("dt", HALVES)
def test_bad_target_writes_nothing(backend, dt):
    x = half_rows(dt, np.random.default_rng(1), (4, 5))
    out = np.full_like(x, 7)
    with pytest.raises(IndexError):
        fastact.softmax_cross_entropy_with_grad(x, np.array([0, 1, 5, 2]), out=out, backend=backend)
    assert np.all(out.astype(F32) == 7)
    with pytest.raises(ValueError):
        fastact.softmax(x, out=np.empty(x.shape, F32), backend=backend)


# ---------------------------------------------------------------- the C kernels directly

C = None
try:
    from fastact._backends import c_kernels as C
except ImportError:  # pragma: no cover - C extension not built
    pass

needs_c = pytest.mark.skipif(C is None, reason="C extension not built")


@pytest.fixture(params=C.available_isas() if C is not None else [])
def isa(request):
    with C.force_isa(request.param):
        yield request.param


@needs_c
@pytest.mark.parametrize("dt", HALVES)
@pytest.mark.parametrize("shape", [(37, 10), (33, 16), (16, 8), (40, 17), (5, 100), (3, 4099),
                                   (2, 70001), (130, 600)])
def test_c_every_isa(isa, dt, shape):
    """Each ISA path: the half result is the same ISA's float32 result rounded, bit for bit."""
    rng = np.random.default_rng(41)
    x = half_rows(dt, rng, shape)
    x[0, :min(7, shape[1])] = special_half(dt)[3, :min(7, shape[1])]
    x32 = x.astype(F32)
    n, k = shape
    for name in ("softmax_rows", "log_softmax_rows"):
        o, o32 = np.empty_like(x), np.empty_like(x32)
        getattr(C, name)(x, None, o, 2)
        getattr(C, name)(x32, None, o32, 2)
        assert_half_equal(o, rounded(o32, dt), 0, name)
    r, r32 = np.empty(n, dt), np.empty(n, F32)
    C.logsumexp_rows(x, None, None, r, None, 1)
    C.logsumexp_rows(x32, None, None, r32, None, 1)
    assert_half_equal(r, rounded(r32, dt), 0, "logsumexp")
    g = half_rows(dt, rng, shape, 1.0)
    y = np.empty_like(x)
    C.softmax_rows(x, None, y, 1)
    o, o32 = np.empty_like(x), np.empty_like(x32)
    C.softmax_backward_rows(g, y, o, 1)
    C.softmax_backward_rows(g.astype(F32), y.astype(F32), o32, 1)
    assert_half_equal(o, rounded(o32, dt), 0, "softmax_backward")
    t = rng.integers(0, k, n)
    loss, loss32 = np.empty(n, F32), np.empty(n, F32)
    gr, gr32 = np.empty_like(x), np.empty_like(x32)
    C.cross_entropy_index_rows(x, t, None, -100, 0.0, 0.0, 1.0, 1.0, 1.0, None, loss, gr, 1)
    C.cross_entropy_index_rows(x32, t, None, -100, 0.0, 0.0, 1.0, 1.0, 1.0, None, loss32, gr32, 1)
    np.testing.assert_array_equal(loss, loss32)
    assert_half_equal(gr, rounded(gr32, dt), 0, "cross entropy grad")


@needs_c
@pytest.mark.parametrize("dt", HALVES)
def test_c_conversions(isa, dt):
    """Every half value widens as astype(float32) does; float32 values (random bit
    patterns, every rounding boundary and tie of the half grid, subnormals,
    overflow, inf, NaN) narrow as astype(half) does (NumPy / ml_dtypes:
    nearest-even, subnormals kept)."""
    allh = np.arange(65536, dtype=np.uint16).view(dt)
    w = C.widen_half(allh)
    want = allh.astype(F32)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(w), nan)
    assert np.array_equal(w[~nan].view(np.uint32), want[~nan].view(np.uint32))
    # narrowing: the half grid's points, midpoints (ties) and midpoints +- 1 ulp
    h = allh.astype(F32)
    h = h[np.isfinite(h)]
    hs = np.sort(np.unique(h.astype(np.float64)))
    mid = ((hs[1:] + hs[:-1]) / 2).astype(F32)  # exact in float32
    u = mid.view(np.uint32)
    rng = np.random.default_rng(5)
    rnd = rng.integers(0, 2**32, 300000, dtype=np.uint64).astype(np.uint32).view(F32)
    v = np.concatenate([h, mid, (u + 1).view(F32), (u - 1).view(F32), rnd,
                        np.array([np.inf, -np.inf, np.nan, -np.nan, 0.0, -0.0,
                                  3.4028235e38, -3.4028235e38, 65504, 65519.99, 65520,
                                  1e-45, 6e-8, 2.9802322e-08, 2.9802326e-08], F32)]).astype(F32)
    for n in (v.size, 1, 7, 15, 16, 17, 33):  # vector tails
        vv = v[:n] if n < v.size else v
        with np.errstate(over="ignore", invalid="ignore"):
            exp = vv.astype(dt)
        assert_half_equal(C.narrow_half(vv, dt), exp, 0, f"narrowing n={n}")



# ---------------------------------------------------------------- bounded memory

@pytest.mark.parametrize("dt", HALVES)
def test_no_whole_array_float32_temporary(native_backend, dt):
    """128 MiB of half logits with out=: the native backends' half paths allocate
    (as traced by tracemalloc, NumPy's buffers included) well under 8 MiB."""
    be = native_backend
    n, k = 8192, 8192  # 64 Mi elements, 128 MiB
    x = np.zeros((n, k), dt)
    x[:, ::3] = 1
    out = np.empty_like(x)
    t = np.arange(n) % k
    lse = np.empty(n, dt)
    want = fastact.softmax(x[:2], backend=be)

    def calls():
        fastact.softmax(x, out=out, backend=be)
        assert_half_equal(out[-2:], want, 0, "softmax")
        fastact.log_softmax(x, out=out, backend=be)
        fastact.logsumexp(x, out=lse, backend=be)
        fastact.softmax_backward(x, x, out=out, backend=be)
        fastact.softmax_cross_entropy_with_grad(x, t, out=out, backend=be)
        fastact.softmax_cross_entropy_with_grad(out, t, out=out, backend=be)  # in place

    calls()  # first: imports, and Numba compiling the variants these sizes take
    tracemalloc.start()
    try:
        calls()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"traced peak {peak / 2**20:.1f} MiB"


# ---------------------------------------------------------------- fastact.torch

def _torch_half(dt):
    torch = pytest.importorskip("torch")
    return torch, (torch.float16 if dt == F16 else torch.bfloat16)


def _np_of(t):
    import torch
    t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(BF16)
    return t.numpy()


@pytest.mark.parametrize("dt", HALVES)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape,dim", [((37, 10), -1), ((5, 1000), 1), ((4, 6, 3), 1)])
def test_torch_rows(backend, dt, name, shape, dim):
    """Values within one half ulp of torch's float32 result rounded; gradients (in the
    input dtype) close to torch's float32 gradient rounded."""
    torch, tdt = _torch_half(dt)
    import fastact.torch as ft
    gen = torch.Generator().manual_seed(5)
    x32 = torch.randn(shape, generator=gen) * 3
    g32 = torch.randn(shape, generator=gen)
    x = x32.to(tdt).requires_grad_(True)
    with fastact.use_backend(backend):
        y = getattr(ft, name)(x, dim=dim)
        assert y.dtype == tdt
        y.backward(g32.to(tdt))
    assert x.grad.dtype == tdt
    xr = x.detach().float().requires_grad_(True)
    yr = getattr(torch.nn.functional, name)(xr, dim=dim)
    yr.backward(g32.to(tdt).float())
    assert_half_equal(_np_of(y), _np_of(yr.detach().to(tdt)), 1, "values")
    # the half y the backward reads is rounded: a few half ulps of the gradient's scale
    eps = float(ml_dtypes.finfo(dt).eps)
    gf, rf = x.grad.float(), xr.grad
    torch.testing.assert_close(gf, rf.to(tdt).float(), rtol=4 * eps,
                               atol=4 * eps * float(rf.abs().max()))


@pytest.mark.parametrize("dt", HALVES)
@pytest.mark.parametrize("opts", [{}, {"reduction": "sum"}, {"reduction": "none"},
                                  {"label_smoothing": 0.1, "weight": True}])
@pytest.mark.parametrize("kind", ["index", "prob", "kdim"])
def test_torch_cross_entropy(backend, dt, opts, kind):
    torch, tdt = _torch_half(dt)
    import fastact.torch as ft
    gen = torch.Generator().manual_seed(7)
    c = 11
    if kind == "kdim":
        x32 = torch.randn(4, c, 3, generator=gen) * 3
        t = torch.randint(0, c, (4, 3), generator=gen)
    else:
        x32 = torch.randn(9, c, generator=gen) * 3
        t = torch.randint(0, c, (9,), generator=gen)
        if kind == "prob":
            t = torch.softmax(torch.randn(9, c, generator=gen), -1).to(tdt)
    kw = dict(opts)
    if kw.get("weight"):
        kw["weight"] = (torch.rand(c, generator=gen) + 0.5).to(tdt)
    x = x32.to(tdt).requires_grad_(True)
    with fastact.use_backend(backend):
        loss = ft.cross_entropy(x, t, **kw)
        assert loss.dtype == tdt
        loss.sum().backward()
    assert x.grad.dtype == tdt
    xr = x.detach().float().requires_grad_(True)
    kr = dict(kw)
    if "weight" in kr:
        kr["weight"] = kr["weight"].float()
    tr = t.float() if t.is_floating_point() else t
    lr = torch.nn.functional.cross_entropy(xr, tr, **kr)
    lr.sum().backward()
    eps = float(ml_dtypes.finfo(dt).eps)
    torch.testing.assert_close(loss.float(), lr.detach().to(tdt).float(), rtol=eps, atol=eps)
    assert_half_equal(_np_of(x.grad), _np_of(xr.grad.to(tdt)), 1, "gradient")


# ---------------------------------------------------------------- fastact bench --dtype

def test_bench_half_dtypes(tmp_path):
    """``fastact bench --dtype float16,bfloat16``: records of both dtypes whose results
    agree with the reference (torch, where installed, on tensors of the same dtype);
    the JSON validates against the documented schema."""
    import json

    from fastact import bench, cli
    path = tmp_path / "bench.json"
    code = cli.main(["bench", "--quick", "--shapes", "64x10,3x40", "--ops",
                     "softmax,log_softmax,logsumexp,cross_entropy_with_grad",
                     "--dtype", "float16,bfloat16", "--threads", "1", "--json", str(path),
                     "--no-progress"])
    assert code == 0
    result = json.loads(path.read_text())
    assert {r["dtype"] for r in result["records"]} == {"float16", "bfloat16"}
    assert all(fc["agrees"] for fc in result["first_calls"] if fc["agrees"] is not None), \
        [fc for fc in result["first_calls"] if fc["agrees"] is False]
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(result, bench.SCHEMA, cls=jsonschema.Draft202012Validator)


# ---------------------------------------------------------------- elementwise

UNARY = [("sigmoid", {}), ("log_sigmoid", {}), ("relu", {}), ("tanh", {}), ("softsign", {}),
         ("gelu", {}), ("gelu", {"approximate": "tanh"}), ("silu", {})]


def _elementwise_input(dt, n=2053):
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * 4).astype(np.float64)
    fmax = float(ml_dtypes.finfo(dt).max)
    tiny = float(ml_dtypes.finfo(dt).smallest_subnormal)
    x[:12] = [np.nan, np.inf, -np.inf, fmax, -fmax, 0.0, -0.0, tiny, -tiny, 30.0, -30.0, -12.0]
    return x.astype(dt)


@pytest.mark.parametrize("dt", HALVES)
@pytest.mark.parametrize("name,kw", UNARY, ids=[n + "_".join(k.values()) for n, k in UNARY])
def test_elementwise(backend, dt, name, kw):
    """Forward and backward (sigmoid's from y): the float32 result rounded."""
    x = _elementwise_input(dt)
    g = (np.random.default_rng(1).standard_normal(x.size) * 2).astype(dt)
    fwd = getattr(fastact, name)
    got, ref, own = both(fwd, x, dt, backend, **kw)
    assert_half_equal(got, ref, 1, f"{name} vs reference")
    assert_half_equal(got, own, 0, f"{name} vs own float32")
    bwd = getattr(fastact, name + "_backward")
    s = got if name == "sigmoid" else x
    gb = bwd(g, s, backend=backend, **kw)
    ob = bwd(g.astype(F32), s.astype(F32), backend=backend, **kw)
    rb = bwd(g.astype(F32), s.astype(F32), backend="numpy", **kw)
    assert gb.dtype == dt
    assert_half_equal(gb, rounded(ob, dt), 0, f"{name}_backward vs own float32")
    assert_half_equal(gb, rounded(rb, dt), 1, f"{name}_backward vs reference")
    # out=, in place, a 2-D Fortran-ordered input
    out = np.empty_like(x)
    assert fwd(x, out=out, backend=backend, **kw) is out
    assert_half_equal(out, got, 0, "out=")
    y = x.copy()
    fwd(y, out=y, backend=backend, **kw)
    assert_half_equal(y, got, 0, "in place")
    x2 = np.asfortranarray(x[:2052].reshape(36, 57))
    assert_half_equal(fwd(x2, backend=backend, **kw), got[:2052].reshape(36, 57), 0, "F order")
