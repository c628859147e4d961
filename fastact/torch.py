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
``benchmarks/small_calls.py``); the values and gradients are the same.  ``cross_entropy`` on ``(N, C, d1,
...)`` passes the tensor as it lies, classes on axis 1 (the C backend reduces
there without a copy for float32/float64; the others move the axis last).
Only first derivatives are provided (``once_differentiable``).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from torch.autograd.function import once_differentiable

import fastact

__all__ = ["softmax", "log_softmax", "cross_entropy"]

_F = torch.nn.functional
try:
    import ml_dtypes
except ImportError:  # pragma: no cover - bfloat16 then stays with torch
    ml_dtypes = None
    _FAST_DTYPES = (torch.float32, torch.float64, torch.float16)
else:
    _FAST_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


#: Tensors with fewer elements go to torch's own function (see the docstring);
#: 0 (or FASTACT_TORCH_MIN_NUMEL=0) runs every covered tensor on fastact's kernels.
MIN_NUMEL = int(os.environ.get("FASTACT_TORCH_MIN_NUMEL", 1 << 14))


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


def _row_call(name, function, input, dim, stacklevel, dtype):
    """``F.<name>`` through ``function`` on CPU float32/float64, torch's own elsewhere
    (``stacklevel`` counts from the public function's caller, as torch's does)."""
    if dtype is not None:
        input = input.to(dtype)
    if not _fast(input):
        return getattr(_F, name)(input, dim=dim, _stacklevel=stacklevel + 2)
    return function.apply(input, _dim(input, dim, name, stacklevel + 1))


def softmax(input, dim=None, _stacklevel=3, dtype=None):
    """``torch.nn.functional.softmax`` computed by fastact (CPU float32/float64)."""
    return _row_call("softmax", _Softmax, input, dim, _stacklevel, dtype)


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    """``torch.nn.functional.log_softmax`` computed by fastact (CPU float32/float64)."""
    return _row_call("log_softmax", _LogSoftmax, input, dim, _stacklevel, dtype)


class _CrossEntropy(torch.autograd.Function):
    """Classes on ``axis`` of ``x``; the loss and its gradient from one fused pass."""

    @staticmethod
    def forward(ctx, x, target, weight, ignore_index, reduction, label_smoothing, axis):
        w = None if weight is None else _np(weight)
        loss, grad = fastact.softmax_cross_entropy_with_grad(
            _np(x), _np(target), axis=axis, weight=w, ignore_index=ignore_index,
            reduction=reduction, label_smoothing=label_smoothing)
        ctx.options = dict(axis=axis, weight=w, ignore_index=ignore_index, reduction=reduction,
                           label_smoothing=label_smoothing)
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
        none = (None,) * 6
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
                  reduce=None, reduction="mean", label_smoothing=0.0):
    """``torch.nn.functional.cross_entropy`` computed by fastact's fused kernel.

    ``input`` is ``(C,)``, ``(N, C)`` or ``(N, C, d1, ...)`` (classes on dim 1, as
    torch); ``target`` class indices or probabilities.  Gradients flow to ``input``
    (not to probability targets or ``weight``).
    """
    if size_average is not None or reduce is not None:
        reduction = torch.nn._reduction.legacy_get_string(size_average, reduce)
    ok = (_fast(input) and target.device.type == "cpu"
          and (weight is None or (weight.device.type == "cpu" and not weight.requires_grad))
          and not (target.is_floating_point() and target.requires_grad))
    if not ok:
        return _F.cross_entropy(input, target, weight=weight, ignore_index=ignore_index,
                                reduction=reduction, label_smoothing=label_smoothing)
    x = input
    prob = target.is_floating_point()
    if prob:
        target = target.to(input.dtype)
    if weight is not None:
        weight = weight.to(input.dtype)
    # classes on dim 1 ((N, C, d1, ...), as torch) or the only dim: passed as they lie
    loss = _CrossEntropy.apply(x, target, weight, int(ignore_index), reduction,
                               float(label_smoothing), 1 if input.dim() > 1 else -1)
    return loss
