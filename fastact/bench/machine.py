"""What a run ran on: the machine, the package versions, the backends and peers."""

from __future__ import annotations

import os
import platform
import sys


def machine_info():
    from .._info import cpu_flags, cpu_name, simd_level

    flags = cpu_flags()
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        mem = None
    from .._config import _cpu_count

    return {
        "cpu": cpu_name(),
        "cores": _cpu_count(),
        "arch": platform.machine(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "memory_bytes": mem,
        "simd_level": simd_level(flags),
        "cpu_flags": sorted(flags),
    }


def versions():
    from importlib import metadata

    from .. import __version__

    out = {"fastact": __version__}
    for dist in ("numpy", "numba", "llvmlite", "cffi", "scipy", "torch", "jax", "jaxlib",
                 "rich", "matplotlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def backend_info():
    from .. import _backends

    out = {}
    for name in _backends.NAMES:
        why = _backends.why_unavailable(name)
        out[name] = {"available": why is None}
        if why is not None:
            out[name]["reason"] = why
    return out


def peer_info(p):
    d = {"available": p.available}
    if p.version is not None:
        d["version"] = p.version
    if p.reason is not None:
        d["reason"] = p.reason
    return d
