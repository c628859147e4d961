"""Backend registry: each backend is a module of the same small set of row kernels.

The kernels' contract is written once, in ``numpy_ref``'s docstring.  Backends
are imported lazily (``import fastact`` compiles and loads nothing) and the
reason a backend cannot be loaded is kept so that errors and ``fastact info``
can say why.
"""

from __future__ import annotations

import importlib
import threading

#: In the order ``"auto"`` prefers them.
NAMES = ("c", "numba", "numpy")
_MODULES = {
    "numpy": "fastact._backends.numpy_ref",
    "numba": "fastact._backends.numba_kernels",
    "c": "fastact._backends.c_kernels",
}
_loaded: dict = {}
_errors: dict = {}
_lock = threading.Lock()


def load(name):
    """The backend module for ``name``; ``RuntimeError`` saying why if unavailable."""
    mod = _loaded.get(name)
    if mod is not None:
        return mod
    if name not in _MODULES:
        raise ValueError(f"unknown backend {name!r}; expected one of {NAMES + ('auto',)}")
    with _lock:
        if name in _loaded:
            return _loaded[name]
        if name in _errors:
            raise RuntimeError(f"backend {name!r} is not available: {_errors[name]}")
        try:
            mod = importlib.import_module(_MODULES[name])
        except Exception as e:  # ImportError, a failed build, a missing compiler ...
            _errors[name] = f"{type(e).__name__}: {e}"
            raise RuntimeError(f"backend {name!r} is not available: {_errors[name]}") from None
        _loaded[name] = mod
        return mod


def is_available(name):
    try:
        load(name)
        return True
    except RuntimeError:
        return False


def why_unavailable(name):
    """None if ``name`` loads, else the reason it does not."""
    try:
        load(name)
        return None
    except RuntimeError:
        return _errors.get(name)
