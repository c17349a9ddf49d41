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
# demo-data: deterministic Alpaca JSON (or plain text for .txt)
out=$("$BIN" demo-data --out "$TMP/demo.json" --records 300 --seed 4)
check "demo-data reports the record count" has "$out" '"records":300'
check "demo-data writes alpaca records" has "$(head -c 2000 "$TMP/demo.json")" '"instruction"'
"$BIN" demo-data --out "$TMP/demo2.json" --records 300 --seed 4 >/dev/null
check "demo-data is deterministic" cmp -s "$TMP/demo.json" "$TMP/demo2.json"
"$BIN" demo-data --out "$TMP/demo3.json" --records 300 --seed 5 >/dev/null
check "demo-data seeds differ" test "$(cat "$TMP/demo.json")" != "$(cat "$TMP/demo3.json")"
out=$("$BIN" demo-data --out "$TMP/demo.txt" --records 50)
check "demo-data .txt is plain text" test "$(wc -l <"$TMP/demo.txt")" -eq 50
check "demo-data .txt reports plain" has "$out" '"format":"plain"'
out=$("$BIN" demo-data --out "$TMP/bad.json" --records 0 2>&1); rc=$?
check "demo-data rejects 0 records with exit 2" test $rc -eq 2
check "demo-data error names n" has "$out" "n (records)"

# pretrain: a short run on the demo data lowers the loss and writes a loadable model
out=$("$BIN" pretrain --model "$M" --dataset "$TMP/demo.json" --out "$TMP/teacher" --steps 12 --batch-size 4 \
      --warmup 2 --eval-blocks 2 --log-every 0 2>/dev/null); rc=$?
check "pretrain succeeds" test $rc -eq 0
check "pretrain prints a JSON summary" has "$out" '"heldout_after"'
first=$(grep -o '"first_loss":[0-9.e+-]*' <<<"$out" | cut -d: -f2)
last=$(grep -o '"last_loss":[0-9.e+-]*' <<<"$out" | cut -d: -f2)
check "pretrain lowers the loss" awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a - 0.5) }'
check "pretrain writes model + tokenizer" test -f "$TMP/teacher/model.safetensors" -a -f "$TMP/teacher/tokenizer.json" -a -f "$TMP/teacher/tokenizer_config.json"
out=$("$BIN" logits --model "$TMP/teacher" --text "What is 2 plus 3?" --top-k 1)
check "the pretrained model loads" has "$out" '"top":\[{"id"'
out=$("$BIN" pretrain --model "$M" --dataset "$TMP/demo.json" --out "$TMP/teacher" --steps 1 2>&1); rc=$?
check "pretrain refuses an existing --out" test $rc -ne 0
check "pretrain existing-out error names the path" has "$out" "already exists"
out=$("$BIN" pretrain --model "$M" --dataset "$TMP/demo.json" --out "$TMP/t0" --steps 0 2>&1); rc=$?
check "pretrain --steps 0 rejected with exit 2" test $rc -eq 2
check "pretrain error names steps" has "$out" "steps"
check "pretrain --steps 0 writes nothing" test ! -e "$TMP/t0"
out=$("$BIN" pretrain --help 2>&1)
check "pretrain --help has examples" has "$out" "qat-model pretrain --model"
out=$("$BIN" --help 2>&1)
check "--help lists subcommands" has "$out" "generate"
check "--help lists pretrain and demo-data" has "$out" "demo-data"
exit $fail
