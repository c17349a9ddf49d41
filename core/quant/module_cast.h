#pragma once
// Dtype casts that leave integer buffers alone. LibTorch's Module::to(dtype) casts every
// parameter and buffer, LUT indices and flags included; PyTorch's casts floating tensors only.
// The quantized layers override to(dtype) with this.

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/nn/module.h>

namespace qatd::quant {

// Casts the module's own (non-recursive) floating parameters and buffers to `dtype`.
inline void CastFloatingTensors(torch::nn::Module& module, at::ScalarType dtype, bool non_blocking) {
  at::NoGradGuard no_grad;
  auto cast = [&](at::Tensor t) {  // a handle: set_data updates the registered tensor
    if (t.defined() && at::isFloatingType(t.scalar_type())) t.set_data(t.to(dtype, non_blocking));
  };
  for (const auto& item : module.named_parameters(/*recurse=*/false)) cast(item.value());
  for (const auto& item : module.named_buffers(/*recurse=*/false)) cast(item.value());
}

}  // namespace qatd::quant
