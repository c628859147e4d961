"""Builds the optional C extensions: ``fastact._fastact_c`` (cffi, API mode: the
kernels) and ``fastact._fastpath`` (the C backend's common call checked in C,
``csrc/fastpath.c``; it needs NumPy's headers at build time).

Everything else is in pyproject.toml.  A failed C build (no compiler, no
cffi at build time) is a warning, not an error: fastact then runs on its
Numba and NumPy backends, and ``fastact info`` says why "c" is missing.
"""

import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that warns instead of failing when the C extension cannot be built."""

    def run(self):
        try:
            super().run()
        except Exception as e:  # CompileError, DistutilsPlatformError, missing compiler ...
            self._skip(e)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as e:
            self._skip(e)

    def get_outputs(self):
        # Only what was built: an editable install must not link a missing file.
        import os
        return [p for p in super().get_outputs() if os.path.exists(p)]

    @staticmethod
    def _skip(e):
        sys.stderr.write(
            "\nWARNING: the fastact C extension was not built "
            f"({type(e).__name__}: {e}).\n"
            "fastact works without it (numba and numpy backends).\n\n")


kwargs = {}
try:
    import cffi  # noqa: F401
except ImportError:
    sys.stderr.write("\nWARNING: cffi is not installed: the fastact C extension is not built.\n\n")
else:
    kwargs["cffi_modules"] = ["csrc/build_ffi.py:ffibuilder"]

try:
    import numpy
except ImportError:
    sys.stderr.write("\nWARNING: numpy is not installed at build time: fastact._fastpath "
                     "is not built.\n\n")
else:
    from setuptools import Extension
    kwargs["ext_modules"] = [Extension("fastact._fastpath", ["csrc/fastpath.c"],
                                       include_dirs=[numpy.get_include()])]

setup(cmdclass={"build_ext": OptionalBuildExt}, **kwargs)
