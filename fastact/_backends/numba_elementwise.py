"""Numba elementwise kernels (contract: ``numpy_elementwise``'s docstring).

Each kernel is a plain loop over a 1-D contiguous array, compiled on first use
for the dtype it meets (constants take the array's dtype, so float32 stays
float32), cached on disk, and run without the GIL so that ``chunked`` can split
a large call over threads.  fastmath is the explicit flag set without
``nnan``/``ninf``: the kernels must see infinities and NaN.
"""

from __future__ import annotations

import math

import numba

from .elementwise import chunked
from .numpy_elementwise import GELU_KAPPA, INV_SQRT_2PI, SQRT_2_OVER_PI

NAME = "numba"
UNARY = ("sigmoid", "log_sigmoid", "relu", "tanh", "softsign", "gelu", "gelu_tanh", "silu")
BACKWARD = UNARY

_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
_jit = numba.njit(cache=True, nogil=True, fastmath=_FASTMATH)
_inline = numba.njit(cache=True, nogil=True, fastmath=_FASTMATH, inline="always")

_SQRT_HALF = math.sqrt(0.5)


# ----------------------------------------------------------------------------
# scalar pieces (one: the dtype's 1, so that float32 stays float32)
# ----------------------------------------------------------------------------

@_inline
def _sig(v, one):
    e = math.exp(-abs(v))  # in (0, 1]: never overflows
    r = one / (one + e)
    return r if v >= 0 else e * r


@_inline
def _softplus_neg(v, one):
    """-log sigmoid(v) = max(-v, 0) + log1p(exp(-|v|))."""
    m = -v if v < 0 else one - one  # NaN: 0 here, NaN from the log1p term
    return m + math.log1p(math.exp(-abs(v)))


# ----------------------------------------------------------------------------
# forward
# ----------------------------------------------------------------------------

@_jit
def _sigmoid(x, out):
    one = x.dtype.type(1)
    for i in range(x.shape[0]):
        out[i] = _sig(x[i], one)


@_jit
def _log_sigmoid(x, out):
    one = x.dtype.type(1)
    for i in range(x.shape[0]):
        v = x[i]
        out[i] = -_softplus_neg(v, one)


@_jit
def _relu(x, out):
    zero = x.dtype.type(0)
    for i in range(x.shape[0]):
        v = x[i]
        out[i] = zero if v < zero else v


@_jit
def _tanh(x, out):
    for i in range(x.shape[0]):
        out[i] = math.tanh(x[i])


@_jit
def _softsign(x, out):
    one = x.dtype.type(1)
    for i in range(x.shape[0]):
        v = x[i]
        out[i] = v / (one + abs(v))


@_jit
def _gelu(x, out):
    t = x.dtype.type
    half = t(0.5)
    c = t(_SQRT_HALF)
    for i in range(x.shape[0]):
        v = x[i]
        out[i] = half * v * math.erfc(-v * c)


@_jit
def _gelu_tanh(x, out):
    t = x.dtype.type
    one = t(1)
    k0 = t(2 * SQRT_2_OVER_PI)
    k1 = t(GELU_KAPPA)
    for i in range(x.shape[0]):
        v = x[i]
        out[i] = v * _sig(k0 * v * (one + k1 * v * v), one)


@_jit
def _silu(x, out):
    one = x.dtype.type(1)
    for i in range(x.shape[0]):
        v = x[i]
        out[i] = v * _sig(v, one)


# ----------------------------------------------------------------------------
# backward: out = grad * f'(x)   (sigmoid: from y)
# ----------------------------------------------------------------------------

@_jit
def _sigmoid_bwd(grad, y, out):
    one = y.dtype.type(1)
    for i in range(y.shape[0]):
        v = y[i]
        out[i] = grad[i] * (one - v) * v


@_jit
def _log_sigmoid_bwd(grad, x, out):
    one = x.dtype.type(1)
    for i in range(x.shape[0]):
        out[i] = grad[i] * _sig(-x[i], one)


@_jit
def _relu_bwd(grad, x, out):
    zero = x.dtype.type(0)
    for i in range(x.shape[0]):
        g = grad[i]
        out[i] = zero if x[i] <= zero else g


@_jit
def _tanh_bwd(grad, x, out):
    t = x.dtype.type
    one = t(1)
    four = t(4)
    m2 = t(-2)
    for i in range(x.shape[0]):
        e = math.exp(m2 * abs(x[i]))
        d = one + e
        out[i] = grad[i] * (four * e / (d * d))


