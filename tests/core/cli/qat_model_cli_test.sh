#!/usr/bin/env bash
# Drives the real qat-model binary: init -> tokenize/detokenize/logits/generate, and the main
# error paths. Usage: qat_model_cli_test.sh QAT_MODEL_BIN TEST_DATA_DIR
set -uo pipefail
BIN=$1
DATA=$2
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail=0
check() {  # check NAME CONDITION-COMMAND...
  local name=$1; shift
  if "$@"; then echo "ok   $name"; else echo "FAIL $name"; fail=1; fi
}
has() { grep -q -- "$2" <<<"$1"; }

M=$TMP/tiny
out=$("$BIN" init --out "$M" --seed 7 --tokenizer "$DATA/golden/qwen3-tokenizer" 2>&1)
check "init writes a model" test -f "$M/model.safetensors" -a -f "$M/config.json" -a -f "$M/tokenizer.json"
check "init reports parameters" has "$out" '"parameters"'
out=$("$BIN" init --out "$M" --tokenizer "$DATA/golden/qwen3-tokenizer" 2>&1); rc=$?
check "init refuses to overwrite" test $rc -ne 0
check "init overwrite error names --force" has "$out" "--force"

out=$("$BIN" tokenize --model "$M" --text "Hello, world")
check "tokenize" test "$out" = '{"count":3,"ids":[9707,11,1879]}'
out=$("$BIN" detokenize --model "$M" --ids '[9707,11,1879]')
check "detokenize" test "$out" = '{"text":"Hello, world"}'
out=$(echo '[{"role":"user","content":"Write a haiku about autumn leaves."}]' | "$BIN" tokenize --model "$M" --chat --no-thinking)
check "tokenize --chat matches the golden chat_001 ids" has "$out" '"ids":\[151644,872,198,7985,264,6386,38242,911,41674,10901,13,151645,198,151644,77091,198,151667,271,151668,271\]'

out=$("$BIN" logits --model "$DATA/golden/tiny-qwen3" --ids '[785,6722,315]' --top-k 3 2>&1)
check "logits prints top-3" has "$out" '"top":\[{"id"'
out=$("$BIN" logits --model "$M" --text "one two three" --top-k 2 --all-positions)
check "logits --all-positions has 3 positions" test "$(grep -o '"position"' <<<"$out" | wc -l)" -eq 3

out=$("$BIN" generate --model "$M" --prompt "Hi" --max-new-tokens 5 --ignore-eos --json)
check "generate --json produces 5 ids" test "$(grep -o '"ids":\[[^]]*\]' <<<"$out" | tr ',' '\n' | wc -l)" -eq 5
a=$("$BIN" generate --model "$M" --prompt "Hi" --max-new-tokens 6 --temperature 0.9 --top-p 0.9 --seed 3 --ignore-eos --json)
b=$("$BIN" generate --model "$M" --prompt "Hi" --max-new-tokens 6 --temperature 0.9 --top-p 0.9 --seed 3 --ignore-eos --json)
check "sampling is reproducible with a seed" test "$(grep -o '"ids":\[[^]]*\]' <<<"$a")" = "$(grep -o '"ids":\[[^]]*\]' <<<"$b")"
out=$("$BIN" generate --model "$M" --prompt "Hi" --chat --max-new-tokens 4 2>/dev/null); rc=$?
check "generate streams text" test $rc -eq 0

out=$("$BIN" logits --model "$TMP/nope" --text x 2>&1); rc=$?
check "missing model fails" test $rc -ne 0
check "missing model error names the path" has "$out" "$TMP/nope"
out=$("$BIN" detokenize --model "$M" --ids '[1,"x"]' 2>&1); rc=$?
check "bad ids rejected with exit 2" test $rc -eq 2
check "bad ids error names the element" has "$out" "element 1"
out=$("$BIN" generate --model "$M" --prompt "Hi" --top-p 0 2>&1); rc=$?
check "top-p 0 rejected" test $rc -ne 0
check "top-p error names the field" has "$out" "top_p"
out=$("$BIN" logits --model "$M" --ids '[999999]' 2>&1); rc=$?
check "out-of-vocab id rejected" has "$out" "outside the model's vocabulary"
out=$("$BIN" --help 2>&1)
check "--help lists subcommands" has "$out" "generate"
exit $fail
