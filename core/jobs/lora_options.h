#pragma once
// The LORA job's options (issue #19; the seed's train_recovery_lora_multi.py): recovery LoRA
// adapters on a snapped V1 or V2 checkpoint, trained by the end-to-end trainer's KD loss.
// LibTorch-free (qatd_core_base): the daemon runs FromProto + Validate at submit time, the
// worker runs them again and hands the result to RunLora (core/jobs/lora_job.h).
//
// Defaults are qatd's (the seed script's values are not in the spec): rank 16, alpha 2 x rank,
// dropout 0, all seven projections, lr 2e-4 with cosine decay, batch 8, weight decay 0, no
// hard-label terms, evaluation every 100 steps on 40 held-out sequences.

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/jobs/options_common.h"
#include "core/train/e2e_options.h"
#include "core/train/lora_options.h"
#include "qatd/v1/specs.pb.h"
#include "qatd/v1/worker.pb.h"

namespace qatd::jobs {

struct LoraJobOptions {
  std::string model;             // required: the base HF model directory
  std::string checkpoint;        // required: a qatd checkpoint (snapped V1 or V2)
  Dtype dtype = Dtype::kAuto;    // the student: auto = bf16 on CUDA, fp32 on the CPU
  std::string device = "auto";
  train::LoraConfig lora;        // rank, alpha, dropout, target modules, adapter dtype, seed
  train::E2eOptions train = TrainDefaults();  // kd_cache_dir, output_dir, schedule, eval, resume
  bool write_merged = true;      // merged/: the adapters merged into 16-bit weights
  Dtype merged_dtype = Dtype::kBf16;  // kBf16 or kFp16
  // Data parallel (the worker sets it; nullptr = one rank): copied into the trainer's options.
  train::DistGroup* dist = nullptr;

  static train::E2eOptions TrainDefaults() {
    train::E2eOptions t;
    t.batch_size = 8;
    t.lr = 2e-4;
    t.weight_decay = 0.0;
    t.hard_full_weight = 0.0;
    t.logging_steps = 20;
    t.eval_steps = 100;
    t.cosine = true;
    return t;
  }

  // The spec's fields over the defaults; `task` (null at submit time) places the job.
  static absl::StatusOr<LoraJobOptions> FromProto(const v1::LoraSpec& spec, const v1::WorkerTask* task = nullptr);
  absl::Status Validate() const;  // INVALID_ARGUMENT naming the field
};

}  // namespace qatd::jobs
