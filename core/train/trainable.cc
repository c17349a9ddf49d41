#include "core/train/trainable.h"

#include "core/quant/quant_linear_v2.h"
#include "core/quant/quantize_model.h"

namespace qatd::train {

void SelectV2Forward(Student& s, bool factored) {
  for (const auto& [name, layer] : quant::QuantizedLayers(*s.registry)) {
    if (auto* v2 = dynamic_cast<quant::QuantLinearV2*>(layer.get())) {
      v2->set_forward_path(factored ? quant::V2ForwardPath::kAuto : quant::V2ForwardPath::kDenseSte);
    }
  }
}

void SetV2LutTrainable(Student& s, bool on, bool mlp_only) {
  for (const auto& [name, layer] : quant::QuantizedLayers(*s.registry)) {
    auto* v2 = dynamic_cast<quant::QuantLinearV2*>(layer.get());
    if (v2 == nullptr) continue;
    const bool train = on && !(mlp_only && quant::ClassifyLinear(name) == quant::LinearKind::kAttention);
    v2->SetLutTrainable(train);
    if (!train) v2->SortLut();
  }
}

std::vector<std::pair<std::string, at::Tensor>> TrainableParameters(model::Qwen3ModelImpl& model) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    if (item.value().requires_grad()) out.emplace_back(item.key(), item.value());
  }
  // Buffers after the parameters: a run without trained buffers keeps its order (and its resume).
  for (const auto& item : model.named_buffers(/*recurse=*/true)) {
    if (item.value().requires_grad()) out.emplace_back(item.key(), item.value());
  }
  return out;
}

}  // namespace qatd::train
