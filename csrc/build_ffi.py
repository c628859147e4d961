"""cffi build script for the C backend: the extension module ``fastact._fastact_c``.

Used by ``setup.py`` (``cffi_modules=["csrc/build_ffi.py:ffibuilder"]``) and
runnable by hand::

    python csrc/build_ffi.py                   # build in place into fastact/
    python csrc/build_ffi.py --sanitize DIR    # ASan+UBSan build into DIR/fastact/

API mode, out of line: the cdef is ``csrc/fastact.h`` itself (its preprocessor
lines dropped); the row kernels are one translation unit, ``csrc/fastact.c``,
which includes the rest (``csrc/fa_internal.h`` says in which order):
``dispatch.c`` expands ``rows_template.c`` per ISA (``isa_*.h``) and dtype,
``half.c`` and ``strided.c`` are the half-dtype and non-last-axis drivers;
``csrc/elementwise.c`` (the elementwise kernels per ISA, ``ew_template.c``)
and ``csrc/pool.c`` (the thread pool of both) are the other translation units.  No -march flags:
the AVX2/AVX-512 paths are compiled with target pragmas and chosen at run
time.  No -ffast-math: the kernels depend on inf and NaN arithmetic.
"""

from __future__ import annotations

import os
import sys

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
MODULE = "fastact._fastact_c"


def _rel(path, absolute):
    # setuptools wants source paths relative to the project root (the cwd of
    # setup.py); ffi.compile() runs in its own tmpdir and needs them absolute.
    if absolute:
        return path
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive
        return path


HEADERS = ("fastact.h", "elementwise.h")
SOURCES = ("fastact.c", "elementwise.c", "pool.c")
# Included by the sources (one translation unit each), not compiled alone:
# every other .c and .h file of csrc/, so that a change to any rebuilds.
INCLUDED = tuple(sorted(n for n in os.listdir(HERE)
                        if n.endswith((".c", ".h")) and n not in HEADERS + SOURCES))


def _cdef():
    lines = []
    for name in HEADERS:
        with open(os.path.join(HERE, name)) as f:
            lines += [ln for ln in f.read().splitlines() if not ln.lstrip().startswith("#")]
    return "\n".join(lines)


def make_ffi(sanitize=False, absolute=False):
    ffi = FFI()
    ffi.cdef(_cdef())
    if sys.platform == "win32":
        cargs, largs, libs = ["/O2"], [], []
    else:
        cargs, largs, libs = ["-O3", "-pthread", "-fno-strict-aliasing"], ["-pthread"], ["m"]
    if sanitize:
        san = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
               "-fno-omit-frame-pointer"]
        cargs = ["-O1", "-g", "-pthread"] + san
        largs = largs + san
    ffi.set_source(
        MODULE,
        "\n".join(f'#include "{h}"' for h in HEADERS),
        sources=[_rel(os.path.join(HERE, n), absolute) for n in SOURCES],
        include_dirs=[_rel(HERE, absolute)],
        depends=[_rel(os.path.join(HERE, n), absolute) for n in HEADERS + INCLUDED],
        extra_compile_args=cargs,
        extra_link_args=largs,
        libraries=libs,
    )
    return ffi


ffibuilder = make_ffi()


def _build_into(ffi, outdir, tmpdir):
    """Compile in tmpdir and copy the shared library to outdir/fastact/."""
    import glob
    import shutil

    so = ffi.compile(tmpdir=tmpdir, verbose=False)
    dest = os.path.join(outdir, "fastact")
    os.makedirs(dest, exist_ok=True)
    for old in glob.glob(os.path.join(dest, "_fastact_c*.so")) + glob.glob(
            os.path.join(dest, "_fastact_c*.pyd")):
        os.remove(old)
    target = os.path.join(dest, os.path.basename(so))
    shutil.copy2(so, target)
    return target


if __name__ == "__main__":
    import argparse
    import tempfile

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sanitize", metavar="DIR", help="build with ASan+UBSan into DIR/fastact/")
    args = p.parse_args()
    root = os.path.dirname(HERE)
    with tempfile.TemporaryDirectory() as tmp:
        if args.sanitize:
            out = _build_into(make_ffi(sanitize=True, absolute=True),
                              os.path.abspath(args.sanitize), tmp)
        else:
            out = _build_into(make_ffi(absolute=True), root, tmp)
    print(out)
