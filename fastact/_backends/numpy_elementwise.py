"""NumPy reference for the elementwise kernels: the truth the numba and C ones are tested against.

Elementwise kernel contract (``numpy_elementwise``, ``numba_elementwise``,
``c_elementwise``; each module also has ``NAME``).  The validation layer in
``fastact._api_elementwise`` guarantees, before a kernel is called:

* every array argument is 1-D and C-contiguous, of the compute dtype
  (``float32`` or ``float64``, the same for all float arrays of a call), with
  ``n >= 1`` elements (a layout other than C or Fortran order was copied once,
  Fortran order is walked as its transpose);
* ``out`` has ``n`` elements and may be the very same array as an input (in
  place): a kernel reads element ``i`` of every input before it writes
  ``out[i]``;
* ``op`` is one of the names in ``UNARY`` (forward) or ``BACKWARD``.

Kernels return ``None`` (``bce`` returns its sum) and write only into the arrays
they are given.  ``nthreads`` is the caller's thread budget; a backend may
ignore it (the native ones split ``n`` into chunks run concurrently, see
``fastact._backends.elementwise.chunked``).

``unary(op, x, out, nthreads)``
    ``out[i] = f(x[i])`` for ``op`` in ``UNARY``:

    ============  =============================================================
    sigmoid       ``1 / (1 + exp(-x))``, as ``exp(min(x,0)) / (1 + exp(-|x|))``
    log_sigmoid   ``min(x, 0) - log1p(exp(-|x|))``
    relu          ``max(x, 0)`` (NaN stays NaN, ``-0.0`` stays ``-0.0``)
    tanh          ``tanh(x)``
    softsign      ``x / (1 + |x|)``
    gelu          ``x * Phi(x) = 0.5 x erfc(-x / sqrt 2)`` (erfc: no ``1 + erf``
                  cancellation in the left tail)
    gelu_tanh     ``0.5 x (1 + tanh(u))``, ``u = sqrt(2/pi) (x + 0.044715 x^3)``,
                  as ``x * sigmoid(2u)``
    silu          ``x * sigmoid(x)``
    ============  =============================================================

``unary_backward(op, grad, s, out, nthreads)``
    ``out[i] = grad[i] * f'(x[i])`` — the vector-Jacobian product — with ``s``
    the forward input ``x``, except for ``op == "sigmoid"`` where ``s`` is the
    forward output ``y = sigmoid(x)`` and ``out = grad * (1 - y) * y``.
    Derivatives are written in forms that neither overflow nor cancel:
    ``tanh' = 4t / (1+t)^2`` with ``t = exp(-2|x|)``; ``softsign' = r*r`` with
    ``r = 1 / (1+|x|)``; ``gelu' = Phi(x) + x phi(x)``;
    ``gelu_tanh' = s + 2 x s (1-s) u'`` with ``s = sigmoid(2u)`` (the second
    term 0 once ``s (1-s)`` underflows, so a huge finite ``x`` gives no
    ``0 * inf``); ``silu' = s (1 + x sigmoid(-x))``; ``relu' = 0`` where
    ``x <= 0`` else 1 (NaN passes grad, as PyTorch); ``log_sigmoid' =
    sigmoid(-x)``.

``bce(x, t, w, pw, c, gscale, loss, grad, nthreads) -> float``
    Binary cross-entropy with logits, elementwise over ``n`` elements, as
    ``torch.nn.functional.binary_cross_entropy_with_logits``::

        sp      = max(-x, 0) + log1p(exp(-|x|))        # -log sigmoid(x)
        lw      = 1 + (pw_i - 1) t                     # 1 without pos_weight
        l_i     = w_i ((1 - t) x + lw sp)
        grad_i  = c * gscale_i * w_i (lw sigmoid(x) - pw_i t)

    ``w`` and ``pw`` are ``None`` (all ones) or 1-D arrays of length ``L``
    dividing ``n``; element ``i`` uses ``w[i % L]`` (``L = n``: one weight per
    element; ``L = C``: one per class of the last axis; ``L = 1``: a scalar).
    ``gscale`` is ``None`` (all ones) or ``(n,)``.  ``loss`` (``(n,)``, the
    unreduced ``l``) and ``grad`` may each be ``None``; ``grad`` may be ``x``.
    Returns ``sum_i l_i``, accumulated in float64.  ``c`` is a Python float.

``bce_chunk(x, t, w, pw, offset, c, gscale, loss, grad) -> float``
    (native backends) the same over elements ``offset .. offset + len(x)`` of
    the full arrays: ``w[(offset + i) % L]``; what ``bce`` runs per thread.

The reference computes in the compute dtype with NumPy's ufuncs (SciPy's
``erfc`` where SciPy is installed, else ``math.erfc`` element by element).
"""

from __future__ import annotations

import math

import numpy as np

NAME = "numpy"

UNARY = ("sigmoid", "log_sigmoid", "relu", "tanh", "softsign", "gelu", "gelu_tanh", "silu")
BACKWARD = UNARY

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
GELU_KAPPA = 0.044715

try:  # pragma: no branch
    from scipy.special import erfc as _erfc
except ImportError:  # pragma: no cover - scipy is optional
    _erfc_py = np.vectorize(math.erfc, otypes=[np.float64])

    def _erfc(x):
        return _erfc_py(x).astype(x.dtype)


