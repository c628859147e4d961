#!/usr/bin/env bash
# The C backend's direct tests against an ASan+UBSan build of the kernels.
#
#   bash tests/sanitize_c.sh [pytest args...]
#
# Builds csrc/ with -fsanitize=address,undefined into a temporary copy of the
# package (the checkout is not touched), preloads the sanitizer runtimes into
# the (uninstrumented) Python, and runs tests/test_c_kernels_*.py on
# every ISA path, then the elementwise and BCE tests on the "c" backend.  Any ASan report or UB aborts the run (non-zero exit).
# Needs gcc or clang with libasan/libubsan; PYTHON defaults to python3.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-python3}"
cc="${CC:-gcc}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# the package without any built extension, plus the ASan build of it
mkdir -p "$tmp/tests"
cp -r "$here/fastact" "$tmp/fastact"
find "$tmp/fastact" \( -name '_fastact_c*.so' -o -name '_fastact_c*.pyd' -o -name '__pycache__' \) \
    -prune -exec rm -rf {} +
for t in conftest.py _c_direct.py test_c_kernels_direct.py test_c_kernels_rows.py \
         test_c_kernels_layouts.py test_elementwise.py test_bce.py; do
    cp "$here/tests/$t" "$tmp/tests/"
done
CC="$cc" "$py" "$here/csrc/build_ffi.py" --sanitize "$tmp" >/dev/null

asan="$("$cc" -print-file-name=libasan.so)"
ubsan="$("$cc" -print-file-name=libubsan.so)"
cd "$tmp"
# detect_leaks=0: CPython itself does not free everything at exit.
env LD_PRELOAD="$asan:$ubsan" \
    ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:strict_string_checks=1" \
    UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
    PYTHONPATH="$tmp" FASTACT_TEST_BACKENDS=c \
    "$py" -m pytest -q -p no:cacheprovider --rootdir="$tmp" tests/test_c_kernels_direct.py \
    tests/test_c_kernels_rows.py tests/test_c_kernels_layouts.py \
    tests/test_elementwise.py tests/test_bce.py "$@"
echo "sanitizer run clean (ASan + UBSan, every ISA path)"
