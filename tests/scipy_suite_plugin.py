"""pytest plugin: SciPy's own test module for softmax, log_softmax and logsumexp
(``scipy/special/tests/test_logsumexp.py`` of the installed SciPy), run against
``fastact.special``.

Loaded with ``-p scipy_suite_plugin`` in a separate pytest process (see
``test_scipy_suite.py``): it points ``scipy.special.softmax``, ``log_softmax``
and ``logsumexp`` at fastact's before SciPy's test module imports them, so that
module's ``from scipy.special import ...`` binds fastact's functions.  Only the
complex-valued cases are deselected (fastact refuses complex input by
contract); SciPy runs its array-API tests on NumPy alone unless
``SCIPY_ARRAY_API`` is set, and the plugin refuses to run if it is.
"""

from __future__ import annotations

import os

import numpy as np

FUNCTIONS = ("softmax", "log_softmax", "logsumexp")

# Tests of complex input only, whatever their parameters.
COMPLEX_TESTS = ("test_logsumexp_complex_sign", "test_gh21610", "test_gh21709_small_imaginary")


def pytest_configure(config):
    if os.environ.get("SCIPY_ARRAY_API"):
        raise RuntimeError("scipy_suite_plugin: run with SCIPY_ARRAY_API unset (NumPy only)")
    import scipy.special
    from scipy._lib._array_api import xp_capabilities_table

    import fastact.special

    for name in FUNCTIONS:
        orig = getattr(scipy.special, name)
        new = getattr(fastact.special, name)
        # SciPy's test decorators look the function up in this table
        xp_capabilities_table[new] = xp_capabilities_table[orig]
        setattr(scipy.special, name, new)


def _is_complex(v):
    if isinstance(v, (complex, np.complexfloating)):
        return True
    if isinstance(v, str) and "complex" in v:
        return True
    if isinstance(v, (tuple, list)):
        return any(_is_complex(u) for u in v)
    return False


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        name = getattr(item, "originalname", item.name)
        if name in COMPLEX_TESTS or any(_is_complex(v) for v in params.values()):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
