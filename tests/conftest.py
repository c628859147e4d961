"""Shared fixtures: the backends every test runs on, float64 truths, comparisons.

Each test that takes the ``backend`` fixture runs once per backend in
``BACKENDS``; a new backend joins every test by adding its name there.  A
backend that does not load fails ``test_api.py::test_expected_backends_load``
(not silently skipped) unless FASTACT_ALLOW_MISSING_BACKENDS=1.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import fastact

#: FASTACT_TEST_BACKENDS=c (comma-separated) narrows the matrix, e.g. for the sanitizer run.
BACKENDS = os.environ.get("FASTACT_TEST_BACKENDS", "numpy,numba,c").split(",")
ALLOW_MISSING = os.environ.get("FASTACT_ALLOW_MISSING_BACKENDS") == "1"
#: fastact.torch hands tensors below this many elements to torch's own functions;
#: the tests' small tensors must run on fastact's kernels (test_torch_integration
#: checks the hand-over itself).
os.environ["FASTACT_TORCH_MIN_NUMEL"] = "0"


def _loadable(name):
    return name in fastact.available_backends()


def backend_params():
    out = []
    for name in BACKENDS:
        marks = []
        if not _loadable(name):
            marks.append(pytest.mark.skip(reason=f"backend {name} not loadable "
                                                 f"(test_expected_backends_load fails for it)"))
        out.append(pytest.param(name, marks=marks, id=name))
    return out


@pytest.fixture(params=backend_params())
def backend(request):
    return request.param


@pytest.fixture(params=[p for p in backend_params() if p.values[0] != "numpy"])
def native_backend(request):
    """The compiled backends only, for properties the NumPy reference does not have
    by design (no temporaries: it computes through them)."""
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


# ---------------------------------------------------------------------------
# Tolerances of SPEC.md
# ---------------------------------------------------------------------------

def tol(dtype, kind):
    """(rtol, atol) for comparing against a float64 truth.

    kind "prob": softmax-like values in [0, 1]: relative error; values below
    1e-12 (f32) are held to an absolute bound, since rounding of x - max in
    float32 alone moves exp(x - max) by ~|x - max| * 6e-8 relative.
    kind "log": absolute error bound scaled by max(1, |value|).
    """
    dt = np.dtype(dtype)
    if dt == np.float64:
        return (1e-12, 1e-300) if kind == "prob" else (1e-12, 1e-12)
    if dt == np.float32:
        return (2e-6, 1e-12) if kind == "prob" else (4e-6, 4e-6)
    # float16 / bfloat16 computed in float32, rounded to the storage type
    eps = float(np.finfo(np.float16).eps) if dt == np.float16 else 2.0 ** -7
    return (eps, eps * 1e-3) if kind == "prob" else (eps, eps)


def assert_special_equal(actual, expected):
    """NaN where and only where expected is NaN; infinities equal exactly."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, (a.shape, e.shape)
    an, en = np.isnan(a), np.isnan(e)
    assert np.array_equal(an, en), f"NaN mismatch at {np.argwhere(an != en)[:5].tolist()}"
    ai, ei = np.isinf(a), np.isinf(e)
    bad = (ai | ei) & ~(a == e)
    assert not bad.any(), (f"inf mismatch at {np.argwhere(bad)[:5].tolist()}: "
                           f"{a[bad][:5]} vs {e[bad][:5]}")


def assert_close(actual, expected, dtype, kind):
    """Compare to a float64 truth with SPEC.md's bound for ``dtype``; special values exact
    (after rounding the truth to ``dtype``: -2*finfo.max is -inf there)."""
    with np.errstate(over="ignore"):
        rounded = np.asarray(expected, dtype=np.float64).astype(dtype)
    assert_special_equal(actual, rounded)
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    fin = np.isfinite(rounded.astype(np.float64))
    rtol, atol = tol(dtype, kind)
    if kind == "prob":
        err = np.abs(a[fin] - e[fin])
        lim = rtol * np.abs(e[fin]) + atol
    else:
        err = np.abs(a[fin] - e[fin])
        lim = rtol * np.maximum(1.0, np.abs(e[fin]))
    if err.size:
        worst = np.argmax(err - lim)
        assert (err <= lim).all(), (f"max error {err[worst]:.3g} > bound {lim[worst]:.3g} "
                                    f"(actual {a[fin][worst]!r}, expected {e[fin][worst]!r})")


# ---------------------------------------------------------------------------
# float64 truths, computed independently of fastact (SciPy / plain NumPy)
# ---------------------------------------------------------------------------

def _sel(x, axis, where):
    x = np.asarray(x, dtype=np.float64)
    if where is None:
        return x, None
    w = np.broadcast_to(where, x.shape)
    return x, w


def truth_softmax(x, axis=-1, where=None, log=False):
    """SPEC semantics in float64: PyTorch's answers for NaN/+inf/all -inf rows,
    "safe softmax" for fully masked rows."""
    x, w = _sel(x, axis, where)
    if x.size == 0:
        return x.copy()
    xs = x if w is None else np.where(w, x, -np.inf)
    with np.errstate(all="ignore"):
        m = np.max(xs, axis=axis, keepdims=True)
        z = xs - np.where(np.isneginf(m), 0.0, m)
        s = np.sum(np.exp(z), axis=axis, keepdims=True)
        if log:
            y = z - np.log(s)
        else:
            y = np.exp(z) / s
        # NaN or +inf among the selected, or all selected -inf: whole row NaN
        bad_row = np.isnan(m) | np.isposinf(m)
        if w is None:
            bad_row = bad_row | np.isneginf(m)
            y = np.where(np.broadcast_to(bad_row, y.shape), np.nan, y)
        else:
            anysel = np.any(w, axis=axis, keepdims=True)
            bad_row = bad_row | (np.isneginf(m) & anysel)
            y = np.where(np.broadcast_to(bad_row, y.shape) & w, np.nan, y)
            y = np.where(w, y, -np.inf if log else 0.0)
    return y


