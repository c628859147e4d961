"""The C backend's common call checked in C (``fastact._fastpath``, csrc/fastpath.c).

softmax, log_softmax and their backwards try it first when no ``backend=`` is
given.  It must give exactly the C kernels' result on the common call, follow
the default backend, ``use_backend``, the thread count and the forced ISA level,
and hand everything else (other layouts, dtypes, masks, bad ``out``) to the
Python path, which validates and raises as before.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastact
from fastact import _config

C = pytest.importorskip("fastact._backends.c_kernels")
fp = pytest.importorskip("fastact._fastpath")

FWD = [(0, fastact.softmax, C.softmax_rows), (1, fastact.log_softmax, C.log_softmax_rows)]
SHAPES = [(10,), (1, 10), (3, 7), (64, 100), (2, 3, 33), (5, 5000), (300, 40)]


@pytest.fixture
def c_default():
    old, threads = _config._default_backend, fastact.get_num_threads()
    fastact.set_backend("c")
    yield
    fastact.set_backend(old)
    fastact.set_num_threads(threads)


def _x(shape, dtype, seed=0):
    x = (np.random.default_rng(seed).standard_normal(shape) * 5).astype(dtype)
    x.flat[0] = -np.inf
    if x.size > 3:
        x.flat[2] = 100.0
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_forward_is_the_kernel(c_default, dtype, shape):
    fastact.set_num_threads(1)
    x = _x(shape, dtype)
    for op, fn, kern in FWD:
        direct = fp.call(op, x, None, -1, None, None)      # taken by the fast path
        assert direct is not None and direct.dtype == x.dtype and direct.shape == x.shape
        want = np.empty_like(x)
        kern(x.reshape(-1, shape[-1]), None, want.reshape(-1, shape[-1]), 1)
        np.testing.assert_array_equal(direct, want)
        np.testing.assert_array_equal(fn(x), want)
        np.testing.assert_array_equal(fn(x, axis=x.ndim - 1), want)
        out = np.full_like(x, 7)
        assert fn(x, out=out) is out
        np.testing.assert_array_equal(out, want)
        y = x.copy()
        assert fn(y, out=y) is y                      # in place
        np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_backward_is_the_kernel(c_default, dtype, shape):
    fastact.set_num_threads(1)
    x = _x(shape, dtype)
    g = _x(shape, dtype, 1)
    g[~np.isfinite(g)] = 0
    k = shape[-1]
    y = fastact.softmax(x, backend="c")
    ly = fastact.log_softmax(x, backend="c")
    for op, fn, yy in ((2, fastact.softmax_backward, y), (3, fastact.log_softmax_backward, ly)):
        want = np.empty_like(x)
        if op == 2:
            C.softmax_backward_rows(g.reshape(-1, k), yy.reshape(-1, k), want.reshape(-1, k), 1)
        else:
            C.log_softmax_backward_rows(g.reshape(-1, k), yy.reshape(-1, k), None,
                                        want.reshape(-1, k), 1)
        got = fp.call(op, g, yy, -1, None, None)
        assert got is not None
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(fn(g, yy), want)
        gi = g.copy()
        assert fn(gi, yy, out=gi) is gi              # out is grad
        np.testing.assert_array_equal(gi, want)


def test_not_the_common_call_goes_to_python(c_default):
    x = _x((6, 8), np.float32)
    o = np.empty_like(x)
    ro = np.empty_like(x)
    ro.flags.writeable = False
    not_common = [
        (x, -2, None), (x, 0, None), (x, 1.0, None), (x, np.int64(1), None),
        (np.asfortranarray(x), -1, None), (x[:, ::2], -1, None),
        (x.astype(np.float16), -1, None), (np.arange(48).reshape(6, 8), -1, None),
        (x.view(np.matrix), -1, None), (x[:0], -1, None),
        (np.float32(3.0), -1, None), (x.tolist(), -1, None),
        (x, -1, o.astype(np.float64)), (x, -1, o[:, :4]), (x, -1, np.asfortranarray(o)),
        (x, -1, ro), (x, -1, o.view(np.matrix)), (x, -1, o.reshape(8, 6)), (x, -1, [0.0]),
    ]
    for a, axis, out in not_common:
        assert fp.call(0, a, None, axis, out, None) is None, (type(a), axis, type(out))
    g = _x((6, 8), np.float32, 1)
    for gg, yy in ((g.astype(np.float64), x), (g[:, :4], x[:, :4].copy()), (g.T.copy(), x.T),
                   (g.reshape(8, 6), x), (np.asfortranarray(g), x)):
        assert fp.call(2, gg, yy, -1, None, None) is None
    # the Python path still answers them, and raises on bad input as before
    np.testing.assert_allclose(fastact.softmax(x, axis=0), fastact.softmax(x, axis=0, backend="numpy"),
                               rtol=1e-6)
    with pytest.raises(ValueError):
        fastact.softmax(x, out=ro)
    with pytest.raises(ValueError):
        fastact.softmax(x, out=o[:, :4])
    with pytest.raises(ValueError):
        fastact.softmax_backward(g[:, :4], x)


def test_follows_the_backend_choice(c_default):
    x = _x((4, 9), np.float32)
    assert fp.call(0, x, None, -1, None, None) is not None
    with fastact.use_backend("numpy"):
        assert fp.call(0, x, None, -1, None, None) is None
        with fastact.use_backend("c"):
            assert fp.call(0, x, None, -1, None, None) is not None
    fastact.set_backend("numpy")
    assert fp.call(0, x, None, -1, None, None) is None
    with fastact.use_backend("c"):
        assert fp.call(0, x, None, -1, None, None) is not None
    fastact.set_backend("auto")
    assert fp.call(0, x, None, -1, None, None) is not None
    # backend= of the call: "c" and "auto" here, anything else to the Python path
    fastact.set_backend("numpy")
    for be in ("c", "auto"):
        assert fp.call(0, x, None, -1, None, be) is not None
    for be in ("numpy", "numba", "C", "bogus", 3, b"c"):
        assert fp.call(0, x, None, -1, None, be) is None
    with pytest.raises(ValueError, match="unknown backend"):
        fastact.softmax(x, backend="bogus")
    np.testing.assert_array_equal(fastact.softmax(x, backend="c"),
                                  fp.call(0, x, None, -1, None, "c"))


def test_follows_threads_and_isa(c_default):
    old = fastact.get_num_threads()
    try:
        fastact.set_num_threads(3)
        assert fp.state()[3] == 3
        fastact.set_num_threads(1)
        assert fp.state()[3] == 1
    finally:
        fastact.set_num_threads(old)
    level = fp.state()[2]
    for isa in C.available_isas():
        with C.force_isa(isa):
            assert fp.state()[2] == C.ISA_LEVELS.index(isa)
            x = _x((33, 17), np.float32)
            want = np.empty_like(x)
            C.softmax_rows(x, None, want, 1)
            np.testing.assert_array_equal(fastact.softmax(x), want)
    assert fp.state()[2] == level


def test_threads_follow_after_a_direct_import():
    """Importing the C backend's module directly (not through the registry) makes
    the fast path live; set_num_threads after that must still reach it."""
    code = ("import fastact._backends.c_kernels, fastact\n"
            "from fastact import _fastpath as fp\n"
            "fastact.set_num_threads(1)\n"
            "a = fp.state()[3]\n"
            "fastact.set_num_threads(3)\n"
            "print(a, fp.state()[3])\n")
    env = dict(os.environ, FASTACT_NUM_THREADS="2")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "3"]


def test_threads_and_large_arrays(c_default):
    """Large calls release the GIL: Python threads calling at once get their own rows."""
    fastact.set_num_threads(2)
    xs = [_x((512, 1000), np.float32, s) for s in range(4)]
    want = [fastact.softmax(x, backend="numpy") for x in xs]
    got = [None] * 4

    def run(i):
        for _ in range(3):
            got[i] = fastact.softmax(xs[i])

    ts = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=2e-6, atol=1e-30)


def test_bad_op_and_arity():
    with pytest.raises(TypeError):
        fp.call(0, None)
    with pytest.raises(ValueError):
        fp.call(9, np.ones(3), None, -1, None, None)
