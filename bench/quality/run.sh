#!/usr/bin/env bash
# Quality benchmark (issue #18): qatd's recipes on a real 103M-parameter Qwen3 teacher, measured
# on held-out data, through the daemon and the `qat` CLI as a user runs them. README.md here.
#   bench/quality/run.sh [short|full]          (GPU host; default short = every step count x 0.1)
# 1. builds qatd (scripts/gpu/build.sh) unless $BUILD/server/qatd exists; meanwhile
# 2. builds the teacher + KD cache with shared/quality/make_bench.sh (SEED=7) unless $WORK/build.json
#    exists, and imports the cache (--import-reference, kd/train shards then kd/eval: the held-out
#    split is the cache's last sequences);
# 3. starts qatd, runs each recipe with `qat pipeline run ... --wait`, then scores every stage's
#    checkpoint with `qat eval` on the held-out sequences (never trained on);
# 4. prints one table and writes $OUT/quality.json (rows appended as each recipe ends, so a run
#    cut short still leaves what it measured).
# Env: BUILD (default ./build-gpu), WORK (default /tmp/qb), OUT (default ./gpu-out), SEED (7),
#   QUALITY (the shared/quality folder; default /work/shared/quality, else bench/quality/.shared/quality),
#   RECIPES (default "q4 q2v1 q2prog"), STEPS_SCALE (overrides short/full), EXTRA (flags for every
#   recipe), Q4_FLAGS / Q2V1_FLAGS / Q2P_FLAGS (each recipe's quantization and method flags),
#   TAG (a label per recipe run, for method variants), EVAL_DTYPE (qat eval --dtype; default auto),
#   SHA (the source's git sha, when ROOT is an export without .git), LOGS (default $WORK/quality-logs),
#   LORA_RANKS (e.g. "8 16 32": after a recipe, one `qat lora` per rank on its snapped checkpoint,
#   LORA_STEPS (default 1000) x the step scale each, LORA_FLAGS more flags; a pipeline's own
#   `--recover-steps` stage, given in EXTRA or *_FLAGS, is scored too, with its adapter applied),
#   LORA_SNAP (a snapped q2 checkpoint: run no recipe, score it and run LORA_RANKS on it),
#   TRAIN_REF_TRAIN / TRAIN_REF_EVAL (train on this reference cache instead, e.g. recache.py's
#   top-64 or random negatives; the scores stay on the benchmark's own cache).
# CPU plumbing check without a GPU or torch: TEACHER=<HF folder> REF_TRAIN=<.pt cache> REF_EVAL=<.pt cache>
#   skip make_bench.sh and use those (see README.md).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
MODE=${1:-short}
case $MODE in
  short) SCALE=${STEPS_SCALE:-0.1} ;;
  full) SCALE=${STEPS_SCALE:-1} ;;
  *) echo "usage: run.sh [short|full]" >&2; exit 2 ;;
esac
BUILD=${BUILD:-$ROOT/build-gpu}
WORK=${WORK:-/tmp/qb}
OUT=${OUT:-$ROOT/gpu-out}
SEED=${SEED:-7}
RECIPES=${RECIPES:-q4 q2v1 q2prog}
Q4_FLAGS=${Q4_FLAGS:---preset Q4_A4}
Q2V1_FLAGS=${Q2V1_FLAGS:---lut-size 4 --scale-rank 8 --group-size 32 --quantize-attn}
Q2P_FLAGS=${Q2P_FLAGS:---preset Q4_A4}
TAG=${TAG:-}
mkdir -p "$OUT" "$WORK"
RESULTS=$OUT/quality.json
LOG=${LOGS:-$WORK/quality-logs}  # per-job logs; each recipe's `--wait` log is also copied to OUT
mkdir -p "$LOG"
if [[ -z ${QUALITY:-} ]]; then
  if [[ -f /work/shared/quality/make_bench.sh ]]; then QUALITY=/work/shared/quality; else QUALITY=$ROOT/bench/quality/.shared/quality; fi
fi
export LD_LIBRARY_PATH=/opt/deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
QATD_PID=""
cleanup() { [[ -n $QATD_PID ]] && kill "$QATD_PID" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 ))s] $*" >&2; }

