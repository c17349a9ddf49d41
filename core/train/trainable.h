#pragma once
// What a trainer trains: the trainable parameters of a student and the V2 layers' forward.

#include <ATen/ATen.h>

#include <string>
#include <utility>
#include <vector>

#include "core/model/qwen3_model.h"
#include "core/train/student.h"

namespace qatd::train {

// Selects the V2 layers' forward for training: the dense fp16-STE weight (default; see
// V2ForwardPath::kDenseSte) or the reference's factored per-rank STE forward.
void SelectV2Forward(Student& student, bool factored);

// (name, parameter) of every parameter that requires grad, in module order.
std::vector<std::pair<std::string, at::Tensor>> TrainableParameters(model::Qwen3ModelImpl& model);

}  // namespace qatd::train
