"""Vector math for the Numba kernels (rows and elementwise): the one place of
each formula.

``exp`` is our own polynomial (``_exp_f32``/``_exp_f64``) built from
operations LLVM vectorises: round, Cody-Waite reduction, Horner, and ``2**n``
as two multiplies by powers of two made in the exponent field (``_ldexp``:
exact, subnormals included, on every ISA); NumPy's ``np.exp`` in a Numba loop
is a scalar libm call.  Where the argument is ``x - max`` (<= 0), float32 uses
``_exp_nonpos_f32``: one clamp, and the rounding by a magic-number add instead
of ``rint``.  ``_log_pos`` and ``_log_sum`` are the logs of the exp-sums;
``_log1p_unit`` (log1p on [0, 1]), ``_expm1_neg`` (expm1 on (-inf, 0]) and
``_erfc`` (float32 polynomial; float64 libm) serve the elementwise kernels.

The polynomials are compiled as functions of their own without ``reassoc``
(``_jit_poly``: their compensated steps must not be reassociated) and LLVM
inlines them into the loops.  Also here: the jit decorators and fastmath flag
sets every Numba kernel uses, and small typed helpers (``_to``, ``_sign``,
``_finite``).
"""

from __future__ import annotations

import hashlib
import math
import os
import types as pytypes

import numpy as np
from numba import njit, types
from numba.core import caching
from numba.extending import overload

from ._numba_intrinsics import _bits_f64, _f64_bits, _ldexp, _rint

# ----------------------------------------------------------------------------
# disk cache: one source stamp for the whole backend
# ----------------------------------------------------------------------------

_HERE = os.path.dirname(os.path.abspath(__file__))
#: The backend's modules: a kernel inlines code of several of them.
_FILES = sorted(os.path.join(_HERE, f) for f in os.listdir(_HERE)
                if f.startswith(("_numba_", "numba_")) and f.endswith(".py"))


class _BackendStamp:
    """Numba keys a function's disk cache by its own source file, and a cached
    kernel would survive a change in a module it inlines; here the stamp is
    that of every module of the backend (only for functions defined here)."""

    def get_source_stamp(self):
        h = hashlib.sha256()
        for path in _FILES:
            st = os.stat(path)
            h.update(caching._hash_source_file(path, st.st_mtime, st.st_size))
        return h.digest()

    @classmethod
    def from_function(cls, py_func, py_file):
        if os.path.dirname(os.path.abspath(py_file)) != _HERE:
            return None
        return super().from_function(py_func, py_file)


def _install_stamp():
    """Puts ``_BackendStamp`` before Numba's own cache locators (once; another
    Numba without them keeps its per-file stamps)."""
    try:
        impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl
        classes = impl._locator_classes
        bases = (caching.UserProvidedCacheLocator, caching.InTreeCacheLocator,
                 caching.UserWideCacheLocator)
        caching._hash_source_file
    except AttributeError:
        return
    if not any(issubclass(c, _BackendStamp) for c in classes):
        classes[:0] = [type(f"Fastact{b.__name__}", (_BackendStamp, b), {}) for b in bases]


_install_stamp()

_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
# The exp/log polynomials must not be reassociated: LLVM would fold the
# two-step Cody-Waite range reduction (x - n*ln2_hi - n*ln2_lo) into one.
_FASTMATH_POLY = {"nsz", "arcp", "contract", "afn"}


def _jit(fn):
    return njit(fastmath=_FASTMATH, cache=True, nogil=True,
                error_model="numpy")(fn)


def _jit_poly(fn):
    return njit(fastmath=_FASTMATH_POLY, cache=True, nogil=True,
                error_model="numpy")(fn)


def _inline(fn):
    # Numba-level inlining: as separate functions these helpers cost up to 25%
    # (LLVM no longer sees that the scratch buffers are fresh allocations).
    return njit(fastmath=_FASTMATH, cache=True, nogil=True, inline="always",
                error_model="numpy")(fn)


def _jit_par(fn):
    return njit(fastmath=_FASTMATH, cache=True, nogil=True, parallel=True,
                error_model="numpy")(fn)


def _specialise(template, tag, **consts):
    """A copy of the plain function ``template`` that reads ``consts`` as its
    globals (Numba compiles globals as constants and prunes the branches they
    decide), named ``<name>_<tag>`` so that Numba's disk cache keeps it apart:
    one template, a kernel per path and flags, each compiled on its first call
    alone.  (Not a closure: Numba keys a closure's cache by its cells' pickles,
    and a jitted function's pickle changes from one process to the next.)"""
    glob = dict(template.__globals__)
    glob.update(consts)
    fn = pytypes.FunctionType(template.__code__, glob, f"{template.__name__}_{tag}",
                              template.__defaults__)
    fn.__qualname__ = fn.__name__
    fn.__module__ = template.__module__
    fn.__doc__ = template.__doc__
    return fn


