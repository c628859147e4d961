"""A NumPy training loop that allocates nothing per step: the forward/backward calls of a
small MLP (fastact.experiments.MLP) write into buffers preallocated once, through out=.

tracemalloc sees NumPy's array memory: a step may allocate a few small Python objects
(views, floats), but nothing that grows with the batch."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import fastact
from fastact.experiments import MLP, MSE, SigmoidBCE, SoftmaxCE, train_step

ACTS = ["relu", "softmax", "sigmoid", "tanh", "gelu", "silu"]
#: Python objects of a call big enough to run on the thread pool (futures, closures):
#: a constant, whatever the batch
THREAD_BOOKKEEPING = 8 * 1024


def _peak_step_bytes(model, loss, x, y, steps=3):
    """The largest transient allocation (bytes) of one training step, after warm-up."""
    for _ in range(3):  # compile / warm caches
        train_step(model, loss, x, y)
    worst = 0
    for _ in range(steps):
        tracemalloc.start()
        try:
            base, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            train_step(model, loss, x, y)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        worst = max(worst, peak - base)
    return worst


def _regression_case(batch, act, backend, rng):
    model = MLP([20, 64, 48, 1], ["relu", act, "linear"], batch, backend=backend)
    loss = MSE(batch, 1, np.float32)
    x = rng.standard_normal((batch, 20)).astype(np.float32)
    y = rng.standard_normal((batch, 1)).astype(np.float32)
    return model, loss, x, y


@pytest.mark.parametrize("act", ACTS)
def test_step_allocates_nothing_that_grows_with_the_batch(native_backend, rng, act):
    backend = native_backend
    small = _peak_step_bytes(*_regression_case(8, act, backend, rng))
    big = _peak_step_bytes(*_regression_case(2048, act, backend, rng))
    one_buffer = 2048 * 48 * 4  # a single activation buffer at the big batch: 384 KiB
    assert big < 16 * 1024, f"a step at batch 2048 allocated {big} bytes"
    assert big - small < THREAD_BOOKKEEPING < one_buffer // 32, (small, big)


@pytest.mark.parametrize("head", ["softmax", "sigmoid"])
def test_classifier_step_with_fused_losses(native_backend, rng, head):
    """softmax_cross_entropy_with_grad / sigmoid_binary_cross_entropy_with_grad with out=.

    BCE allocates nothing.  Softmax cross-entropy keeps a few per-row scalars (its
    per-row loss block and ignore_index count: ~13 bytes a row here), never a
    per-logit array (40 bytes a row here)."""
    backend = native_backend
    sizes = {}
    for batch in (8, 2048):
        model = MLP([20, 64, 10], ["relu", "linear"], batch, backend=backend)
        cls = SoftmaxCE if head == "softmax" else SigmoidBCE
        loss = cls(batch, 10, np.float32, backend)
        x = rng.standard_normal((batch, 20)).astype(np.float32)
        y = rng.integers(0, 10, batch)
        sizes[batch] = _peak_step_bytes(model, loss, x, y)
    per_row = 16 if head == "softmax" else 0
    assert sizes[2048] < 64 * 1024, sizes
    assert sizes[2048] - sizes[8] < THREAD_BOOKKEEPING + 2040 * per_row, sizes


def test_buffers_are_reused(backend, rng):
    """The same memory every step: outputs and gradients are views of the preallocated
    buffers, parameters are updated in place."""
    model, loss, x, y = _regression_case(16, "softmax", backend, rng)
    out1 = model.forward(x)
    p0 = model.params.__array_interface__["data"][0]
    train_step(model, loss, x, y)
    out2 = model.forward(x)
    assert np.shares_memory(out1, out2) and np.shares_memory(out1, model.a[-1])
    assert model.params.__array_interface__["data"][0] == p0
    for w, dw in zip(model.W, model.dW):
        assert np.shares_memory(w, model.params) and np.shares_memory(dw, model.grads)


def test_mlp_gradients_match_finite_differences(rng):
    """The MLP's backward (fastact's activation VJPs through out=) is the true gradient."""
    model = MLP([3, 5, 4, 1], ["gelu", "softmax", "linear"], 4, dtype=np.float64, seed=1,
                backend="numpy")
    loss = MSE(4, 1, np.float64)
    x = rng.standard_normal((4, 3))
    y = rng.standard_normal((4, 1))
    out = model.forward(x)
    _, g = loss(out, y)
    model.backward(g)
    analytic = model.grads.copy()
    eps = 1e-6
    for i in range(0, model.params.size, 3):
        old = model.params[i]
        model.params[i] = old + eps
        lp, _ = loss(model.forward(x), y)
        model.params[i] = old - eps
        lm, _ = loss(model.forward(x), y)
        model.params[i] = old
        np.testing.assert_allclose(analytic[i], (lp - lm) / (2 * eps), rtol=1e-5, atol=1e-8)


def test_training_reduces_the_loss(backend, rng):
    model, loss, x, y = _regression_case(64, "silu", backend, rng)
    y = np.tanh(x[:, :1] * 2).astype(np.float32)
    first = train_step(model, loss, x, y)
    for _ in range(200):
        last = train_step(model, loss, x, y)
    assert last < 0.2 * first
    assert fastact.get_backend() in fastact.available_backends()
