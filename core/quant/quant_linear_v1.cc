#include "core/quant/quant_linear_v1.h"

#include <ATen/core/grad_mode.h>
#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/quant/fake_quant.h"
#include "core/quant/lut.h"
#include "core/quant/module_cast.h"
#include "core/quant/scale_init.h"
#include "core/quant/ste.h"

namespace qatd::quant {
namespace {

absl::Status CheckDenseWeight(const at::Tensor& weight, const at::Tensor& bias) {
  if (!weight.defined() || weight.dim() != 2 || !at::isFloatingType(weight.scalar_type())) {
    return absl::InvalidArgumentError("weight must be a 2-D floating tensor [out, in]");
  }
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != weight.size(0))) {
    return absl::InvalidArgumentError(absl::StrCat("bias must be [", weight.size(0), "]"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<QuantLinearV1>> QuantLinearV1::Create(const at::Tensor& weight,
                                                                     const at::Tensor& bias,
                                                                     const LayerQuantSpec& spec) {
  if (absl::Status s = CheckDenseWeight(weight, bias); !s.ok()) return s;
  const int64_t out = weight.size(0);
  const int64_t in = weight.size(1);
  if (absl::Status s = spec.ValidateForShape(out, in); !s.ok()) return s;
  const int64_t padded = ComputeGroupPadding(in, spec.group_size).padded_in;
  return std::shared_ptr<QuantLinearV1>(new QuantLinearV1(weight, bias, spec, spec.LowRank(out, in), padded));
}

QuantLinearV1::QuantLinearV1(const at::Tensor& w, const at::Tensor& b, const LayerQuantSpec& spec, bool low_rank,
                             int64_t padded_in)
    : spec_(spec), low_rank_(low_rank), padded_in_(padded_in) {
  at::NoGradGuard no_grad;
  const auto options = w.options();
  weight = register_parameter("weight", w.detach().clone(), /*requires_grad=*/false);
  if (b.defined()) bias = register_parameter("bias", b.detach().to(options).clone(), false);

  // spec §3.3: group abs-max, then the SVD with all of sigma in A.
  at::Tensor group_max = GroupAbsMax(w, spec.group_size);
  if (low_rank_) {
    SvdFactors f = FactorGroupScales(group_max, spec.group_size, spec.scale_rank);
    scale_A = register_parameter("scale_A", (f.u * f.sigma.unsqueeze(0)).to(options), false);
    scale_B = register_parameter("scale_B", f.vh.to(options), false);
  } else {
    full_scales = register_parameter("full_scales", ExpandGroupScales(group_max, spec.group_size).to(options), false);
  }
  lut = register_buffer("lut", MakeLut(spec.lut_size, spec.lut_include_zero, w.scalar_type()).value().to(w.device()));
  snapped_mode_ = register_buffer("_snapped_mode", at::zeros({1}, at::TensorOptions().dtype(at::kChar).device(w.device())));
  cached_weight_ = register_buffer("_cached_weight_q", at::empty({0}, options));
  SyncFromBuffers();
}

void QuantLinearV1::SyncFromBuffers() {
  boundaries_ = LutBoundaries(lut);
  mode_ = static_cast<SnapMode>(snapped_mode_.to(at::kCPU).item<int8_t>());
}

const at::Tensor& QuantLinearV1::Boundaries() {
  if (boundaries_.device() != weight.device()) boundaries_ = boundaries_.to(weight.device());
  return boundaries_;
}

at::Tensor QuantLinearV1::EffectiveScales() {
  at::Tensor s = low_rank_ ? ScaleProduct(scale_A, scale_B) : full_scales;
  return s.clamp_min(kMinScale);
}

at::Tensor QuantLinearV1::ScalesForInput() {
  at::Tensor s = EffectiveScales();
  return padded_in_ > in_features() ? s.narrow(1, 0, in_features()) : s;
}

at::Tensor QuantLinearV1::FakeQuantWeight() {
  at::Tensor s = ScalesForInput();  // [O, I], graph when the scales are trainable
  if (!at::GradMode::is_enabled() || !s.requires_grad()) {
    // No gradient through S: the fused op (one kernel on CUDA), straight-through to the weight.
    return StraightThrough(LutFakeQuant(weight, s, lut, Boundaries()), weight);
  }
  // Full-scale layers with trainable scales (low-rank layers take FakeQuantLinear in forward):
  // LUT[idx] (no gradient: u = W / S in float32, spec §3.5) times S with its graph.
  at::Tensor q = LutValues(weight, s, lut, Boundaries());
  return StraightThrough(q.to(s.scalar_type()) * s, weight);
}

at::Tensor QuantLinearV1::CurrentWeight() {
  if (cached()) return cached_weight_;
  switch (snapped_mode()) {
    case SnapMode::kLut:
      return weight * ScalesForInput().to(weight.scalar_type());
    case SnapMode::kBakeScales:
      return weight;
    case SnapMode::kNone:
      break;
  }
  return fake_quant_ ? FakeQuantWeight() : weight;
}

at::Tensor QuantLinearV1::forward(const at::Tensor& x) {
  if (!cached() && snapped_mode() == SnapMode::kNone && fake_quant_ && low_rank_) {
    // The training path: one autograd node that recomputes W_q in its backward (fake_quant.h).
    at::Tensor b = padded_in_ > in_features() ? scale_B.narrow(1, 0, in_features()) : scale_B;
    return FakeQuantLinear(x, weight, scale_A, b, bias, lut, Boundaries());
  }
  at::Tensor w = CurrentWeight();
  if (w.scalar_type() != x.scalar_type()) w = w.to(x.scalar_type());
  at::Tensor b = bias.defined() ? bias.to(x.scalar_type()) : at::Tensor();
  return at::linear(x, w, b);
}

at::Tensor QuantLinearV1::EffectiveWeight() {
  at::NoGradGuard no_grad;
  return CurrentWeight().detach().to(weight.scalar_type());
}

at::Tensor QuantLinearV1::ComputeIndices() {
  at::NoGradGuard no_grad;
  // In 'lut' mode the weight already holds LUT values.
  at::Tensor s = snapped_mode() == SnapMode::kLut ? at::Tensor() : ScalesForInput();
  return LutIndices(weight, s, Boundaries(), at::kByte);
}

void QuantLinearV1::SetTrainable(bool weights, bool scales) {
  weight.requires_grad_(weights);
  if (low_rank_) {
    scale_A.requires_grad_(scales);
    scale_B.requires_grad_(scales);
  } else {
    full_scales.requires_grad_(scales);
  }
}

void QuantLinearV1::SetSnapped(SnapMode mode, const at::Tensor& new_weight) {
  at::NoGradGuard no_grad;
  weight.copy_(new_weight);
  snapped_mode_.fill_(static_cast<int8_t>(mode));
  mode_ = mode;
  ClearCache();
}

void QuantLinearV1::CacheEffectiveWeight() {
  at::Tensor w = EffectiveWeight();
  at::NoGradGuard no_grad;
  cached_weight_.set_data(w.clone());
}

void QuantLinearV1::ClearCache() {
  at::NoGradGuard no_grad;
  cached_weight_.set_data(at::empty({0}, weight.options()));
}

void QuantLinearV1::to(torch::Dtype dtype, bool non_blocking) {
  CastFloatingTensors(*this, dtype, non_blocking);
  SyncFromBuffers();
}

void QuantLinearV1::to(torch::Device device, torch::Dtype dtype, bool non_blocking) {
  torch::nn::Module::to(device, non_blocking);
  to(dtype, non_blocking);
}

}  // namespace qatd::quant
