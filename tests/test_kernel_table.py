"""The typed kernel tables (``fastact._backends.table``): every backend fills its
tables with kernels of the reference's signatures, and the API calls the
kernels through the table (nothing else)."""

import dataclasses
import inspect
import types

import numpy as np
import pytest

import fastact
from fastact import _backends, _config
from fastact._backends import numpy_elementwise, numpy_ref
from fastact._backends.table import ElementwiseKernels, RowKernels, RowOp

ROW_OPS = [f.name for f in dataclasses.fields(RowKernels) if f.type == "RowOp"]


def _params(f):
    return list(inspect.signature(f).parameters)


def _loaded(part):
    return [n for n in _backends.NAMES if _backends.is_available(n, part)]


def test_row_ops_are_the_references_kernels():
    assert ROW_OPS == ["softmax", "log_softmax", "logsumexp", "softmax_backward",
                       "log_softmax_backward", "cross_entropy_index", "cross_entropy_prob"]
    ref = numpy_ref.KERNELS
    for op in ROW_OPS:
        assert getattr(ref, op).rows is getattr(numpy_ref, op + "_rows")


@pytest.mark.parametrize("name", _loaded("rows"))
def test_row_table_conforms(name):
    t = _backends.kernels(name)
    assert isinstance(t, RowKernels) and t.name == name
    assert t is _backends.load(name).KERNELS
    ref = numpy_ref.KERNELS
    for op in ROW_OPS:
        entry, want = getattr(t, op), getattr(ref, op)
        assert isinstance(entry, RowOp)
        assert callable(entry.rows)
        assert _params(entry.rows) == _params(want.rows), (name, op)
        if entry.strided is not None:  # the row kernel's arguments, then the layout
            p = _params(want.rows)
            assert _params(entry.strided) == p[:-1] + ["outer", "k", "inner"] + p[-1:], (name, op)
    assert _params(t.check_targets) == _params(ref.check_targets)
    assert isinstance(t.half, bool) and isinstance(t.nd_rows, bool)
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.half = not t.half


@pytest.mark.parametrize("name", _loaded("elementwise"))
def test_elementwise_table_conforms(name):
    t = _backends.kernels(name, "elementwise")
    ref = numpy_elementwise.KERNELS
    assert isinstance(t, ElementwiseKernels) and t.name == name
    for f in ("unary", "unary_backward", "bce"):
        assert _params(getattr(t, f)) == _params(getattr(ref, f)), (name, f)
    assert t.ops == ref.ops
    assert t.half <= {"unary", "unary_backward", "bce"}


def test_api_calls_the_table(monkeypatch):
    """A table whose kernels record their calls, installed as the numpy backend's:
    every public softmax-family function reaches its kernel through it."""
    ref = numpy_ref.KERNELS
    calls = []

    def spy(op, f):
        def k(*a):
            calls.append(op)
            return f(*a)
        return k

    fields = {op: RowOp(spy(op, getattr(ref, op).rows)) for op in ROW_OPS}
    table = dataclasses.replace(ref, **fields)
    monkeypatch.setitem(_backends._loaded, ("numpy", "rows"),
                        types.SimpleNamespace(KERNELS=table, NAME="numpy"))
    monkeypatch.setattr(_config, "_current", {})
    x = np.linspace(-3, 3, 24).reshape(4, 6)
    t = np.array([0, 5, 2, 1])
    with fastact.use_backend("numpy"):
        y = fastact.softmax(x)
        fastact.log_softmax(x, axis=0)
        fastact.logsumexp(x)
        fastact.softmax_backward(np.ones_like(x), y)
        fastact.log_softmax_backward(np.ones_like(x), np.log(y))
        fastact.softmax_cross_entropy(x, t)
        fastact.softmax_cross_entropy(x, y)
    assert calls == ROW_OPS
    np.testing.assert_allclose(y, np.exp(x) / np.exp(x).sum(-1, keepdims=True), rtol=1e-12)