# --- 1 + 2: build qatd and the teacher/cache at the same time ----------------------------------
BUILD_PID=""
if [[ ! -x $BUILD/server/qatd ]]; then
  stamp "building qatd into $BUILD"
  TARGETS=${TARGETS:-"qatd qatd-worker qat qat-kd-cache"} \
    bash "$ROOT/scripts/gpu/build.sh" "$ROOT" "$BUILD" -DQATD_ASAN_TESTS=OFF >"$LOG/build.log" 2>&1 &
  BUILD_PID=$!
fi
if [[ -n ${TEACHER:-} ]]; then  # plumbing check: a given teacher and reference caches
  REF_TRAIN=${REF_TRAIN:?TEACHER needs REF_TRAIN and REF_EVAL}; REF_EVAL=${REF_EVAL:?}
elif [[ ! -f $WORK/build.json ]]; then
  stamp "make_bench.sh (seed $SEED) into $WORK"
  SEED=$SEED bash "$QUALITY/make_bench.sh" "$WORK" >"$LOG/make_bench.log" 2>&1 || { tail -30 "$LOG/make_bench.log" >&2; exit 1; }
  cp "$WORK/build.json" "$OUT/build.json"
  stamp "teacher and cache built"
fi
TEACHER=${TEACHER:-$WORK/teacher}
REF_TRAIN=${REF_TRAIN:-$WORK/kd/train}
REF_EVAL=${REF_EVAL:-$WORK/kd/eval}
if [[ -n $BUILD_PID ]]; then
  wait "$BUILD_PID" || { tail -40 "$LOG/build.log" >&2; exit 1; }
  stamp "qatd built"
fi

# One reference folder: the train shards, then the eval shards, renumbered; then import it.
CACHE=$WORK/cache
EVAL_N=$(jq -r '.num_sequences' "$REF_EVAL/meta.json")
if [[ ! -f $CACHE/meta.json ]]; then
  ALL=$WORK/ref-all
  rm -rf "$ALL" && mkdir -p "$ALL"
  i=0
  for f in "$REF_TRAIN"/shard_*.pt "$REF_EVAL"/shard_*.pt; do  # globs expand sorted
    ln -s "$(readlink -f "$f")" "$ALL/$(printf 'shard_%05d.pt' $i)"; i=$((i + 1))
  done
  n=$(( $(jq -r '.num_sequences' "$REF_TRAIN/meta.json") + EVAL_N ))
  jq --argjson n "$n" '.num_sequences = $n | .total_sequences = $n | .dataset_split = "train shards, then the held-out eval shards"' \
    "$REF_TRAIN/meta.json" >"$ALL/meta.json"
  jq -n --argjson n "$n" --argjson s "$i" '{n_written: $n, next_shard_id: $s, done: true}' >"$ALL/progress.json"
  "$BUILD/tools/qat-kd-cache" --import-reference "$ALL" --output-dir "$CACHE" >&2
fi
stamp "cache $CACHE: the last $EVAL_N sequences are held out"
# TRAIN_REF_TRAIN / TRAIN_REF_EVAL (par.sh's fourth field, recache.py): the recipes train on this
# cache (the same sequences with more candidates); every stage is still scored on $CACHE.
TRAIN_CACHE=$CACHE
if [[ -n ${TRAIN_REF_TRAIN:-} ]]; then
  TRAIN_CACHE=$WORK/cache-train
  if [[ ! -f $TRAIN_CACHE/meta.json ]]; then
    ALL=$WORK/ref-all-train
    rm -rf "$ALL" && mkdir -p "$ALL"
    i=0
    for f in "$TRAIN_REF_TRAIN"/shard_*.pt "${TRAIN_REF_EVAL:?TRAIN_REF_TRAIN needs TRAIN_REF_EVAL}"/shard_*.pt; do
      ln -s "$(readlink -f "$f")" "$ALL/$(printf 'shard_%05d.pt' $i)"; i=$((i + 1))
    done
    n=$(( $(jq -r '.num_sequences' "$TRAIN_REF_TRAIN/meta.json") + $(jq -r '.num_sequences' "$TRAIN_REF_EVAL/meta.json") ))
    jq --argjson n "$n" '.num_sequences = $n | .total_sequences = $n' "$TRAIN_REF_TRAIN/meta.json" >"$ALL/meta.json"
    jq -n --argjson n "$n" --argjson s "$i" '{n_written: $n, next_shard_id: $s, done: true}' >"$ALL/progress.json"
    "$BUILD/tools/qat-kd-cache" --import-reference "$ALL" --output-dir "$TRAIN_CACHE" >&2
  fi
  stamp "training cache $TRAIN_CACHE (top-$(jq -r '.top_k // .topk' "$TRAIN_CACHE/meta.json"), $(jq -r '.rand_neg // 0' "$TRAIN_CACHE/meta.json") random negatives)"
