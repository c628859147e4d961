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


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp"])
@pytest.mark.parametrize("dtype", FLOATS)
def test_where_combined_with_bias(backend, rng, op, dtype):
    """An entry takes part when where allows it and its bias is not -inf; rows masked
    by one, the other, or both together are fully masked (0 / -inf, never NaN)."""
    x = (rng.standard_normal((6, 8)) * 4).astype(dtype)
    x[:, 0] = np.inf  # masked below on every row: never read
    x[:, 1] = np.nan
    where = rng.random((6, 8)) < 0.7
    bias = rng.standard_normal((6, 8)).astype(dtype)
    bias[:, 0] = -np.inf
    where[:, 1] = False
    bias[2, :] = -np.inf            # row 2: masked by the bias
    where[3, :] = False             # row 3: masked by where
    bias[4, ::2] = -np.inf          # row 4: by the two together
    where[4, 1::2] = False
    got = getattr(fastact, op)(x, where=where, bias=bias, scale=1.5, softcap=5.0,
                               backend=backend)
    want = truth(op, x, -1, 1.5, 5.0, bias, where, dtype=dtype)
    assert_close(got, want, dtype, _kind(op))
    full = {"softmax": 0.0, "log_softmax": -np.inf, "logsumexp": -np.inf}[op]
    for r in (2, 3, 4):
        assert np.all(np.asarray(got)[r] == full)
    if op != "logsumexp":
        assert np.all(got[:, :2] == full)
        assert np.isfinite(got[[0, 1, 5]][mask_of(x.shape, where, bias)[[0, 1, 5]]]).all()