@_jit
def _softsign_bwd(grad, x, out):
    one = x.dtype.type(1)
    for i in range(x.shape[0]):
        v = x[i]
        r = one / (one + abs(v))
        d = r * r
        if math.isinf(v):
            d = v - v  # NaN, as PyTorch's derivative of x / (1 + |x|) at +-inf
        out[i] = grad[i] * d


@_jit
def _gelu_bwd(grad, x, out):
    t = x.dtype.type
    half = t(0.5)
    mhalf = t(-0.5)
    c = t(_SQRT_HALF)
    k = t(INV_SQRT_2PI)
    for i in range(x.shape[0]):
        v = x[i]
        d = half * math.erfc(-v * c) + v * (math.exp(mhalf * v * v) * k)
        out[i] = grad[i] * d


@_jit
def _gelu_tanh_bwd(grad, x, out):
    t = x.dtype.type
    one = t(1)
    zero = t(0)
    k0 = t(2 * SQRT_2_OVER_PI)
    k1 = t(GELU_KAPPA)
    k3 = t(3 * GELU_KAPPA)
    for i in range(x.shape[0]):
        v = x[i]
        v2 = v * v
        u2 = k0 * v * (one + k1 * v2)
        s = _sig(u2, one)
        ss = s * _sig(-u2, one)
        term = v * (k0 * (one + k3 * v2)) * ss
        if ss == zero and not math.isinf(v):
            term = zero  # s (1 - s) underflowed: no 0 * inf for huge finite x
        out[i] = grad[i] * (s + term)


@_jit
def _silu_bwd(grad, x, out):
    one = x.dtype.type(1)
    for i in range(x.shape[0]):
        v = x[i]
        out[i] = grad[i] * (_sig(v, one) * (one + v * _sig(-v, one)))


_FWD = {"sigmoid": _sigmoid, "log_sigmoid": _log_sigmoid, "relu": _relu, "tanh": _tanh,
        "softsign": _softsign, "gelu": _gelu, "gelu_tanh": _gelu_tanh, "silu": _silu}
_BWD = {"sigmoid": _sigmoid_bwd, "log_sigmoid": _log_sigmoid_bwd, "relu": _relu_bwd,
        "tanh": _tanh_bwd, "softsign": _softsign_bwd, "gelu": _gelu_bwd,
        "gelu_tanh": _gelu_tanh_bwd, "silu": _silu_bwd}


def unary(op, x, out, nthreads=1):
    k = _FWD[op]
    chunked(lambda a, b: k(x[a:b], out[a:b]), x.shape[0], nthreads)


def unary_backward(op, grad, s, out, nthreads=1):
    k = _BWD[op]
    chunked(lambda a, b: k(grad[a:b], s[a:b], out[a:b]), s.shape[0], nthreads)


# ----------------------------------------------------------------------------
# binary cross-entropy with logits
# ----------------------------------------------------------------------------

@_jit
def bce_chunk(x, t, w, pw, offset, c, gscale, loss, grad):
    dt = x.dtype.type
    one = dt(1)
    cc = dt(c)
    n = x.shape[0]
    lw_len = 1 if w is None else w.shape[0]
    lp_len = 1 if pw is None else pw.shape[0]
    jw = offset % lw_len
    jp = offset % lp_len
    total = 0.0
    block = 0.0
    for i in range(n):
        v = x[i]
        ti = t[i]
        sp = _softplus_neg(v, one)
        one_t = one - ti
        if pw is None:
            lw = one
            el = one_t * v + sp
        else:
            p = pw[jp]
            lw = one + (p - one) * ti
            el = one_t * v + lw * sp
        if w is not None:
            el = el * w[jw]
        block += el
        if (i & 255) == 255:  # two-level sum: float64 blocks of 256
            total += block
            block = 0.0
        if loss is not None:
            loss[i] = el
        if grad is not None:
            s = _sig(v, one)
            if pw is None:
                d = s - ti
            else:
                d = lw * s - pw[jp] * ti
            if w is not None:
                d = d * w[jw]
            d = d * cc
            if gscale is not None:
                d = d * gscale[i]
            grad[i] = d
        jw += 1
        if jw == lw_len:
            jw = 0
        jp += 1
        if jp == lp_len:
            jp = 0
    return total + block


def bce(x, t, w, pw, c, gscale, loss, grad, nthreads=1):
    def part(a, b):
        return bce_chunk(x[a:b], t[a:b], w, pw, a, float(c),
                         None if gscale is None else gscale[a:b],
                         None if loss is None else loss[a:b],
                         None if grad is None else grad[a:b])

    return float(sum(chunked(part, x.shape[0], nthreads)))