_f32, _f64 = np.float32, np.float64
# float32 exp: rr2_p5 of XNNPACK, max error ~1.5 ulp.  Clamping keeps NaN
# (the comparisons are false) and sends -inf to exp(-104) = 0 and overflow to inf.
_E32_LO, _E32_HI = _f32(-104.0), _f32(89.0)
_E32_LOG2E = _f32(float.fromhex("0x1.715476p0"))
_E32_LN2_HI = _f32(float.fromhex("0x1.62E400p-1"))
_E32_LN2_LO = _f32(float.fromhex("0x1.7F7D1Cp-20"))
_E32_C5 = _f32(float.fromhex("0x1.0F9F9Cp-7"))
_E32_C4 = _f32(float.fromhex("0x1.573A1Ap-5"))
_E32_C3 = _f32(float.fromhex("0x1.555A80p-3"))
_E32_C2 = _f32(float.fromhex("0x1.FFFDC6p-2"))
_E32_C1 = _f32(float.fromhex("0x1.FFFFF6p-1"))
_E32_ONE = _f32(1.0)

# float64 exp: Cody-Waite with fdlibm's split ln2, Taylor to degree 12 on
# |r| <= ln2/2 (truncation < 2e-16 relative).
_E64_LO, _E64_HI = -746.0, 710.0
_E64_LOG2E = 1.4426950408889634
_E64_LN2_HI = 6.93147180369123816490e-01
_E64_LN2_LO = 1.90821492927058770002e-10
_E64_C = tuple(1.0 / math.factorial(i) for i in range(13))


@_jit_poly
def _exp_f32_reduced(z, n):
    """exp(z) given n = round(z log2(e)): Cody-Waite reduction, polynomial, 2**n."""
    t = z - n * _E32_LN2_HI
    t = t - n * _E32_LN2_LO
    p = _E32_C5 * t + _E32_C4
    p = p * t + _E32_C3
    p = p * t + _E32_C2
    p = p * t + _E32_C1
    p = p * t + _E32_ONE
    return _ldexp(p, n)


@_jit_poly
def _exp_f32(z):
    z = _E32_LO if z < _E32_LO else z
    z = _E32_HI if z > _E32_HI else z
    return _exp_f32_reduced(z, _rint(z * _E32_LOG2E))


# float32 exp(z) for z <= 0 (or NaN), the softmax case: the same polynomial,
# with n rounded by the magic-number add (no float -> int -> float round trip)
# and one clamp (z < -104: -inf -> 0; NaN kept, the comparison is false).
# 2**n is applied exactly by _ldexp (two multiplies by normal powers of two),
# subnormal results included, so softmax entries below finfo.tiny are the
# subnormals np.exp gives rather than 0.
_E32_MAGIC = _f32(float.fromhex("0x1.8p23"))   # 1.5 * 2**23: adding it rounds to an integer


@_jit_poly
def _exp_nonpos_f32(z):
    z = _E32_LO if z < _E32_LO else z
    return _exp_f32_reduced(z, (z * _E32_LOG2E + _E32_MAGIC) - _E32_MAGIC)


@_jit_poly
def _exp_f64(z):
    z = _E64_LO if z < _E64_LO else z
    z = _E64_HI if z > _E64_HI else z
    n = _rint(z * _E64_LOG2E)
    t = z - n * _E64_LN2_HI
    t = t - n * _E64_LN2_LO
    c = _E64_C
    p = c[12] * t + c[11]
    p = p * t + c[10]
    p = p * t + c[9]
    p = p * t + c[8]
    p = p * t + c[7]
    p = p * t + c[6]
    p = p * t + c[5]
    p = p * t + c[4]
    p = p * t + c[3]
    p = p * t + c[2]
    p = p * t + 1.0
    p = p * t + 1.0
    return _ldexp(p, n)


_L_SQRT2 = 1.4142135623730951
_L_LN2 = 0.6931471805599453


