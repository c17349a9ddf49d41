#!/usr/bin/env bash
# `qat health` against a real qatd (ctest qat_health_cli): SERVING and exit 0 while it serves,
# without the daemon's token; exit 3 once it is gone. Usage: qat_health_test.sh QATD QAT
set -euo pipefail
QATD=$1 QAT=$2
DIR=$(mktemp -d)
PID=""
trap '[[ -n $PID ]] && kill "$PID" 2> /dev/null; rm -rf "$DIR"' EXIT
echo secret-token > "$DIR/token"
"$QATD" --data-dir "$DIR/data" --listen 127.0.0.1:0 --metrics-address 127.0.0.1:0 \
  --token-file "$DIR/token" > "$DIR/qatd.log" 2>&1 &
PID=$!
for _ in $(seq 100); do [[ -s $DIR/data/qatd.port ]] && break; sleep 0.1; done
ADDR=127.0.0.1:$(cat "$DIR/data/qatd.port")
out=$("$QAT" health --address "$ADDR" --timeout 5)
[[ $out == SERVING ]] || { echo "expected SERVING, got '$out'"; exit 1; }
json=$("$QAT" --json health --address "$ADDR" --timeout 5)
[[ $json == '{"status":"SERVING"}' ]] || { echo "expected JSON SERVING, got '$json'"; exit 1; }
kill "$PID" && wait "$PID" || true
PID=""
set +e
"$QAT" health --address "$ADDR" --timeout 2 > /dev/null 2>&1
rc=$?
set -e
[[ $rc == 3 ]] || { echo "expected exit 3 with no daemon, got $rc"; exit 1; }
echo "qat health: SERVING (exit 0) while qatd runs, exit 3 after it stopped"
