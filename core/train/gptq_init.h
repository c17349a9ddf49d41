#pragma once
// GPTQ initialisation of a fresh V1 student (issue #18, quant rounding "gptq"; the rounding
// itself is core/quant/gptq.h). Before any training, each quantized layer's latent weight is
// replaced by its GPTQ rounding, computed with the layer's input Hessian H = X^T X / tokens from
// calibration sequences of the KD cache's TRAINING split. V2 layers (the Q4 -> Q2 conversion's
// `rounding: gptq`) are rounded the same way, with their signed scales, and GPTQ's indices
// become their frozen indices (ApplyGptqRoundingV2); while H is recorded a V2 layer runs
// unquantized as x W^T + b with its latent weight.
//
// Calibration, decoder layer by decoder layer (Qwen3ModelImpl::Embed / RunLayer / FinalNorm):
//   - the hidden states of the calibration sequences enter layer i as the *unquantized* model
//     computes them (the quantized layers run with fake quant off while H is recorded; with
//     quantized_inputs they are recomputed through the rounded layer i, GPTQ's own sequential
//     scheme);
//   - one H per distinct input: q/k/v share the attention input, gate/up the MLP input;
//     o_proj and down_proj have their own; lm_head (when quantized) the final-norm output.
//     fp32 [in, in] on the model's device, only layer i's at a time;
//   - then every V1 layer of layer i is rounded (ApplyGptqRounding, act_order on by default)
//     and its H dropped.
// Cost: one forward of the calibration sequences, plus the column loop of GPTQ per layer.
// Memory: the calibration hidden states twice (C * L * hidden in the model dtype) plus layer
// i's Hessians.
//
// Only the sequences of `split` are read (callers pass the train split of HeldOutSplits: the
// held-out sequences are never used for calibration). Deterministic for a given device.

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "core/kd/cache_reader.h"
#include "core/model/qwen3_model.h"
#include "core/quant/gptq.h"
#include "core/quant/linear_registry.h"

namespace qatd::train {

struct GptqInitOptions {
  int64_t sequences = 128;   // calibration sequences (evenly strided over the split; fewer if it is smaller)
  int64_t batch_size = 8;    // sequences per forward
  bool quantized_inputs = false;  // feed layer i+1 the output of the rounded layer i
  // act_order on: on the tiny test student it lowers the Q2 PTQ held-out KD further (uniform LUT
  // 1.240 -> 1.170, k-means 0.881 -> 0.806); quantized_inputs changed it by < 0.03 either way.
  quant::GptqOptions gptq{.act_order = true};
};

struct GptqInitReport {
  std::vector<int64_t> sequence_ids;  // the cache sequences calibrated on, ascending
  int64_t tokens = 0;                 // rows of X per Hessian
  int64_t layers = 0;                 // layers rounded
  double error_nearest = 0;           // sum over layers of tr(E H E^T) / tokens, round-to-nearest
  double error_gptq = 0;              // the same after GPTQ
  int64_t weights = 0;                // weights rounded
  int64_t indices_changed = 0;        // of them, indices that differ from round-to-nearest's
  int64_t index_mismatches = 0;       // layer indices != GPTQ's after the update (expected 0)
  int64_t dead_columns = 0;
};

// The calibration sequences: min(count, split.size()) indices evenly strided over `split`.
std::vector<int64_t> CalibrationSequences(kd::KdSplit split, int64_t count);

// Rounds every V1 and V2 layer of the model (in `registry`, none snapped) with GPTQ.
// INVALID_ARGUMENT for an empty split or bad options; the cache's errors as they come.
absl::StatusOr<GptqInitReport> GptqInitialize(model::Qwen3ModelImpl& model, quant::LinearRegistry& registry,
                                              const kd::KdCacheReader& reader, kd::KdSplit split,
                                              const GptqInitOptions& options = {});

}  // namespace qatd::train
