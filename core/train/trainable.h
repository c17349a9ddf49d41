#pragma once
// What a trainer trains: the trainable parameters of a student and the V2 layers' forward.

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "core/model/qwen3_model.h"
#include "core/quant/tensor_io.h"
#include "core/train/student.h"

namespace qatd::train {

// Selects the V2 layers' forward for training: the dense fp16-STE weight (default; see
// V2ForwardPath::kDenseSte) or the reference's factored per-rank STE forward.
void SelectV2Forward(Student& student, bool factored);

// Trains (on) or freezes the LUT values of every V2 layer (QuantLinearV2::SetLutTrainable;
// with mlp_only, of the MLP layers only). Independent of quant::ApplyTrainableSet, which leaves
// the LUTs as they are: call it before the trainer (jobs::QatOptions::train_lut). Off again,
// each layer's _Q is refreshed from its trained LUT and the LUT sorted (SortLut); do that
// before writing seed files or snapping in memory.
void SetV2LutTrainable(Student& student, bool on, bool mlp_only = false);

// (name, tensor) of every parameter that requires grad, in module order, then of every buffer
// that does (the trained V2 LUTs, "<layer>.lut"), in module order.
std::vector<std::pair<std::string, at::Tensor>> TrainableParameters(model::Qwen3ModelImpl& model);

// Parameters trained instead of the quantized layers' own trainable set (E2eOptions::external;
// the LoRA adapters, core/train/lora.h). The end-to-end trainer then trains Parameters(), keeps
// State() in resume/adapters.safetensors (resume/model.safetensors holds the student's quant
// state as the registry shows it, nothing for wrapped layers), writes best/ with SaveBest and
// ends with LoadBest(best/). The quantized layers stay frozen and are never reloaded.
class ExternalTrainable {
 public:
  virtual ~ExternalTrainable() = default;
  // (name, parameter), every one requiring grad; names key the optimizer state.
  virtual std::vector<std::pair<std::string, at::Tensor>> Parameters() = 0;
  virtual quant::TensorMap State() = 0;
  virtual absl::Status LoadState(const quant::TensorMap& state) = 0;
  virtual absl::Status SaveBest(Student& student, const std::string& dir, const nlohmann::json& extra) = 0;
  virtual absl::Status LoadBest(const std::string& dir) = 0;
  // Settings a resume must share (merged into resume/'s fingerprint under "external").
  virtual nlohmann::json Fingerprint() const = 0;
};

}  // namespace qatd::train
