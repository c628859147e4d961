"""Backend choice and thread count: process-wide defaults, per-context overrides."""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys

from . import _backends

_default_backend = "auto"
_override: contextvars.ContextVar = contextvars.ContextVar("fastact_backend", default=None)
_num_threads = None  # None: not yet read from FASTACT_NUM_THREADS / the machine


def _check_name(name):
    if not isinstance(name, str) or name not in _backends.NAMES + ("auto",):
        raise ValueError(
            f"unknown backend {name!r}; expected one of {list(_backends.NAMES + ('auto',))}"
        )
    return name


def available_backends():
    """The backends that load on this machine, fastest first (``"numpy"`` always)."""
    return [n for n in _backends.NAMES if _backends.is_available(n)]


def _resolve_auto():
    for n in _backends.NAMES:
        if _backends.is_available(n):
            return n
    return "numpy"  # pragma: no cover - the reference always loads


def resolve(name=None):
    """The row-kernel table (``_backends.table.RowKernels``) of backend ``name``
    (None: the current backend)."""
    if name is None:
        return current()
    _check_name(name)
    if name == "auto":
        name = _resolve_auto()
    return _backends.kernels(name)


_current: dict = {}  # "auto" -> the table it resolved to


def current(name=None):
    """The row-kernel table of a call with ``backend=name`` (None: the current
    backend): ``resolve`` without the look-ups once a name has been resolved
    (tables and the meaning of "auto" do not change after that)."""
    if name is None:
        name = _override.get() or _default_backend
    elif type(name) is not str:
        return resolve(name)  # raises, naming the problem
    if name != "auto":
        mod = _backends._loaded.get((name, "rows"))  # a loaded backend: one look-up
        return mod.KERNELS if mod is not None else resolve(name)
    mod = _current.get(name)
    if mod is None:
        mod = _current[name] = resolve(name)
    return mod


def requested(name=None):
    """The backend name a call with ``backend=name`` asks for ("auto" unresolved)."""
    return name if name is not None else (_override.get() or _default_backend)


def sync_fast(c=None):
    """Tell the C backend's fast path (``fastact._fastpath``, live once the C backend
    ``c`` is loaded) whether calls without ``backend=`` go to the C backend, and
    the thread count; after every change of either."""
    # the module itself, not only the registry's entry: an import of
    # fastact._backends.c_kernels makes the fast path live before any load()
    c = c or _backends._loaded.get(("c", "rows")) or sys.modules.get("fastact._backends.c_kernels")
    if c is not None:
        # "auto" picks the first backend that loads: C, which has
        on = _default_backend in ("c", "auto")
        c.fastpath_state(on, get_num_threads())


def get_backend():
    """The name of the backend calls use now (``"auto"`` resolved to a real name)."""
    return resolve().name


def set_backend(name):
    """Set the process-wide default backend; error (saying why) if it is not available."""
    global _default_backend
    _check_name(name)
    if name != "auto":
        _backends.load(name)
    _default_backend = name
    sync_fast()


@contextlib.contextmanager
def use_backend(name):
    """``with use_backend("c"): ...`` — the backend for calls made in this context."""
    _check_name(name)
    if name != "auto":
        _backends.load(name)
    token = _override.set(name)
    try:
        yield
    finally:
        _override.reset(token)


def _cpu_count():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def get_num_threads():
    """Threads the native backends use (default: all cores, or FASTACT_NUM_THREADS)."""
    global _num_threads
    if _num_threads is None:
        env = os.environ.get("FASTACT_NUM_THREADS")
        _num_threads = _parse_threads(env, "FASTACT_NUM_THREADS") if env else _cpu_count()
    return _num_threads


def _parse_threads(n, what="n"):
    try:
        n = int(n)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a positive integer, got {n!r}") from None
    if n < 1:
        raise ValueError(f"{what} must be a positive integer, got {n}")
    return n


def set_num_threads(n):
    """Set the number of threads the native backends use."""
    global _num_threads
    _num_threads = _parse_threads(n)
    sync_fast()


def _init_from_env():
    global _default_backend
    env = os.environ.get("FASTACT_BACKEND")
    if env:
        _default_backend = _check_name(env.strip().lower())


_init_from_env()
