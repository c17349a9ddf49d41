#pragma once
// The QAT job (DESIGN.md §1): end-to-end training of a V1 or V2 student from the KD cache
// (seed train_anemll_qat.py and train_v2_simple.py, spec §9), then optional V1 snapping.
//
// Student: V1 from the base model (+ --init-state: a qatd checkpoint or the seed's .pt);
// V2 from a V1 checkpoint (converted, spec §5), a V2 checkpoint (resume a V2 state, e.g. after
// CONVERT q4-to-q2), or from scratch (SVD init); V2 indices are frozen before training.
// Training: core/train/e2e_trainer.h (held-out eval, best kept, exact resume).
// Output (output_dir):
//   final/              the result checkpoint (core/train/student.h layout + the seed's
//                       model_state_dict.pt and indices.pt); registered as artifact "checkpoint"
//   best/, resume/, training_log.csv   the trainer's files (best/ also gets best_state_dict.pt)
// Metrics at the end: eval/kd_initial, eval/kd_best, eval/kd_final (after the snap, when
// snapping), eval/top1_final, eval/ppl_final, model/dense_bytes, model/quantized_bytes.

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "core/jobs/reporter.h"
#include "core/quant/quant_config.h"

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
  int64_t testing_crash_after_step = 0;

  // Fills the version-dependent defaults (idempotent).
  void ApplyDefaults();
  // INVALID_ARGUMENT naming the field. Call after ApplyDefaults.
  absl::Status Validate() const;
};

absl::Status RunQat(QatOptions options, Reporter& reporter, CancelToken& cancel);

}  // namespace qatd::jobs
