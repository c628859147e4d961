"""fastact.dask against in-memory fastact and the float64 truths, on the synchronous
and threaded schedulers and on a dask.distributed LocalCluster: class axis in one
chunk and split across chunks, special values across chunk boundaries, masks,
``b``/``return_sign``, and every cross-entropy option."""

from __future__ import annotations

import importlib.util
import itertools
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import conftest
import fastact
from conftest import assert_close, assert_special_equal, special_matrix, truth_logsumexp, \
    truth_softmax

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
fd = pytest.importorskip("fastact.dask")

FLOATS = [np.float32, np.float64]
IGNORE = -100
ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(params=["sync", "threads"])
def scheduler(request):
    return request.param


def run(*arrs, scheduler="sync"):
    out = dask.compute(*arrs, scheduler=scheduler)
    return out if len(out) > 1 else out[0]


def chunked(x, cls):
    """``x`` as a dask array with rows in chunks of 3 and the last axis in ``cls``."""
    return da.from_array(x, chunks=(3,) * (x.ndim - 1) + (cls,))


def special_case_matrix(dtype):
    """Rows of 12 (3 chunks of 4): special values inside one chunk, spanning chunks,
    filling a chunk; and the SPEC special rows padded with ordinary values."""
    dt = np.dtype(dtype)
    inf, nan = np.inf, np.nan
    big = 100.0 if dt == np.float32 else 800.0
    fmax = float(np.finfo(dt).max)
    base = np.linspace(-2.0, 2.0, 12)
    rows = {
        "chunk_all_neg_inf": np.r_[base[:4], [-inf] * 4, base[8:]],
        "two_chunks_neg_inf": np.r_[[-inf] * 8, base[8:]],
        "all_neg_inf": np.full(12, -inf),
        "nan_in_last_chunk": np.r_[base[:10], nan, base[11]],
        "pos_inf_in_middle": np.r_[base[:5], inf, base[6:]],
        "nan_and_pos_inf": np.r_[inf, base[1:9], nan, base[10:]],
        "spread_across_chunks": np.r_[[big, big - 1] * 2, base[4:8], [-big] * 4],
        "max_in_last_chunk": np.r_[[-big] * 8, [0.0, big, 1.0, 2.0]],
        "fmax_across": np.r_[[fmax, 0.0, 0.0, 0.0], [-fmax] * 4, [fmax * 0.5] * 4],
        "large_offset": 1e4 + base if dt == np.float32 else 1e12 + base,
        "single_finite": np.r_[[-inf] * 9, 7.0, -inf, -inf],
        "equal": np.full(12, 3.0),
    }
    names = list(rows)
    return names, np.stack([np.asarray(v, np.float64) for v in rows.values()]).astype(dt)


# ---------------------------------------------------------------------------
# softmax, log_softmax, logsumexp
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("cls", [12, 4, 5])
def test_softmax_family_special(backend, scheduler, dtype, cls):
    _, x = special_case_matrix(dtype)
    dx = chunked(x, cls)
    with np.errstate(all="ignore"):
        got = run(fd.softmax(dx, backend=backend), fd.log_softmax(dx, backend=backend),
                  fd.logsumexp(dx, backend=backend), scheduler=scheduler)
        mem = (fastact.softmax(x, backend=backend), fastact.log_softmax(x, backend=backend),
               fastact.logsumexp(x, backend=backend))
        truth = (truth_softmax(x), truth_softmax(x, log=True), truth_logsumexp(x))
    for g, m, t, kind in zip(got, mem, truth, ["prob", "log", "log"]):
        assert g.dtype == m.dtype and g.shape == m.shape
        assert_special_equal(g, m)
        assert_close(g, t, dtype, kind)


