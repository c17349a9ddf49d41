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
# Recovery LoRA rows: the share of the snapped model's KD gap to the teacher that the adapters win
# back, and that share per MB of adapter.
jq -r '
  def f(n): if . == null then "-" else (. * pow(10; n) | round / pow(10; n) | tostring) end;
  ((.rows | map(select(.recipe == "teacher"))[0].eval.kd) // 0) as $t
  | (.rows | map(select(.stage == "snap")) | map({key: .recipe, value: .eval.kd}) | from_entries) as $snap
  | [.rows[] | select(.adapter_mb != null and .eval.kd != null and ($snap[.recipe] // null) != null)] as $l
  | if ($l | length) == 0 then empty else
      "", (["recipe", "lora", "adapter_MB", "snap_kd", "kd", "gap_won", "gap_won/MB"] | @tsv),
      ($l[] | (($snap[.recipe] - .eval.kd) / ($snap[.recipe] - $t)) as $won
        | [.recipe, .stage, (.adapter_mb | f(2)), ($snap[.recipe] | f(4)), (.eval.kd | f(4)), ($won | f(3)), ($won / .adapter_mb | f(4))] | @tsv)
    end
' "$1" | { if command -v column >/dev/null; then column -t -s $'\t'; else cat; fi; }
jq -r '.recipes // {} | to_entries[] | "\(.key): \(.value.seconds) s end to end (steps x \(.value.steps_scale)): \(.value.flags)"' "$1"
