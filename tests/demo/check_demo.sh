#!/usr/bin/env bash
# Runs `demo.sh --quick --no-build --build-dir BUILD_DIR` and checks its summary table:
# the q4 model's held-out KD loss falls from the initial quantized model to the trained and
# snapped ones, and the q2 model's from the converted Q2 model to the V2-trained one.
#   check_demo.sh SCRIPTS/demo.sh BUILD_DIR
set -uo pipefail
DEMO=${1:?demo.sh path}
BUILD_DIR=${2:?build dir}
OUT=$(mktemp "${TMPDIR:-/tmp}/demo-quick.XXXXXX.log")
trap 'rm -f "$OUT"' EXIT

NO_COLOR=1 "$DEMO" --quick --no-build --build-dir "$BUILD_DIR" 2>&1 | tee "$OUT"
rc=${PIPESTATUS[0]}
fail=0
check() { echo "FAIL: $*"; fail=1; }
((rc == 0)) || check "demo.sh exited with $rc"

# The KD loss of the summary row whose label is $2, in the section opened by the row $1.
value() {
  awk -v section="$1" -v label="$2" '
    index($0, "  " section) == 1 { in_section = 1; next }
    /^$/ { in_section = 0 }
    in_section && index($0, "  " label " ") == 1 {
      split(substr($0, length("  " label) + 1), f, " "); print f[1]; exit
    }' "$OUT"
}
less() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && b != "" && a + 0 < b + 0) }'; }
finite() { [[ $1 =~ ^[0-9]+\.[0-9]+$ ]]; }

q4_initial=$(value "q4 (" "initial quantized model")
q4_weights=$(value "q4 (" "after weights")
q4_snapped=$(value "q4 (" "snapped (final q4 model)")
q2_converted=$(value "q2 (" "converted to Q2")
q2_trained=$(value "q2 (" "V2 trained")
q2_snapped=$(value "q2 (" "snapped (final q2 model)")
echo
echo "check: q4 initial=$q4_initial weights=$q4_weights snapped=$q4_snapped;" \
  "q2 converted=$q2_converted trained=$q2_trained snapped=$q2_snapped"
for v in q4_initial q4_weights q4_snapped q2_converted q2_trained q2_snapped; do
  finite "${!v}" || check "$v is not a number: '${!v}'"
done
less "$q4_weights" "$q4_initial" || check "q4: KD loss after weights ($q4_weights) is not below the initial quantized model's ($q4_initial)"
less "$q4_snapped" "$q4_initial" || check "q4: snapped KD loss ($q4_snapped) is not below the initial quantized model's ($q4_initial)"
less "$q2_trained" "$q2_converted" || check "q2: V2-trained KD loss ($q2_trained) is not below the converted model's ($q2_converted)"
less "$q2_snapped" "$q2_converted" || check "q2: snapped KD loss ($q2_snapped) is not below the converted model's ($q2_converted)"
grep -q '^  q4 snapped: .\+' "$OUT" || check "no q4 inference sample"
grep -q '^  q2 snapped: .\+' "$OUT" || check "no q2 inference sample"
grep -q '^Model size' "$OUT" || check "no model size line"
if ((fail)); then echo "demo check: FAILED"; exit 1; fi
echo "demo check: passed"
