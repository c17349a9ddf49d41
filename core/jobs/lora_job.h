#pragma once
// The LORA job (issue #19; the seed's train_recovery_lora_multi.py): recovery LoRA adapters on
// a snapped V1 or V2 checkpoint, trained by top-k KD to win back what quantization lost.
//
// The checkpoint's quantized layers are frozen and never written (LUT, indices, scales: the
// job checks they are bit-identical at the end and fails INTERNAL otherwise). Adapters
// (core/train/lora.h) wrap the chosen projections; core/train/e2e_trainer.h trains only them,
// with its held-out evaluation (the snapped model's KD is the initial evaluation), keep-best,
// checkpoints and exact resume, data parallel when the job has several devices.
// Output (output_dir):
//   adapter/            the best adapters, PEFT layout (core/train/peft_adapter.h); artifact
//                       "adapter" (EVAL / GENERATE apply it with their `adapter` field)
//   merged/             a Hugging Face folder (core/jobs/export_job.h WriteHfFolder) whose
//                       adapted projections hold LUT[idx] ⊙ S + (alpha / r) B A in bf16 or
//                       fp16, for tools that cannot apply adapters; artifact "merged"
//   lora_result.json    initial (snapped) and best held-out KD, top-1, perplexity, steps
//   best/, resume/, training_log.csv   the trainer's files (best/ is a PEFT adapter folder)
// Metrics: eval/kd_initial, eval/kd_best, eval/top1_best, eval/ppl_best, lora/parameters.

#include "absl/status/status.h"
#include "core/common/reporter.h"
#include "core/jobs/lora_options.h"

namespace qatd::jobs {

absl::Status RunLora(const LoraJobOptions& options, Reporter& reporter, CancelToken& cancel);

}  // namespace qatd::jobs
