#!/usr/bin/env bash
# Runs several recipe variants of bench/quality/run.sh side by side on one GPU host, each with its
# own daemon, work dir and results, on one shared teacher + cache; then (LORA_OF) recovery LoRA at
# several ranks on one variant's snapped checkpoint, also side by side. README.md here.
#   bench/quality/par.sh full|short LABEL:RECIPE:FLAGS[:K/R] ...   (K/R: train on a recache.py cache)
#   e.g. bench/quality/par.sh full "r1:q2prog:--preset Q4_A4" "r3:q2v1:--lut-size 4 --quantize-attn --rounding gptq"
# Env: BUILD (default ./build-gpu; built first if missing), QB (the teacher + cache work dir,
#   default $BUILD/qb; built with make_bench.sh if missing), CAP_SECONDS (stop waiting after this
#   many seconds, default 540: a lent device machine runs a command for at most 600 s), SHA,
#   LORA_OF (a LABEL), LORA_RANKS (default "8 16 32"), LORA_STEPS (default 1000 x the step scale).
# Variant LABEL writes $BUILD/o-LABEL/{quality.json,run.log} and works in $BUILD/w-LABEL; what
# ended when is appended to $BUILD/par.log. Run the
# same command again (on the same, still warm, machine) and every variant whose pipeline was
# submitted is scored again without training again (run.sh REUSE): a call cut short by the
# limit loses no training. LoRA rank R writes $BUILD/o-LABEL-loraR.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
MODE=${1:?usage: par.sh full|short LABEL:RECIPE:FLAGS ...}; shift
BUILD=${BUILD:-$ROOT/build-gpu}
QB=${QB:-$BUILD/qb}
CAP=${CAP_SECONDS:-540}
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 ))s] $*" >&2; }
export LD_LIBRARY_PATH=/opt/deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
SHA=${SHA:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}
if [[ -z ${QUALITY:-} ]]; then
  if [[ -f /work/shared/quality/make_bench.sh ]]; then QUALITY=/work/shared/quality; else QUALITY=$ROOT/bench/quality/.shared/quality; fi
fi
mkdir -p "$BUILD"
BP=""
if [[ ! -x $BUILD/server/qatd ]]; then
  stamp "building qatd into $BUILD"
  TARGETS=${TARGETS:-"qatd qatd-worker qat qat-kd-cache"} bash "$ROOT/scripts/gpu/build.sh" "$ROOT" "$BUILD" -DQATD_ASAN_TESTS=OFF \
    >"$BUILD/par-build.log" 2>&1 &
  BP=$!
fi
if [[ ! -f $QB/kd/eval/meta.json ]]; then
  stamp "teacher + cache (make_bench.sh, seed 7) into $QB"
  rm -rf "$QB"
  SEED=7 bash "$QUALITY/make_bench.sh" "$QB" >"$BUILD/par-make_bench.log" 2>&1 || { tail -20 "$BUILD/par-make_bench.log" >&2; exit 1; }
fi
if [[ -n $BP ]]; then wait "$BP" || { tail -30 "$BUILD/par-build.log" >&2; exit 1; }; fi
stamp "qatd and the teacher are ready"

