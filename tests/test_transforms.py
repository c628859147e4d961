"""scale=, softcap= and bias= inside the softmax family (docs/transforms.md), on every
backend: against float64 references composed in NumPy (and torch autograd for the
gradients), every axis and layout, special values, masks, out= and bad arguments."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import fastact
from conftest import assert_close, assert_special_equal, truth_logsumexp, truth_softmax

FLOATS = [np.float32, np.float64]
#: (scale, softcap, with a bias): each transform alone and combined
XFORMS = [pytest.param(0.5, None, False, id="scale"),
          pytest.param(None, 3.0, False, id="softcap"),
          pytest.param(None, None, True, id="bias"),
          pytest.param(-1.7, 2.0, False, id="scale-softcap"),
          pytest.param(2.5, 4.0, True, id="all")]
#: (shape, axis, layout) cases: each axis of 2-D/3-D arrays, Fortran order, a tuple
CASES = [((6, 9), -1, "C"), ((6, 9), 0, "C"), ((3, 4, 5), 1, "C"), ((3, 4, 5), 0, "F"),
         ((3, 4, 5), -1, "F"), ((3, 4, 5), (0, 2), "C")]


def z_of(x, scale=None, softcap=None, bias=None, dtype=np.float64):
    """``z`` composed step by step in ``dtype`` (the contract: each operation rounds in
    the compute dtype, so a float32 check compares the kernels on the same z)."""
    dt = np.dtype(dtype).type
    z = np.asarray(x).astype(dtype)
    with np.errstate(all="ignore"):
        if scale is not None:
            z = z * dt(scale)
        if softcap is not None:
            z = dt(softcap) * np.tanh(z / dt(softcap))
        if bias is not None:
            z = z + np.asarray(bias).astype(dtype)
    return z


def mask_of(shape, where=None, bias=None):
    """The entries that take part: ``where`` and ``bias != -inf`` (None: all)."""
    if where is None and bias is None:
        return None
    m = np.ones(shape, bool)
    if where is not None:
        m &= np.broadcast_to(where, shape)
    if bias is not None:
        m &= np.broadcast_to(np.asarray(bias) != -np.inf, shape)
    return m


def truth(op, x, axis, scale=None, softcap=None, bias=None, where=None, dtype=np.float64):
    """float64 truth of ``op`` on ``z`` (z composed in ``dtype``)."""
    z = z_of(x, scale, softcap, bias, dtype)
    m = mask_of(z.shape, where, bias)
    if op == "logsumexp":
        return truth_logsumexp(z, axis=axis, where=m)
    return truth_softmax(z, axis=axis, where=m, log=op == "log_softmax")


def _kind(op):
    return "prob" if op == "softmax" else "log"


def _bias(rng, shape, axis, dtype):
    """A bias broadcastable to ``shape`` (size 1 on the first axis) with a -inf mask."""
    b = rng.standard_normal((1,) + shape[1:]) * 2
    b.flat[1] = -np.inf
    return b.astype(dtype)


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp"])
@pytest.mark.parametrize("scale,softcap,has_bias", XFORMS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_forward_every_axis_and_layout(backend, rng, op, scale, softcap, has_bias, dtype):
    for shape, axis, order in CASES:
        x = np.array(rng.standard_normal(shape) * 6, dtype=dtype, order=order)
        bias = _bias(rng, shape, axis, dtype) if has_bias else None
        got = getattr(fastact, op)(x, axis=axis, scale=scale, softcap=softcap, bias=bias,
                                   backend=backend)
        want = truth(op, x, axis, scale, softcap, bias, dtype=dtype)
        assert got.dtype == dtype and got.shape == want.shape, (shape, axis, order)
        assert_close(got, want, dtype, _kind(op))
