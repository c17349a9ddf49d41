#pragma once
// Quantization settings for Anemll-style LUT QAT (spec §3.1, §4.1, §16.7).
//
// Two levels:
//   * LayerQuantSpec / LayerQuantSpecV2: what one quantized linear needs.
//   * QuantConfig (V1) / QuantConfigV2: the model-level settings with the seed's field names
//     (lut_size, group_size, scale_rank, quantize_attn, attn_*, quantize_lm_head, ...), from
//     which the per-layer spec of an MLP, attention or lm_head projection is derived.
//
// Defaults are the reference dataclass defaults (AnemllQuantConfig / AnemllQuantConfigV2);
// the presets (Q4_A4, Q2_A4, Q4_A4_R32, Q2_A2) carry the training-script values.
// LibTorch-free: the CLI and server validate configs without loading ATen.

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace qatd::quant {

// Which family a projection belongs to (spec §1).
enum class LinearKind { kMlp, kAttention, kLmHead };

// Group padding along the input dimension (spec §3.2):
//   pad = (-in) mod group_size, padded_in = in + pad, num_groups = padded_in / group_size.
struct GroupPadding {
  int64_t pad = 0;
  int64_t padded_in = 0;
  int64_t num_groups = 0;
};
// group_size must be >= 1 (validated by the specs below).
GroupPadding ComputeGroupPadding(int64_t in_features, int64_t group_size);

// How a V1 layer's LUT starts (issue #18, lut_fit.h): the pinned uniform grid (the reference),
// or the weighted 1-D k-means of the layer's own W / S.
enum class LutInit { kUniform, kKMeans };
std::string_view LutInitName(LutInit init);  // "uniform" | "kmeans"
absl::StatusOr<LutInit> ParseLutInit(std::string_view name);

// How a fresh V1 student's weights are rounded onto the LUT before training (issue #18):
// round-to-nearest of W / S (the reference), or GPTQ (core/quant/gptq.h) with each layer's input
// Hessian from `calibration_sequences` sequences of the KD cache's training split
// (core/train/gptq_init.h). Applied by LoadStudent on a fresh start only, not by QuantizeLinears.
enum class Rounding { kNearest, kGptq };
std::string_view RoundingName(Rounding rounding);  // "nearest" | "gptq"
absl::StatusOr<Rounding> ParseRounding(std::string_view name);
inline constexpr int kDefaultCalibrationSequences = 128;

// Per-layer V1 settings.
struct LayerQuantSpec {
  int lut_size = 16;         // LUT entries, power of two in [2, 256]
  int group_size = 128;      // block length along `in` for the scale init (>= 1)
  int scale_rank = 4;        // rank of A@B; 0 (or >= min(out, padded_in)) = full per-weight scales
  bool lut_include_zero = false;
  LutInit lut_init = LutInit::kUniform;  // applied by QuantizeLinears, not by the layer itself

  // Field ranges only. INVALID_ARGUMENT names the field and range.
  absl::Status Validate() const;
  // Validate() plus scale_rank within [0, min(out, padded_in)] for a layer of this shape.
  absl::Status ValidateForShape(int64_t out_features, int64_t in_features) const;
  // True when the layer uses the A@B factorisation (0 < rank < min(out, padded_in)).
  bool LowRank(int64_t out_features, int64_t in_features) const;
};

enum class PositiveScaleMethod { kAbs, kSoftplus };
enum class MagnitudeActivation { kIdentity, kAbs, kSoftplus };

// Per-layer V2 settings (spec §4.1).
struct LayerQuantSpecV2 {
  int lut_size = 16;
  int group_size = 128;  // init only
  int scale_rank = 4;    // must be >= 1
  bool lut_include_zero = false;
  bool force_positive_scales = true;
  PositiveScaleMethod positive_scale_method = PositiveScaleMethod::kAbs;
  MagnitudeActivation magnitude_activation = MagnitudeActivation::kSoftplus;
  double magnitude_eps = 1e-6;  // added to act(g), even for identity
  double norm_eps = 1e-6;       // floor on column/row norms
  bool use_ste_fp16 = false;    // round forward intermediates to fp16, identity backward

  absl::Status Validate() const;
  // Validate() plus scale_rank within [1, min(out, in)] (V2 does not pad).
  absl::Status ValidateForShape(int64_t out_features, int64_t in_features) const;
};

// V1 model-level config: AnemllQuantConfig plus the script's attention / lm_head switches.
// attn_* overrides: 0 (sizes) or -1 (rank) mean "use the MLP value" (train_anemll_*.py).
struct QuantConfig {
  int lut_size = 16;
  int group_size = 128;
  int scale_rank = 4;
  bool lut_include_zero = false;
  bool quantize_attn = false;  // the scripts' --quantize-attn defaults to off
  int attn_lut_size = 0;
  int attn_group_size = 0;
  int attn_scale_rank = -1;
  bool quantize_lm_head = false;  // lm_head uses the MLP settings
  LutInit lut_init = LutInit::kUniform;  // JSON "lut_init", written only when not uniform
  Rounding rounding = Rounding::kNearest;  // JSON "rounding", written only when not nearest
  // GPTQ calibration sequences (>= 1); JSON "calibration_sequences", written with rounding gptq.
  int calibration_sequences = kDefaultCalibrationSequences;

  // The spec for one projection family (overrides resolved).
  LayerQuantSpec ForKind(LinearKind kind) const;
  // Checks every field and the resolved per-kind specs.
  absl::Status Validate() const;
  // "Q4_A4", "Q2_A4", "Q4_A4_R32", "Q2_A2" (case and '_' insensitive); group 32, attention on.
  static absl::StatusOr<QuantConfig> FromPreset(std::string_view name);
};

// V2 model-level config (AnemllQuantConfigV2 + attention / lm_head switches).
struct QuantConfigV2 {
  int lut_size = 16;
  int group_size = 128;
  int scale_rank = 4;
  bool lut_include_zero = false;
  bool quantize_attn = false;
  int attn_lut_size = 0;
  int attn_group_size = 0;
  int attn_scale_rank = -1;
  bool quantize_lm_head = false;
  bool force_positive_scales = true;
  PositiveScaleMethod positive_scale_method = PositiveScaleMethod::kAbs;
  MagnitudeActivation magnitude_activation = MagnitudeActivation::kSoftplus;
  double magnitude_eps = 1e-6;
  double norm_eps = 1e-6;
  bool use_ste_fp16 = false;

  LayerQuantSpecV2 ForKind(LinearKind kind) const;
  absl::Status Validate() const;
  // Presets of train_v2_simple (spec §16.7), with the script values every V2 script uses:
  // force_positive_scales false, identity magnitudes, use_ste_fp16 true, group 32.
  //   Q4_A4: MLP lut 16 / rank 4,  attn lut 16 / rank 4
  //   Q2_A4: MLP lut 4 / rank 32,  attn lut 16 / rank 8
  //   Q4_A4_R32: MLP lut 16 / rank 32, attn lut 16 / rank 32
  //   Q2_A2: MLP lut 4 / rank 32, attn lut 4 / rank 32
  static absl::StatusOr<QuantConfigV2> FromPreset(std::string_view name);
};

std::string_view PositiveScaleMethodName(PositiveScaleMethod m);
std::string_view MagnitudeActivationName(MagnitudeActivation a);

// JSON with the field names above; enums as "abs" / "softplus" / "identity".
// FromJson starts from the defaults, rejects unknown keys and wrong types (INVALID_ARGUMENT
// naming the key) and validates the result.
nlohmann::json ToJson(const QuantConfig& config);
nlohmann::json ToJson(const QuantConfigV2& config);
absl::StatusOr<QuantConfig> QuantConfigFromJson(const nlohmann::json& j);
absl::StatusOr<QuantConfigV2> QuantConfigV2FromJson(const nlohmann::json& j);

}  // namespace qatd::quant
