"""Numba elementwise kernels (contract: ``numpy_elementwise``'s docstring).

Each kernel is a plain loop over a 1-D contiguous array, compiled on first use
for the dtype it meets (constants take the array's dtype, so float32 stays
float32), cached on disk, and run without the GIL so that ``chunked`` can split
a large call over threads.  fastmath is the explicit flag set without
``nnan``/``ninf``: the kernels must see infinities and NaN.

Speed: ``math.exp``/``math.log1p``/``math.tanh``/``math.erfc`` in a Numba loop
are scalar libm calls (no SVML here), so the loops use branch-free polynomials
that LLVM vectorises: ``exp`` is ``numba_kernels``' (XNNPACK-style, ``2**n`` by
``llvm.ldexp``); ``log1p`` on ``[0, 1]``, ``expm1`` on ``(-inf, 0]`` and (float32)
``erfc`` are defined here.  Like ``numba_kernels``' exp they are compiled as
functions of their own without ``reassoc`` (their compensated steps must not be
reassociated) and LLVM inlines them into the loops.  float64 ``erfc`` stays libm.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba.extending import overload

from .elementwise import chunked, min_chunk
from .numba_kernels import (_E32_LN2_HI, _E32_LN2_LO, _E32_LOG2E, _E64_LN2_HI, _E64_LN2_LO,
                            _E64_LOG2E, _FASTMATH_POLY, _exp, _ldexp, _rint)
from .numpy_elementwise import GELU_KAPPA, INV_SQRT_2PI, SQRT_2_OVER_PI, tile_periodic

NAME = "numba"
UNARY = ("sigmoid", "log_sigmoid", "relu", "tanh", "softsign", "gelu", "gelu_tanh", "silu")
BACKWARD = UNARY

_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
# error_model="numpy": a float division is just the division (inf/NaN on zero), not a
# zero check that raises ZeroDivisionError; that branch keeps LLVM from vectorising.
_jit = numba.njit(cache=True, nogil=True, fastmath=_FASTMATH, error_model="numpy")
_inline = numba.njit(cache=True, nogil=True, fastmath=_FASTMATH, error_model="numpy",
                     inline="always")
_jit_poly = numba.njit(cache=True, nogil=True, fastmath=_FASTMATH_POLY, error_model="numpy")

_SQRT_HALF = math.sqrt(0.5)
_f32, _f64 = np.float32, np.float64


# ----------------------------------------------------------------------------
# vectorisable log1p(e), e in [0, 1]; expm1(v), v <= 0; erfc (float32)
# ----------------------------------------------------------------------------

def _make_log1p_unit(f, ncoef):
    """log1p(e) for e in [0, 1] (and NaN) within ~1 ulp, branch-free: u = 1 + e rounded,
    c = e - (u - 1) its rounding error, u = m 2^k with m in [sqrt(1/2), sqrt(2)),
    log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.172, by its odd series;
    log1p(e) = k ln2 + log m + c / u."""
    one, half, two, zero = f(1), f(0.5), f(2), f(0)
    sqrt2, ln2 = f(math.sqrt(2.0)), f(math.log(2.0))
    coef = tuple(f(1.0 / (2 * j + 1)) for j in range(ncoef - 1, -1, -1))

    def log1p_unit(e):
        u = one + e
        c = e - (u - one)
        big = u > sqrt2
        m = u * half if big else u
        k = ln2 if big else zero
        s = (m - one) / (m + one)
        s2 = s * s
        q = zero
        for a in coef:
            q = q * s2 + a
        return k + (two * s * q + c / u)
    return _jit_poly(log1p_unit)


def _make_expm1_neg(f, lo, log2e, l2hi, l2lo, nfact):
    """expm1(v) for v <= 0 (and NaN): 2^n expm1(r) + (2^n - 1), |r| <= ln2/2, expm1(r)
    by its Taylor series (relative, so tanh stays accurate near 0)."""
    one, zero = f(1), f(0)
    coef = tuple(f(1.0 / math.factorial(j + 1)) for j in range(nfact - 1, -1, -1))

    def expm1_neg(v):
        x = lo if v < lo else v
        n = _rint(x * log2e)
        r = (x - n * l2hi) - n * l2lo
        q = zero
        for a in coef:
            q = q * r + a
        s = _ldexp(one, n)
        return s * (r * q) + (s - one)
    return _jit_poly(expm1_neg)


_log1p_unit_f32 = _make_log1p_unit(_f32, 6)
_log1p_unit_f64 = _make_log1p_unit(_f64, 11)
_expm1_neg_f32 = _make_expm1_neg(_f32, _f32(-80.0), _E32_LOG2E, _E32_LN2_HI, _E32_LN2_LO, 7)
_expm1_neg_f64 = _make_expm1_neg(_f64, -700.0, _E64_LOG2E, _E64_LN2_HI, _E64_LN2_LO, 13)

# erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z/2), z >= 0: the Chebyshev fit of Numerical
# Recipes (erfcc), relative error below 1.2e-7 for every z >= 0 (checked against mpmath).
_ERFC_P = tuple(_f32(c) for c in (
    0.17087277, -0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806,
    0.09678418, 0.37409196, 1.00002368, -1.26551223))
_F32_ONE, _F32_HALF, _F32_TWO, _F32_ZERO = _f32(1), _f32(0.5), _f32(2), _f32(0)


@_jit_poly
def _erfc_f32(z):
    a = abs(z)
    t = _F32_ONE / (_F32_ONE + _F32_HALF * a)
    p = _F32_ZERO
    for c in _ERFC_P:
        p = p * t + c
    e = t * _exp(p - a * a)  # a = inf: t = 0, exp(-inf) = 0
    return _F32_TWO - e if z < _F32_ZERO else e


def _log1p_unit(e):
    raise NotImplementedError


def _expm1_neg(v):
    raise NotImplementedError


def _erfc(z):
    raise NotImplementedError


@overload(_log1p_unit)
def _ol_log1p_unit(e):
    if e == numba.types.float32:
        return lambda e: _log1p_unit_f32(e)
    return lambda e: _log1p_unit_f64(e)


@overload(_expm1_neg)
def _ol_expm1_neg(v):
    if v == numba.types.float32:
        return lambda v: _expm1_neg_f32(v)
    return lambda v: _expm1_neg_f64(v)


@overload(_erfc)
def _ol_erfc(z):
    if z == numba.types.float32:
        return lambda z: _erfc_f32(z)
    return lambda z: math.erfc(z)  # float64: libm (a vector erfc to 1e-13 is future work)


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
    chunked(lambda a, b: k(x[a:b], out[a:b]), x.shape[0], nthreads, min_chunk(op))


def unary_backward(op, grad, s, out, nthreads=1):
    k = _BWD[op]
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
KERNELS = ElementwiseKernels(NAME, unary, unary_backward, bce, UNARY)
