"""Drop-in for ``scipy.special``'s softmax family: same signatures, defaults
(``axis=None``) and answers, special values included.

``import fastact.special as sp`` replaces ``import scipy.special as sp``.
"""

from __future__ import annotations

import numpy as np

from . import _api

__all__ = ["softmax", "log_softmax", "logsumexp"]


def _scalar(y):
    """A 0-d result as a NumPy scalar, as SciPy returns it."""
    return y[()] if y.ndim == 0 else y


def softmax(x, axis=None):
    """``scipy.special.softmax``: ``exp(x) / sum(exp(x))`` along ``axis`` (default: all)."""
    return _scalar(_api.softmax(x, axis=axis))


def log_softmax(x, axis=None):
    """``scipy.special.log_softmax``.

    SciPy shifts by the max only when it is finite: a row holding ``+inf`` (and
    no NaN) gives NaN at the ``+inf`` entries and ``-inf`` elsewhere, where
    fastact's own ``log_softmax`` (like PyTorch) gives all NaN.
    """
    x = np.asarray(x)
    y = _api.log_softmax(x, axis=axis)
    if y.size and np.isposinf(x).any():
        xf = np.asarray(x, dtype=y.dtype)
        rowinf = np.isposinf(xf).any(axis=axis, keepdims=True)
        rownan = np.isnan(xf).any(axis=axis, keepdims=True)
        fix = np.broadcast_to(rowinf & ~rownan, y.shape)
        y = np.where(fix, np.where(np.isposinf(xf), np.nan, -np.inf), y).astype(y.dtype)
    return _scalar(y)


def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False):
    """``scipy.special.logsumexp``: ``log(sum(b * exp(a)))`` with SciPy's ``b``
    (broadcast with ``a``; a Python scalar does not promote ``a``'s dtype) and
    ``return_sign`` semantics; a 0-d result is a NumPy scalar."""
    return _api.logsumexp(a, axis=axis, b=b, keepdims=keepdims, return_sign=return_sign)