#: (scale, softcap, bias value added to every entry) over SPEC's rows of special values
SPECIAL_XFORMS = [pytest.param(0.0, None, None, id="scale0"),
                  pytest.param(-1.0, None, None, id="neg-scale"),
                  pytest.param(0.5, 3.0, None, id="softcap"),
                  pytest.param(None, 1e4, None, id="large-softcap"),
                  pytest.param(2.0, None, 1.5, id="scale-bias"),
                  pytest.param(None, 2.0, -np.inf, id="all-masked")]


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp"])
@pytest.mark.parametrize("scale,softcap,bval", SPECIAL_XFORMS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_special_values(backend, op, scale, softcap, bval, dtype):
    """SPEC's special rows (+-inf, NaN, +-finfo.max, all -inf ...) through each transform:
    the rules apply to z (softcap maps +-inf to +-softcap; 0 * inf is NaN)."""
    from conftest import special_matrix
    names, x = special_matrix(dtype)
    bias = None if bval is None else np.full(x.shape[1:], bval, dtype)
    got = getattr(fastact, op)(x, scale=scale, softcap=softcap, bias=bias, backend=backend)
    want = truth(op, x, -1, scale, softcap, bias, dtype=dtype)
    assert_close(got, want, dtype, _kind(op))


def test_special_value_decisions(backend):
    """The decisions of docs/transforms.md, spelled out on small rows."""
    sm = lambda x, **kw: fastact.softmax(np.array(x, float), backend=backend, **kw)  # noqa: E731
    lsm = lambda x, **kw: fastact.log_softmax(np.array(x, float), backend=backend, **kw)  # noqa: E731
    inf, nan = np.inf, np.nan
    # softcap maps +inf to +softcap: a +inf logit has a well-defined softmax
    e = np.exp([2.0, 0.0, -2.0])
    np.testing.assert_allclose(sm([inf, 0.0, -inf], softcap=2.0), e / e.sum(), rtol=1e-15)
    # scale=0 follows IEEE: 0 * inf is NaN (a NaN row); finite rows become uniform
    assert np.isnan(sm([1.0, inf, 2.0], scale=0.0)).all()
    np.testing.assert_array_equal(sm([1.0, -5.0, 2.0, 1e308], scale=0.0), [0.25] * 4)
    # a -inf bias masks the entry whatever x holds; the others are the softmax of the rest
    b = np.array([-inf, 0.0, -inf, 0.0])
    np.testing.assert_allclose(sm([inf, 1.0, nan, 1.0], bias=b), [0, 0.5, 0, 0.5], rtol=1e-15)
    np.testing.assert_array_equal(lsm([inf, 1.0, nan, 1.0], bias=b)[[0, 2]], [-inf, -inf])
    # every entry masked: zeros / -inf, never NaN
    np.testing.assert_array_equal(sm([inf, nan, 1.0], bias=np.full(3, -inf)), [0, 0, 0])
    np.testing.assert_array_equal(lsm([1.0, 2.0], bias=np.full(2, -inf)), [-inf, -inf])
    assert fastact.logsumexp(np.array([nan, 2.0]), bias=np.full(2, -inf),
                             backend=backend) == -inf
    # NaN in an unmasked bias, or in x at an unmasked entry: a NaN row
    assert np.isnan(sm([1.0, 2.0, 3.0], bias=np.array([0.0, nan, 0.0]))).all()
    assert np.isnan(sm([1.0, nan, 3.0], bias=np.zeros(3), softcap=3.0)).all()
    # a +inf bias (unmasked) is a +inf z: SPEC's NaN row
    assert np.isnan(sm([1.0, 2.0], bias=np.array([inf, 0.0]))).all()
    # +-finfo.max with a softcap: finite z, no overflow
    fm = np.finfo(np.float64).max
    np.testing.assert_allclose(sm([fm, -fm], softcap=1.0),
                               [1 / (1 + np.exp(-2.0)), 1 / (1 + np.exp(2.0))], rtol=1e-15)
    # scale overflows to +-inf before the cap, as x * scale then tanh in float64 would
    np.testing.assert_allclose(sm([fm, 0.0], scale=10.0, softcap=1.0),
                               [1 / (1 + np.exp(-1.0)), 1 / (1 + np.exp(1.0))], rtol=1e-15)


def test_float16_rounded_once(backend, rng):
    """float16 in, float16 out: the float32 result (computed from the same float32 z)
    rounded once to nearest-even, bit for bit; a -inf bias mask included."""
    x = (rng.standard_normal((33, 70)) * 8).astype(np.float16)
    bias = rng.standard_normal((1, 70)).astype(np.float16)
    bias[0, 3] = -np.inf
    for op in ("softmax", "log_softmax"):
        got = getattr(fastact, op)(x, axis=0, scale=0.7, softcap=6.0, bias=bias[:, :70],
                                   backend=backend)
        ref = getattr(fastact, op)(x.astype(np.float32), axis=0, scale=0.7, softcap=6.0,
                                   bias=bias.astype(np.float32), backend=backend)
        assert got.dtype == np.float16
        np.testing.assert_array_equal(got.view(np.uint16), ref.astype(np.float16).view(np.uint16))
    lse = fastact.logsumexp(x, scale=0.7, softcap=6.0, backend=backend)
    ref = fastact.logsumexp(x.astype(np.float32), scale=0.7, softcap=6.0, backend=backend)
    assert lse.dtype == np.float16
    np.testing.assert_array_equal(lse.view(np.uint16), ref.astype(np.float16).view(np.uint16))


def test_blocks_cover_every_row_once():
    """The block layer's blocks: consecutive rows, in C order, each once, bounded."""
    from fastact import _transforms
    for outer, k in [((), 5), ((7,), 3), ((5, 6, 7), 1000), ((3, 4000), 20), ((9, 2), 40000),
                     ((2, 3, 5), 1 << 16)]:
        n = int(np.prod(outer))
        ids = np.arange(n).reshape(outer)
        seen = []
        for idx, r0, r1 in _transforms.blocks(outer, n, k, 8):
            got = np.asarray(ids[idx]).reshape(-1)
            np.testing.assert_array_equal(got, np.arange(r0, r1))
            assert (r1 - r0) * k * 8 <= max(_transforms.BLOCK_BYTES, k * 8)
            seen.append((r0, r1))
        assert seen[0][0] == 0 and seen[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(seen, seen[1:]))


@pytest.mark.parametrize("shape,axis", [((3, 70000), -1), ((5000, 12), -1), ((7, 900, 11), 1),
                                        ((40, 30, 50), (0, 2))])
def test_many_blocks(backend, rng, shape, axis):
    """Rows longer than a block, many blocks of short rows, blocks cut inside a middle
    axis, a tuple of axes: each row is what the one-block reference gives."""
    x = rng.standard_normal(shape) * 5
    bias = np.where(rng.random(shape[-1:]) < 0.1, -np.inf, rng.standard_normal(shape[-1:]))
    for op in ("softmax", "log_softmax", "logsumexp"):
        got = getattr(fastact, op)(x, axis=axis, scale=1.3, softcap=7.0, bias=bias,
                                   backend=backend)
        assert_close(got, truth(op, x, axis, 1.3, 7.0, bias), np.float64, _kind(op))


# ---------------------------------------------------------------- backwards

def torch_vjp(op, x, grad, axis, scale=None, softcap=None, bias=None, where=None):
    """(y, d loss / d x, d loss / d bias) by torch autograd in float64, the op composed
    with fastact's semantics: masked entries (where, -inf bias) and their upstream
    gradient take no part; fully masked rows give 0 / -inf."""
    torch = pytest.importorskip("torch")
    x64 = np.asarray(x, np.float64)
    keep = mask_of(x64.shape, where, bias)
    keep = torch.ones(x64.shape, dtype=torch.bool) if keep is None else torch.tensor(keep)
    xt = torch.tensor(x64, requires_grad=True)
    bt = None if bias is None else torch.tensor(np.asarray(bias, np.float64), requires_grad=True)
    z = torch.where(keep, xt, 0.0)
    if scale is not None:
        z = z * scale
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    if bt is not None:
        z = z + torch.where(keep, bt, 0.0)
    empty = ~keep.any(dim=axis, keepdim=True)
    z = torch.where(keep & ~empty, z, -torch.inf)
    z = torch.where(empty, 0.0, z)
    y = (torch.log_softmax if op == "log_softmax" else torch.softmax)(z, dim=axis)
    y = torch.where(keep, y, -torch.inf if op == "log_softmax" else 0.0)
    y.backward(torch.tensor(np.asarray(grad, np.float64)))
    return (y.detach().numpy(), xt.grad.numpy(), None if bt is None else bt.grad.numpy())


def _close_grad(got, want, dtype):
    # computed from y rounded to dtype (as tests/test_backward.py): absolute bound
    # scaled by the gradient's magnitude
    scale = np.max(np.abs(want)) + 1
    np.testing.assert_allclose(got, want, rtol=0, atol=(2e-5 if dtype == np.float32 else 1e-11)
                               * scale)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("scale,softcap,has_bias", XFORMS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_backward_vs_torch(backend, rng, op, scale, softcap, has_bias, dtype):
    """d loss / d x through the transforms, each axis and layout; the bias's -inf mask
    passed to log_softmax_backward as bias= and, the same, folded into where=."""
    for shape, axis, order in CASES[:5]:
        x = np.array(rng.standard_normal(shape) * 4, dtype=dtype, order=order)
        g = rng.standard_normal(shape).astype(dtype)
        bias = _bias(rng, shape, axis, dtype) if has_bias else None
        y = getattr(fastact, op)(x, axis=axis, scale=scale, softcap=softcap, bias=bias,
                                 backend=backend)
        _, want, _ = torch_vjp(op, x, g, axis, scale, softcap, bias)
        kw = dict(axis=axis, scale=scale, softcap=softcap, x=x, backend=backend)
        if op == "softmax":
            got = fastact.softmax_backward(g, y, **kw)
        else:
            got = fastact.log_softmax_backward(g, y, bias=bias, **kw)
            if bias is not None:
                w = np.broadcast_to(bias != -np.inf, shape)
                _close_grad(fastact.log_softmax_backward(g, y, where=w, **kw), want, dtype)
        assert got.dtype == dtype and got.shape == shape
        _close_grad(got, want, dtype)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_backward_masks_and_special_values(backend, rng, op):
    """Zero gradient at masked entries (whatever x holds there: +inf, NaN) and on fully
    masked rows; where= and bias= combined; scale=0 and a NaN row."""
    x = rng.standard_normal((5, 6)) * 3
    x[:, 0], x[:, 1] = np.inf, np.nan
    bias = rng.standard_normal((5, 6))
    bias[:, :2] = -np.inf
    bias[3] = -np.inf
    where = np.ones((5, 6), bool)
    where[1, 2:4] = False
    where[4, 2:] = False
    g = rng.standard_normal((5, 6))
    y = getattr(fastact, op)(x, bias=bias, where=where, scale=0.8, softcap=3.0,
                             backend=backend) if op == "log_softmax" else \
        fastact.softmax(x, bias=bias, where=where, scale=0.8, softcap=3.0, backend=backend)
    _, want, _ = torch_vjp(op, x, g, -1, 0.8, 3.0, bias, where)
    kw = dict(scale=0.8, softcap=3.0, x=x, backend=backend)
    got = (fastact.softmax_backward(g, y, **kw) if op == "softmax"
           else fastact.log_softmax_backward(g, y, where=where, bias=bias, **kw))
    assert np.isfinite(got).all()
    assert np.all(got[:, :2] == 0) and np.all(got[3] == 0) and np.all(got[4] == 0)
    assert np.all(got[1, 2:4] == 0)
    _close_grad(got, want, np.float64)
    # scale=0: a row holding inf is NaN (forward and backward), the others get 0 * ...
    x2 = np.array([[1.0, np.inf, 2.0], [1.0, -3.0, 2.0]])
    y2 = getattr(fastact, op)(x2, scale=0.0, backend=backend)
    back = fastact.softmax_backward if op == "softmax" else fastact.log_softmax_backward
    g2 = back(np.ones_like(x2), y2, scale=0.0, backend=backend)
    assert np.isnan(g2[0]).all() and np.all(g2[1] == 0)


def test_backward_bias_gradient_is_the_vjp_wrt_z(backend, rng):
    """The API's backward without scale/softcap is the gradient w.r.t. z, hence w.r.t. a
    bias once summed over its broadcast axes (what fastact.torch does)."""
    x = rng.standard_normal((4, 3, 7)) * 3
    bias = rng.standard_normal((1, 3, 7))
    bias[0, 1, 2] = -np.inf
    g = rng.standard_normal(x.shape)
    for op in ("softmax", "log_softmax"):
        _, _, want = torch_vjp(op, x, g, -1, 0.5, 2.0, bias)
        y = getattr(fastact, op)(x, scale=0.5, softcap=2.0, bias=bias, backend=backend)
        gz = (fastact.softmax_backward(g, y, backend=backend) if op == "softmax"
              else fastact.log_softmax_backward(g, y, bias=bias, backend=backend))
        np.testing.assert_allclose(gz.sum(axis=0, keepdims=True), want, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- cross-entropy

def torch_ce(logits, target, *, axis=-1, scale=None, softcap=None, grad_loss=1.0, **opts):
    """Loss and d loss / d logits (the raw logits) in float64: tests/test_cross_entropy's
    torch autograd truth on z (classes moved last), chained with
    dz/dx = scale * (1 - tanh(u)**2), u = x * scale / softcap."""
    pytest.importorskip("torch")
    from test_cross_entropy import torch_ce as torch_ce_of_z
    x = np.moveaxis(np.asarray(logits, np.float64), axis, -1)
    t = np.asarray(target)
    if t.dtype.kind not in "iu":
        t = np.moveaxis(t, axis, -1)
        opts["ignore_index"] = -100  # for index targets only: torch refuses another one
    loss, gz = torch_ce_of_z(z_of(x, scale, softcap), t, grad_loss=grad_loss, **opts)
    s = 1.0 if scale is None else scale
    dzdx = s if softcap is None else s * (1 - np.tanh(x * s / softcap) ** 2)
    return loss, np.moveaxis(gz * dzdx, -1, axis)


def ce_check(*args):
    from test_cross_entropy import check
    check(*args)


@pytest.mark.parametrize("index", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("scale,softcap", [(0.5, None), (None, 2.5), (-1.3, 4.0)])
@pytest.mark.parametrize("dtype", FLOATS)
def test_cross_entropy_every_option(backend, rng, index, reduction, scale, softcap, dtype):
    """weight, ignore_index, label_smoothing, z_loss, each reduction, with each transform;
    loss, _backward (with grad_loss) and _with_grad; classes last and on axis 1."""
    from conftest import ce_case, check_loss_functions
    x, t = ce_case(rng, dtype, lead=(9,), c=7, index=index, ignore_index=3 if index else -100)
    w = (rng.random(7) + 0.2).astype(dtype)
    opts = dict(weight=w, ignore_index=3, reduction=reduction, label_smoothing=0.1,
                z_loss=1e-3, scale=scale, softcap=softcap)
    check_loss_functions("softmax_cross_entropy", x, t, opts, backend=backend, dtype=dtype,
                         rng=rng, truth=torch_ce, check=ce_check, loss_shape=(9,))
    # (N, C, d1) with classes on axis 1, Fortran order
    x3 = np.asfortranarray((rng.standard_normal((4, 6, 5)) * 3).astype(dtype))
    if index:
        t3 = rng.integers(0, 6, (4, 5))
        t3[0, 0] = -100
    else:
        t3 = rng.random((4, 6, 5)).astype(dtype)
        t3 /= t3.sum(1, keepdims=True)
    o3 = dict(opts, axis=1, ignore_index=-100, weight=w[:6])
    check_loss_functions("softmax_cross_entropy", x3, t3, o3, backend=backend, dtype=dtype,
                         rng=rng, truth=torch_ce, check=ce_check, loss_shape=(4, 5))


@pytest.mark.parametrize("axis", [-1, 1])
def test_cross_entropy_in_place(backend, rng, axis):
    """out=logits overwrites the logits with their gradient (w.r.t. the raw logits);
    out= of another layout is filled."""
    x = rng.standard_normal((6, 5, 4)) * 3
    t = rng.integers(0, x.shape[axis], (6, 4) if axis == 1 else (6, 5))
    kw = dict(axis=axis, scale=0.9, softcap=2.0, label_smoothing=0.05, backend=backend)
    el, eg = torch_ce(x, t, **{k: v for k, v in kw.items() if k != "backend"})
    buf = x.copy()
    loss, g = fastact.softmax_cross_entropy_with_grad(buf, t, out=buf, **kw)
    assert g is buf
    ce_check(loss, g, el, eg, np.float64)
    f = np.asfortranarray(np.zeros_like(x))
    g2 = fastact.softmax_cross_entropy_backward(x, t, out=f, **kw)
    assert g2 is f
    ce_check(loss, f, el, eg, np.float64)


# ---------------------------------------------------------------- out=, memory, errors

@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_out_and_in_place(backend, rng, op):
    """out= of the input's layout, of another layout, and the input itself."""
    x = rng.standard_normal((7, 9)) * 4
    bias = np.where(rng.random(9) < 0.2, -np.inf, rng.standard_normal(9))
    kw = dict(axis=0, scale=1.5, softcap=3.0, bias=bias[None, :], backend=backend)
    want = getattr(fastact, op)(x, **kw)
    for out in (np.empty_like(x), np.asfortranarray(np.empty_like(x)), np.empty((9, 7)).T):
        assert getattr(fastact, op)(x, out=out, **kw) is out
        np.testing.assert_array_equal(out, want)
    buf = x.copy()
    assert getattr(fastact, op)(buf, out=buf, **kw) is buf
    np.testing.assert_array_equal(buf, want)
    # backward in place on grad
    g = rng.standard_normal(x.shape)
    back = fastact.softmax_backward if op == "softmax" else fastact.log_softmax_backward
    extra = {} if op == "softmax" else {"bias": bias[None, :]}
    bw = back(g, want, axis=0, scale=1.5, softcap=3.0, x=x, backend=backend, **extra)
    gb = g.copy()
    assert back(gb, want, axis=0, scale=1.5, softcap=3.0, x=x, out=gb, backend=backend,
                **extra) is gb
    np.testing.assert_array_equal(gb, bw)
    # logsumexp into out, keepdims and return_sign with b
    r = np.empty((1, 9))
    b = rng.random((7, 9))
    lse, sgn = fastact.logsumexp(x, axis=0, b=b, keepdims=True, return_sign=True, out=r,
                                 scale=0.5, softcap=3.0, backend=backend)
    assert lse is r and sgn.shape == (1, 9) and np.all(sgn == 1)
    z = z_of(x, 0.5, 3.0)
    np.testing.assert_allclose(r, np.log(np.sum(b * np.exp(z), axis=0, keepdims=True)),
                               rtol=1e-13)


def test_out_large_allocates_nothing_of_the_input_size(backend):
    """With out=, a call allocates only bounded blocks (traced peak, NumPy's buffers
    included, well under the 32 MiB input): forward, backward, cross-entropy in place."""
    n, k = 2048, 4096  # 8 Mi float32, 32 MiB
    x = np.zeros((n, k), np.float32)
    x[:, ::3] = 1
    out = np.empty_like(x)
    bias = np.zeros(k, np.float32)
    bias[::5] = -np.inf
    t = np.arange(n) % k
    lse = np.empty(n, np.float32)
    kw = dict(scale=0.5, softcap=3.0, backend=backend)
    want = fastact.softmax(x[:2], bias=bias, **kw)
    # warm imports, caches and Numba's compilation (traced otherwise) on small arrays
    fastact.log_softmax(x[:2], bias=bias, **kw)
    fastact.logsumexp(x[:2], bias=bias, **kw)
    fastact.softmax_backward(x[:2], x[:2], x=x[:2], **kw)
    fastact.log_softmax_backward(x[:2], x[:2], x=x[:2], bias=bias, **kw)
    fastact.softmax_cross_entropy_with_grad(x[:2], t[:2], **kw)
    tracemalloc.start()
    try:
        fastact.softmax(x, bias=bias, out=out, **kw)
        np.testing.assert_array_equal(out[-2:], want)
        fastact.log_softmax(x, bias=bias, out=out, **kw)
        fastact.logsumexp(x, bias=bias, out=lse, **kw)
        fastact.softmax_backward(x, x, x=x, out=out, **kw)
        fastact.log_softmax_backward(x, x, x=x, bias=bias, out=out, **kw)
        fastact.softmax_cross_entropy_with_grad(x, t, out=out, **kw)
        fastact.softmax_cross_entropy_with_grad(out, t, out=out, **kw)  # in place
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"traced peak {peak / 2**20:.1f} MiB"


BAD = [(dict(scale=np.inf), ValueError, "scale"), (dict(scale=np.nan), ValueError, "scale"),
       (dict(scale=1e39), ValueError, "scale"),  # finite in float64, not in float32
       (dict(scale="2"), TypeError, "scale"), (dict(scale=True), TypeError, "scale"),
       (dict(scale=np.array([2.0])), TypeError, "scale"),
       (dict(softcap=0.0), ValueError, "softcap"), (dict(softcap=-1.0), ValueError, "softcap"),
       (dict(softcap=np.inf), ValueError, "softcap"),
       (dict(softcap=1e-46), ValueError, "softcap"),  # 0 in float32
       (dict(bias=np.zeros(3)), ValueError, "bias"),
       (dict(bias=np.zeros(4, complex)), TypeError, "bias")]


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp"])
@pytest.mark.parametrize("kw,exc,word", BAD)
def test_bad_arguments_forward(backend, op, kw, exc, word):
    x = np.ones((2, 4), np.float32)
    out = np.full((2, 4) if op != "logsumexp" else (2,), 7.0, np.float32)
    with pytest.raises(exc, match=word):
        getattr(fastact, op)(x, out=out, backend=backend, **kw)
    assert np.all(out == 7.0)


@pytest.mark.parametrize("kw,exc,word", [kw for kw in BAD if "bias" not in kw[0]])
def test_bad_arguments_cross_entropy(backend, kw, exc, word):
    x = np.ones((2, 4), np.float32)
    out = np.full((2, 4), 7.0, np.float32)
    t = np.array([0, 1])
    for f in (fastact.softmax_cross_entropy_with_grad, fastact.softmax_cross_entropy_backward):
        with pytest.raises(exc, match=word):
            f(x, t, out=out, backend=backend, **kw)
        assert np.all(out == 7.0)
    with pytest.raises(exc, match=word):
        fastact.softmax_cross_entropy(x, t, backend=backend, **kw)


def test_bad_arguments_backward(backend):
    g = y = np.ones((2, 4))
    out = np.full((2, 4), 7.0)
    for back in (fastact.softmax_backward, fastact.log_softmax_backward):
        with pytest.raises(ValueError, match="softcap= needs x="):
            back(g, y, softcap=2.0, out=out, backend=backend)
        with pytest.raises(ValueError, match="x has shape"):
            back(g, y, softcap=2.0, x=np.ones((4, 2)), out=out, backend=backend)
        with pytest.raises(ValueError, match="softcap"):
            back(g, y, softcap=-2.0, x=y, out=out, backend=backend)
        assert np.all(out == 7.0)
    with pytest.raises(ValueError, match="bias"):
        fastact.log_softmax_backward(g, y, bias=np.zeros(3), out=out, backend=backend)
    assert np.all(out == 7.0)
    # x is needed only with softcap: scale alone is dz/dx itself
    r = fastact.softmax_backward(g, y / 4, scale=2.0, backend=backend)
    np.testing.assert_allclose(r, 2.0 * fastact.softmax_backward(g, y / 4, backend=backend))


def test_no_transform_is_the_plain_call(backend, rng):
    """scale=1 and a zero bias give exactly the plain call's result (no other path's
    rounding); None everywhere is the plain call itself."""
    x = rng.standard_normal((5, 8)).astype(np.float32)
    for op in ("softmax", "log_softmax", "logsumexp"):
        f = getattr(fastact, op)
        plain = f(x, backend=backend)
        np.testing.assert_array_equal(f(x, scale=1.0, backend=backend), plain)
        np.testing.assert_array_equal(f(x, bias=np.zeros(8, np.float32), backend=backend), plain)
        np.testing.assert_array_equal(f(x, scale=None, softcap=None, bias=None,
                                        backend=backend), plain)


# ---------------------------------------------------------------- fastact.torch

def _ft():
    torch = pytest.importorskip("torch")
    ft = pytest.importorskip("fastact.torch")
    return torch, ft


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("bias_shape", [(1, 6), (4, 6), (6,)])
def test_torch_gradcheck_with_bias(backend, name, bias_shape):
    """gradcheck in float64: gradients to the input and to a broadcast bias."""
    torch, ft = _ft()
    gen = torch.Generator().manual_seed(3)
    x = (torch.randn(4, 6, dtype=torch.float64, generator=gen) * 3).requires_grad_()
    b = torch.randn(bias_shape, dtype=torch.float64, generator=gen).requires_grad_()
    with fastact.use_backend(backend):
        f = lambda x, b: getattr(ft, name)(x, dim=-1, scale=0.7, softcap=2.5, bias=b)  # noqa: E731
        assert torch.autograd.gradcheck(f, (x, b))
        g = lambda x: getattr(ft, name)(x, dim=0, scale=-1.2)  # noqa: E731
        assert torch.autograd.gradcheck(g, (x,))


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_torch_masks_match_the_composed_fallback(backend, name, monkeypatch):
    """A -inf bias mask (x +inf/NaN there, a fully masked row): the fast path and the
    small-tensor path (torch ops composed in fastact's order) agree on values and on the
    gradients to x and bias; masked entries get zero gradient, nothing is NaN."""
    torch, ft = _ft()
    gen = torch.Generator().manual_seed(5)
    x0 = torch.randn(5, 7, dtype=torch.float64, generator=gen) * 3
    x0[:, 0] = torch.inf
    x0[:, 1] = torch.nan
    b0 = torch.randn(5, 7, dtype=torch.float64, generator=gen)
    b0[:, :2] = -torch.inf
    b0[2] = -torch.inf
    up = torch.randn(5, 7, dtype=torch.float64, generator=gen)
    res = []
    for min_numel in (0, 1 << 30):
        monkeypatch.setattr(ft, "MIN_NUMEL", min_numel)
        x, b = x0.clone().requires_grad_(), b0.clone().requires_grad_()
        with fastact.use_backend(backend):
            y = getattr(ft, name)(x, dim=1, scale=0.5, softcap=4.0, bias=b)
        y.backward(up)
        res.append((y.detach(), x.grad, b.grad))
    (y1, gx1, gb1), (y2, gx2, gb2) = res
    fill = -torch.inf if name == "log_softmax" else 0.0
    assert torch.all(y1[:, :2] == fill) and torch.all(y1[2] == fill)
    for a, e in ((y1, y2), (gx1, gx2), (gb1, gb2)):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-13)
    assert torch.isfinite(gx1).all() and torch.isfinite(gb1).all()
    assert torch.all(gx1[:, :2] == 0) and torch.all(gx1[2] == 0) and torch.all(gb1[2] == 0)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_torch_values_and_grads_vs_torch(backend, dtype):
    """Against torch's own functions composed in the same order, float32 and float64,
    dim 1 of a 3-D tensor, a bias broadcast along dims 0 and 2."""
    torch, ft = _ft()
    tdt = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(7)
    x0 = torch.randn(3, 8, 4, dtype=tdt, generator=gen) * 4
    b0 = torch.randn(1, 8, 1, dtype=tdt, generator=gen)
    up = torch.randn(3, 8, 4, dtype=tdt, generator=gen)
    tol = {"float32": dict(rtol=2e-5, atol=2e-6), "float64": dict(rtol=1e-12, atol=1e-13),
           # torch composes float16 ops each rounded to float16 (fastact: float32, rounded
           # once): a few float16 ulps apart
           "float16": dict(rtol=8e-3, atol=4e-3)}[dtype]
    for name in ("softmax", "log_softmax"):
        out = []
        for f in (lambda x, b: getattr(ft, name)(x, dim=1, scale=1.5, softcap=5.0, bias=b),
                  lambda x, b: getattr(torch, name)(5.0 * torch.tanh(x * 1.5 / 5.0) + b, 1)):
            x, b = x0.clone().requires_grad_(), b0.clone().requires_grad_()
            with fastact.use_backend(backend):
                y = f(x, b)
            y.backward(up)
            out.append((y.detach(), x.grad, b.grad))
        for a, e in zip(*out):
            assert a.dtype == tdt
            torch.testing.assert_close(a, e, **tol)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_torch_cross_entropy(backend, reduction, monkeypatch):
    """cross_entropy(scale=, softcap=): values and gradients equal torch's on the
    transformed logits (fast path and small-tensor path), gradcheck in float64."""
    torch, ft = _ft()
    F = torch.nn.functional
    gen = torch.Generator().manual_seed(11)
    x0 = torch.randn(6, 5, 3, dtype=torch.float64, generator=gen) * 3
    t = torch.randint(0, 5, (6, 3), generator=gen)
    t[0, 0] = -100
    w = torch.rand(5, dtype=torch.float64, generator=gen) + 0.5
    kw = dict(weight=w, reduction=reduction, label_smoothing=0.1)
    x = x0.clone().requires_grad_()
    want = F.cross_entropy(2.0 * torch.tanh(x * 0.8 / 2.0), t, **kw)
    up = torch.ones_like(want) * 1.5
    (gwant,) = torch.autograd.grad(want, x, up)
    for min_numel in (0, 1 << 30):
        monkeypatch.setattr(ft, "MIN_NUMEL", min_numel)
        x = x0.clone().requires_grad_()
        with fastact.use_backend(backend):
            got = ft.cross_entropy(x, t, scale=0.8, softcap=2.0, **kw)
            (g,) = torch.autograd.grad(got, x, up)
        torch.testing.assert_close(got.detach(), want.detach(), rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(g, gwant, rtol=1e-12, atol=1e-13)
    with fastact.use_backend(backend):
        assert torch.autograd.gradcheck(
            lambda x: ft.cross_entropy(x, t, scale=-0.6, softcap=3.0, **kw),
            (x0.clone().requires_grad_(),))


def test_torch_bad_arguments():
    torch, ft = _ft()
    x = torch.zeros(2, 3)
    for f in (ft.softmax, ft.log_softmax):
        with pytest.raises(ValueError, match="softcap"):
            f(x, dim=-1, softcap=0.0)
        with pytest.raises(TypeError, match="scale"):
            f(x, dim=-1, scale="1")
    with pytest.raises(ValueError, match="scale"):
        ft.cross_entropy(x, torch.tensor([0, 1]), scale=float("nan"))
