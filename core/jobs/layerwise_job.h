#pragma once
// The LAYERWISE job (DESIGN.md §1): layer-by-layer QAT of a V1 student from the KD cache
// (seed scripts/train_anemll_lbl.py --optimize-scales; the LBL weights stage of the notebook
// recipe with train_weights; spec §8).
//
// Steps: Validate -> LoadStudent (the base model quantized with `quant`, or `init_state`: a
// qatd checkpoint, whose own config decides the quantization, or the seed's .pt) ->
// core/train/lbl_trainer.h TrainLayerwise -> the result checkpoint.
//
// Output: output_dir itself is the result checkpoint (core/train/student.h layout: config.json
// with {"job": "layerwise", "result": {per-layer table, initial/final eval}}, model.safetensors,
// and the seed's model_state_dict.pt, indices.pt, plus quant_config.json as
// train_anemll_lbl.py --save-quantized-dir writes it, spec §8.3), registered as artifact
// "checkpoint". The trainer's resume/ and training_log.csv live in output_dir and are carried
// into the final directory (it replaces output_dir atomically). With resume = true a killed
// job continues from output_dir/resume.
//
// Metrics at the end: eval/kd_initial, eval/kd_final, eval/top1_initial, eval/top1_final
// (all eval_samples held-out sequences); during training the trainer's series.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/jobs/reporter.h"
#include "core/quant/quant_config.h"

namespace qatd::train {
struct LblOptions;
}  // namespace qatd::train

namespace qatd::jobs {

// Field names and defaults follow proto/qatd/v1/specs.proto LayerwiseSpec (the seed's flags).
struct LayerwiseOptions {
  std::string model;               // required: HF model directory
  std::string kd_cache_dir;        // required
  std::string init_state;          // optional checkpoint to start from
  quant::QuantConfig quant;        // group_size 128 (train_anemll_lbl.py's default)
  std::string dtype = "auto";      // auto (= bf16) | bf16 | fp16 | fp32
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
  bool resume = false;

  // Not in the seed: trainer settings with the reference's values.
  int64_t layer_eval_samples = 20;  // per-layer before/after (spec §8.1)
  int64_t logging_steps = 10;
  int64_t save_steps = 0;
  int64_t testing_crash_after_step = 0;  // test seam (lbl_trainer.h)

  // INVALID_ARGUMENT naming the field and the allowed range/values for the first bad field.
  absl::Status Validate() const;
  // The trainer's options (no validation).
  train::LblOptions ToTrainerOptions() const;
};

absl::Status RunLayerwise(const LayerwiseOptions& options, Reporter& reporter, CancelToken& cancel);

}  // namespace qatd::jobs
