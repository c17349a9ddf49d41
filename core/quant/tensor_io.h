#pragma once
// at::Tensor <-> safetensors (core/model/safetensors.h) for quantization state and artifacts.

#include <ATen/ATen.h>

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "core/model/safetensors.h"

namespace qatd::quant {

// name -> tensor, ordered by name (safetensors-compatible: contiguous CPU on write).
using TensorMap = std::map<std::string, at::Tensor>;

// INVALID_ARGUMENT for dtypes safetensors (as supported by core/model) cannot hold.
absl::StatusOr<model::DType> ToSafetensorsDType(at::ScalarType type);
at::ScalarType ToScalarType(model::DType dtype);

// Copies the viewed bytes into a new CPU tensor (no aliasing of the mapping; alignment-safe).
at::Tensor TensorFromView(const model::TensorView& view);

// Writes `tensors` atomically (WriteSafetensors). Tensors may live on any device.
absl::Status WriteTensorMap(const std::string& path, const TensorMap& tensors,
                            const std::map<std::string, std::string>& metadata = {});

struct LoadedTensors {
  TensorMap tensors;
  std::map<std::string, std::string> metadata;
};
// Reads every tensor of a safetensors file into CPU tensors.
absl::StatusOr<LoadedTensors> ReadTensorMap(const std::string& path);

}  // namespace qatd::quant