@_jit_poly
def _log_pos(v):
    """log of a positive normal float64 (a sum >= 1 here); vectorisable.

    v = 2**e * m with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(u), u = (m-1)/(m+1),
    |u| <= 0.172: the odd series to u**19 is below 1e-17.
    """
    bits = _f64_bits(v)
    e = ((bits >> 52) & 0x7FF) - 1023
    m = _bits_f64((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)
    big = m > _L_SQRT2
    m = m * 0.5 if big else m
    e = e + 1 if big else e
    u = (m - 1.0) / (m + 1.0)
    u2 = u * u
    p = 1.0 / 19.0
    p = p * u2 + 1.0 / 17.0
    p = p * u2 + 1.0 / 15.0
    p = p * u2 + 1.0 / 13.0
    p = p * u2 + 1.0 / 11.0
    p = p * u2 + 1.0 / 9.0
    p = p * u2 + 1.0 / 7.0
    p = p * u2 + 1.0 / 5.0
    p = p * u2 + 1.0 / 3.0
    p = p * u2 + 1.0
    return e * _L_LN2 + 2.0 * u * p


@_jit_poly
def _sub_sub(a, b, c):
    """(a - b) - c, never a - (b + c): log_softmax is (x - max) - log(sum)."""
    return (a - b) - c


@_jit_poly
def _sub_add(a, b, c):
    """(a - b) + c, kept in this order (lse - x = (max - x) + log(sum))."""
    return (a - b) + c


@_jit_poly
def _log_sum(s, r):
    """log(s) of a row's exp-sum ``s = sum exp(x - max)`` (float64), accurate
    near 0 as the reference's ``_log_sum`` (SciPy's logsumexp): ``r`` is the
    sum of the terms below the max alone (x - max < 0).  Every term is <= 1
    and a term at the max is exactly 1 (``_expn(0) == 1``), so ``s < 2``
    means one term at the max and log(s) = log1p(r), taken as
    log(u) + (r - (u - 1)) / u with u = 1 + r rounded (Kahan's correction:
    a few ulp relative; u == 1 gives r itself): ``log([0, -40])`` is
    4.2e-18, not 0.  Otherwise log(s).  One log either way.

    Every path that takes a log of an exp-sum finishes its rows here (with
    logsumexp's ``b``, called as ``_log_sum(1 + t, t)``, t = r / c).  NaN s:
    NaN (special rows); u == 0 (t == -1): -inf.  Selects only, so the tiles
    vectorise it over a tile of rows; compiled without reassociation (which
    would cancel the correction), hence a ``_jit_poly`` function (Numba's
    inlining would take the caller's flags), inlined by LLVM.
    """
    one = s < 2.0
    u = 1.0 + r if one else s
    v = _log_pos(u) + ((r - (u - 1.0)) / u if one else 0.0)
    ok = (u > 0.0) & (u < np.inf)
    return v if ok else (-np.inf if u == 0.0 else u)


def _by_dtype(doc, f32, f64):
    """A function for jitted code that calls ``f32`` or ``f64`` by its argument's dtype."""
    def stub(z):
        raise NotImplementedError

    stub.__doc__ = doc

    @overload(stub)
    def _ol(z):
        if z == types.float32:
            return lambda z: f32(z)
        if z == types.float64:
            return lambda z: f64(z)
    return stub


_exp = _by_dtype("exp(z) for any z.", _exp_f32, _exp_f64)
_expn = _by_dtype("exp(z) for z <= 0, NaN or -inf (x - max): other z give garbage.",
                  _exp_nonpos_f32, _exp_f64)


def _to(a, v):
    raise NotImplementedError


@overload(_to)
def _ol_to(a, v):
    """``v`` as the dtype of array or scalar ``a``."""
    dt = a.dtype if isinstance(a, types.Array) else a
    if dt == types.float32:
        return lambda a, v: np.float32(v)
    return lambda a, v: np.float64(v)


@_inline
def _sign(v):
    if v > 0:
        return 1.0
    if v < 0:
        return -1.0
    if v == 0:
        return 0.0
    return np.nan


@_inline
def _finite(v):
    return abs(v) < np.inf


# ----------------------------------------------------------------------------
# log1p(e), e in [0, 1]; expm1(v), v <= 0; erfc (float32): elementwise kernels
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


@_jit_poly
def _erfc_f64(z):
    return math.erfc(z)  # libm (a vector erfc to 1e-13 is future work)


_log1p_unit = _by_dtype("log1p(e) for e in [0, 1] (and NaN).", _log1p_unit_f32, _log1p_unit_f64)
_expm1_neg = _by_dtype("expm1(v) for v <= 0 (and NaN).", _expm1_neg_f32, _expm1_neg_f64)
_erfc = _by_dtype("erfc(z).", _erfc_f32, _erfc_f64)
