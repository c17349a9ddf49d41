#!/usr/bin/env bash
# On a GPU host, after scripts/gpu/build.sh: quantize a model (QAT --skip-training through a
# real qatd), export it with `qat export --format hf` in fp32 and bf16, and check each folder
# with transformers (scripts/gpu/check_hf_export.py: logits vs qatd's own, one JSON line each).
# Usage: scripts/gpu/export-check.sh BUILD_DIR MODEL_DIR OUT_DIR
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
B=${1:?build dir}; MODEL=${2:?model dir}; OUT=${3:?out dir}
mkdir -p "$OUT"
D=$(mktemp -d)
"$B/server/qatd" --listen 127.0.0.1:0 --metrics-address 127.0.0.1:0 --data-dir "$D/data" > "$OUT/qatd.log" 2>&1 &
QATD=$!
for _ in $(seq 150); do [ -s "$D/data/qatd.port" ] && break; sleep 0.2; done
Q=("$B/client/qat" --address "127.0.0.1:$(cat "$D/data/qatd.port")")
"${Q[@]}" train --model "$MODEL" --skip-training --lut-size 4 --group-size 16 --quantize-attn --dtype fp32 --wait \
  > "$OUT/quantize.log" 2>&1
echo "quantize rc=$?"
J=$(grep -o 'submitted job [0-9]*' "$OUT/quantize.log" | head -1 | awk '{print $3}')
for dt in fp32 bf16; do
  "${Q[@]}" export --from-job "$J" --dtype "$dt" --wait > "$OUT/export_$dt.log" 2>&1
  echo "export $dt rc=$?"
  E=$(grep -o 'submitted job [0-9]*' "$OUT/export_$dt.log" | head -1 | awk '{print $3}')
  python3 "$ROOT/scripts/gpu/check_hf_export.py" "$D/data/jobs/$E/output" > "$OUT/check_$dt.json" 2> "$OUT/check_$dt.err"
  echo "check $dt rc=$? $(cat "$OUT/check_$dt.json")"
done
kill "$QATD"; wait "$QATD" 2>/dev/null
