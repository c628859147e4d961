"""Backend registry, threads API, environment variables, `fastact info`, import cost."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastact
from conftest import ALLOW_MISSING, BACKENDS


def _run(code, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e,
                          timeout=300)


def test_expected_backends_load():
    """Every backend of the test matrix loads here (a failed C build fails this test)."""
    avail = fastact.available_backends()
    assert "numpy" in avail
    if ALLOW_MISSING:
        pytest.skip(f"FASTACT_ALLOW_MISSING_BACKENDS=1; available: {avail}")
    from fastact import _backends

    missing = {n: _backends.why_unavailable(n) for n in BACKENDS if n not in avail}
    assert not missing, f"backends that do not load: {missing}"


def test_auto_prefers_fastest_available():
    with fastact.use_backend("auto"):
        assert fastact.get_backend() == fastact.available_backends()[0]


def test_set_and_use_backend(backend):
    try:
        fastact.set_backend(backend)
        assert fastact.get_backend() == backend
        with fastact.use_backend("numpy"):
            assert fastact.get_backend() == "numpy"
        assert fastact.get_backend() == backend
    finally:
        fastact.set_backend("auto")
    assert fastact.get_backend() == fastact.available_backends()[0]


def test_unavailable_backend_says_why(monkeypatch):
    from fastact import _backends

    key = ("c", "rows")
    monkeypatch.setitem(_backends._MODULES, key, "fastact._backends._no_such_module")
    monkeypatch.delitem(_backends._loaded, key, raising=False)
    monkeypatch.delitem(_backends._errors, key, raising=False)
    with pytest.raises(RuntimeError, match="not available.*_no_such_module"):
        fastact.softmax(np.ones(3), backend="c")
    assert "c" not in fastact.available_backends()
    monkeypatch.delitem(_backends._errors, key, raising=False)


def test_env_backend_and_threads():
    r = _run("import fastact; print(fastact.get_backend(), fastact.get_num_threads())",
             env={"FASTACT_BACKEND": "numpy", "FASTACT_NUM_THREADS": "3"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["numpy", "3"]
    r = _run("import fastact", env={"FASTACT_BACKEND": "bogus"})
    assert r.returncode != 0 and "bogus" in r.stderr


def test_threads_api():
    old = fastact.get_num_threads()
    try:
        fastact.set_num_threads(1)
        assert fastact.get_num_threads() == 1
        x = np.random.default_rng(0).standard_normal((300, 50))
        a = fastact.softmax(x)
        fastact.set_num_threads(2)
        np.testing.assert_allclose(fastact.softmax(x), a, rtol=1e-14)
    finally:
        fastact.set_num_threads(old)


def test_import_is_light():
    """`import fastact` loads no backend, no Numba, no cffi module, no torch/scipy."""
    r = _run("import sys, fastact; print(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('numba', 'llvmlite', 'torch', 'scipy', 'jax', 'dask', 'cffi') or "
             "m.startswith('fastact._backends.') or m.startswith('fastact._fastact')))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


@pytest.mark.parametrize("argv", [["-m", "fastact", "info"]])
def test_info_cli(argv):
    r = subprocess.run([sys.executable] + argv, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for word in ("fastact", "SIMD level", "threads", "backends", "numpy", "versions"):
        assert word in r.stdout
    from fastact._info import info_dict

    d = info_dict()
    json.dumps(d)
    assert set(d["backends"]) == {"c", "numba", "numpy"}
    assert d["threads"] >= 1