def truth_logsumexp(x, axis=-1, where=None, keepdims=False):
    x, w = _sel(x, axis, where)
    xs = x if w is None else np.where(w, x, -np.inf)
    with np.errstate(all="ignore"):
        if xs.size == 0:
            return np.full(np.sum(xs, axis=axis, keepdims=keepdims).shape, -np.inf)
        m = np.max(xs, axis=axis, keepdims=True)
        mm = np.where(np.isfinite(m), m, 0.0)
        r = np.log(np.sum(np.exp(xs - mm), axis=axis, keepdims=True)) + mm
        r = np.where(np.isneginf(m), -np.inf, r)
        r = np.where(np.isposinf(m), np.inf, r)
        r = np.where(np.isnan(m), np.nan, r)
    if not keepdims:
        r = np.squeeze(r, axis=axis) if axis is not None else r.reshape(())
    return r


# ---------------------------------------------------------------------------
# Cross-entropy cases
# ---------------------------------------------------------------------------

def ce_case(rng, dtype, lead=(13,), c=7, index=True, ignored=0.2, spread=3.0,
            ignore_index=-100):
    """Logits ``lead + (c,)`` and index targets (a fraction ``ignored`` set to
    ``ignore_index``) or probability targets."""
    x = (rng.standard_normal(lead + (c,)) * spread).astype(dtype)
    if index:
        t = rng.integers(0, c, size=lead)
        t[rng.random(lead) < ignored] = ignore_index
    else:
        t = rng.random(lead + (c,))
        t /= t.sum(-1, keepdims=True)
        t = t.astype(dtype)
    return x, t


def check_loss_functions(name, x, t, opts, *, backend, dtype, rng, truth, check, loss_shape):
    """``fastact.<name>``, ``<name>_with_grad`` and ``<name>_backward`` (without and with a
    ``grad_loss``) on logits ``x``, targets ``t`` and keywords ``opts`` against
    ``truth(x, t, grad_loss=1.0, **opts) -> (loss, d loss / d x)``, each compared by
    ``check(loss, grad, expected_loss, expected_grad, dtype)``: the loss a scalar of
    ``dtype`` (an array of ``loss_shape`` with reduction="none"), the gradients of x's
    shape and dtype."""
    none = opts["reduction"] == "none"
    exp_loss, exp_grad = truth(x, t, **opts)
    loss = getattr(fastact, name)(x, t, backend=backend, **opts)
    if none:
        assert isinstance(loss, np.ndarray) and loss.shape == loss_shape
    else:
        assert isinstance(loss, np.generic) and not isinstance(loss, np.ndarray)
    assert loss.dtype == dtype
    check(loss, None, exp_loss, None, dtype)
    l2, g2 = getattr(fastact, name + "_with_grad")(x, t, backend=backend, **opts)
    assert g2.dtype == dtype and g2.shape == x.shape
    check(l2, g2, exp_loss, exp_grad, dtype)
    backward = getattr(fastact, name + "_backward")
    g3 = backward(x, t, backend=backend, **opts)
    check(l2, g3, exp_loss, exp_grad, dtype)
    # grad_loss scaling (an array for "none")
    gl = (rng.random(loss_shape) + 0.5) if none else 2.5
    _, exp_g = truth(x, t, grad_loss=gl, **opts)
    g4 = backward(x, t, gl, backend=backend, **opts)
    check(l2, g4, exp_loss, exp_g, dtype)


# ---------------------------------------------------------------------------
# Layouts
# ---------------------------------------------------------------------------

def layouts(a):
    """The same values in several memory layouts: (name, array) pairs."""
    out = [("c", np.ascontiguousarray(a)), ("f", np.asfortranarray(a))]
    if a.ndim >= 1 and a.shape[-1] > 0:
        big = np.empty(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        out.append(("strided", big[..., ::2]))
        rev = np.ascontiguousarray(a[..., ::-1])
        out.append(("negative", rev[..., ::-1]))
    return out


def special_rows(dtype):
    """Rows of special values (SPEC.md): name -> 1-D array of ``dtype``."""
    dt = np.dtype(dtype)
    fmax = float(np.finfo(dt).max)
    spread = 100.0 if dt == np.float32 else 800.0  # > 88 / > 709: a wrong shift overflows
    inf, nan = np.inf, np.nan
    rows = {
        "spread": [spread, 0.0, -spread, 3.0, spread - 1.0],
        "spread_neg": [-spread, -2 * spread, -3 * spread + 1, -spread + 0.5, -2.5 * spread],
        "neg_inf": [1.0, -inf, 2.0, -inf, 0.5],
        "all_neg_inf": [-inf] * 5,
        "nan": [1.0, nan, 2.0, 0.0, -1.0],
        "pos_inf": [1.0, inf, 2.0, -inf, 0.0],
        "two_pos_inf": [inf, inf, 0.0, 1.0, -1.0],
        "nan_and_inf": [inf, nan, 0.0, -inf, 1.0],
        "fmax": [fmax, -fmax, 0.0, fmax * 0.5, -1.0],
        "neg_fmax": [-fmax, -fmax, -fmax, -fmax, -fmax],
        "single_finite": [-inf, -inf, 7.0, -inf, -inf],
        "equal": [3.0] * 5,
        "tiny": [1e-30, -1e-30, 0.0, 1e-38, 5e-39],
    }
    return {k: np.array(v, dtype=dt) for k, v in rows.items()}


def special_matrix(dtype):
    rows = special_rows(dtype)
    return list(rows), np.stack(list(rows.values()))
