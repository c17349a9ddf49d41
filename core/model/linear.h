#pragma once
// The seam between the model and quantization: every projection in the Qwen3 model is a
// `LinearLayer`. The model builds dense ones; core/quant replaces them in place with LUT
// fake-quant layers (V1/V2) through Qwen3Model::ReplaceLinear.

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <memory>
#include <string>

namespace qatd::model {

class LinearLayer : public torch::nn::Module {
 public:
  // x: [..., in] -> [..., out]
  virtual at::Tensor forward(const at::Tensor& x) = 0;
  virtual int64_t in_features() const = 0;
  virtual int64_t out_features() const = 0;
  // The dense weight this layer currently computes with ([out, in], the module's dtype).
  // For quantized layers: the effective (dequantized) weight, no autograd graph.
  virtual at::Tensor EffectiveWeight() = 0;
};

// y = x W^T (Qwen3 projections have no bias). weight: [out, in] parameter named "weight".
class DenseLinear : public LinearLayer {
 public:
  DenseLinear(int64_t in, int64_t out, at::TensorOptions options);
  at::Tensor forward(const at::Tensor& x) override;
  int64_t in_features() const override { return weight.size(1); }
  int64_t out_features() const override { return weight.size(0); }
  at::Tensor EffectiveWeight() override { return weight.detach(); }

  at::Tensor weight;
};

}  // namespace qatd::model
