#!/usr/bin/env bash
# Prints bench/quality/run.sh's JSON as one table: recipe, stage, held-out KD (and / PTQ), top-1,
# perplexity, steps, wall seconds, training tokens/s.   table.sh quality.json
set -euo pipefail
jq -r '"sha \(.sha) (\(.modified_tracked_files) modified tracked files)  gpu \(.gpu)  seed \(.seed)  held-out sequences \(.held_out_sequences)"' "$1"
jq -r '
  def f(n): if . == null then "-" else (. * pow(10; n) | round / pow(10; n) | tostring) end;
  (.rows | map(select(.stage == "ptq")) | map({key: .recipe, value: .eval.kd}) | from_entries) as $ptq
  |     (["recipe", "stage", "kd", "kd/ptq", "top1", "ppl", "steps", "seconds", "train_tok/s"] | @tsv),
    (.rows[] | [.recipe, .stage, (.eval.kd | f(4)),
      (if .eval.kd != null and ($ptq[.recipe] // null) != null then (.eval.kd / $ptq[.recipe]) | f(3) else "-" end),
      (.eval.top1 | f(4)), (.eval.ppl | f(3)), (.steps // "-" | tostring), (.seconds | f(0)),
      (.trainer.tokens_per_second | f(0))] | @tsv)
' "$1" | { if command -v column >/dev/null; then column -t -s $'\t'; else cat; fi; }
jq -r '.recipes // {} | to_entries[] | "\(.key): \(.value.seconds) s end to end (steps x \(.value.steps_scale)): \(.value.flags)"' "$1"
