#pragma once
// The EVAL job's options (held-out KD loss, top-1 agreement, perplexity).
// LibTorch-free (qatd_core_base): the daemon runs FromProto + Validate at submit time, the
// worker runs them again and hands the result to the job (core/jobs/*_job.h).

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/jobs/options_common.h"
#include "core/jobs/qat_options.h"
#include "qatd/v1/specs.pb.h"
#include "qatd/v1/worker.pb.h"

namespace qatd::train {
class DistGroup;
}

namespace qatd::jobs {

struct EvalJobOptions {
  std::string model;              // required
  std::string checkpoint;         // "" = the unquantized model
  std::string adapter;            // a LoRA adapter folder (PEFT layout, a LORA job's adapter/) applied on top; "" = none
  // The checkpoint's layers. A qatd checkpoint's config.json decides (V2 here must agree with
  // it); a seed .pt state_dict is loaded as these layers, V2 with the LUT sizes and ranks of
  // its tensors (core/train/seed_state.h). V2 needs a checkpoint.
  QatVersion version = QatVersion::kV1;
  std::string kd_cache_dir;       // required
  int64_t eval_samples = 40;      // the cache's last sequences (never trained on by qatd)
  double temperature = 2.0;
  int64_t batch_size = 8;
  Dtype dtype = Dtype::kAuto;     // auto = bf16 on GPU, fp32 on CPU
  std::string device = "auto";
  // Data parallel: this rank's group, not owned (set by the worker, worker/data_parallel.h):
  // rank r evaluates the r-th contiguous part of the held-out split and the sums are
  // all-reduced (train::EvaluateSharded), so every rank reports the whole split's numbers.
  train::DistGroup* dist = nullptr;
  // The spec's fields over these defaults. `task` (null at submit time) places the job:
  // device, output directory, resume on a re-run.
  static absl::StatusOr<EvalJobOptions> FromProto(const v1::EvalSpec& spec, const v1::WorkerTask* task = nullptr);
  absl::Status Validate() const;
};

}  // namespace qatd::jobs
