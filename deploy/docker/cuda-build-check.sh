#!/usr/bin/env bash
# On a GPU host without a container engine: runs the build step of Dockerfile.cuda as it is
# written there (scripts/gpu/build.sh with TARGETS and the same CMake flags, the torch venv's
# python first on PATH), then checks what the runtime stage relies on: the three binaries
# resolve every library from /opt/deps plus the torch wheel alone, and qatd runs a job on a GPU.
#   deploy/docker/cuda-build-check.sh [VENV] [OUT]     (VENV default /opt/torch/.venv)
# Needs scripts/gpu/debs/ (scripts/gpu/fetch-debs.sh). Writes build.log and qatd.log to OUT.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VENV=${1:-/opt/torch/.venv}
OUT=${2:-/tmp/cuda-build-check}
BUILD=/tmp/cuda-build-check-build
mkdir -p "$OUT"
start=$(date +%s)
PATH=$VENV/bin:$PATH TARGETS="qatd qatd-worker qat" \
  "$ROOT/scripts/gpu/build.sh" "$ROOT" "$BUILD" -DQATD_BUILD_TESTS=OFF -DQATD_ASAN_TESTS=OFF \
  -DQATD_CUDA_KERNELS=ON -DCMAKE_CUDA_ARCHITECTURES=90 > "$OUT/build.log" 2>&1
rc=$?
echo "build rc=$rc in $(($(date +%s) - start)) s; $(grep -m1 'fused CUDA kernels' "$OUT/build.log")"
((rc == 0)) || { grep -E 'error|FAILED' "$OUT/build.log" | head -20; exit 1; }

# The runtime image: LD_LIBRARY_PATH=/opt/deps/usr/lib/x86_64-linux-gnu, the venv at the same path.
export LD_LIBRARY_PATH=/opt/deps/usr/lib/x86_64-linux-gnu
missing=0
for b in server/qatd worker/qatd-worker client/qat; do
  if ldd "$BUILD/$b" | grep 'not found'; then missing=1; fi
  echo "$b: $(ldd "$BUILD/$b" | grep -c '=> /') libraries, torch from: $(ldd "$BUILD/$b" | grep -o '/[^ ]*libtorch_cuda.so' | head -1)"
done
((missing == 0)) || { echo "unresolved libraries"; exit 1; }

D=$(mktemp -d)
"$BUILD/server/qatd" --data-dir "$D/data" --listen 127.0.0.1:0 --metrics-address 127.0.0.1:0 > "$OUT/qatd.log" 2>&1 &
PID=$!
for _ in $(seq 100); do [[ -s $D/data/qatd.port ]] && break; sleep 0.1; done
ADDR=127.0.0.1:$(cat "$D/data/qatd.port")
Q=("$BUILD/client/qat" --address "$ADDR")
"${Q[@]}" health
"${Q[@]}" server | head -12
"${Q[@]}" probe --name cuda-check --steps 5 --step-ms 20 --devices 1 --wait
rc=$?
kill "$PID"; wait "$PID"
rm -rf "$D"
echo "probe on a GPU: rc=$rc"
exit $rc
