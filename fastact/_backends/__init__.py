"""Backend registry: each backend is a module of the same small set of row kernels.

The kernels' contract is written once, in ``numpy_ref``'s docstring; each
backend module fills a typed table of its kernels (``KERNELS``, see ``table``),
which is what the API calls (``kernels(name)``).  Backends
are imported lazily (``import fastact`` compiles and loads nothing) and the
reason a backend cannot be loaded is kept so that errors and ``fastact info``
can say why.
"""

from __future__ import annotations

import importlib
import threading

#: In the order ``"auto"`` prefers them.
NAMES = ("c", "numba", "numpy")
#: Each backend comes in parts: its row kernels (the softmax family, contract in
#: ``numpy_ref``) and its elementwise kernels (contract in ``numpy_elementwise``).
_MODULES = {
    ("numpy", "rows"): "fastact._backends.numpy_ref",
    ("numba", "rows"): "fastact._backends.numba_kernels",
    ("c", "rows"): "fastact._backends.c_kernels",
    ("numpy", "elementwise"): "fastact._backends.numpy_elementwise",
    ("numba", "elementwise"): "fastact._backends.numba_elementwise",
    ("c", "elementwise"): "fastact._backends.c_elementwise",
}
_MISSING = {"rows": "is not available", "elementwise": "has no elementwise kernels"}
_loaded: dict = {}
_errors: dict = {}
_lock = threading.Lock()


def load(name, part="rows"):
    """The module of backend ``name``'s ``part`` ("rows" or "elementwise");
    ``RuntimeError`` saying why if it cannot be loaded."""
    key = (name, part)
    mod = _loaded.get(key)
    if mod is not None:
        return mod
    if key not in _MODULES:
        raise ValueError(f"unknown backend {name!r}; expected one of {NAMES + ('auto',)}")
    with _lock:
        if key in _loaded:
            return _loaded[key]
        if key not in _errors:
            try:
                _loaded[key] = importlib.import_module(_MODULES[key])
                return _loaded[key]
            except Exception as e:  # ImportError, a failed build, a missing compiler ...
                _errors[key] = f"{type(e).__name__}: {e}"
        raise RuntimeError(f"backend {name!r} {_MISSING[part]}: {_errors[key]}") from None


def kernels(name, part="rows"):
    """The typed kernel table (``table.RowKernels`` / ``table.ElementwiseKernels``)
    of backend ``name``'s ``part``; ``RuntimeError`` saying why if it cannot be loaded."""
    return load(name, part).KERNELS


def is_available(name, part="rows"):
    try:
        load(name, part)
        return True
    except RuntimeError:
        return False


def why_unavailable(name, part="rows"):
    """None if ``name`` loads, else the reason it does not."""
    try:
        load(name, part)
        return None
    except RuntimeError:
        return _errors.get((name, part))