fi

# --- 3: the daemon and the recipes ---------------------------------------------------------------
"$BUILD/server/qatd" --listen 127.0.0.1:0 --metrics-address 127.0.0.1:0 --data-dir "$WORK/d" >>"$LOG/qatd.log" 2>&1 &
QATD_PID=$!
for _ in $(seq 100); do [[ -s $WORK/d/qatd.port ]] && break; sleep 0.2; done
export QATD_ADDRESS=127.0.0.1:$(tr -d '[:space:]' <"$WORK/d/qatd.port")
QAT=$BUILD/client/qat
for _ in $(seq 50); do "$QAT" server >/dev/null 2>&1 && break; sleep 0.2; done

SHA=${SHA:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}
DIRTY=$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | grep -c . || true)
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)
[[ -f $RESULTS ]] || jq -n --arg sha "$SHA" --argjson dirty "${DIRTY:-0}" --arg gpu "${GPU:-cpu}" --argjson seed "$SEED" \
  --argjson eval_n "$EVAL_N" \
  '{what: "qatd quality benchmark (bench/quality/run.sh): held-out KD (T=2), top-1 agreement, perplexity per stage",
    sha: $sha, modified_tracked_files: $dirty, gpu: $gpu, seed: $seed, held_out_sequences: $eval_n, rows: []}' >"$RESULTS"

# qat eval of one checkpoint on the held-out split: prints {kd, top1, ppl}
score() {  # checkpoint [--v2] [adapter dir]
  local log=$LOG/eval-$RANDOM.log id
  # shellcheck disable=SC2086  # $2 is empty or --v2
  "$QAT" eval --model "$TEACHER" ${1:+--checkpoint "$1"} --kd-cache "$CACHE" --eval-samples "$EVAL_N" \
    --dtype "${EVAL_DTYPE:-auto}" ${2:-} ${3:+--adapter "$3"} --wait >"$log" 2>&1 || { tail -5 "$log" >&2; echo null; return; }
  id=$(sed -n 's/^submitted job \([0-9]*\).*/\1/p' "$log" | head -1)
  "$QAT" --json status "$id" | jq -c '.result.metrics | {kd: .["eval/kd"], top1: .["eval/top1"], ppl: .["eval/ppl"]}'
}
secs='def t: if . == null then null else (sub("\\.[0-9]+Z$"; "Z") | fromdateiso8601) end; ((.endTime | t) - (.startTime | t))'

if [[ ! -f $OUT/teacher-row.done ]]; then
  T=$(score "")
  jq --argjson e "$T" '.rows += [{recipe: "teacher", stage: "unquantized", eval: $e}]' "$RESULTS" >"$RESULTS.tmp" && mv "$RESULTS.tmp" "$RESULTS"
  touch "$OUT/teacher-row.done"
fi

adapter_mb() {  # the adapter's safetensors size in MB (10^6 bytes)
  local f=$1/adapter_model.safetensors
  [[ -f $f ]] && awk -v b="$(stat -c %s "$f")" 'BEGIN { printf "%.3f", b / 1e6 }' || echo null
}

