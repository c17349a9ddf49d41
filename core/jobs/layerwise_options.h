#pragma once
// The LAYERWISE job's options (seed train_anemll_lbl.py, spec §8).
// LibTorch-free (qatd_core_base): the daemon runs FromProto + Validate at submit time, the
// worker runs them again and hands the result to the job (core/jobs/*_job.h).

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/jobs/options_common.h"
#include "core/quant/quant_config.h"
#include "core/train/lbl_options.h"
#include "qatd/v1/specs.pb.h"
#include "qatd/v1/worker.pb.h"

namespace qatd::jobs {

// Field names and defaults follow proto/qatd/v1/specs.proto LayerwiseSpec (the seed's flags).
struct LayerwiseOptions {
  std::string model;               // required: HF model directory
  std::string kd_cache_dir;        // required
  std::string init_state;          // optional checkpoint to start from
  quant::QuantConfig quant;        // group_size 128 (train_anemll_lbl.py's default)
  Dtype dtype = Dtype::kAuto;      // auto = bf16 on CUDA, fp32 on the CPU
  bool train_scales = true;
  bool train_weights = false;
  bool train_mlp_only = false;
  double lr = 1e-3;                // --scale-lr
  int64_t batch_size = 32;         // --scale-batch-size
  int64_t epochs_per_layer = 2;    // --scale-epochs
  int64_t steps_per_layer = 0;     // --scale-steps; 0 = epochs decide
  int64_t grad_accum = 1;
  double temperature = 2.0;
  double local_weight = 0.5;
  double global_weight = 0.5;
  int64_t local_tokens = 128;
  double hard_top1_weight = 0.0;
  double hard_full_weight = 0.0;
  int64_t eval_samples = 100;      // held-out sequences (the cache's last)
  std::vector<int64_t> layers;     // empty = all layers, in order
  uint64_t seed = 0;
  std::string output_dir;          // required (--save-quantized-dir)
  std::string device = "auto";     // auto (cuda if available) | cpu | cuda | cuda:N
  // Data parallel: this rank's group, not owned (set by the worker, worker/data_parallel.h;
  // passed on by ToTrainerOptions). Rank 0 writes every file.
  train::DistGroup* dist = nullptr;
  bool resume = false;

  // Not in the seed: trainer settings with the reference's values.
  int64_t layer_eval_samples = 20;  // per-layer before/after (spec §8.1)
  int64_t logging_steps = 10;
  int64_t save_steps = 0;
  DurableHook after_durable;  // test seam (core/common/durable_hook.h)

  // INVALID_ARGUMENT naming the field and the allowed range/values for the first bad field.
  // The spec's fields over these defaults. `task` (null at submit time) places the job:
  // device, output directory, resume on a re-run.
  static absl::StatusOr<LayerwiseOptions> FromProto(const v1::LayerwiseSpec& spec, const v1::WorkerTask* task = nullptr);
  absl::Status Validate() const;
  // The trainer's options (no validation).
  train::LblOptions ToTrainerOptions() const;
};

}  // namespace qatd::jobs
