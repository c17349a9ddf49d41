#pragma once
// The seed's .pt state_dict files (spec §12) as inputs of a qatd student: which layer version
// and which V2 settings a state_dict holds.
//
// The seed's V1 and V2 files use the same key names for the same roles (spec §12):
//   V1 layer  <layer>.weight, .scale_A [O, r], .scale_B [r, P] (or .full_scales), .lut [n]
//   V2 layer  <layer>.weight, .scale_A [O, r], .scale_B [r, I], .rank_magnitude [r], .lut [n],
//             optional ._Q [O, I] float and ._indices [O, I] int64 (spec §4.2, §9.3)
// so only `rank_magnitude` tells them apart, and loading one as the other would silently
// drop (V2 as V1) or invent (V1 as V2) the per-rank magnitudes. A seed V2 file carries no
// quantization config qatd can trust (train_v2_simple.py writes none), but its tensors carry
// their shapes: the LUT size is <layer>.lut's length, the rank <layer>.scale_A's columns.

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/quant/quant_config.h"
#include "core/quant/tensor_io.h"

namespace qatd::train {

// The state_dict file for a seed checkpoint path: the file itself, or model_state_dict.pt /
// best_state_dict.pt inside a directory (spec §9.2 --init-state). NOT_FOUND otherwise.
absl::StatusOr<std::string> SeedStateFilePath(const std::string& checkpoint);

// Reads a pickled state_dict (torch.save of a dict or OrderedDict of tensors, read with
// model::ReadTorchStateDict, the safe reader); a dict {"model_state_dict": {...}}
// (convert_v1_to_v2.py's output, spec §5) is unwrapped; values that are not tensors are
// skipped. NOT_FOUND (unreadable file), INVALID_ARGUMENT (not a dict, a malformed file or a
// refused pickle global, naming the file), see torch_state_dict.h.
absl::StatusOr<quant::TensorMap> ReadSeedStateDict(const std::string& path);

// True when `state` holds V2 layers: a "<linear>.rank_magnitude" for a quantizable linear
// (MLP or attention projection, lm_head).
bool HoldsV2Layers(const quant::TensorMap& state);

// The V2 settings of the seed's layers: `base` (the script values: force_positive_scales,
// magnitude activation, eps, STE, group size) with lut_size / scale_rank from the MLP layers,
// attn_lut_size / attn_scale_rank and quantize_attn from the attention layers, and
// quantize_lm_head from lm_head, each read from <layer>.lut and <layer>.scale_A.
// INVALID_ARGUMENT naming the layer: no V2 layer, a layer without its lut / scale_A, or two
// layers of one kind that disagree.
absl::StatusOr<quant::QuantConfigV2> SeedQuantConfigV2(const quant::TensorMap& state, const quant::QuantConfigV2& base);

// The loader's guard before `state` (read from `path`) is applied to `version` (1 or 2)
// layers: INVALID_ARGUMENT when a V2 state_dict would be loaded as V1 (its rank_magnitude
// would be ignored) or a V1 state_dict as V2, naming the file, a telling key and the fix.
absl::Status CheckSeedVersion(const quant::TensorMap& state, int version, const std::string& path);

}  // namespace qatd::train