# More LoRA ranks on the snapped checkpoint $SNAP_CK (LORA_RANKS, LORA_STEPS x SCALE steps each);
# appends to the caller's $rows.
run_loras() {  # label pipe
  local label=$1 pipe=$2 e
  local r
  for r in ${LORA_RANKS:-}; do
    [[ -n ${SNAP_CK:-} ]] || break
    local lout llog=$LOG/lora-$label-r$r.log lid lst lsec
    stamp "recipe $label: qat lora --rank $r on $SNAP_CK"
    if [[ -n ${REUSE:-} ]] && grep -q '^submitted job' "$llog" 2>/dev/null; then
      lid=$(sed -n 's/^submitted job \([0-9]*\).*/\1/p' "$llog" | head -1)
      stamp "recipe $label: REUSE: lora job $lid (the restarted daemon resumes it)"
      until "$QAT" --json status "$lid" | jq -e '.state | tostring | test("SUCCEEDED|FAILED|CANCELLED")' >/dev/null; do sleep 5; done
    else
    "$QAT" lora --model "$TEACHER" --checkpoint "$SNAP_CK" --kd-cache "$CACHE" --eval-samples "$EVAL_N" --rank "$r" \
      --max-steps "$(awk -v s="${LORA_STEPS:-1000}" -v k="$SCALE" 'BEGIN { n = int(s * k + 0.5); print (n < 1 ? 1 : n) }')" \
      --name "$label-lora-r$r" ${LORA_FLAGS:-} --wait >"$llog" 2>&1 || { tail -20 "$llog" >&2; continue; }
    lid=$(sed -n 's/^submitted job \([0-9]*\).*/\1/p' "$llog" | head -1)
    fi
    lst=$("$QAT" --json status "$lid")
    lsec=$(jq "$secs" <<<"$lst" 2>/dev/null || echo null)
    lout=$(jq -r '[.artifacts[]? | select(.kind == "adapter")][-1].path // empty' <<<"$lst")
    [[ -n $lout ]] || { echo "qat lora --rank $r: no adapter artifact" >&2; continue; }
    e=$(score "$SNAP_CK" "$([[ $pipe == q2 ]] && echo --v2)" "$lout")
    rows=$(jq --argjson e "$e" --arg r "$label" --arg st "lora-r$r" --arg a "$lout" --argjson mb "$(adapter_mb "$lout")" \
      --argjson sec "${lsec:-null}" --argjson job "$lst" \
      '. + [{recipe: $r, stage: $st, state: $job.state, steps: (($job.progress.done // null) | if . == null then null else tonumber end),
        seconds: $sec, eval: $e, adapter: $a, adapter_mb: $mb,
        trainer: ($job.result.metrics // {} | {kd_initial: .["eval/kd_initial"], kd_best: .["eval/kd_best"], kd_last: .["eval/kd"],
                  top1_last: .["eval/top1"], tokens_per_second: .["train/tokens_per_second"]})}]' <<<"$rows")
  done
}