@pytest.mark.parametrize("dtype", FLOATS)
def test_spec_special_rows_split_in_pairs(backend, dtype):
    _, x = special_matrix(dtype)
    dx = chunked(x, 2)
    with np.errstate(all="ignore"):
        assert_close(run(fd.softmax(dx, backend=backend)), truth_softmax(x), dtype, "prob")
        assert_close(run(fd.log_softmax(dx, backend=backend)), truth_softmax(x, log=True),
                     dtype, "log")
        assert_close(run(fd.logsumexp(dx, backend=backend)), truth_logsumexp(x), dtype, "log")


@pytest.mark.parametrize("axis", [-1, 0, 1, (0, 2), (1, 2), None])
@pytest.mark.parametrize("chunks", [(2, 3, 4), (5, 7, 9)])
def test_any_axis_any_chunks(backend, axis, chunks):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((5, 7, 9)) * 40).astype(np.float32)
    x[1, 2, 3] = -np.inf
    dx = da.from_array(x, chunks=chunks)
    y = fd.softmax(dx, axis=axis, backend=backend)
    ly = fd.log_softmax(dx, axis=axis, backend=backend)
    lse = fd.logsumexp(dx, axis=axis, backend=backend)
    assert y.chunks == dx.chunks
    got = run(y, ly, lse)
    assert_close(got[0], truth_softmax(x, axis=axis), np.float32, "prob")
    assert_close(got[1], truth_softmax(x, axis=axis, log=True), np.float32, "log")
    assert_close(got[2], truth_logsumexp(x, axis=axis), np.float32, "log")
    np.testing.assert_array_equal(np.shape(got[2]), np.shape(fastact.logsumexp(x, axis=axis)))


def test_long_rows_many_chunks():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((4, 100_000)) * 10).astype(np.float32)
    dx = da.from_array(x, chunks=(2, 7_000))
    assert_close(run(fd.softmax(dx)), truth_softmax(x), np.float32, "prob")
    assert_close(run(fd.log_softmax(dx)), truth_softmax(x, log=True), np.float32, "log")
    assert_close(run(fd.logsumexp(dx)), truth_logsumexp(x), np.float32, "log")


@pytest.mark.parametrize("cls", [12, 4])
def test_where_mask(backend, scheduler, cls):
    _, x = special_case_matrix(np.float64)
    rng = np.random.default_rng(3)
    w = rng.random(x.shape) < 0.7
    w[0] = False                       # fully masked row: "safe softmax"
    w[1, :4] = False                   # a fully masked chunk
    x = x.copy()
    x[2, ~w[2]] = np.inf               # masked +inf / NaN never reach the result
    x[3, ~w[3]] = np.nan
    dx = chunked(x, cls)
    dw = da.from_array(w, chunks=dx.chunks)
    with np.errstate(all="ignore"):
        for where in (w, dw):
            got = run(fd.softmax(dx, where=where, backend=backend),
                      fd.log_softmax(dx, where=where, backend=backend),
                      fd.logsumexp(dx, where=where, backend=backend), scheduler=scheduler)
            assert_close(got[0], truth_softmax(x, where=w), np.float64, "prob")
            assert_close(got[1], truth_softmax(x, where=w, log=True), np.float64, "log")
            assert_close(got[2], truth_logsumexp(x, where=w), np.float64, "log")
        # a broadcast mask (one per column)
        col = rng.random(12) < 0.5
        assert_close(run(fd.softmax(dx, where=col)), truth_softmax(x, where=col),
                     np.float64, "prob")


