"""Shared pieces of the C backend's direct tests (test_c_kernels_*.py): the
kernels module, the reference, dtypes and shapes, the ``isa`` fixture that
runs a test on every ISA path this CPU can run, and the closeness checks."""

from __future__ import annotations

import numpy as np
import pytest

from fastact._backends import numpy_ref as R

C = pytest.importorskip("fastact._backends.c_kernels", reason="C extension not built")

DTYPES = [np.float32, np.float64]
#: (rtol, atol) against the reference computed in float64
TOL = {np.float32: (2e-6, 4e-6), np.float64: (1e-12, 1e-12)}
# Shapes: single row, rows shorter than a vector, the tile path (k < 4 VL) with
# row counts that leave remainders, vector tails, blocks of BLOCK elements.
SHAPES = [(1, 1), (3, 5), (37, 10), (17, 63), (33, 64), (5, 100), (4, 1000),
          (2, 4099), (40, 17), (1, 70001)]


@pytest.fixture(params=C.available_isas())
def isa(request):
    with C.force_isa(request.param):
        yield request.param


def rng(seed=0):
    return np.random.default_rng(seed)


def assert_close(got, want, dtype, scale=1.0, what=""):
    """|got - want| <= atol*max(1,|want|)*scale + rtol*|want| with identical NaN/inf positions."""
    rtol, atol = TOL[dtype]
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, what
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"NaN positions {what}")
    inf = np.isinf(want)
    np.testing.assert_array_equal(got[inf], want[inf], err_msg=f"inf positions {what}")
    np.testing.assert_array_equal(np.isinf(got), inf, err_msg=f"inf positions {what}")
    fin = np.isfinite(want)
    err = np.abs(got[fin] - want[fin])
    bound = scale * (atol * np.maximum(1.0, np.abs(want[fin])) + rtol * np.abs(want[fin]))
    if err.size:
        i = np.argmax(err - bound)
        assert err[i] <= bound[i], (f"{what}: max excess at {i}: got {got[fin][i]!r} "
                                    f"want {want[fin][i]!r} err {err[i]:.3g} > {bound[i]:.3g}")


def check_vs_ref(name, x, mask, dtype, what, scale=1.0, fill=None, inplace=True):
    """The C row kernel ``name`` (softmax_rows or log_softmax_rows) on x against
    the reference in float64 (assert_close); with inplace, also called with
    out = x, bit for bit the same.  Returns (got, want)."""
    want = np.empty(x.shape)
    with np.errstate(all="ignore"):
        getattr(R, name)(x.astype(np.float64), mask, want)
    got = np.empty_like(x) if fill is None else np.full_like(x, fill)
    getattr(C, name)(x, mask, got)
    assert_close(got, want, dtype, scale=scale, what=what)
    if inplace:
        xi = x.copy()
        getattr(C, name)(xi, mask, xi)
        np.testing.assert_array_equal(xi, got)
    return got, want
