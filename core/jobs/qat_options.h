#pragma once
// The QAT job's options (seed train_anemll_qat.py / train_v2_simple.py, spec §9).
// LibTorch-free (qatd_core_base): the daemon runs FromProto + Validate at submit time, the
// worker runs them again and hands the result to the job (core/jobs/*_job.h).

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/quant/quant_config.h"
#include "core/train/e2e_options.h"
#include "qatd/v1/specs.pb.h"
#include "qatd/v1/worker.pb.h"

namespace qatd::jobs {

struct QatOptions {
  int version = 1;                // 1 | 2
  std::string model;              // required: HF model directory
  std::string kd_cache_dir;       // required unless skip_training
  std::string init_state;         // V1: checkpoint to start from
  quant::QuantConfig quant;       // V1 (group_size default 32 here, the QAT script's)
  quant::QuantConfigV2 quant_v2;  // V2 (default preset Q2_A4)
  std::string v2_init = "from_v1";  // from_v1 | from_v2 | from_scratch
  std::string v1_checkpoint;
  std::string v2_checkpoint;
  std::string dtype = "auto";     // auto = V1 bf16, V2 fp32
  std::string device = "auto";
  bool train_weights = false;
  bool train_scales = false;
  bool train_g_only = false;
  bool train_mlp_only = false;
  // Trainer settings; -1 / NaN = the version's seed default (V1 | V2):
  int64_t max_steps = 1000;
  int64_t batch_size = -1;        // 32 | 8
  double lr = -1;                 // 1e-5 | 5e-5
  double temperature = 2.0;
  double hard_top1_weight = -1;   // 0 | 0.2
  double hard_full_weight = -1;   // 0.0005 | 5e-5
  int64_t logging_steps = -1;     // 50 | 20
  int64_t eval_steps = -1;        // 200 | 100
  int64_t eval_samples = 40;
  int64_t save_steps = 0;
  int cosine = -1;                // -1 default (V1 off, V2 on), 0 off, 1 on
  int64_t warmup_steps = -1;      // 0 | 100
  double min_lr_ratio = 0.1;
  double clip_grad_norm = 0.0;
  int64_t grad_accum = 1;
  double weight_decay = 0.01;
  int64_t early_stop_patience = 0;
  bool snap_weights = false;
  bool snap_bake_scales = false;
  bool skip_training = false;
  uint64_t seed = 0;
  std::string output_dir;         // required
  bool resume = false;            // continue output_dir/resume (a re-run after a crash)
  bool v2_factored_forward = false;  // V2: the reference's per-rank STE forward (slow)
  bool seed_files = true;         // write model_state_dict.pt / indices.pt / best_state_dict.pt
  DurableHook after_durable;  // test seam (core/common/durable_hook.h)

  // Fills the version-dependent defaults (idempotent).
  void ApplyDefaults();
  // The end-to-end trainer's options for this job (no validation).
  train::E2eOptions ToE2eOptions() const;
  // INVALID_ARGUMENT naming the field. Call after ApplyDefaults.
  // The spec's fields over these defaults. `task` (null at submit time) places the job:
  // device, output directory, resume on a re-run.
  static absl::StatusOr<QatOptions> FromProto(const v1::QatSpec& spec, const v1::WorkerTask* task = nullptr);
  absl::Status Validate() const;
};

}  // namespace qatd::jobs