@pytest.mark.parametrize("cls", [10, 3])
def test_logsumexp_b_sign_keepdims(backend, cls):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 10)) * 5
    b = rng.standard_normal((6, 10))
    b[0, :5] = 0
    x[1, 4] = np.inf
    b[1, 4] = -2.0                     # +inf with a negative weight: -inf sum, sign -1
    x[2, 7] = np.nan
    x[3, :] = -np.inf
    dx, db = chunked(x, cls), chunked(b, cls)
    with np.errstate(all="ignore"):
        r, s = run(*fd.logsumexp(dx, b=db, return_sign=True, backend=backend))
        er, es = fastact.logsumexp(x, b=b, return_sign=True, backend="numpy")
        assert_special_equal(r, er)
        assert_special_equal(s, es)
        np.testing.assert_allclose(r, er, rtol=1e-12)
        np.testing.assert_array_equal(s[np.isfinite(es)], es[np.isfinite(es)])
        # without return_sign a negative sum is NaN, as in memory
        assert_special_equal(run(fd.logsumexp(dx, b=db, backend=backend)),
                             fastact.logsumexp(x, b=b, backend="numpy"))
        bcol = np.abs(b[0]) + 0.5          # b broadcast along rows
        np.testing.assert_allclose(run(fd.logsumexp(dx[4:], b=bcol)),
                                   fastact.logsumexp(x[4:], b=bcol), rtol=1e-12)
    k = run(fd.logsumexp(dx[4:], keepdims=True, backend=backend))
    assert k.shape == (2, 1)
    np.testing.assert_allclose(k, fastact.logsumexp(x[4:], keepdims=True), rtol=1e-12)
    a = run(fd.logsumexp(dx[4:], axis=None))
    assert np.ndim(a) == 0
    np.testing.assert_allclose(a, fastact.logsumexp(x[4:], axis=None), rtol=1e-12)


def test_dtypes_and_numpy_input():
    x = np.random.default_rng(5).standard_normal((4, 9)).astype(np.float16)
    y = fd.softmax(x)                        # NumPy input is wrapped
    assert isinstance(y, da.Array) and y.dtype == np.float16
    assert run(y).dtype == np.float16
    assert run(fd.log_softmax(chunked(x, 4))).dtype == np.float16
    np.testing.assert_allclose(run(fd.softmax(chunked(x, 4))).astype(np.float64),
                               fastact.softmax(x).astype(np.float64), rtol=2e-3, atol=1e-4)
    xi = np.arange(12).reshape(3, 4)
    assert run(fd.softmax(chunked(xi, 2))).dtype == np.float64
    with pytest.raises(TypeError, match="complex"):
        fd.softmax(np.ones((2, 2), complex))
    with pytest.raises(TypeError, match="out"):
        fd.softmax(x, out=np.empty_like(x))


def test_lazy_and_bounded():
    calls = []

    def gen(block_info=None):
        calls.append(1)
        loc = block_info[None]["array-location"]
        rng = np.random.default_rng(loc[0][0] * 1000 + loc[1][0])
        return rng.standard_normal(block_info[None]["chunk-shape"]).astype(np.float32)

    x = da.map_blocks(gen, chunks=((50,) * 4, (64,) * 5), dtype=np.float32,
                      meta=np.empty((0, 0), np.float32))
    t = da.zeros(200, dtype=np.int64, chunks=50)
    exprs = [fd.softmax(x), fd.log_softmax(x), fd.logsumexp(x),
             fd.softmax_cross_entropy(x, t), *fd.softmax_cross_entropy_with_grad(x, t)]
    assert not calls                          # building the graphs computes nothing
    for e in exprs:
        assert isinstance(e, da.Array)
    # no task holds a whole row: class chunks are never merged into one block
    for e in exprs:
        for c in e.chunks[-1:] if e.ndim == 2 else ():
            assert max(c) == 64
    run(*exprs)
    assert calls


def test_import_fastact_does_not_import_dask():
    code = "import sys, fastact; assert 'dask' not in sys.modules; import fastact.dask"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ---------------------------------------------------------------------------
# cross-entropy
# ---------------------------------------------------------------------------

def ce_case(rng, dtype, **kw):
    kw = {"lead": (11,), "c": 13, "spread": 4.0, "ignore_index": IGNORE, **kw}
    return conftest.ce_case(rng, dtype, **kw)


