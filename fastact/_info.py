"""``fastact info``: versions, backends (and why one is missing), threads, SIMD level."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

from . import _backends, _config

_SIMD_FLAGS = ("avx512f", "avx512bw", "avx512dq", "avx512vl", "avx2", "fma", "avx", "sse4_2",
               "neon", "asimd", "sve")


def cpu_flags():
    """The CPU feature flags the OS reports (Linux /proc/cpuinfo), as a set."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key = line.split(":", 1)[0].strip().lower()
                if key in ("flags", "features"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def simd_level(flags=None):
    """The widest x86/ARM vector extension the CPU reports."""
    flags = cpu_flags() if flags is None else flags
    for f in ("avx512f", "avx2", "avx", "sse4_2", "sve", "asimd", "neon"):
        if f in flags:
            return f
    return "baseline"


def _version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def info_dict():
    from . import __version__

    flags = cpu_flags()
    backends = {}
    for name in _backends.NAMES:
        why = _backends.why_unavailable(name)
        entry = {"available": why is None}
        if why is not None:
            entry["reason"] = why
        elif name == "c":
            mod = _backends.load("c")
            if hasattr(mod, "simd_level"):
                entry["simd"] = mod.simd_level()
        backends[name] = entry
    return {
        "fastact": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "simd_level": simd_level(flags),
        "simd_flags": sorted(f for f in flags if f in _SIMD_FLAGS),
        "threads": _config.get_num_threads(),
        "default_backend": _config.get_backend(),
        "backends": backends,
        "versions": {d: _version(d) for d in ("numpy", "numba", "llvmlite", "cffi", "scipy",
                                               "torch", "jax", "dask", "ml_dtypes")},
    }


def print_info(file=None):
    d = info_dict()
    out = file or sys.stdout
    p = lambda *a: print(*a, file=out)  # noqa: E731
    p(f"fastact {d['fastact']}  (Python {d['python']}, {d['platform']})")
    p(f"CPU: {d['cpu']}; SIMD level: {d['simd_level']} ({' '.join(d['simd_flags']) or '-'})")
    p(f"threads: {d['threads']}")
    p(f"default backend: {d['default_backend']}")
    p("backends:")
    for name, e in d["backends"].items():
        if e["available"]:
            extra = f" (kernels: {e['simd']})" if "simd" in e else ""
            p(f"  {name:6s} available{extra}")
        else:
            p(f"  {name:6s} NOT available: {e['reason']}")
    p("versions:")
    for k, v in d["versions"].items():
        p(f"  {k:10s} {v or 'not installed'}")
