#pragma once
// The small interface quantization needs from a model: named linear projections that can be
// looked up and replaced in place, and a way to freeze every parameter. The Qwen3 model (or a
// test double) implements it; core/quant never depends on the model's internals.

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/model/linear.h"

namespace qatd::quant {

class LinearRegistry {
 public:
  virtual ~LinearRegistry() = default;

  // Hugging Face module names of every linear projection, e.g.
  // "model.layers.0.mlp.gate_proj", "model.layers.0.self_attn.q_proj", "lm_head".
  virtual std::vector<std::string> LinearNames() const = 0;
  // The layer currently installed at `name`, or nullptr for an unknown name.
  virtual std::shared_ptr<model::LinearLayer> GetLinear(const std::string& name) = 0;
  // Installs `layer` at `name` (same in/out features). NOT_FOUND for unknown names,
  // INVALID_ARGUMENT for a shape mismatch.
  virtual absl::Status ReplaceLinear(const std::string& name, std::shared_ptr<model::LinearLayer> layer) = 0;
  // requires_grad = false on every parameter of the model (embeddings, norms, linears).
  virtual void FreezeAllParameters() = 0;
};

}  // namespace qatd::quant
