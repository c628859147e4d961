"""Numba elementwise kernels (contract: ``numpy_elementwise``'s docstring).

Each kernel is a plain loop over a 1-D contiguous array, compiled on first use
for the dtype it meets (constants take the array's dtype, so float32 stays
float32), cached on disk, and run without the GIL so that ``chunked`` can split
a large call over threads.  fastmath is the explicit flag set without
``nnan``/``ninf``: the kernels must see infinities and NaN.

Speed: ``math.exp``/``math.log1p``/``math.tanh``/``math.erfc`` in a Numba loop
are scalar libm calls (no SVML here), so the loops use the branch-free
polynomials of ``_numba_math`` (shared with the row kernels), which LLVM
vectorises: ``exp`` (XNNPACK-style, ``2**n`` exact in the exponent field),
``log1p`` on ``[0, 1]``, ``expm1`` on ``(-inf, 0]`` and (float32) ``erfc``.
float64 ``erfc`` stays libm.  The jit decorators are ``_numba_math``'s too
(``error_model="numpy"``: a float division is just the division, not a zero
check that raises ZeroDivisionError and keeps LLVM from vectorising).
"""

from __future__ import annotations

import math

from ._numba_half import is_half, run_flat
from ._numba_math import _erfc, _exp, _expm1_neg, _inline, _jit, _log1p_unit
from .elementwise import chunked, min_chunk
from .numpy_elementwise import GELU_KAPPA, INV_SQRT_2PI, SQRT_2_OVER_PI, tile_periodic

NAME = "numba"
UNARY = ("sigmoid", "log_sigmoid", "relu", "tanh", "softsign", "gelu", "gelu_tanh", "silu")
BACKWARD = UNARY

_SQRT_HALF = math.sqrt(0.5)


# ----------------------------------------------------------------------------
# scalar pieces (one: the dtype's 1, so that float32 stays float32)
# ----------------------------------------------------------------------------

@_inline
def _sig(v, one):
    e = _exp(-abs(v))  # in (0, 1]: never overflows
    r = one / (one + e)
    return r if v >= 0 else e * r


@_inline
def _softplus_neg(v, one):
    """-log sigmoid(v) = max(-v, 0) + log1p(exp(-|v|))."""
    m = -v if v < 0 else one - one  # NaN: 0 here, NaN from the log1p term
    return m + _log1p_unit(_exp(-abs(v)))


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
    """tanh(x) = sign(x) (-m) / (2 + m), m = expm1(-2|x|): no cancellation near 0."""
    t = x.dtype.type
    two = t(2)
    m2 = t(-2)
    for i in range(x.shape[0]):
        v = x[i]
        m = _expm1_neg(m2 * abs(v))
        r = -m / (two + m)
        out[i] = -r if v < 0 else r


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
        out[i] = half * v * _erfc(-v * c)


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
        e = _exp(m2 * abs(x[i]))
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
        d = half * _erfc(-v * c) + v * (_exp(mhalf * v * v) * k)
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
    if is_half(out):  # float32 kernels over bounded widened blocks
        return run_flat(k, (x,), out, nthreads, min_chunk(op))
    chunked(lambda a, b: k(x[a:b], out[a:b]), x.shape[0], nthreads, min_chunk(op))


def unary_backward(op, grad, s, out, nthreads=1):
    k = _BWD[op]
    if is_half(out):
        return run_flat(k, (grad, s), out, nthreads, min_chunk(op))
    chunked(lambda a, b: k(grad[a:b], s[a:b], out[a:b]), s.shape[0], nthreads, min_chunk(op))




# ----------------------------------------------------------------------------
# binary cross-entropy with logits
# ----------------------------------------------------------------------------

#: Elements per block: summed in the working dtype (a vectorised reduction), the block
#: sums added in float64.  A block also never crosses the end of ``w`` or ``pw``, so
#: that their elements are read contiguously (no modulo per element).
_BCE_BLOCK = 256


@_jit
def bce_chunk(x, t, w, pw, offset, c, gscale, loss, grad):
    dt = x.dtype.type
    one = dt(1)
    zero = dt(0)
    cc = dt(c)
    n = x.shape[0]
    lw_len = 1 if w is None else w.shape[0]
    lp_len = 1 if pw is None else pw.shape[0]
    jw = offset % lw_len
    jp = offset % lp_len
    total = 0.0
    i0 = 0
    while i0 < n:
        m = min(_BCE_BLOCK, n - i0)
        if w is not None:
            m = min(m, lw_len - jw)
        if pw is not None:
            m = min(m, lp_len - jp)
        # block views, indexed by k in range(m): LLVM sees non-negative indices (an
        # index i0 + k would keep Numba's negative-index wraparound, i.e. gathers)
        xb = x[i0:i0 + m]
        tb = t[i0:i0 + m]
        wb = None if w is None else w[jw:jw + m]
        pb = None if pw is None else pw[jp:jp + m]
        gsb = None if gscale is None else gscale[i0:i0 + m]
        lb = None if loss is None else loss[i0:i0 + m]
        gb = None if grad is None else grad[i0:i0 + m]
        block = zero
        for k in range(m):
            v = xb[k]
            ti = tb[k]
            sp = _softplus_neg(v, one)
            one_t = one - ti
            if pb is None:
                lw = one
                el = one_t * v + sp
            else:
                lw = one + (pb[k] - one) * ti
                el = one_t * v + lw * sp
            if wb is not None:
                el = el * wb[k]
            block += el
            if lb is not None:
                lb[k] = el
            if gb is not None:
                s = _sig(v, one)
                if pb is None:
                    d = s - ti
                else:
                    d = lw * s - pb[k] * ti
                if wb is not None:
                    d = d * wb[k]
                d = d * cc
                if gsb is not None:
                    d = d * gsb[k]
                gb[k] = d
        total += block
        i0 += m
        jw += m
        if jw == lw_len:
            jw = 0
        jp += m
        if jp == lp_len:
            jp = 0
    return total


def bce(x, t, w, pw, c, gscale, loss, grad, nthreads=1):
    w, pw = tile_periodic(w), tile_periodic(pw)

    def part(a, b):
        return bce_chunk(x[a:b], t[a:b], w, pw, a, float(c),
                         None if gscale is None else gscale[a:b],
                         None if loss is None else loss[a:b],
                         None if grad is None else grad[a:b])

    return float(sum(chunked(part, x.shape[0], nthreads)))


from .table import ElementwiseKernels  # noqa: E402  (beside its one use)

#: The table the API calls (``fastact._backends.table``).
KERNELS = ElementwiseKernels(NAME, unary, unary_backward, bce, UNARY,
                             half=frozenset({"unary", "unary_backward"}))
