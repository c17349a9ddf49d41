#pragma once
// Compact export of quantized layers (packed indices + LUT + scales) and layer state I/O.
//
// Index packing (PackIndices): `bits` in {2, 4, 8}; the indices are taken in row-major order
// and element n occupies bits [(n*bits) % 8, (n*bits) % 8 + bits) of byte floor(n*bits / 8),
// low bits first (little-endian bit order); unused high bits of the last byte are zero.
//
// Artifact (ExportQuantizedArtifact): one safetensors file; per layer `<name>`:
//   <name>.indices   U8   [ceil(O*I*bits/8)]  packed LUT indices of the [O, I] weight
//   <name>.lut       [n]                     LUT values
//   <name>.scale_A   [O, r], <name>.scale_B [r, I]   (low rank), or <name>.scales [O, I]
//   <name>.bias      [O] (when present)
// and metadata strings: "format" = "qatd.lut_artifact.v1", "index_packing" (the rule above),
// "<name>.bits", "<name>.shape" ("O,I"), "<name>.lut_size", "<name>.version" ("v1"/"v2"),
// "<name>.scale_formula": "clamp_min(scale_A @ scale_B, 1e-8)" (V1), "scale_A @ scale_B"
// (V2, factors baked: Â diag ĝ and B̂), or "clamp_min(scales, 1e-8)" (V1 full scales).
// Dequantised weight: W = lut[indices] ⊙ S.

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/linear.h"
#include "core/quant/tensor_io.h"

namespace qatd::quant {

// 2 for LUTs of <= 4 entries, 4 for <= 16, else 8.
int PackedBitsForLutSize(int64_t lut_size);

// indices: integer tensor, any shape, values < 2^bits. Returns uint8 [ceil(numel*bits/8)].
absl::StatusOr<at::Tensor> PackIndices(const at::Tensor& indices, int bits);
// Inverse of PackIndices: uint8 tensor of `shape`.
absl::StatusOr<at::Tensor> UnpackIndices(const at::Tensor& packed, int bits, const std::vector<int64_t>& shape);

struct ExportOptions {
  at::ScalarType dtype = at::kHalf;  // LUT, scales and bias (fp16 for ANE tooling)
};

// layers: (module name, QuantLinearV1 or QuantLinearV2). V1 indices come from
// ComputeIndices(), so they are right after a 'lut' snap (spec §17.4). V2 layers are
// exported with baked factors computed on the fly (the layer is not modified); unfrozen V2
// layers export the indices FreezeQ would compute. INVALID_ARGUMENT for other layer types.
absl::Status ExportQuantizedArtifact(const std::string& path,
                                     const std::vector<std::pair<std::string, std::shared_ptr<model::LinearLayer>>>& layers,
                                     const ExportOptions& options = {});

// One layer read back from an artifact.
struct QuantizedLayerRecord {
  std::string name;
  std::string version;        // "v1" or "v2"
  std::string scale_formula;  // as in the metadata
  int bits = 0;
  int64_t out_features = 0;
  int64_t in_features = 0;
  at::Tensor indices;  // [O, I] uint8 (unpacked)
  at::Tensor lut;      // [n]
  at::Tensor scale_A;  // [O, r] or undefined
  at::Tensor scale_B;  // [r, I] or undefined
  at::Tensor scales;   // [O, I] or undefined
  at::Tensor bias;     // [O] or undefined
};
absl::StatusOr<std::vector<QuantizedLayerRecord>> ReadQuantizedArtifact(const std::string& path);
// W = lut[indices] ⊙ S per the record's scale formula: [O, I] float32.
at::Tensor DequantizeRecord(const QuantizedLayerRecord& record);

// Layer state: every non-empty parameter and buffer of `layer` (QuantLinearV1/V2: weight,
// scales, lut, _snapped_mode or _Q/_indices/_scales_baked_flag; not the inference cache),
// named "<prefix>.<name>" (just "<name>" for an empty prefix). Like a PyTorch state_dict the
// tensors are detached aliases of the live ones, not copies: clone them for a snapshot.
TensorMap LayerState(torch::nn::Module& layer, const std::string& prefix = "");

// Restores a LayerState. Every parameter and persistent buffer must be present with the
// layer's shape, except _Q/_indices (absent: the layer is left unfrozen; present: [O, I]).
// Loaded tensors keep their stored dtype (an fp16 snap reloads as fp16) and move to the
// layer's device. _indices may be any integer dtype (the reference stores int64). Unknown
// keys under the prefix are INVALID_ARGUMENT; "_cached_weight_q" is ignored.
absl::Status LoadLayerState(torch::nn::Module& layer, const TensorMap& state, const std::string& prefix = "");

}  // namespace qatd::quant
