#pragma once
// Built-in pipelines for `qat pipeline run q4|q2` (PipelineSpec DAGs, job.proto).
//
// q4 — the seed's documented 4-bit recipe (spec §9.2):
//   cache (KD_CACHE) -> scales (QAT V1, train_scales, lr 1e-3, 500 steps)
//   -> weights (QAT V1, train_weights, lr 5e-6, hard 0.1 / 0.0005, 3000 steps, init: scales)
//   -> both (QAT V1, train_weights + train_scales, lr 1e-6, 1000 steps, init: weights)
//   -> snap (QAT V1, skip_training + snap_weights, init: both)
//   -> infer (GENERATE from the snapped checkpoint)
// q2 — Q4 -> Q2 progressive (spec §11):
//   cache -> scales (QAT V1 Q4, as above) -> convert (CONVERT Q4_TO_Q2)
//   -> v2 (QAT V2 from the V2 checkpoint, train_scales) -> snap (SNAP) -> infer (GENERATE, V2)
// Both, with --recover-steps N > 0 (issue #19): snap -> recover (LORA: recovery adapters on the
// snapped checkpoint, --recover-rank / --recover-lr) -> infer, which then applies the adapter.
//
// Artifacts flow through ArtifactInput: KD_CACHE's "kd_cache" feeds kd_cache_dir; the
// "checkpoint" of QAT/CONVERT/SNAP feeds init_state (QAT V1), v2_checkpoint (QAT V2) or
// checkpoint (CONVERT, SNAP, GENERATE). With --kd-cache DIR the cache stage is left out and
// every stage reads DIR.
//
// Dtypes (issue #17): unset means auto, which the worker resolves from its device (bf16 on
// CUDA, fp32 on the CPU); --cache-dtype sets the cache stage's teacher dtype, --dtype every
// later stage's.
//
// Step counts and learning rates have flags. --recipe picks their defaults (issue #18):
//   qatd (the default): the settings the quality benchmark (bench/quality/README.md) found
//     better on a real teacher's held-out data: RecipeDefaultsFor() lists them;
//   seed: the seed's documented values, unchanged (spec §9.2, §11).
// An explicit flag always wins over either. --steps-scale F multiplies every step count (at
// least 1 step), for demos.

#include <CLI/CLI.hpp>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "client/spec_flags.h"
#include "qatd/v1/job.pb.h"

namespace qatd::client {

enum class Recipe { kQ4, kQ2 };

// The hyperparameters --recipe chooses (flags override each).
struct RecipeDefaults {
  double scales_lr = 1e-3;     // scales stage (q4 and q2)
  double scales_lr_2bit = 1e-3;  // the same with a 2-bit LUT (--lut-size 4, Q2 presets)
  std::optional<double> v2_lr;  // q2 v2 stage; unset = the V2 trainer's own default (5e-5)
  int v2_steps = 1000;          // q2 v2 stage: steps (before --steps-scale)
  std::string lut_init;        // q4 V1 stages' QuantSettings.lut_init when --lut-init is not given ("" = uniform)
  // q4 weights / both stages; a 2-bit LUT (--lut-size 4, Q2 presets) uses the *_2bit values.
  double weights_lr = 5e-6;
  double both_lr = 1e-6;
  double weights_lr_2bit = 5e-6;
  double both_lr_2bit = 1e-6;
  bool v2_train_lut = false;   // q2 v2 stage: QatSpec.train_lut
  std::string convert_rounding;  // q2 convert: ConvertSpec.rounding ("" = nearest)
  std::string convert_lut_init;  // q2 convert: ConvertSpec.lut_init ("" = values)
};
// "qatd" or "seed"; nullopt for anything else.
std::optional<RecipeDefaults> RecipeDefaultsFor(const std::string& name, Recipe recipe);

// "q4" / "q2", or nullopt for anything else.
std::optional<Recipe> RecipeByName(const std::string& name);

// Artifact kinds the daemon registers (server/README.md, core job kinds).
inline constexpr char kKdCacheArtifact[] = "kd_cache";
inline constexpr char kCheckpointArtifact[] = "checkpoint";
inline constexpr char kAdapterArtifact[] = "adapter";

class RecipeFlags {
 public:
  // Adds the recipe flags to `app` (`qat pipeline run`).
  void Register(CLI::App* app);
  // The pipeline for `recipe` from the parsed flags; INVALID_ARGUMENT naming the flag when a
  // required one is missing or a value is out of range.
  absl::StatusOr<v1::PipelineSpec> Build(Recipe recipe);

 private:
  v1::PipelineStage* AddStage(v1::PipelineSpec& pipeline, const std::string& name, const v1::JobSpec& spec);
  v1::JobSpec TrainStage(int steps, double lr) const;
  int Scaled(int steps) const;

  std::unique_ptr<SpecFlags> flags_;
  // Templates filled by the flags (only given flags set optional fields).
  v1::JobSpec job_;  // priority, resources, name
  v1::KdCacheSpec cache_;
  v1::QatSpec train_;  // shared training settings (quant, batch size, ...)
  v1::GenerateSpec infer_;
  v1::SnapSpec snap_;
  std::string kd_cache_dir_;
  int scales_steps_ = 500;
  std::string defaults_name_ = "qatd";  // --recipe
  std::optional<double> scales_lr_;
  int weights_steps_ = 3000;
  std::optional<double> weights_lr_;
  double weights_hard_top1_ = 0.1;
  double weights_hard_full_ = 0.0005;
  int lbl_steps_ = 0;  // steps per layer of a layerwise weights stage before E2E; 0 = none
  double lbl_lr_ = 2e-5;
  int both_steps_ = 1000;
  std::optional<double> both_lr_;
  std::optional<int> v2_steps_;  // unset: the recipe's (RecipeDefaults::v2_steps)
  std::optional<double> v2_lr_;
  bool v2_mlp_only_ = false;
  std::optional<bool> v2_train_lut_;
  std::string convert_rounding_;
  std::string convert_lut_init_;
  double steps_scale_ = 1.0;
  int recover_steps_ = 0;        // 0 = no recover stage
  std::optional<int> recover_rank_;
  std::optional<double> recover_lr_;
  std::string prompt_ = "What is the capital of France?";
};

}  // namespace qatd::client
