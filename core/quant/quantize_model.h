#pragma once
// Model-level quantization: which projections get quantized (spec §1), in-place replacement,
// trainable sets (spec §3.6, §9.1), and the per-layer snaps / conversions applied to every
// quantized layer of a model.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "core/quant/linear_registry.h"
#include "core/quant/quant_config.h"
#include "core/quant/snap.h"
#include "core/quant/tensor_io.h"

namespace qatd::model {
class Qwen3ModelImpl;
}  // namespace qatd::model

namespace qatd::quant {

// A LinearRegistry over a Qwen3 model (core/model/qwen3_model.h); `model` must outlive it.
// ReplaceLinear checks the name and in/out features first (NOT_FOUND / INVALID_ARGUMENT).
std::unique_ptr<LinearRegistry> MakeQwen3Registry(model::Qwen3ModelImpl& model);

// Family of a module name (spec §1): "*.mlp.{gate,up,down}_proj" -> kMlp,
// "*.self_attn.{q,k,v,o}_proj" -> kAttention, "lm_head" -> kLmHead; nullopt otherwise.
std::optional<LinearKind> ClassifyLinear(std::string_view name);

struct QuantTarget {
  std::string name;
  LinearKind kind = LinearKind::kMlp;
};
// The names to quantize, in the given order: MLP always, attention if quantize_attn,
// lm_head if quantize_lm_head.
std::vector<QuantTarget> SelectQuantTargets(const std::vector<std::string>& names, bool quantize_attn,
                                            bool quantize_lm_head);

struct QuantizeReport {
  std::vector<std::string> replaced;         // newly quantized
  std::vector<std::string> already_quantized;  // selected but already a quantized layer; left alone
};

// Freezes every model parameter, then replaces each selected dense projection by a V1 layer
// built from its weight (and "bias" parameter, if any) with config.ForKind(kind). The new
// layers start frozen: call ApplyTrainableSet next. Errors leave earlier replacements in place
// and name the layer.
absl::StatusOr<QuantizeReport> QuantizeLinears(LinearRegistry& model, const QuantConfig& config);
// The same with V2 layers; freeze_q: call FreezeQ on each new layer (spec §9.3 does so right
// after init when training from scratch).
absl::StatusOr<QuantizeReport> QuantizeLinearsV2(LinearRegistry& model, const QuantConfigV2& config,
                                                 bool freeze_q = false);

// Trainable sets (spec §9.1): everything is frozen, then for each quantized layer (skipping
// attention projections when mlp_only): weights -> V1 weight; scales -> V1 A/B (or full
// scales), V2 A/B/g; g_only -> V2 g only. INVALID_ARGUMENT for weights on V2 layers (no
// gradient path, spec §4.5) and g_only on V1 layers (no magnitudes).
struct TrainableSet {
  bool weights = false;
  bool scales = false;
  bool g_only = false;
  bool mlp_only = false;
};
absl::Status ApplyTrainableSet(LinearRegistry& model, const TrainableSet& set);

// Every quantized layer, by name (QuantLinearV1 / QuantLinearV2), in registry order.
std::vector<std::pair<std::string, std::shared_ptr<model::LinearLayer>>> QuantizedLayers(LinearRegistry& model);

// FreezeQ on every V2 layer that is not frozen yet.
absl::Status FreezeAllQ(LinearRegistry& model);

// Snaps every V1 layer (mode kLut / kBakeScales) or every V2 layer (export bake, or the fp16
// ANE snap). Returns per-layer statistics with names.
absl::StatusOr<std::vector<SnapStats>> SnapAllV1(LinearRegistry& model, SnapMode mode);
absl::StatusOr<std::vector<SnapStats>> SnapAllV2ForExport(LinearRegistry& model);
absl::StatusOr<std::vector<SnapStats>> SnapAllV2ForAne(LinearRegistry& model, const AneSnapOptions& options = {});

// Q4 -> Q2 (spec §11) on every V2 layer with target.ForKind(kind); the random init of new
// rank components uses seed ^ FNV-1a(name). V1 -> V2 (spec §5) on every V1 layer.
absl::Status ConvertAllLutAndRank(LinearRegistry& model, const QuantConfigV2& target, uint64_t seed);
absl::Status ConvertAllV1ToV2(LinearRegistry& model, const QuantConfigV2& target);

// LayerState of every quantized layer, keys "<module name>.<tensor>".
TensorMap QuantState(LinearRegistry& model);
// LoadLayerState for every quantized layer from `state` (keys as QuantState writes them).
absl::Status LoadQuantState(LinearRegistry& model, const TensorMap& state);

}  // namespace qatd::quant
