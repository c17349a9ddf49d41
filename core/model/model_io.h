#pragma once
// Reading and writing Qwen3 models in the Hugging Face layout (config.json +
// model.safetensors, or shards with model.safetensors.index.json), and random init.

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/model/qwen3_config.h"
#include "core/model/qwen3_model.h"

namespace qatd::model {

struct LoadOptions {
  at::ScalarType dtype = at::kBFloat16;  // parameter dtype: kFloat, kBFloat16 or kHalf
  at::Device device = at::kCPU;
};

struct LoadedModel {
  Qwen3Config config;
  Qwen3Model model{nullptr};
};

// Loads `dir` (a HF model folder, or a config.json path whose folder holds the weights).
// Weights are copied straight from the memory-mapped file into the parameters, converting
// dtype and device on the way (no second copy of the file in memory). The model is returned
// in eval mode. Errors: NOT_FOUND (no config/checkpoint), INVALID_ARGUMENT naming the tensor
// for a missing, unexpected, mis-shaped or non-float tensor (a tied model has no
// lm_head.weight; one that is present anyway is ignored), RESOURCE_EXHAUSTED/INTERNAL from
// LibTorch.
absl::StatusOr<LoadedModel> LoadQwen3(const std::string& dir, const LoadOptions& options = {});

// Copies the tensors of `checkpoint_dir` into an already-built dense `model` (same checks
// as LoadQwen3).
absl::Status LoadQwen3Weights(Qwen3Model& model, const std::string& checkpoint_dir);

struct SaveOptions {
  // dtype of the written tensors; nullopt: the model's dtype.
  std::optional<at::ScalarType> dtype;
};

// Writes `dir`/config.json and `dir`/model.safetensors in the HF layout (creates `dir`).
// Linear weights are each layer's EffectiveWeight(), so a quantized model is written as its
// dense equivalent. Tied models get no lm_head.weight. Files are written atomically (temp
// file + rename). Errors: INVALID_ARGUMENT (unsupported dtype), INTERNAL (I/O).
absl::Status SaveQwen3(Qwen3Model& model, const Qwen3Config& config, const std::string& dir,
                       const SaveOptions& options = {});

struct InitOptions {
  uint64_t seed = 0;
  double initializer_range = 0.02;  // HF config.initializer_range
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
};

// A randomly initialised model as HF's Qwen3PreTrainedModel._init_weights does it: linear and
// embedding weights ~ normal(0, initializer_range), norm weights = 1. Values are drawn in fp32
// on the CPU from a generator seeded with `seed` (the same seed gives the same weights on
// any device/dtype, up to the final cast). Errors: INVALID_ARGUMENT for a bad config or
// options.
absl::StatusOr<Qwen3Model> InitTinyQwen3(const Qwen3Config& config, const InitOptions& options = {});

// at::ScalarType <-> the HF config spelling ("float32", "bfloat16", "float16");
// INVALID_ARGUMENT for anything else.
absl::StatusOr<at::ScalarType> ParseTorchDtype(const std::string& name);
std::string TorchDtypeName(at::ScalarType dtype);

}  // namespace qatd::model