def _sigmoid(x):
    dt = x.dtype.type
    e = np.exp(-np.abs(x))  # in (0, 1]: never overflows
    with np.errstate(invalid="ignore"):
        return np.where(x >= 0, dt(1) / (dt(1) + e), e / (dt(1) + e))


def _softplus_neg(x):
    """softplus(-x) = -log sigmoid(x) = max(-x, 0) + log1p(exp(-|x|))."""
    return np.maximum(-x, x.dtype.type(0)) + np.log1p(np.exp(-np.abs(x)))


def _forward(op, x):
    dt = x.dtype.type
    if op == "sigmoid":
        return _sigmoid(x)
    if op == "log_sigmoid":
        return np.minimum(x, dt(0)) - np.log1p(np.exp(-np.abs(x)))
    if op == "relu":
        return np.where(x < 0, dt(0), x)
    if op == "tanh":
        return np.tanh(x)
    if op == "softsign":
        return x / (dt(1) + np.abs(x))
    if op == "gelu":
        return dt(0.5) * x * _erfc(-x * dt(math.sqrt(0.5)))
    if op == "gelu_tanh":
        u = dt(SQRT_2_OVER_PI) * x * (dt(1) + dt(GELU_KAPPA) * x * x)
        return x * _sigmoid(dt(2) * u)
    if op == "silu":
        return x * _sigmoid(x)
    raise ValueError(f"unknown elementwise op {op!r}")


def _derivative(op, x):
    """f'(x) (for "sigmoid": the derivative from the output, (1 - y) y)."""
    dt = x.dtype.type
    if op == "sigmoid":
        return None  # handled by the caller: needs grad first (PyTorch's order)
    if op == "log_sigmoid":
        return _sigmoid(-x)
    if op == "relu":
        return np.where(x <= 0, dt(0), dt(1))
    if op == "tanh":
        t = np.exp(dt(-2) * np.abs(x))
        return dt(4) * t / ((dt(1) + t) * (dt(1) + t))
    if op == "softsign":
        r = dt(1) / (dt(1) + np.abs(x))
        # +-inf: NaN, as PyTorch's x / (1 + |x|) differentiated gives inf/inf
        return np.where(np.isinf(x), dt(np.nan), r * r)
    if op == "gelu":
        return (dt(0.5) * _erfc(-x * dt(math.sqrt(0.5)))
                + x * (np.exp(dt(-0.5) * x * x) * dt(INV_SQRT_2PI)))
    if op == "gelu_tanh":
        x2 = x * x
        u = dt(SQRT_2_OVER_PI) * x * (dt(1) + dt(GELU_KAPPA) * x2)
        s = _sigmoid(dt(2) * u)
        sm = _sigmoid(dt(-2) * u)
        ss = s * sm
        du = dt(2 * SQRT_2_OVER_PI) * (dt(1) + dt(3 * GELU_KAPPA) * x2)
        term = x * du * ss
        term = np.where((ss == 0) & np.isfinite(x), dt(0), term)
        return s + term
    if op == "silu":
        return _sigmoid(x) * (dt(1) + x * _sigmoid(-x))
    raise ValueError(f"unknown elementwise op {op!r}")


def unary(op, x, out, nthreads=1):
    with np.errstate(all="ignore"):
        out[...] = _forward(op, x)


def unary_backward(op, grad, s, out, nthreads=1):
    with np.errstate(all="ignore"):
        if op == "sigmoid":
            out[...] = grad * (s.dtype.type(1) - s) * s
        else:
            out[...] = grad * _derivative(op, s)


def _periodic(a, n):
    """``a`` of length L dividing n as an (n,) broadcast view: element i is a[i % L]."""
    if a is None:
        return None
    return np.broadcast_to(a, (n // a.shape[0], a.shape[0])).reshape(-1) if a.shape[0] != n else a


def tile_periodic(a, min_len=1024):
    """A periodic weight (element ``i`` uses ``a[i % L]``) repeated to a length that is a
    multiple of ``L`` and at least ``min_len``: the same weights for every ``i``, in
    longer contiguous runs (what the native kernels walk without a modulo)."""
    if a is None or a.shape[0] >= min_len:
        return a
    return np.tile(a, -(-min_len // a.shape[0]))


def bce(x, t, w, pw, c, gscale, loss, grad, nthreads=1):
    n = x.shape[0]
    dt = x.dtype.type
    w = _periodic(w, n)
    pw = _periodic(pw, n)
    with np.errstate(all="ignore"):
        sp = _softplus_neg(x)
        one_t = dt(1) - t
        if pw is None:
            lw = None
            el = one_t * x + sp
        else:
            lw = dt(1) + (pw - dt(1)) * t
            el = one_t * x + lw * sp
        if w is not None:
            el = el * w
        total = float(np.sum(el, dtype=np.float64))
        if loss is not None:
            loss[...] = el
        if grad is not None:
            s = _sigmoid(x)
            d = s - t if pw is None else lw * s - pw * t
            if w is not None:
                d = d * w
            d = d * dt(c)
            if gscale is not None:
                d = d * gscale
            grad[...] = d
    return total


from .table import ElementwiseKernels  # noqa: E402  (beside its one use)

#: The table the API calls (``fastact._backends.table``).
KERNELS = ElementwiseKernels(NAME, unary, unary_backward, bce, UNARY)
