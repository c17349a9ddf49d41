#!/usr/bin/env bash
# On a GPU host (see README "Building for CUDA"): build with the kit, run the test suite and
# the benchmarks, and leave logs + JSON under $OUT (default ./gpu-out).
# Usage: scripts/gpu/run-suite.sh [ctest args...]
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/gpu-out}
BUILD=${BUILD:-/tmp/build-cuda}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=/opt/deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
start=$(date +%s)
"$ROOT/scripts/gpu/build.sh" "$ROOT" "$BUILD" -DQATD_ASAN_TESTS=OFF > "$OUT/build.log" 2>&1
rc=$?
# On failure keep going: build everything that does build, so the rest can be tested.
[ $rc -ne 0 ] && cmake --build "$BUILD" -j"$(nproc)" -- -k 0 >> "$OUT/build.log" 2>&1
echo "build rc=$rc in $(( $(date +%s) - start )) s"; grep -E 'error|FAILED' "$OUT/build.log" | head -20
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
(cd "$BUILD" && OMP_NUM_THREADS=8 ctest --output-on-failure --timeout 600 -j4 "$@" > "$OUT/ctest.log" 2>&1)
echo "ctest rc=$?"; grep -E 'tests passed|tests failed|\(Failed\)|\(SEGFAULT\)|\(Timeout\)|Exception' "$OUT/ctest.log" | head -40
B=$BUILD/bench
cfg=$ROOT/tests/data/golden/qwen3-0.6b/config.json
[ -x $B/tokenizer_bench ] && $B/tokenizer_bench --tokenizer "$ROOT/tests/data/golden/qwen3-tokenizer" --mb 10 > "$OUT/tokenizer_gpuhost.json" 2>&1
[ -x $B/quant_bench ] && $B/quant_bench > "$OUT/quant_cuda.json" 2> "$OUT/quant_cuda.err"
[ -x $B/qat_bench ] && $B/qat_bench > "$OUT/qat_cuda.json" 2> "$OUT/qat_cuda.err"
[ -x $B/kd_cache_bench ] && $B/kd_cache_bench --config "$cfg" > "$OUT/kd_cache_cuda.json" 2> "$OUT/kd_cache_cuda.err"
echo "total $(( $(date +%s) - start )) s"
