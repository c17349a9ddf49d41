#!/usr/bin/env bash
# Runs the whole test suite (ctest) against ./build. Extra args go to ctest,
# e.g. scripts/test.sh -R Tokenizer
# Without args, and when clang + libFuzzer are installed, it then runs each fuzzer
# (tests/fuzz) for QATD_FUZZ_SECONDS (default 10; 0 skips them) with scripts/fuzz.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
# Install what is missing and build (incremental; a no-op when everything is up to date).
if [[ "$BUILD_DIR" == "$ROOT/build" ]]; then
  "$ROOT/scripts/setup.sh"
elif [[ ! -f "$BUILD_DIR/CTestTestfile.cmake" ]]; then
  echo "no build in $BUILD_DIR" >&2
  exit 2
fi
# LibTorch uses one intra-op thread by default on small machines; tests use all cores.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
cd "$BUILD_DIR"
ctest --output-on-failure --timeout 900 -j"${CTEST_JOBS:-2}" "$@"
fuzz_seconds=${QATD_FUZZ_SECONDS:-10}
if (($# == 0)) && [[ "$fuzz_seconds" != 0 ]] && command -v clang++ >/dev/null &&
  [[ -f "$(clang++ -print-runtime-dir)/libclang_rt.fuzzer-$(uname -m).a" ]]; then
  echo "== fuzzers, ${fuzz_seconds} s each"
  "$ROOT/scripts/fuzz.sh" "$fuzz_seconds"
fi