common=(TEACHER="$QB/teacher" REF_TRAIN="$QB/kd/train" REF_EVAL="$QB/kd/eval" BUILD="$BUILD" SHA="$SHA" REUSE=1)
# A variant's fourth field K/R (e.g. 32/64): train on the benchmark's sequences re-cached with the
# teacher's top-K and R random negatives (recache.py, once per K/R, into $QB/kd-K-R).
recache() {  # K/R: prints the folder
  local k=${1%/*} r=${1#*/} d
  d=$QB/kd-$k-$r
  (
    flock 9
    if [[ ! -f $d/eval/meta.json ]]; then
      QUALITY=$QUALITY python3 "$ROOT/bench/quality/recache.py" --teacher "$QB/teacher" --src "$QB/kd" --out "$d" \
        --topk "$k" --rand-neg "$r" >"$BUILD/recache-$k-$r.log" 2>&1 || { tail -5 "$BUILD/recache-$k-$r.log" >&2; exit 1; }
    fi
  ) 9>"$BUILD/recache.lock" || return 1
  echo "$d"
}
variant() {  # label recipe flags [K/R]
  local label=$1 recipe=$2 flags=$3 cache=${4:-} var tc=()
  case $recipe in q4) var=Q4_FLAGS ;; q2v1) var=Q2V1_FLAGS ;; q2prog) var=Q2P_FLAGS ;; *) echo "unknown recipe $recipe" >&2; return 2 ;; esac
  mkdir -p "$BUILD/o-$label"
  if jq -e '.recipes // {} | length > 0' "$BUILD/o-$label/quality.json" >/dev/null 2>&1; then
    stamp "$label: already scored by an earlier call"; return 0
  fi
  if [[ -n $cache ]]; then
    local d
    d=$(recache "$cache") || { stamp "$label: recache.py $cache failed"; return 1; }
    tc=(TRAIN_REF_TRAIN="$d/train" TRAIN_REF_EVAL="$d/eval")
  fi
  rm -f "$BUILD/w-$label/d/qatd.port"
  env "${common[@]}" "${tc[@]}" LORA_RANKS= "$var=$flags" RECIPES="$recipe" TAG="$label" WORK="$BUILD/w-$label" OUT="$BUILD/o-$label" \
    bash "$ROOT/bench/quality/run.sh" "$MODE" >>"$BUILD/o-$label/run.log" 2>&1
  stamp "$label ($recipe $flags) ended: rc $?"
}
wait_all() {  # pids...: until all ended or the cap
  while (( $(date +%s) - t0 < CAP )); do
    local alive=0 p
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [[ $alive == 0 ]] && return 0
    sleep 2
  done
  stamp "cap of ${CAP}s reached: the rest goes on only while this command runs (run par.sh again to score it)"
  return 1
}
lora_of() {  # waits (up to the cap) for LORA_OF's scored snap, then one LoRA per rank, side by side
  local snap="" lpids=() r
  while (( $(date +%s) - t0 < CAP )); do
    snap=$(jq -r '[.rows[] | select(.stage == "snap") | .checkpoint // empty][-1] // empty' "$BUILD/o-$LORA_OF/quality.json" 2>/dev/null)
    [[ -n $snap ]] && break
    sleep 5
  done
  [[ -n $snap ]] || { stamp "LORA_OF=$LORA_OF: no scored snap stage in $BUILD/o-$LORA_OF/quality.json"; return 1; }
  stamp "LoRA ranks ${LORA_RANKS:-8 16 32} on $LORA_OF's snap $snap"
  for r in ${LORA_RANKS:-8 16 32}; do
    mkdir -p "$BUILD/o-$LORA_OF-lora$r"
    jq -e '[.rows[] | select(.adapter != null)] | length > 0' "$BUILD/o-$LORA_OF-lora$r/quality.json" >/dev/null 2>&1 && continue
    rm -f "$BUILD/w-$LORA_OF-lora$r/d/qatd.port"
    ( env "${common[@]}" LORA_SNAP="$snap" LORA_RANKS="$r" TAG="$LORA_OF" WORK="$BUILD/w-$LORA_OF-lora$r" \
        OUT="$BUILD/o-$LORA_OF-lora$r" bash "$ROOT/bench/quality/run.sh" "$MODE" >>"$BUILD/o-$LORA_OF-lora$r/run.log" 2>&1
      stamp "lora rank $r on $LORA_OF ended: rc $?" ) &
    lpids+=($!)
  done
  wait "${lpids[@]}"
}
pids=()
for spec in "$@"; do
  IFS=: read -r label recipe flags cache <<<"$spec"
  variant "$label" "$recipe" "$flags" "$cache" >>"$BUILD/par.log" 2>&1 &  # not our stdout: a capped run must not hold it
  pids+=($!)
done
# LoRA starts as soon as its variant is scored (or at once when an earlier call scored it),
# beside the other variants still training.
[[ -n ${LORA_OF:-} ]] && { lora_of >>"$BUILD/par.log" 2>&1 & pids+=($!); }
(( ${#pids[@]} )) && wait_all "${pids[@]}"
cat "$BUILD/par.log" 2>/dev/null
for f in "$BUILD"/o-*/quality.json; do bash "$ROOT/bench/quality/table.sh" "$f" 2>/dev/null; echo; done
