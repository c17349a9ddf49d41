#include "core/quant/ste.h"

#include <torch/csrc/autograd/custom_function.h>

namespace qatd::quant {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

constexpr double kFp16Max = 65504.0;

struct RoundToFp16 : public torch::autograd::Function<RoundToFp16> {
  static at::Tensor forward(AutogradContext* /*ctx*/, const at::Tensor& v) {
    return v.clamp(-kFp16Max, kFp16Max).to(at::kHalf).to(v.scalar_type());
  }
  static tensor_list backward(AutogradContext* /*ctx*/, tensor_list grads) { return {grads[0]}; }
};

struct PassThrough : public torch::autograd::Function<PassThrough> {
  static at::Tensor forward(AutogradContext* /*ctx*/, const at::Tensor& value, const at::Tensor& /*latent*/) {
    // A view keeps the output distinct from the input for autograd without a copy.
    return value.view_as(value);
  }
  static tensor_list backward(AutogradContext* /*ctx*/, tensor_list grads) { return {grads[0], grads[0]}; }
};

}  // namespace

at::Tensor Ste16(const at::Tensor& v) {
  if (v.scalar_type() == at::kHalf) return v;
  if (!at::GradMode::is_enabled() || !v.requires_grad()) {
    return v.clamp(-kFp16Max, kFp16Max).to(at::kHalf).to(v.scalar_type());
  }
  return RoundToFp16::apply(v);
}

at::Tensor StraightThrough(const at::Tensor& value, const at::Tensor& latent) {
  if (!at::GradMode::is_enabled() || !latent.requires_grad()) return value;
  return PassThrough::apply(value, latent);
}

}  // namespace qatd::quant
