#!/usr/bin/env bash
# On a GPU host: build only what the speed work needs, run the CUDA-relevant test binaries and
# the three benchmarks (quant layer, QAT step, KD cache), leaving logs + JSON under $OUT.
# Faster than run-suite.sh (no daemon/CLI build); fits one 10-minute device call.
# Usage: OUT=dir scripts/gpu/speed-check.sh
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/gpu-out}
B=${BUILD:-/tmp/build-cuda}
S=$(date +%s)
mkdir -p "$OUT"
export LD_LIBRARY_PATH=/opt/deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
TARGETS="qatd_fused_tests qatd_kd_tests qatd_quant_tests qatd_trainer_tests qatd_lbl_tests qatd_jobs_tests quant_bench kd_cache_bench qat_bench" \
  timeout 300 "$ROOT/scripts/gpu/build.sh" "$ROOT" "$B" -DQATD_ASAN_TESTS=OFF > "$OUT/build.log" 2>&1 ||
  { grep -E "error|FAILED" -A3 "$OUT/build.log" | head -60; exit 1; }
echo "build $(( $(date +%s) - S )) s; $(nvidia-smi --query-gpu=name --format=csv,noheader)"
summary() { grep -E '^\[  (PASSED|FAILED) ' "$1" | tr '\n' ' '; }
for t in cuda/qatd_fused_tests kd/qatd_kd_tests quant/qatd_quant_tests train/qatd_trainer_tests; do
  timeout 120 "$B/tests/core/$t" > "$OUT/$(basename $t).log" 2>&1
  echo "$t rc=$? $(summary "$OUT/$(basename $t).log")"
done
timeout 60 "$B/bench/quant_bench" > "$OUT/quant.json" 2> "$OUT/quant.err"; grep -v Warn "$OUT/quant.err" | tail -12
timeout 200 "$B/bench/qat_bench" --variants plain_weights,v1_weights,v1_scales,v2_q2 > "$OUT/qat.json" 2> "$OUT/qat.err"
grep -E "tokens/s" "$OUT/qat.err"
cfg=$ROOT/tests/data/golden/qwen3-0.6b/config.json
kd() {  # name, args...
  local n=$1; shift
  timeout 60 "$B/bench/kd_cache_bench" --config "$cfg" --num-seqs 8192 "$@" > "$OUT/kd_$n.json" 2> /dev/null
  echo "kd $n $(grep -E '"(end_to_end|teacher)_tokens_per_s|equal_to|graph_replays' "$OUT/kd_$n.json" | tr -d '\n ')"
}
kd b32 --batch 32
kd b32_again --batch 32
kd b32_chunk4064 --batch 32 --chunk-rows 4064
kd b64 --batch 64 --chunk-rows 4096 --shard-size 1024
QATD_CUDA_GRAPHS=0 kd b32_nograph --batch 32
echo "t=$(( $(date +%s) - S )) s"
for t in qatd_lbl_tests qatd_jobs_tests; do
  left=$(( 585 - $(date +%s) + S )); [ $left -lt 20 ] && break
  timeout $left "$B/tests/core/train/$t" > "$OUT/$t.log" 2>&1
  echo "$t rc=$? $(summary "$OUT/$t.log")"
done
echo "total $(( $(date +%s) - S )) s"
