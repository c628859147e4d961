"""Property tests (hypothesis): every backend against the float64 truth / the reference
on random shapes, dtypes, axes, layouts, special values, masks and CE options.

The profile is fixed and derandomised (repeatable in CI): HYPOTHESIS_PROFILE=ci
(default) runs ``CI_EXAMPLES`` examples per test; ``=dev`` runs more.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import fastact  # noqa: E402
from conftest import assert_close, truth_logsumexp, truth_softmax  # noqa: E402

CI_EXAMPLES = 60
settings.register_profile("ci", max_examples=CI_EXAMPLES, derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.function_scoped_fixture])
settings.register_profile("dev", max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@st.composite
def arrays(draw, max_dims=3, max_side=9, min_side=0):
    """(x, axis) with special values mixed in, in a random layout."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    nd = draw(st.integers(1, max_dims))
    shape = tuple(draw(st.lists(st.integers(min_side, max_side), min_size=nd, max_size=nd)))
    fin = np.finfo(dtype)
    spread = 100.0 if dtype == np.float32 else 800.0
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([1.0, 10.0, spread]))
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    specials = [np.nan, np.inf, -np.inf, fin.max, -fin.max, 0.0]
    p_special = draw(st.sampled_from([0.0, 0.05, 0.3]))
    if x.size and p_special:
        hit = rng.random(shape) < p_special
        x[hit] = rng.choice(np.array(specials, dtype), size=int(hit.sum()))
    if x.size and draw(st.booleans()):
        # whole rows of -inf along the last axis
        x[rng.random(shape[:-1]) < 0.2] = -np.inf
    axis_kind = draw(st.sampled_from(["last", "int", "tuple", "none"]))
    if axis_kind == "last":
        axis = -1
    elif axis_kind == "int":
        axis = draw(st.integers(-nd, nd - 1))
    elif axis_kind == "tuple":
        axis = tuple(sorted(set(draw(st.lists(st.integers(0, nd - 1), min_size=1,
                                               max_size=nd)))))
    else:
        axis = None
    layout = draw(st.sampled_from(["c", "f", "strided", "reversed", "transposed"]))
    x = _layout(x, layout)
    return x, axis


def _layout(x, layout):
    if layout == "f":
        return np.asfortranarray(x)
    if layout == "strided" and x.ndim:
        big = np.empty(x.shape[:-1] + (2 * x.shape[-1],), x.dtype)
        big[..., ::2] = x
        return big[..., ::2]
    if layout == "reversed" and x.ndim:
        r = np.ascontiguousarray(x[..., ::-1])
        return r[..., ::-1]
    if layout == "transposed":
        return np.ascontiguousarray(x.T).T
    return x


def _mask_for(rng, shape, p):
    m = rng.random(shape) < p
    if m.ndim:
        m[..., :] &= ~(rng.random(shape[:-1] + (1,)) < 0.2)  # some fully masked rows
    return m


