#include "core/quant/quant_linear_v1.h"

#include <ATen/core/grad_mode.h>
#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/quant/lut.h"
#include "core/quant/module_cast.h"
#include "core/quant/scale_init.h"
#include "core/quant/ste.h"

namespace qatd::quant {
namespace {

constexpr double kMinScale = 1e-8;  // spec §3.4

absl::Status CheckDenseWeight(const at::Tensor& weight, const at::Tensor& bias) {
  if (!weight.defined() || weight.dim() != 2 || !at::isFloatingType(weight.scalar_type())) {
    return absl::InvalidArgumentError("weight must be a 2-D floating tensor [out, in]");
  }
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != weight.size(0))) {
    return absl::InvalidArgumentError(absl::StrCat("bias must be [", weight.size(0), "]"));
  }
  return absl::OkStatus();
}

// Above this many weights the index search runs over blocks of rows, so that its float32 and
// int64 temporaries stay small (lm_head: 155M weights). The reference chunks at 50M too (§3.5).
constexpr int64_t kChunkThreshold = 50'000'000;
constexpr int64_t kChunkRows = 1024;

// fn(first_row, rows) -> [rows, I] per block; the blocks concatenated along dim 0.
template <typename Fn>
at::Tensor ByRowBlocks(const at::Tensor& weight, Fn fn) {
  const int64_t rows = weight.size(0);
  if (weight.numel() <= kChunkThreshold) return fn(0, rows);
  std::vector<at::Tensor> parts;
  for (int64_t r = 0; r < rows; r += kChunkRows) parts.push_back(fn(r, std::min(kChunkRows, rows - r)));
  return at::cat(parts, 0);
}

// LUT indices (int64) of weight[r : r + n] / s[r : r + n] (s undefined: weight itself).
at::Tensor BlockIndices(const at::Tensor& weight, const at::Tensor& s, const at::Tensor& boundaries, int64_t r,
                        int64_t n) {
  at::Tensor u = weight.narrow(0, r, n).detach().to(at::kFloat);
  if (s.defined()) u = at::div(u, s.narrow(0, r, n).detach());
  return NearestLutIndexWithBoundaries(u, boundaries);
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
  at::Tensor q;                     // LUT[idx]: [O, I] in the LUT dtype
  {
    // u = W / S in float32 (spec §3.5); the index carries no gradient.
    at::NoGradGuard no_grad;
    const at::Tensor& b = Boundaries();
    q = ByRowBlocks(weight, [&](int64_t r, int64_t n) {
      at::Tensor idx = BlockIndices(weight, s, b, r, n);
      return lut.index_select(0, idx.reshape({-1})).reshape(idx.sizes());
    });
  }
  // LUT[idx] * S in the parameter dtype: for bf16/fp16 parameters the product of two such
  // values is exact in float32, so this equals the reference's float32 product rounded once.
  at::Tensor dq = q.to(s.scalar_type()) * s;
  return StraightThrough(dq, weight);
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
  const at::Tensor& b = Boundaries();
  return ByRowBlocks(weight, [&](int64_t r, int64_t n) { return BlockIndices(weight, s, b, r, n).to(at::kByte); });
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
