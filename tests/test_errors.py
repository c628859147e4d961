"""Every bad input of SPEC.md, on every backend: the named exception, nothing written."""

from __future__ import annotations

import numpy as np
import pytest

import fastact

try:
    from numpy.exceptions import AxisError
except ImportError:  # pragma: no cover
    AxisError = np.AxisError

X = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
T = np.array([0, 3, 1])


def _ro(a):
    a = a.copy()
    a.flags.writeable = False
    return a


# (id, function(backend, out) -> call, exception, message fragment, out given to the call)
CASES = [
    ("complex", lambda be, o: fastact.softmax(X.astype(np.complex64), backend=be), TypeError,
     "complex64", None),
    ("object", lambda be, o: fastact.log_softmax(np.array([1, "a"], dtype=object), backend=be),
     TypeError, "object", None),
    ("axis", lambda be, o: fastact.softmax(X, axis=2, out=o, backend=be), AxisError, "2",
     np.zeros_like(X)),
    ("axis_tuple", lambda be, o: fastact.logsumexp(X, axis=(0, -3), backend=be), AxisError,
     "-3", None),
    ("axis_repeated", lambda be, o: fastact.softmax(X, axis=(1, -1), out=o, backend=be),
     ValueError, "repeated", np.zeros_like(X)),
    ("out_shape", lambda be, o: fastact.softmax(X, out=o, backend=be), ValueError, "(4, 3)",
     np.zeros((4, 3), np.float32)),
    ("out_dtype", lambda be, o: fastact.log_softmax(X, out=o, backend=be), ValueError,
     "float64", np.zeros((3, 4))),
    ("out_read_only", lambda be, o: fastact.softmax(X, out=o, backend=be), ValueError,
     "read-only", _ro(np.zeros_like(X))),
    ("lse_out_shape", lambda be, o: fastact.logsumexp(X, out=o, backend=be), ValueError,
     "(3,)", np.zeros(4, np.float32)),
    ("where_shape", lambda be, o: fastact.softmax(X, where=np.ones(3, bool), out=o, backend=be),
     ValueError, "(3,)", np.zeros_like(X)),
    ("where_dtype", lambda be, o: fastact.softmax(X, where=np.ones(4), out=o, backend=be),
     TypeError, "float64", np.zeros_like(X)),
    ("b_shape", lambda be, o: fastact.logsumexp(X, b=np.ones(3), backend=be), ValueError, "(3,)",
     None),
    ("backward_shapes", lambda be, o: fastact.softmax_backward(X, X[:2], out=o, backend=be),
     ValueError, "(2, 4)", np.zeros_like(X)),
    ("target_high", lambda be, o: fastact.softmax_cross_entropy_with_grad(
        X, np.array([0, 4, 1]), out=o, backend=be), IndexError, "4", np.zeros_like(X)),
    ("target_negative", lambda be, o: fastact.softmax_cross_entropy_backward(
        X, np.array([0, 1, -3]), out=o, backend=be), IndexError, "-3", np.zeros_like(X)),
    ("target_shape", lambda be, o: fastact.softmax_cross_entropy_with_grad(
        X, np.array([0, 1]), out=o, backend=be), ValueError, "(2,)", np.zeros_like(X)),
    ("prob_target_shape", lambda be, o: fastact.softmax_cross_entropy(
        X, np.ones((3, 5), np.float32), backend=be), ValueError, "(3, 5)", None),
    ("target_dtype", lambda be, o: fastact.softmax_cross_entropy(
        X, np.array(["a", "b", "c"]), backend=be), TypeError, "<U1", None),
    ("weight_shape", lambda be, o: fastact.softmax_cross_entropy_with_grad(
        X, T, weight=np.ones(3), out=o, backend=be), ValueError, "(3,)", np.zeros_like(X)),
    ("ce_out_shape", lambda be, o: fastact.softmax_cross_entropy_with_grad(
        X, T, out=o, backend=be), ValueError, "(3, 5)", np.zeros((3, 5), np.float32)),
    ("ce_out_read_only", lambda be, o: fastact.softmax_cross_entropy_backward(
        X, T, out=o, backend=be), ValueError, "read-only", _ro(np.zeros_like(X))),
    ("reduction", lambda be, o: fastact.softmax_cross_entropy_with_grad(
        X, T, reduction="avg", out=o, backend=be), ValueError, "avg", np.zeros_like(X)),
    ("label_smoothing", lambda be, o: fastact.softmax_cross_entropy_backward(
        X, T, label_smoothing=1.5, out=o, backend=be), ValueError, "1.5", np.zeros_like(X)),
    ("label_smoothing_neg", lambda be, o: fastact.softmax_cross_entropy(
        X, T, label_smoothing=-0.1, backend=be), ValueError, "-0.1", None),
    ("grad_loss_shape", lambda be, o: fastact.softmax_cross_entropy_backward(
        X, T, np.ones(3), reduction="mean", out=o, backend=be), ValueError, "scalar",
     np.zeros_like(X)),
    ("logits_0d", lambda be, o: fastact.softmax_cross_entropy(np.float32(1), np.array(0),
                                                              backend=be),
     ValueError, "class axis", None),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(backend, case):
    _, call, exc, fragment, out = case
    before = None if out is None else out.copy()
    x_before = X.copy()
    with pytest.raises(exc, match=None) as info:
        call(backend, out)
    assert fragment in str(info.value), str(info.value)
    if out is not None:
        np.testing.assert_array_equal(out, before)
    np.testing.assert_array_equal(X, x_before)


def test_unknown_backend():
    with pytest.raises(ValueError, match="nope"):
        fastact.softmax(X, backend="nope")
    with pytest.raises(ValueError, match="nope"):
        fastact.set_backend("nope")
    with pytest.raises(ValueError, match="nope"):
        with fastact.use_backend("nope"):
            pass


def test_bad_thread_count():
    for bad in (0, -2, "x"):
        with pytest.raises(ValueError):
            fastact.set_num_threads(bad)


def test_bad_input_reported_before_a_bad_backend():
    """The general path checks the input before it resolves the backend (so a bad
    call names its first problem and loads no backend)."""
    mask = np.ones(3, bool)
    with pytest.raises(TypeError, match="complex"):
        fastact.softmax(np.ones(3, complex), where=mask, backend="nope")
    with pytest.raises(AxisError):
        fastact.log_softmax(np.ones(3), axis=5, where=mask, backend="nope")
    with pytest.raises(ValueError, match="grad has shape"):
        fastact.log_softmax_backward(np.ones(3), np.ones(4), where=mask, backend="nope")
    with pytest.raises(ValueError, match="unknown backend"):
        fastact.softmax(np.ones(3), where=mask, backend="nope")
