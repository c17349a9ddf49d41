#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz, clang, ASan + UBSan) into ./build-fuzz and runs each
# for SECONDS over a copy of its seed corpus. Fails if any fuzzer finds a crash, a leak, UB, a
# timeout or an out-of-memory; the input that did it is kept in $ARTIFACTS.
#   scripts/fuzz.sh                 # every target, 10 s each
#   scripts/fuzz.sh 300 tokenizer   # one target, 5 minutes
# Environment: FUZZ_BUILD_DIR (default build-fuzz; not BUILD_DIR, which names the main build),
# JOBS (build jobs, default nproc), ARTIFACTS (default $FUZZ_BUILD_DIR/fuzz-artifacts),
# FUZZ_JSON (a file: also write the final stats there as one JSON object per target, one per
# line), FUZZ_ARGS (more libFuzzer flags).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${FUZZ_BUILD_DIR:-$ROOT/build-fuzz}
JOBS=${JOBS:-$(nproc)}
ARTIFACTS=${ARTIFACTS:-$BUILD_DIR/fuzz-artifacts}
SECONDS_EACH=${1:-10}
shift || true
ALL_TARGETS=(safetensors tokenizer kd_cache pipeline_spec worker_frames model_config torch_pickle)
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=("${ALL_TARGETS[@]}")

export CCACHE_DIR=${CCACHE_DIR:-$ROOT/.cache/ccache}
mkdir -p "$CCACHE_DIR"
if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
  CC=clang CXX=clang++ cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DQATD_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
elif ! grep -q '^QATD_FUZZ:BOOL=ON$' "$BUILD_DIR/CMakeCache.txt"; then
  echo "$BUILD_DIR is not a -DQATD_FUZZ=ON build (set FUZZ_BUILD_DIR)" >&2
  exit 2
fi
build_start=$(date +%s)
binaries=()
for target in "${TARGETS[@]}"; do binaries+=("qatd_${target}_fuzz"); done
cmake --build "$BUILD_DIR" -j"$JOBS" --target "${binaries[@]}"
echo "== fuzz build: $(( $(date +%s) - build_start )) s"

mkdir -p "$ARTIFACTS"
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
work=$(mktemp -d /tmp/qatd-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
failed=()
for target in "${TARGETS[@]}"; do
  fuzzer="$BUILD_DIR/tests/fuzz/qatd_${target}_fuzz"
  seeds="$ROOT/tests/fuzz/corpus/$target"
  [[ -x "$fuzzer" && -d "$seeds" ]] || { echo "no fuzzer or corpus for '$target'" >&2; exit 2; }
  # libFuzzer adds what it finds to the first corpus folder: a copy, never the repository's.
  mkdir -p "$work/$target"
  cp "$seeds"/* "$work/$target/"
  log="$work/$target.log"
  extra=()
  [[ -f "$ROOT/tests/fuzz/$target.dict" ]] && extra=(-dict="$ROOT/tests/fuzz/$target.dict")
  # A frame header may promise 64 MiB: the reader must not allocate it before the bytes come.
  if [[ "$target" == worker_frames ]]; then extra+=(-malloc_limit_mb=8); fi
  set +e
  # shellcheck disable=SC2086
  "$fuzzer" "$work/$target" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$ARTIFACTS/$target-" "${extra[@]}" ${FUZZ_ARGS:-} >"$log" 2>&1
  rc=$?
  set -e
  # The last status line: "#N DONE cov: C ft: F corp: U/Sb ... exec/s: E ...".
  done_line=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  stat() { grep -E "^stat::$1:" "$log" | awk '{print $2}' | tail -1; }
  field() { sed -nE "s/.* $1: ([0-9]+).*/\1/p" <<<"$done_line"; }
  execs=$(stat number_of_executed_units)
  units=$(sed -nE 's/.* corp: ([0-9]+)\/.*/\1/p' <<<"$done_line")
  printf '== %-14s rc=%d %ss execs=%s exec/s=%s corpus=%s cov=%s ft=%s\n' "$target" "$rc" "$SECONDS_EACH" \
    "${execs:-?}" "$(stat average_exec_per_sec)" "${units:-?}" "$(field cov)" "$(field ft)"
  if [[ -n "${FUZZ_JSON:-}" ]]; then
    printf '{"target":"%s","seconds":%s,"execs":%s,"exec_per_s":%s,"corpus_units":%s,"seed_units":%s,"cov":%s,"ft":%s,"peak_rss_mb":%s,"crashes":%s}\n' \
      "$target" "$SECONDS_EACH" "${execs:-0}" "$(stat average_exec_per_sec)" "${units:-0}" \
      "$(find "$seeds" -type f | wc -l)" "$(field cov)" "$(field ft)" "$(stat peak_rss_mb)" \
      "$([[ $rc -eq 0 ]] && echo 0 || echo 1)" >>"$FUZZ_JSON"
  fi
  if [[ $rc -ne 0 ]]; then
    failed+=("$target")
    echo "---- $target failed (rc=$rc); the end of its log:" >&2
    tail -60 "$log" >&2
  fi
done
if ((${#failed[@]})); then
  echo "== fuzzers that failed: ${failed[*]} (inputs in $ARTIFACTS; rerun one with: $BUILD_DIR/tests/fuzz/qatd_<target>_fuzz FILE)" >&2
  exit 1
fi
echo "== all ${#TARGETS[@]} fuzzers ran ${SECONDS_EACH} s each without a finding"
