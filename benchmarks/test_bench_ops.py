"""Every op x shape x implementation, grouped per (op, shape, dtype); see conftest.py."""

from __future__ import annotations

import numpy as np
import pytest

from cases import OPS, fmt_shape, inputs, peer


def test_op(benchmark, case):
    opname, shape, dtype, impl, backend, mode = case
    op = OPS[opname]
    inp = inputs(shape, dtype)
    if impl == "fastact":
        fn = op.fastact_call(inp, backend, mode)
        label = f"fastact[{backend}]"
    elif impl == "copy":
        src, dst = inp.x, np.empty(shape, dtype)

        def fn():
            np.copyto(dst, src)
        label = "np.copyto (floor)"
    else:
        fn = op.peer_call(impl, peer(impl), inp, mode)
        if fn is None:
            pytest.skip(f"{impl} has no {mode} call for {opname}")
        label = impl
    fn()  # first call (Numba compilation, lazy loading) is not timed
    benchmark.group = f"{opname} {fmt_shape(shape)} {dtype}"
    benchmark.extra_info.update(impl=label, mode=mode, bytes=inp.nbytes)
    benchmark(fn)
