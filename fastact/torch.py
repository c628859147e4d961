"""``fastact.torch``: fastact's kernels as PyTorch autograd functions on CPU tensors.

``softmax``, ``log_softmax`` and ``cross_entropy`` take the signatures of
``torch.nn.functional``'s and give the same values and gradients; a PyTorch
training loop can swap them in.  Tensors cross into NumPy and back without a
copy (``Tensor.numpy()`` / ``torch.from_numpy``); ``cross_entropy`` runs the
fused ``softmax_cross_entropy_with_grad`` in the forward pass and keeps the
gradient buffer, which the backward hands to autograd as it is when
``grad_loss`` is 1 (else one multiply).

float16 and bfloat16 tensors run on fastact's kernels too (computed in
float32, results and gradients in the input dtype, as torch's; the C backend
widens them in bounded blocks).  bfloat16 tensors have no ``.numpy()``: they
cross as int16 views reinterpreted as ``ml_dtypes.bfloat16`` (no copy), which
needs ml_dtypes.

Tensors that fastact does not cover (another device, a dtype other than
float16/bfloat16/float32/float64, a ``weight`` or probability target that
requires grad) go to torch's own function, and so do small ones (fewer than
``MIN_NUMEL`` elements): there a call is dominated by fixed costs, and torch's
C++ autograd node costs less than any Python ``autograd.Function`` (measured:
``benchmarks/small_calls.py``); the values and gradients agree within
floating-point tolerance (not bit for bit).  ``cross_entropy`` on ``(N, C, d1,
...)`` passes the tensor as it lies, classes on axis 1 (the C backend reduces
there without a copy for float32/float64; the others move the axis last).
Only first derivatives are provided (``once_differentiable``).

``scale=``, ``softcap=`` (and on ``softmax``/``log_softmax`` a ``bias=`` tensor,
whose gradient is computed too) apply fastact's transforms of the logits
(``docs/transforms.md``); the small-tensor path composes torch ops in the same
order, with the same ``-inf``-bias masks and fully masked rows.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from torch.autograd.function import once_differentiable

import fastact
from fastact._backends import numpy_ref as _ref
from fastact._transforms import check_scalars

__all__ = ["softmax", "log_softmax", "cross_entropy"]

_F = torch.nn.functional
try:
    import ml_dtypes
except ImportError:  # pragma: no cover - bfloat16 then stays with torch
    ml_dtypes = None
    _FAST_DTYPES = (torch.float32, torch.float64, torch.float16)
else:
    _FAST_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _min_numel(env):
    try:
        n = int(env)
    except ValueError:
        raise ValueError(f"FASTACT_TORCH_MIN_NUMEL must be a non-negative integer, "
                         f"got {env!r}") from None
    if n < 0:
        raise ValueError(f"FASTACT_TORCH_MIN_NUMEL must be a non-negative integer, got {n}")
    return n


#: Tensors with fewer elements go to torch's own function (see the docstring);
#: 0 (or FASTACT_TORCH_MIN_NUMEL=0) runs every covered tensor on fastact's kernels.
#: Measured here (2-core AVX2 VM, 1 thread, float32, forward+backward, fastact's
#: kernels / torch's): 256x256 1.09-1.27x, 512x512 0.45-0.81x; 2**17 lies between.
MIN_NUMEL = _min_numel(os.environ.get("FASTACT_TORCH_MIN_NUMEL", 1 << 17))


def _fast(t):
    """Whether fastact handles tensor ``t`` (else torch's own function does)."""
    return (t.device.type == "cpu" and t.dtype in _FAST_DTYPES and not t.is_sparse
            and t.numel() >= MIN_NUMEL)


def _np(t):
    """A NumPy view of a CPU tensor (no copy; bfloat16 through an int16 view)."""
    t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def _tensor(a):
    """A tensor viewing NumPy array ``a`` (no copy; bfloat16 through an int16 view)."""
    dt = a.dtype
    if dt.itemsize == 2 and dt.char != "e":  # bfloat16 (checked without dtype.name's cost)
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _implicit_dim(ndim):
    # torch.nn.functional._get_softmax_dim (deprecated implicit choice)
    return 0 if ndim in (0, 1, 3) else 1


def _dim(input, dim, name, stacklevel):
    if dim is None:
        warnings.warn(f"Implicit dimension choice for {name} has been deprecated. "
                      f"Change the call to include dim=X as an argument.",
                      stacklevel=stacklevel)
        dim = _implicit_dim(input.dim())
    return dim


def _row_function(name, forward, backward):
    """An autograd Function for ``y = fastact.<forward>(x, axis)`` whose vector-Jacobian
    product is ``fastact.<backward>(grad, y, axis)`` (looked up per call), zero-copy."""

    def fwd(ctx, x, dim):
        y = _tensor(getattr(fastact, forward)(_np(x), axis=dim))
        ctx.dim = dim
        ctx.save_for_backward(y)
        return y

    @once_differentiable
    def bwd(ctx, grad):
        (y,) = ctx.saved_tensors
        return _tensor(getattr(fastact, backward)(_np(grad), _np(y), axis=ctx.dim)), None

    return type(name, (torch.autograd.Function,),
                {"forward": staticmethod(fwd), "backward": staticmethod(bwd)})


_Softmax = _row_function("_Softmax", "softmax", "softmax_backward")
_LogSoftmax = _row_function("_LogSoftmax", "log_softmax", "log_softmax_backward")


def _row_call(name, function, input, dim, stacklevel, dtype, scale=None, softcap=None,
              bias=None):
    """``F.<name>`` through ``function`` on CPU float32/float64, torch's own elsewhere
    (``stacklevel`` counts from the public function's caller, as torch's does)."""
    if scale is None and softcap is None and bias is None and input.numel() < MIN_NUMEL:
        return getattr(_F, name)(input, dim, stacklevel + 2, dtype)  # small: torch's own, first
    if dtype is not None:
        input = input.to(dtype)
    if scale is not None or softcap is not None or bias is not None:
        return _transformed_call(name, input, dim, stacklevel + 1, scale, softcap, bias)
    if not _fast(input):
        return getattr(_F, name)(input, dim=dim, _stacklevel=stacklevel + 2)
    return function.apply(input, _dim(input, dim, name, stacklevel + 1))


def softmax(input, dim=None, _stacklevel=3, dtype=None, *, scale=None, softcap=None,
            bias=None):
    """``torch.nn.functional.softmax`` computed by fastact (CPU float32/float64); with
    ``scale``/``softcap``/``bias``: of ``softcap * tanh(input * scale / softcap) + bias``,
    a ``-inf`` bias masking the entry (``docs/transforms.md``)."""
    return _row_call("softmax", _Softmax, input, dim, _stacklevel, dtype, scale, softcap, bias)


def log_softmax(input, dim=None, _stacklevel=3, dtype=None, *, scale=None, softcap=None,
                bias=None):
    """``torch.nn.functional.log_softmax`` computed by fastact (CPU float32/float64);
    ``scale``/``softcap``/``bias`` as in ``softmax``."""
    return _row_call("log_softmax", _LogSoftmax, input, dim, _stacklevel, dtype, scale,
                     softcap, bias)


def _scalars(scale, softcap, dtype):
    """``scale``/``softcap`` checked as fastact checks them (one-element tensors allowed)."""
    scale, softcap = (v.item() if isinstance(v, torch.Tensor) else v for v in (scale, softcap))
    return check_scalars(scale, softcap, np.float64 if dtype == torch.float64 else np.float32)


def _transform(x, scale, softcap):
    """``softcap * tanh(x * scale / softcap)`` in torch ops, in the order fastact applies them."""
    if scale is not None:
        x = x * scale
    if softcap is not None:
        x = torch.tanh(x / softcap) * softcap
    return x


def _composed(name, x, dim, scale, softcap, bias):
    """fastact's semantics in torch ops (small tensors, other devices): the entries whose
    bias is -inf are masked (their x never reaches a value or a gradient), and a row with
    every entry masked gives 0 (softmax) or -inf (log_softmax), as fastact does."""
    if bias is None:
        return getattr(_F, name)(_transform(x, scale, softcap), dim=dim)
    keep = (bias != -torch.inf).expand_as(x)
    z = _transform(torch.where(keep, x, 0), scale, softcap) + bias
    empty = ~keep.any(dim, keepdim=True)  # fully masked rows: no NaN from an all -inf row
    y = getattr(_F, name)(torch.where(empty, 0, z), dim=dim)
    return torch.where(keep, y, -torch.inf if name == "log_softmax" else 0)


class _TransformedRows(torch.autograd.Function):
    """softmax / log_softmax of ``z`` (fastact's transforms), gradients to x and bias."""

    @staticmethod
    def forward(ctx, x, bias, name, dim, scale, softcap):
        b = None if bias is None else _np(bias)
        y = getattr(fastact, name)(_np(x), axis=dim, bias=b, scale=scale, softcap=softcap)
        y = _tensor(y)
        ctx.options = (name, dim, scale, softcap)
        ctx.save_for_backward(x, bias, y)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        name, dim, scale, softcap = ctx.options
        x, bias, y = ctx.saved_tensors
        back = getattr(fastact, name + "_backward")
        masks = {} if name == "softmax" else {"bias": None if bias is None else _np(bias)}
        xn, gn, yn = _np(x), _np(grad), _np(y)
        gx = gb = None
        if bias is None or not ctx.needs_input_grad[1]:
            gx = back(gn, yn, axis=dim, scale=scale, softcap=softcap, x=xn, **masks)
        else:  # the VJP w.r.t. z is the bias's gradient (summed over broadcast dims)
            gz = back(gn, yn, axis=dim, **masks)
            gb = _tensor(gz).sum_to_size(bias.shape)
            if ctx.needs_input_grad[0]:
                d = _ref.transform_grad(xn, scale, softcap, np.empty(xn.shape, gz.dtype))
                gx = (gz * d).astype(gz.dtype, copy=False)  # new: gb may be gz itself
        return (None if gx is None else _tensor(gx)), gb, None, None, None, None


def _transformed_call(name, input, dim, stacklevel, scale, softcap, bias):
    if bias is not None:
        bias = torch.as_tensor(bias, device=input.device).to(input.dtype)
    scale, softcap = _scalars(scale, softcap, input.dtype)
    dim = _dim(input, dim, name, stacklevel + 1)
    if not _fast(input) or (bias is not None and bias.device.type != "cpu"):
        return _composed(name, input, dim, scale, softcap, bias)
    return _TransformedRows.apply(input, bias, name, dim, scale, softcap)


class _CrossEntropy(torch.autograd.Function):
    """Classes on ``axis`` of ``x``; the loss and its gradient from one fused pass."""

    @staticmethod
    def forward(ctx, x, target, weight, ignore_index, reduction, label_smoothing, axis,
                scale=None, softcap=None):
        w = None if weight is None else _np(weight)
        ctx.options = dict(axis=axis, weight=w, ignore_index=ignore_index, reduction=reduction,
                           label_smoothing=label_smoothing, scale=scale, softcap=softcap)
        loss, grad = fastact.softmax_cross_entropy_with_grad(_np(x), _np(target), **ctx.options)
        # The fused gradient is kept as an attribute, not saved: the first
        # backward with grad_loss == 1 (loss.backward() on a mean or sum) hands
        # this very buffer to autograd, no copy and no pass.  The inputs are
        # saved for a later backward through a retained graph, which computes
        # the gradient again (torch's version check guards them).
        ctx.grad = _tensor(grad)
        ctx.save_for_backward(x, target)
        # (float32 for half logits: torch's loss has their dtype; .to is then a no-op)
        return torch.from_numpy(np.asarray(loss)).to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        grad = ctx.grad
        none = (None,) * 8
        if grad is None:  # the buffer was handed out by an earlier backward
            x, target = ctx.saved_tensors
            g = _np(grad_loss)
            gx = fastact.softmax_cross_entropy_backward(_np(x), _np(target), g if g.ndim else float(g),
                                                        **ctx.options)
            return (_tensor(gx),) + none
        if ctx.options["reduction"] == "none":
            return (grad * grad_loss.unsqueeze(ctx.options["axis"]),) + none
        if float(grad_loss) == 1.0:
            ctx.grad = None
            return (grad,) + none
        return (grad * grad_loss,) + none


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100,
                  reduce=None, reduction="mean", label_smoothing=0.0, *, scale=None,
                  softcap=None):
    """``torch.nn.functional.cross_entropy`` computed by fastact's fused kernel.

    ``input`` is ``(C,)``, ``(N, C)`` or ``(N, C, d1, ...)`` (classes on dim 1, as
    torch); ``target`` class indices or probabilities.  Gradients flow to ``input``
    (not to probability targets or ``weight``).  ``scale``/``softcap``: the loss of
    ``softcap * tanh(input * scale / softcap)``, its gradient w.r.t. ``input``.
    """
    if scale is None and softcap is None and input.numel() < MIN_NUMEL:  # small: torch's own
        return _F.cross_entropy(input, target, weight, size_average, ignore_index, reduce,
                                reduction, label_smoothing)
    scale, softcap = _scalars(scale, softcap, input.dtype)
    if size_average is not None or reduce is not None:
        reduction = torch.nn._reduction.legacy_get_string(size_average, reduce)
    ok = (_fast(input) and target.device.type == "cpu"
          and (weight is None or (weight.device.type == "cpu" and not weight.requires_grad))
          and not (target.is_floating_point() and target.requires_grad))
    if not ok:
        return _F.cross_entropy(_transform(input, scale, softcap), target, weight=weight,
                                ignore_index=ignore_index, reduction=reduction,
                                label_smoothing=label_smoothing)
    x = input
    prob = target.is_floating_point()
    if prob:
        target = target.to(input.dtype)
    if weight is not None:
        weight = weight.to(input.dtype)
    # classes on dim 1 ((N, C, d1, ...), as torch) or the only dim: passed as they lie
    loss = _CrossEntropy.apply(x, target, weight, int(ignore_index), reduction,
                               float(label_smoothing), 1 if input.dim() > 1 else -1, scale,
                               softcap)
    return loss