@given(data=arrays(), masked=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_softmax_family_property(backend, data, masked, seed):
    x, axis = data
    where = _mask_for(np.random.default_rng(seed), x.shape, 0.7) if masked else None
    dt = x.dtype
    keep = x.copy()
    with np.errstate(all="ignore"):
        y = fastact.softmax(x, axis=axis, where=where, backend=backend)
        assert_close(y, _truth_axis(truth_softmax, x, axis, where), dt, "prob")
        ly = fastact.log_softmax(x, axis=axis, where=where, backend=backend)
        assert_close(ly, _truth_axis(truth_softmax, x, axis, where, log=True), dt, "log")
        r = fastact.logsumexp(x, axis=axis, where=where, backend=backend)
        assert_close(r, _truth_axis(truth_logsumexp, x, axis, where), dt, "log")
    np.testing.assert_array_equal(x, keep)  # the input is never modified


def _truth_axis(fn, x, axis, where, **kw):
    """The truths take one axis or None; bring tuples of axes to one axis first."""
    if isinstance(axis, tuple):
        nd = x.ndim
        rest = [a for a in range(nd) if a not in axis]
        xt = np.transpose(x, rest + list(axis))
        lead = xt.shape[:len(rest)]
        x2 = xt.reshape(lead + (int(np.prod([x.shape[a] for a in axis])),))
        w2 = None
        if where is not None:
            w2 = np.transpose(np.broadcast_to(where, x.shape), rest + list(axis)).reshape(x2.shape)
        r = fn(x2, -1, w2, **kw)
        if fn is truth_logsumexp:
            return r
        r = r.reshape(xt.shape)
        return np.transpose(r, np.argsort(rest + list(axis)))
    return fn(x, axis, where, **kw)


@given(data=arrays(max_dims=2, max_side=7, min_side=1), seed=st.integers(0, 2 ** 16))
def test_backward_property(backend, data, seed):
    x, axis = data
    if isinstance(axis, tuple) or axis is None:
        axis = -1
    rng = np.random.default_rng(seed)
    g = rng.standard_normal(x.shape).astype(x.dtype)
    with np.errstate(all="ignore"):
        y = fastact.softmax(x, axis=axis, backend="numpy")
        ly = fastact.log_softmax(x, axis=axis, backend="numpy")
        for fn, yy in ((fastact.softmax_backward, y), (fastact.log_softmax_backward, ly)):
            e = fn(g, yy, axis=axis, backend="numpy")
            a = fn(g, yy, axis=axis, backend=backend)
            fin = np.isfinite(e)
            np.testing.assert_array_equal(np.isnan(a), np.isnan(e))
            scale = (np.max(np.abs(e[fin])) if fin.any() else 0) + 1
            tol_ = 2e-5 if x.dtype == np.float32 else 1e-11
            np.testing.assert_allclose(a[fin], e[fin], rtol=0, atol=tol_ * scale)


@given(
    seed=st.integers(0, 2 ** 32 - 1),
    n=st.integers(0, 40), c=st.integers(1, 70),
    dtype=st.sampled_from([np.float32, np.float64]),
    index=st.booleans(), use_weight=st.booleans(),
    ignore_index=st.sampled_from([-100, 0, 3]),
    label_smoothing=st.sampled_from([0.0, 0.1, 1.0]),
    z_loss=st.sampled_from([0.0, 1e-4, 0.5]),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    scale=st.sampled_from([1.0, 30.0, 500.0]),
)
def test_cross_entropy_property(backend, seed, n, c, dtype, index, use_weight, ignore_index,
                                label_smoothing, z_loss, reduction, scale):
    """Every combination of options: backend == reference, same special values."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, c)) * scale).astype(dtype)
    if index:
        t = rng.integers(0, c, n)
        t[rng.random(n) < 0.2] = ignore_index
        t[(t < 0) | (t >= c)] = ignore_index
    else:
        t = rng.random((n, c)).astype(dtype)
        t /= t.sum(-1, keepdims=True)
    w = (rng.random(c) + 0.1).astype(dtype) if use_weight else None
    opts = dict(weight=w, ignore_index=ignore_index, label_smoothing=label_smoothing,
                z_loss=z_loss, reduction=reduction)
    el, eg = fastact.softmax_cross_entropy_with_grad(x, t, backend="numpy", **opts)
    al, ag = fastact.softmax_cross_entropy_with_grad(x, t, backend=backend, **opts)
    tol_ = 3e-5 if dtype == np.float32 else 1e-11
    el64, al64 = np.asarray(el, np.float64), np.asarray(al, np.float64)
    np.testing.assert_array_equal(np.isnan(al64), np.isnan(el64))
    np.testing.assert_allclose(al64, el64, rtol=tol_, atol=tol_)
    gscale = (np.max(np.abs(eg)) if eg.size else 0) + 1e-30
    np.testing.assert_allclose(ag, eg, rtol=0, atol=tol_ * gscale)
    # the fused in-place form agrees with the separate backward
    xx = x.copy()
    fastact.softmax_cross_entropy_with_grad(xx, t, backend=backend, out=xx, **opts)
    np.testing.assert_allclose(xx, ag, rtol=0, atol=tol_ * gscale)
