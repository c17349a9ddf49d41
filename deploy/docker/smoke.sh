#!/usr/bin/env bash
# Builds the CPU image and runs it the way deploy/docker/README.md says, checking what a user
# relies on: the health check turns healthy, qatd runs as the unprivileged user, a job runs in a
# worker inside the container (PROBE: no model; and the q4 pipeline on a tiny random Qwen3 when
# build/tools/qat-model exists), the token is enforced, SIGTERM stops it
# cleanly, and the data dir volume keeps the job across a new container.
#   deploy/docker/smoke.sh                       # full multi-stage build (long: compiles qatd)
#   deploy/docker/smoke.sh --prebuilt build      # runtime stage only, with binaries built here
# Environment: ENGINE (podman or docker; default: whichever exists), IMAGE (default qatd:cpu-smoke),
# JOBS (compile jobs for the full build, default 1), FROM_HEAD=1 (build `git archive HEAD`).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ENGINE=${ENGINE:-$(command -v podman > /dev/null && echo podman || echo docker)}
IMAGE=${IMAGE:-localhost/qatd:cpu-smoke}
PREBUILT=""
[[ "${1:-}" == --prebuilt ]] && PREBUILT=$(cd "${2:?--prebuilt BUILD_DIR}" && pwd)
NAME=qatd-smoke-$$
VOLUME=qatd-smoke-data-$$
TMP=$(mktemp -d)
cleanup() {
  $ENGINE rm -f "$NAME" > /dev/null 2>&1 || true
  $ENGINE volume rm -f "$VOLUME" > /dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT
step() { echo "== $*"; }
FORMAT=()
[[ $ENGINE == podman ]] && FORMAT=(--format docker)  # OCI images drop HEALTHCHECK

if [[ -n $PREBUILT ]]; then
  # The Dockerfile with its build stage replaced by the binaries of $PREBUILT.
  step "building $IMAGE from deploy/docker/Dockerfile's runtime stage with binaries from $PREBUILT"
  mkdir -p "$TMP/ctx/bin"
  cp "$PREBUILT/server/qatd" "$PREBUILT/worker/qatd-worker" "$PREBUILT/client/qat" "$TMP/ctx/bin/"
  awk '/^FROM .* AS build$/ { print; print "COPY bin/ /out/usr/local/bin/"; skip = 1; next }
       /^FROM .* AS runtime$/ { skip = 0 }
       !skip' "$ROOT/deploy/docker/Dockerfile" > "$TMP/ctx/Dockerfile"
  $ENGINE build "${FORMAT[@]}" --network host -t "$IMAGE" -f "$TMP/ctx/Dockerfile" "$TMP/ctx"
else
  CONTEXT=$ROOT
  if [[ ${FROM_HEAD:-0} == 1 ]]; then  # the committed tree, not the work tree's edits
    CONTEXT=$TMP/head && mkdir -p "$CONTEXT"
    git -C "$ROOT" archive HEAD | tar -x -C "$CONTEXT"
  fi
  step "building $IMAGE from deploy/docker/Dockerfile (JOBS=${JOBS:-1}, context $CONTEXT)"
  $ENGINE build "${FORMAT[@]}" --network host --build-arg JOBS="${JOBS:-1}" -t "$IMAGE" \
    -f "$CONTEXT/deploy/docker/Dockerfile" "$CONTEXT"
fi

openssl rand -hex 32 > "$TMP/token"
chmod 0444 "$TMP/token"
start() {
  $ENGINE run -d --name "$NAME" -p 127.0.0.1::7433 -v "$VOLUME:/var/lib/qatd" \
    -v "$TMP/token:/run/secrets/qatd_token:ro" "$IMAGE" \
    --data-dir=/var/lib/qatd --listen=0.0.0.0:7433 --metrics-address=0.0.0.0:9464 \
    --token-file=/run/secrets/qatd_token --cancel-grace-seconds=120 > /dev/null
}
healthy() {
  if [[ $ENGINE == podman ]]; then
    $ENGINE healthcheck run "$NAME" > /dev/null 2>&1
  else
    [[ $($ENGINE inspect -f '{{.State.Health.Status}}' "$NAME") == healthy ]]
  fi
}
wait_healthy() {
  for _ in $(seq 60); do
    healthy && return 0
    sleep 1
  done
  $ENGINE logs "$NAME" | tail -20
  return 1
}
qat() { $ENGINE exec "$NAME" qat --token-file /run/secrets/qatd_token "$@"; }

step "run: health check"
start
wait_healthy
echo "healthy: $($ENGINE exec "$NAME" qat health --address 127.0.0.1:7433 --timeout 3)"
$ENGINE inspect -f 'HEALTHCHECK {{.Config.Healthcheck.Test}}' "$NAME"
step "runs as: $($ENGINE exec "$NAME" id)"
[[ $($ENGINE exec "$NAME" id -u) == 10001 ]]
step "a job without the token is refused"
if $ENGINE exec "$NAME" qat jobs > "$TMP/out" 2>&1; then
  echo "FAIL: qat jobs worked without a token"; exit 1
fi
grep -o 'rejected the call[^.]*' "$TMP/out"
step "a PROBE job runs in a qatd-worker inside the container"
qat probe --name smoke --steps 5 --step-ms 50 --devices 0 --wait
qat jobs
QAT_MODEL=${QAT_MODEL:-$ROOT/build/tools/qat-model}
if [[ -x $QAT_MODEL && -f $ROOT/tests/data/golden/qwen3-tokenizer/tokenizer.json ]]; then
  step "the q4 pipeline (KD cache, 3 QAT stages, snap, generate) on a tiny random Qwen3, in the container"
  mkdir -p "$TMP/models"
  "$QAT_MODEL" init --out "$TMP/models/tiny" --seed 0 --tokenizer "$ROOT/tests/data/golden/qwen3-tokenizer" > /dev/null
  "$QAT_MODEL" demo-data --out "$TMP/models/data.json" --records 64 --seed 0 > /dev/null
  chmod -R a+rX "$TMP/models"
  $ENGINE cp "$TMP/models" "$NAME:/tmp/models"
  qat pipeline run q4 --model /tmp/models/tiny --dataset /tmp/models/data.json --dataset-format alpaca_chat \
    --max-length 32 --top-k 8 --num-samples 32 --cache-batch-size 8 --batch-size 4 --eval-samples 4 \
    --steps-scale 0.004 --max-new-tokens 16 --dtype fp32 --wait > "$TMP/pipeline.log" 2>&1 ||
    { tail -30 "$TMP/pipeline.log"; exit 1; }
  sed -n '/^pipeline [0-9]* (q4):/,$p' "$TMP/pipeline.log"
else
  step "no qat-model at $QAT_MODEL (or no unpacked tokenizer): the pipeline step is skipped"
fi
step "a job still running at the stop"
LONG=$(qat probe --name long --steps 100 --step-ms 100 --devices 0 | sed -n 's/^submitted job \([0-9]*\).*/\1/p')
for _ in $(seq 40); do qat --json status "$LONG" | grep -q JOB_STATE_RUNNING && break; sleep 0.5; done
qat status "$LONG" | head -3
step "SIGTERM stops qatd cleanly"
$ENGINE stop -t 180 "$NAME" > /dev/null
$ENGINE inspect -f 'exit code {{.State.ExitCode}}' "$NAME"
[[ $($ENGINE inspect -f '{{.State.ExitCode}}' "$NAME") == 0 ]]
$ENGINE logs "$NAME" 2>&1 | grep -E 'received SIGTERM|qatd stopped'
$ENGINE rm "$NAME" > /dev/null
step "a new container on the same volume sees the job"
start
wait_healthy
qat jobs | tee "$TMP/jobs"
grep -q smoke "$TMP/jobs"
step "the job that was running at the stop ran again (re-queued) and succeeded"
qat watch "$LONG" | tail -1
qat logs "$LONG" | grep -E 'attempt [0-9]'
qat logs "$LONG" | grep -q 'attempt 2'
step "image size: $($ENGINE image inspect -f '{{.Size}}' "$IMAGE" | numfmt --to=iec)"
echo "smoke test passed"