def close(got, want, dtype):
    rtol = 2e-5 if dtype == np.float32 else 1e-11
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert_special_equal(got, want)
    fin = np.isfinite(want)
    scale = np.max(np.abs(want[fin])) + 1e-30 if fin.any() else 1.0
    np.testing.assert_allclose(got[fin], want[fin], rtol=rtol, atol=rtol * scale)


def as_dask(x, t, cls):
    dx = chunked(x, cls)
    dt = da.from_array(t, chunks=dx.chunks if t.ndim == x.ndim else dx.chunks[:-1])
    return dx, dt


OPTIONS = list(itertools.product(
    [True, False],            # index / probability targets
    [False, True],            # weight
    [0.0, 0.15],              # label_smoothing
    [0.0, 1e-2],              # z_loss
    ["mean", "sum", "none"],  # reduction
))


@pytest.mark.parametrize("index,weighted,smoothing,z,reduction", OPTIONS)
@pytest.mark.parametrize("cls", [13, 4])
def test_cross_entropy_options(index, weighted, smoothing, z, reduction, cls):
    rng = np.random.default_rng(6)
    dtype = np.float32
    x, t = ce_case(rng, dtype, index=index)
    w = (rng.random(13) + 0.2).astype(dtype) if weighted else None
    kw = dict(weight=w, reduction=reduction, label_smoothing=smoothing, z_loss=z)
    dx, dt = as_dask(x, t, cls)
    loss, grad = run(*fd.softmax_cross_entropy_with_grad(dx, dt, **kw))
    l_only = run(fd.softmax_cross_entropy(dx, dt, **kw))
    el, eg = fastact.softmax_cross_entropy_with_grad(x, t, **kw, backend="numpy")
    close(loss, el, dtype)
    close(l_only, el, dtype)
    close(grad, eg, dtype)
    assert np.asarray(loss).dtype == np.asarray(el).dtype and grad.dtype == eg.dtype
    assert np.shape(loss) == np.shape(el)
    gl = 0.5 if reduction != "none" else rng.random(11)
    dgl = gl if reduction != "none" else da.from_array(gl, chunks=5)
    close(run(fd.softmax_cross_entropy_backward(dx, dt, dgl, **kw)),
          fastact.softmax_cross_entropy_backward(x, t, gl, **kw, backend="numpy"), dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("cls", [13, 5])
def test_cross_entropy_backends_schedulers(backend, scheduler, dtype, cls):
    rng = np.random.default_rng(7)
    x, t = ce_case(rng, dtype, lead=(3, 5))
    w = rng.random(13).astype(dtype) + 0.1
    kw = dict(weight=w, label_smoothing=0.1, z_loss=1e-3, ignore_index=2)
    t[t == IGNORE] = 2                        # ignore_index inside [0, C)
    dx, dt = as_dask(x, t, cls)
    loss, grad = run(*fd.softmax_cross_entropy_with_grad(dx, dt, **kw, backend=backend),
                     scheduler=scheduler)
    el, eg = fastact.softmax_cross_entropy_with_grad(x, t, **kw, backend=backend)
    close(loss, el, dtype)
    close(grad, eg, dtype)


@pytest.mark.parametrize("index", [True, False])
@pytest.mark.parametrize("cls", [13, 4])
def test_cross_entropy_class_axis(backend, index, cls):
    """``axis=1``: logits (N, C, H, W) as PyTorch lays them out, the class axis in one
    chunk or split, against the in-memory functions with the same ``axis``."""
    rng = np.random.default_rng(11)
    x, t = ce_case(rng, np.float64, lead=(2, 3, 4), index=index)  # (2, 3, 4, 13)
    x = np.ascontiguousarray(np.moveaxis(x, -1, 1))               # (2, 13, 3, 4)
    if not index:
        t = np.ascontiguousarray(np.moveaxis(t, -1, 1))
    w = rng.random(13) + 0.2
    kw = dict(axis=1, weight=w, label_smoothing=0.1, z_loss=1e-3, reduction="none")
    dx = da.from_array(x, chunks=(1, cls, 2, 4))
    dt = da.from_array(t, chunks=(1, 2, 4) if index else dx.chunks)
    loss, grad = run(*fd.softmax_cross_entropy_with_grad(dx, dt, **kw, backend=backend))
    el, eg = fastact.softmax_cross_entropy_with_grad(x, t, **kw, backend="numpy")
    assert grad.shape == x.shape and loss.shape == (2, 3, 4)
    close(loss, el, np.float64)
    close(grad, eg, np.float64)
    gl = rng.random((2, 3, 4))
    close(run(fd.softmax_cross_entropy_backward(dx, dt, gl, **kw, backend=backend)),
          fastact.softmax_cross_entropy_backward(x, t, gl, **kw, backend="numpy"), np.float64)
    close(run(fd.softmax_cross_entropy(dx, dt, **{**kw, "reduction": "mean"}, backend=backend)),
          fastact.softmax_cross_entropy(x, t, **{**kw, "reduction": "mean"}, backend="numpy"),
          np.float64)


@pytest.mark.parametrize("cls", [12, 4])
def test_cross_entropy_special_logits(cls):
    names, x = special_case_matrix(np.float64)
    t = np.arange(len(names)) % 12
    t[names.index("chunk_all_neg_inf")] = 5  # target inside the all -inf chunk: loss inf
    dx, dt = as_dask(x, t, cls)
    with np.errstate(all="ignore"):
        for kw in (dict(reduction="none"), dict(reduction="none", label_smoothing=0.1),
                   dict(reduction="none", z_loss=1e-3)):
            loss, grad = run(*fd.softmax_cross_entropy_with_grad(dx, dt, **kw))
            el, eg = fastact.softmax_cross_entropy_with_grad(x, t, **kw, backend="numpy")
            close(loss, el, np.float64)
            ok = np.isfinite(el)              # gradients of finite losses
            close(grad[ok], eg[ok], np.float64)


def test_cross_entropy_large_logits_split():
    """(M - x_t) + S, not lse - x_t: no cancellation when |logits| is large."""
    rng = np.random.default_rng(8)
    x = (1e5 + rng.standard_normal((6, 40))).astype(np.float32)
    t = rng.integers(0, 40, 6)
    dx, dt = as_dask(x, t, 7)
    el = fastact.softmax_cross_entropy(x, t, reduction="none", label_smoothing=0.2)
    close(run(fd.softmax_cross_entropy(dx, dt, reduction="none", label_smoothing=0.2)), el,
          np.float32)


def test_cross_entropy_all_ignored_and_errors():
    rng = np.random.default_rng(9)
    x, _ = ce_case(rng, np.float64)
    t = np.full(11, IGNORE)
    dx, dt = as_dask(x, t, 4)
    loss, grad = run(*fd.softmax_cross_entropy_with_grad(dx, dt))
    assert np.isnan(loss) and not grad.any()
    assert run(fd.softmax_cross_entropy(dx, dt, reduction="sum")) == 0
    bad = t.copy()
    bad[7] = 13
    lazy = fd.softmax_cross_entropy(*as_dask(x, bad, 4))   # raises only when computed
    with pytest.raises(IndexError, match="13"):
        run(lazy)
    with pytest.raises(ValueError):
        fd.softmax_cross_entropy(dx, dt, reduction="avg")
    with pytest.raises(ValueError):
        fd.softmax_cross_entropy(dx, dt, label_smoothing=1.5)
    with pytest.raises(ValueError, match="shape"):
        fd.softmax_cross_entropy(dx, dt[:5])
    with pytest.raises(ValueError, match="shape"):
        fd.softmax_cross_entropy(dx, dt, weight=np.ones(4))
    with pytest.raises(ValueError, match="scalar"):
        fd.softmax_cross_entropy_backward(dx, dt, np.ones(11))


def test_cross_entropy_float16():
    rng = np.random.default_rng(10)
    x, t = ce_case(rng, np.float16)
    dx, dt = as_dask(x, t, 4)
    loss, grad = run(*fd.softmax_cross_entropy_with_grad(dx, dt))
    el, eg = fastact.softmax_cross_entropy_with_grad(x, t)
    assert np.asarray(loss).dtype == np.float32 and grad.dtype == np.float16
    np.testing.assert_allclose(loss, el, rtol=1e-5)
    np.testing.assert_allclose(grad.astype(np.float64), eg.astype(np.float64), atol=2e-3)


# ---------------------------------------------------------------------------
# dask.distributed: worker processes on loopback
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def test_distributed_cluster(client):
    names, x = special_case_matrix(np.float32)
    rng = np.random.default_rng(11)
    x = np.concatenate([x, (rng.standard_normal((9, 12)) * 3).astype(np.float32)])
    t = rng.integers(0, 12, len(x))
    t[2] = IGNORE
    dx, dt = as_dask(x, t, 5)
    w = rng.random(12).astype(np.float32) + 0.5
    exprs = [fd.softmax(dx), fd.log_softmax(dx), fd.logsumexp(dx),
             *fd.softmax_cross_entropy_with_grad(dx[len(names):], dt[len(names):], weight=w,
                                                 label_smoothing=0.1, z_loss=1e-3)]
    got = client.compute(exprs, sync=True)
    with np.errstate(all="ignore"):
        assert_close(got[0], truth_softmax(x), np.float32, "prob")
        assert_close(got[1], truth_softmax(x, log=True), np.float32, "log")
        assert_close(got[2], truth_logsumexp(x), np.float32, "log")
    el, eg = fastact.softmax_cross_entropy_with_grad(
        x[len(names):], t[len(names):], weight=w, label_smoothing=0.1, z_loss=1e-3)
    close(got[3], el, np.float32)
    close(got[4], eg, np.float32)
    bad = t.copy()
    bad[-1] = 99
    with pytest.raises(IndexError, match="99"):
        client.compute(fd.softmax_cross_entropy(*as_dask(x[len(names):], bad[len(names):], 5)),
                       sync=True)


# ---------------------------------------------------------------------------
# the out-of-core benchmark's smoke mode
# ---------------------------------------------------------------------------

def test_out_of_core_benchmark_smoke():
    pytest.importorskip("psutil")
    path = ROOT / "benchmarks" / "dask_out_of_core.py"
    spec = importlib.util.spec_from_file_location("dask_out_of_core", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    results = mod.main(["--smoke", "--scheduler", "sync"])  # checks against in-memory
    assert {r["op"].split()[0] for r in results} == {"generate", "logsumexp", "cross-entropy"}


# ---------------------------------------------------------------------------
# softmax_backward, log_softmax_backward
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("cls", [9, 4])
def test_backward(backend, dtype, cls):
    rng = np.random.default_rng(12)
    x = (rng.standard_normal((7, 9)) * 5).astype(dtype)
    g = rng.standard_normal((7, 9)).astype(dtype)
    w = rng.random((7, 9)) < 0.6
    w[0] = False
    y, ly = fastact.softmax(x), fastact.log_softmax(x)
    lym = fastact.log_softmax(x, where=w)
    dg = chunked(g, cls)
    got = run(fd.softmax_backward(dg, chunked(y, cls), backend=backend),
              fd.log_softmax_backward(dg, chunked(ly, cls), backend=backend),
              fd.log_softmax_backward(dg, chunked(lym, cls), where=w, backend=backend))
    want = (fastact.softmax_backward(g, y, backend="numpy"),
            fastact.log_softmax_backward(g, ly, backend="numpy"),
            fastact.log_softmax_backward(g, lym, where=w, backend="numpy"))
    for a, b in zip(got, want):
        assert a.dtype == b.dtype
        close(a, b, dtype)
    assert not got[2][~w].any()