run_recipe() {  # name pipeline flags...
  local name=$1 pipe=$2; shift 2
  local label=$name${TAG:+-$TAG} log=$LOG/$name${TAG:+-$TAG}.log id P start
  SNAP_CK=""
  local reused=""
  stamp "recipe $label: qat pipeline run $pipe $* (steps x $SCALE)"
  start=$(date +%s)
  if [[ -n ${REUSE:-} ]] && grep -q '^submitted pipeline' "$log" 2>/dev/null; then
    stamp "recipe $label: REUSE: scoring the pipeline its log names"  # a run whose scoring was cut short
    reused=1
  else
  # shellcheck disable=SC2086  # EXTRA is a list of flags
  "$QAT" pipeline run "$pipe" --model "$TEACHER" --kd-cache "$TRAIN_CACHE" --eval-samples "$EVAL_N" --steps-scale "$SCALE" \
    --name "$label" --max-new-tokens 32 "$@" ${EXTRA:-} --wait >"$log" 2>&1 || { tail -30 "$log" >&2; }
  fi
  local total=$(( $(date +%s) - start ))
  [[ -n ${reused:-} ]] && total=null  # trained in an earlier call: its end-to-end time is unknown
  cp "$log" "$OUT/" 2>/dev/null || true
  id=$(sed -n 's/^submitted pipeline \([0-9]*\).*/\1/p' "$log" | head -1)
  [[ -n $id ]] || { echo "recipe $label: not submitted" >&2; tail -20 "$log" >&2; return; }
  if [[ -n ${REUSE:-} ]]; then  # the restarted daemon resumes what was running: wait for the pipeline to end
    until "$QAT" --json pipeline status "$id" | jq -e '(.pipeline.state // .state) | tostring | test("SUCCEEDED|FAILED|CANCELLED")' >/dev/null; do
      sleep 5
    done
  fi
  P=$("$QAT" --json pipeline status "$id")
  echo "$P" >"$LOG/$label-pipeline.json"
  # PTQ (round-to-nearest): the first training stage's initial held-out eval, from its log.
  local first ptq
  first=$(jq -r '[.jobs[] | select(.stage == "scales")][0].id' <<<"$P")
  ptq=$("$QAT" logs "$first" 2>/dev/null | sed -n 's/.*initial held-out eval ([0-9]* sequences): kd \([-0-9.e+]*\), top-1 \([0-9.]*\), ppl \([0-9.e+]*\).*/{"kd": \1, "top1": \2, "ppl": \3}/p' | head -1)
  local rows="[]"
  rows=$(jq --argjson e "${ptq:-null}" --arg r "$label" '. + [{recipe: $r, stage: "ptq", eval: $e, seconds: 0}]' <<<"$rows")
  local n j
  n=$(jq '.jobs | length' <<<"$P")
  for ((j = 0; j < n; j++)); do
    local job stage ck v2="" e
    job=$(jq -c ".jobs[$j]" <<<"$P")
    stage=$(jq -r '.stage' <<<"$job")
    [[ $stage == infer ]] && continue
    local st adapter="" mb=null
    st=$("$QAT" --json status "$(jq -r '.id' <<<"$job")")
    ck=$(jq -r '[.artifacts[]? | select(.kind == "checkpoint")][-1].path // empty' <<<"$st")
    [[ $pipe == q2 && ( $stage == convert || $stage == v2 || $stage == snap || $stage == recover ) ]] && v2=--v2
    if [[ $stage == recover ]]; then  # LoRA adapters: scored on the snapped checkpoint with them applied
      adapter=$(jq -r '[.artifacts[]? | select(.kind == "adapter")][-1].path // empty' <<<"$st")
      ck=$SNAP_CK
      [[ -n $adapter ]] && mb=$(adapter_mb "$adapter")
    fi
    [[ $stage == snap ]] && SNAP_CK=$ck
    e=null
    [[ -n $ck ]] && e=$(score "$ck" "$v2" "$adapter")
    local sec
    sec=$(jq "$secs" <<<"$job" 2>/dev/null || echo null)
    rows=$(jq --argjson job "$job" --argjson e "$e" --arg r "$label" --arg ck "$ck" --argjson sec "${sec:-null}" \
      '. + [{recipe: $r, stage: $job.stage, state: $job.state,
        steps: (($job.progress.done // null) | if . == null then null else tonumber end),
        seconds: $sec, eval: $e,
        trainer: ($job.result.metrics // {} | {kd_initial: .["eval/kd_initial"], kd_best: .["eval/kd_best"], kd_last: .["eval/kd"],
                  top1_last: .["eval/top1"], tokens_per_second: .["train/tokens_per_second"]}),
        checkpoint: $ck}]' <<<"$rows")
    [[ -n $adapter ]] && rows=$(jq --arg a "$adapter" --argjson mb "$mb" '.[-1] += {adapter: $a, adapter_mb: $mb}' <<<"$rows")
  done
  run_loras "$label" "$pipe"
  jq --argjson rows "$rows" --arg flags "$pipe $* ${EXTRA:-}${TRAIN_REF_TRAIN:+ (trained on $TRAIN_CACHE)}" --argjson scale "$SCALE" --argjson total "$total" \
    --arg lab "$label" '.rows |= map(select(.recipe != $lab)) | .rows += ($rows | map(. + {flags: $flags, steps_scale: $scale})) | .recipes[$lab] = {flags: $flags, steps_scale: $scale, seconds: $total}' \
    "$RESULTS" >"$RESULTS.tmp" && mv "$RESULTS.tmp" "$RESULTS"
  stamp "recipe $label done in ${total}s"
}

# LORA_SNAP=<snapped V2 checkpoint>: no recipe; score it and run LORA_RANKS on it (label TAG).
lora_only() {
  local label=${TAG:-lora} rows e
  SNAP_CK=$LORA_SNAP
  e=$(score "$SNAP_CK" --v2)
  rows=$(jq -n --argjson e "$e" --arg r "$label" --arg ck "$SNAP_CK" '[{recipe: $r, stage: "snap", eval: $e, checkpoint: $ck}]')
  run_loras "$label" q2
  jq --argjson rows "$rows" --arg lab "$label" '.rows |= map(select(.recipe != $lab)) | .rows += $rows' "$RESULTS" >"$RESULTS.tmp" \
    && mv "$RESULTS.tmp" "$RESULTS"
}
[[ -n ${LORA_SNAP:-} ]] && { lora_only; RECIPES=""; }

for r in $RECIPES; do
  # shellcheck disable=SC2086  # the *_FLAGS are lists of flags
  case $r in
    q4) run_recipe q4 q4 $Q4_FLAGS ;;
    q2v1) run_recipe q2v1 q4 $Q2V1_FLAGS ;;
    q2prog) run_recipe q2prog q2 $Q2P_FLAGS ;;
    *) echo "unknown recipe $r (q4, q2v1, q2prog)" >&2 ;;
  esac
done

# --- 4: the table --------------------------------------------------------------------------------
bash "$ROOT/bench/quality/table.sh" "$RESULTS"
