"""The Numba backend's half-precision layer (``fastact/_backends/_numba_half.py``).

Its conversions bit for bit against NumPy (float16) and ml_dtypes (bfloat16) on
every half value and on float32 values around every rounding boundary; and its
block layer with blocks small enough that every call is split into many blocks
(tiles of short rows, long rows one per block) and threads: every result must be
the backend's own float32 result rounded, bit for bit.  (tests/test_half.py runs
the public functions on every backend at the default block size.)
"""

from __future__ import annotations

import numpy as np
import pytest

import fastact

pytest.importorskip("numba")
ml_dtypes = pytest.importorskip("ml_dtypes")
from fastact._backends import _numba_half as H  # noqa: E402

HALVES = [pytest.param(np.dtype(np.float16), id="float16"),
          pytest.param(np.dtype(ml_dtypes.bfloat16), id="bfloat16")]
F32 = np.float32


def _same_bits(got, want, what):
    """Bit-identical, except that any NaN matches any NaN of the same sign."""
    g, w = np.asarray(got), np.asarray(want)
    assert g.dtype == w.dtype and g.shape == w.shape, what
    gn, wn = np.isnan(g.astype(F32)), np.isnan(w.astype(F32))
    assert np.array_equal(gn, wn), f"{what}: NaN at {np.argwhere(gn != wn)[:5].tolist()}"
    gu, wu = g.view(np.uint16), w.view(np.uint16)
    bad = (gu != wu) & ~wn
    assert not bad.any(), (f"{what}: {int(bad.sum())} differ, first got {gu[bad][:4]} "
                           f"want {wu[bad][:4]}")


# float16 both ways: the F16C conversions (where the CPU has them) and the
# integer forms of CPUs without
F16_FORMS = [pytest.param("soft", id="soft"),
             pytest.param("hw", id="f16c", marks=pytest.mark.skipif(not H.F16C, reason="no F16C"))]
CONVERSIONS = [pytest.param(np.dtype(ml_dtypes.bfloat16), None, id="bfloat16")] + [
    pytest.param(np.dtype(np.float16), f.values[0], id="float16-" + f.id, marks=f.marks)
    for f in F16_FORMS]


def _convert(dt, form, src, dst, widen):
    if form is None:
        return (H.widen if widen else H.narrow)(src, dst)
    fn = getattr(H, f"_{'widen' if widen else 'narrow'}_f16_{form}")
    return fn(src.view(np.uint16), dst) if widen else fn(src, dst.view(np.uint16))


@pytest.mark.parametrize("dt,form", CONVERSIONS)
def test_widen_every_half_value(dt, form):
    h = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(dt)
    f = np.empty(h.size, F32)
    _convert(dt, form, h, f, True)
    want = h.astype(F32)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(f), nan)
    assert np.array_equal(f.view(np.uint32)[~nan], want.view(np.uint32)[~nan])


def _narrow_inputs():
    g = np.random.default_rng(7)
    parts = [
        g.integers(0, 1 << 32, 2_000_000, dtype=np.uint64).astype(np.uint32),
        np.arange(0, 0x39000000, 4099, dtype=np.uint32),             # 0, subnormals, tiny
        np.arange(0x387F0000, 0x38810000, 7, dtype=np.uint32),       # float16's normal edge
        np.arange(0x477F0000, 0x47810000, 3, dtype=np.uint32),       # float16's max / inf
        np.arange(0x33000000 - 64, 0x33000000 + 64, dtype=np.uint32),  # 2**-25: the last tie
        np.array([0x7F800000, 0x7F800001, 0x7FC00000, 0x7FFFFFFF, 0x7F7FFFFF], np.uint32),
    ]
    # ties and their neighbours of every rounding position of float16 and bfloat16
    base = g.integers(0x30000000, 0x47000000, 20000, dtype=np.uint64).astype(np.uint32)
    for drop in (13, 16):
        t = (base & ~np.uint32((1 << drop) - 1)) | np.uint32(1 << (drop - 1))
        parts += [t - np.uint32(1), t, t + np.uint32(1), t | np.uint32(1 << drop)]
    u = np.concatenate(parts)
    return np.concatenate([u, u | np.uint32(0x80000000)]).view(F32)


@pytest.mark.parametrize("dt,form", CONVERSIONS)
def test_narrow_rounds_as_numpy(dt, form):
    f = _narrow_inputs()
    h = np.empty(f.size, dt)
    _convert(dt, form, f, h, False)
    with np.errstate(all="ignore"):
        want = f.astype(dt)
    _same_bits(h, want, f"narrow to {dt}")


# ------------------------------------------------------------------ the blocks

