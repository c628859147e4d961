"""pytest-benchmark suite: every op x shape x (fastact backend, peer, copy).

    pytest benchmarks/ --benchmark-only
    pytest benchmarks/ --benchmark-only -k "softmax and 4096x1000"
    FASTACT_BENCH_SHAPES=512x32000 FASTACT_BENCH_OPS=cross_entropy_with_grad \
        pytest benchmarks/ --benchmark-only --benchmark-columns=median,ops

Benchmarks are grouped by op, shape and dtype, so each group's table compares
the fastact backends (``out=`` and ``alloc`` calls), the NumPy reference, the
installed peers and ``np.copyto`` of the same bytes.  This suite is not part
of the test command (``testpaths`` is ``tests/``).  The threads are fastact's
(``FASTACT_NUM_THREADS``); PyTorch is set to the same count.
"""

from __future__ import annotations

import pytest

import fastact
from cases import OPS, PEERS, fmt_shape, selected_dtypes, selected_ops, selected_shapes


def _impls(op):
    """(impl, backend, mode) for every way ``op`` is timed, then the copy floor."""
    out = []
    for b in fastact.available_backends():
        for mode in op.modes:
            out.append(("fastact", b, mode))
    for name in PEERS:
        spec = op.peers.get(name)
        for mode in (spec.modes if spec else ()):
            out.append((name, None, mode))
    out.append(("copy", None, "alloc"))
    return out


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    params = []
    for opname in selected_ops():
        op = OPS[opname]
        for shape in selected_shapes():
            for dtype in selected_dtypes():
                for impl, backend, mode in _impls(op):
                    label = backend if impl == "fastact" else impl
                    cid = f"{opname}-{fmt_shape(shape)}-{dtype}-{label}-{mode}"
                    params.append(pytest.param((opname, shape, dtype, impl, backend, mode),
                                               id=cid))
    metafunc.parametrize("case", params)
