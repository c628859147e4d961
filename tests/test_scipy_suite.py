"""SciPy's own tests of softmax, log_softmax and logsumexp, run on fastact.special.

Each available backend runs the installed SciPy's ``test_logsumexp.py`` in a
separate pytest process with ``scipy_suite_plugin`` (which points SciPy's
functions at fastact's there, leaving this process's SciPy untouched for the
other tests' comparisons).  Complex-valued cases are deselected (fastact
refuses complex input); every other case must pass.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("scipy")

HERE = Path(__file__).resolve().parent


def test_scipy_logsumexp_suite(backend, tmp_path):
    env = dict(os.environ)
    env.pop("SCIPY_ARRAY_API", None)
    env["FASTACT_BACKEND"] = backend
    env["PYTHONPATH"] = os.pathsep.join([str(HERE)] + [p for p in [env.get("PYTHONPATH")] if p])
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "-p", "scipy_suite_plugin", "--pyargs", "scipy.special.tests.test_logsumexp"]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    lines = [ln for ln in r.stdout.splitlines() if re.search(r"\d+ (passed|failed)", ln)]
    summary = lines[-1] if lines else "(no summary line)"
    print(f"SciPy suite on fastact.special, backend {backend}: {summary}")
    assert r.returncode == 0, f"SciPy's suite failed on backend {backend}:\n{r.stdout[-6000:]}\n{r.stderr[-2000:]}"
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    assert "failed" not in summary and "error" not in summary, summary
    # the real-valued cases of SciPy 1.17's module; fewer means cases were lost
    assert passed >= 55, summary