@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def small_blocks(request, monkeypatch):
    """Blocks of 4 KB of float32 per array, and threads from 64 elements on."""
    monkeypatch.setattr(H, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(H, "PAR_MIN_ELEMS", 64)
    old = fastact.get_num_threads()
    fastact.set_num_threads(request.param)
    yield request.param
    fastact.set_num_threads(old)


def _logits(shape, dt, seed=0):
    g = np.random.default_rng(seed)
    x = (g.standard_normal(shape) * 4).astype(F32)
    x.flat[3] = np.inf if x.size > 3 else x.flat[0]
    if shape[0] > 5:
        x[5] = -np.inf                      # a fully -inf row: NaN, as float32
        x[4, ::2] = -np.inf
        x[2, 1] = np.nan
    return x.astype(dt)


def _own(fn, *arrays, dt, **kw):
    """The Numba backend's float32 result on the widened arrays, rounded to dt."""
    r = fn(*[a.astype(F32) if a.dtype == dt else a for a in arrays], backend="numba", **kw)
    with np.errstate(all="ignore"):
        return np.asarray(r).astype(dt)


SHAPES = [(300, 10), (2000, 10), (1000, 33), (40, 300), (6, 5000), (3, 70001)]


@pytest.mark.parametrize("dt", HALVES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_forward_in_blocks(small_blocks, dt, shape):
    x = _logits(shape, dt)
    w = np.random.default_rng(1).random(shape) > 0.3
    for fn in (fastact.softmax, fastact.log_softmax):
        _same_bits(fn(x, backend="numba"), _own(fn, x, dt=dt), fn.__name__)
        _same_bits(fn(x, where=w, backend="numba"), _own(fn, x, dt=dt, where=w),
                   f"{fn.__name__} where")
        y = x.copy()
        fn(y, out=y, backend="numba")                 # in place
        _same_bits(y, _own(fn, x, dt=dt), f"{fn.__name__} in place")
    b = np.random.default_rng(2).random(shape).astype(dt)
    for kw in ({}, {"where": w}, {"b": b, "return_sign": True}):
        got = fastact.logsumexp(x, axis=-1, backend="numba", **kw)
        want = fastact.logsumexp(x.astype(F32), axis=-1, backend="numba",
                                 **{k: (v.astype(F32) if k == "b" else v) for k, v in kw.items()})
        for gg, ww in zip(got if isinstance(got, tuple) else (got,),
                          want if isinstance(want, tuple) else (want,)):
            with np.errstate(all="ignore"):
                _same_bits(gg, ww.astype(dt), f"logsumexp {sorted(kw)}")


@pytest.mark.parametrize("dt", HALVES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_backward_in_blocks(small_blocks, dt, shape):
    x = _logits(shape, np.float32, 3)
    x[~np.isfinite(x)] = 0
    y = fastact.softmax(x.astype(dt), backend="numba")
    ly = fastact.log_softmax(x.astype(dt), backend="numba")
    g = (np.random.default_rng(4).standard_normal(shape)).astype(dt)
    _same_bits(fastact.softmax_backward(g, y, backend="numba"),
               _own(fastact.softmax_backward, g, y, dt=dt), "softmax_backward")
    _same_bits(fastact.log_softmax_backward(g, ly, backend="numba"),
               _own(fastact.log_softmax_backward, g, ly, dt=dt), "log_softmax_backward")
    out = g.copy()
    fastact.softmax_backward(out, y, out=out, backend="numba")  # out is grad
    _same_bits(out, _own(fastact.softmax_backward, g, y, dt=dt), "softmax_backward in place")


@pytest.mark.parametrize("dt", HALVES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kw", [{}, {"label_smoothing": 0.1, "z_loss": 1e-3},
                                {"reduction": "none", "ignore_index": 1}],
                         ids=["plain", "smooth_zloss", "none_ignore"])
def test_cross_entropy_in_blocks(small_blocks, dt, shape, kw):
    x = _logits(shape, np.float32, 5)
    x[~np.isfinite(x)] = -30
    x = x.astype(dt)
    t = np.random.default_rng(6).integers(0, shape[1], shape[0])
    p = np.random.default_rng(7).random(shape).astype(F32)
    p = (p / p.sum(-1, keepdims=True)).astype(dt)
    for tgt in (t, p):
        kwt = {k: v for k, v in kw.items() if tgt is t or k != "ignore_index"}
        loss, grad = fastact.softmax_cross_entropy_with_grad(x, tgt, backend="numba", **kwt)
        l32, g32 = fastact.softmax_cross_entropy_with_grad(
            x.astype(F32), tgt if tgt is t else tgt.astype(F32), backend="numba", **kwt)
        np.testing.assert_array_equal(loss, l32)   # losses stay float32
        with np.errstate(all="ignore"):
            _same_bits(grad, g32.astype(dt), "gradient")
        y = x.copy()
        fastact.softmax_cross_entropy_with_grad(y, tgt, out=y, backend="numba", **kwt)
        _same_bits(y, grad, "gradient over the logits (out=logits)")


@pytest.mark.parametrize("dt", HALVES)
@pytest.mark.parametrize("op", ["sigmoid", "gelu", "relu"])
def test_elementwise_in_blocks(small_blocks, dt, op):
    x = _logits((70, 333), dt, 8)
    g = np.random.default_rng(9).standard_normal(x.shape).astype(dt)
    fwd, bwd = getattr(fastact, op), getattr(fastact, op + "_backward")
    _same_bits(fwd(x, backend="numba"), _own(fwd, x, dt=dt), op)
    _same_bits(bwd(g, x, backend="numba"), _own(bwd, g, x, dt=dt), op + "_backward")
    y = x.copy()
    fwd(y, out=y, backend="numba")
    _same_bits(y, _own(fwd, x, dt=dt), op + " in place")
