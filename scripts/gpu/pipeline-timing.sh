#!/usr/bin/env bash
# Wall time and disk of every stage of `qat pipeline run q4` and `q2` for a Qwen3-0.6B-shaped
# model on one GPU, through the real daemon and CLI, with the recipes' default step counts
# (the seed's 500 / 3000 / 1000, V2 1000, batch 32 x 128, cache 20000 x 128 top-64).
# The model is random-init (tests/data/golden/qwen3-0.6b/config.json's shape: no model hub
# here), so only the times and sizes mean anything, not the losses.
# Usage (GPU host, after scripts/gpu/build.sh): scripts/gpu/pipeline-timing.sh BUILD_DIR [STEPS_SCALE]
# Writes $OUT/pipeline-timing.json (default OUT=./gpu-out). Smoke test on a CPU:
#   CONFIG=tests/data/golden/tiny-qwen3/config.json RECORDS=2000 EXTRA="--num-samples 64 --dtype fp32" \
#     scripts/gpu/pipeline-timing.sh build 0.002
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:?usage: pipeline-timing.sh BUILD_DIR [STEPS_SCALE]}
SCALE=${2:-1}
OUT=${OUT:-$ROOT/gpu-out}
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/qatd-timing.XXXXXX")
QATD_PID=""
cleanup() { [[ -n $QATD_PID ]] && kill "$QATD_PID" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT

cfg=${CONFIG:-$ROOT/tests/data/golden/qwen3-0.6b/config.json}
num() { jq -r ".$1" "$cfg"; }
"$BUILD/tools/qat-model" init --out "$WORK/model" --hidden "$(num hidden_size)" \
  --intermediate "$(num intermediate_size)" --layers "$(num num_hidden_layers)" \
  --heads "$(num num_attention_heads)" --kv-heads "$(num num_key_value_heads)" --head-dim "$(num head_dim)" \
  --max-positions 4096 --dtype bfloat16 --tokenizer "$ROOT/tests/data/golden/qwen3-tokenizer" >/dev/null
"$BUILD/tools/qat-model" demo-data --out "$WORK/data.json" --records "${RECORDS:-200000}" --seed 0 >/dev/null
du -sb "$WORK/model"

"$BUILD/server/qatd" --listen 127.0.0.1:0 --metrics-address 127.0.0.1:0 --data-dir "$WORK/d" >"$OUT/timing-qatd.log" 2>&1 &
QATD_PID=$!
for _ in $(seq 100); do [[ -s $WORK/d/qatd.port ]] && break; sleep 0.2; done
export QATD_ADDRESS=127.0.0.1:$(tr -d '[:space:]' <"$WORK/d/qatd.port")
QAT=$BUILD/client/qat
for _ in $(seq 50); do "$QAT" server >/dev/null 2>&1 && break; sleep 0.2; done

run() {  # recipe, extra flags...: waits (--wait), then prints the pipeline's status JSON on stdout
  local log=$OUT/timing-$1.log id
  # shellcheck disable=SC2086  # EXTRA is a list of flags
  "$QAT" pipeline run "$@" ${EXTRA:-} --steps-scale "$SCALE" --prompt "What is the capital of France?" \
    --max-new-tokens 32 --wait >"$log" 2>&1 || { tail -30 "$log" >&2; exit 1; }
  id=$(sed -n 's/^submitted pipeline \([0-9]*\).*/\1/p' "$log" | head -1)
  "$QAT" --json pipeline status "$id"
}
start=$(date +%s)
Q4='{"jobs": []}'
if [[ ${RECIPES:-q4 q2} == *q4* ]]; then
  Q4=$(run q4 --model "$WORK/model" --dataset "$WORK/data.json")
  CACHE=$("$QAT" --json status "$(jq -r '.jobs[] | select(.stage == "cache") | .id' <<<"$Q4")" |
    jq -r '[.artifacts[]? | select(.kind == "kd_cache")][0].path')
  Q2=$(run q2 --model "$WORK/model" --kd-cache "$CACHE")
else  # RECIPES=q2: q2 alone, with its own cache stage
  Q2=$(run q2 --model "$WORK/model" --dataset "$WORK/data.json")
fi
total=$(( $(date +%s) - start ))
# ANEMLL_CHECK=1: export the q2 snap as --format anemll and check it with transformers.
if [[ -n ${ANEMLL_CHECK:-} ]]; then
  SNAP=$(jq -r '.jobs[] | select(.stage == "snap") | .id' <<<"$Q2")
  "$QAT" export --from-job "$SNAP" --format anemll --wait >"$OUT/anemll-export.log" 2>&1 || tail -20 "$OUT/anemll-export.log"
  EXPORT_DIR=$("$QAT" --json artifacts "$(sed -n 's/^submitted job \([0-9]*\).*/\1/p' "$OUT/anemll-export.log" | head -1)" |
    jq -r '[.artifacts[]? | select(.kind == "export")][0].path')
  [[ $EXPORT_DIR == */anemll ]] && EXPORT_DIR=${EXPORT_DIR%/anemll}  # the checker takes the output dir
  python3 "$ROOT/scripts/gpu/check_anemll_export.py" "$EXPORT_DIR" >"$OUT/anemll-check.log" 2>&1
  echo "check_anemll_export.py rc=$? on $EXPORT_DIR"; tail -15 "$OUT/anemll-check.log"
fi

secs='def t: if . == null then null else (sub("\\.[0-9]+Z$"; "Z") | fromdateiso8601) end;
  [.jobs[] | {stage, state, steps: ((.progress.done // null) | if . == null then null else tonumber end),
   seconds: ((.endTime | t) - (.startTime | t)), disk_mb: (((.diskBytes // "0") | tonumber) / 1e6 | round)}]'
jq -n --argjson q4 "$(jq "$secs" <<<"$Q4")" --argjson q2 "$(jq "$secs" <<<"$Q2")" \
  --arg gpu "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" --arg sha "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  --argjson total "$total" --argjson scale "$SCALE" \
  '{what: "qat pipeline run q4 / q2 stage wall times and disk, Qwen3-0.6B-shaped random model, recipe defaults",
    gpu: $gpu, sha: $sha, steps_scale: $scale, total_seconds: $total, q4: $q4, q2: $q2}' | tee "$OUT/pipeline-timing.json"
