#include <ATen/core/grad_mode.h>
#include "core/quant/quant_linear_v2.h"

#include "absl/strings/str_cat.h"
#include "core/quant/fake_quant.h"
#include "core/quant/lut.h"
#include "core/quant/module_cast.h"
#include "core/quant/scale_init.h"
#include "core/quant/ste.h"

namespace qatd::quant {
namespace {

absl::Status CheckShape(const at::Tensor& t, const char* name, std::vector<int64_t> shape) {
  if (!t.defined() || !at::isFloatingType(t.scalar_type()) || t.sizes() != at::IntArrayRef(shape)) {
    std::string want;
    for (size_t i = 0; i < shape.size(); ++i) absl::StrAppend(&want, i ? ", " : "", shape[i]);
    return absl::InvalidArgumentError(absl::StrCat(name, " must be a floating tensor of shape [", want, "]"));
  }
  return absl::OkStatus();
}

at::Tensor MaybeSte(const at::Tensor& v, bool on) { return on ? Ste16(v) : v; }

}  // namespace

absl::StatusOr<std::shared_ptr<QuantLinearV2>> QuantLinearV2::Create(const at::Tensor& weight,
                                                                     const at::Tensor& bias,
                                                                     const LayerQuantSpecV2& spec) {
  if (!weight.defined() || weight.dim() != 2 || !at::isFloatingType(weight.scalar_type())) {
    return absl::InvalidArgumentError("weight must be a 2-D floating tensor [out, in]");
  }
  if (absl::Status s = spec.ValidateForShape(weight.size(0), weight.size(1)); !s.ok()) return s;
  // spec §4.3: same S0 as V1 (padded for grouping), SVD, trimmed back to [O, I].
  SvdFactors f = FactorGroupScales(GroupAbsMax(weight, spec.group_size), spec.group_size, spec.scale_rank);
  at::Tensor lut = MakeLut(spec.lut_size, spec.lut_include_zero).value();
  return FromFactors(weight, bias, spec, f.u, f.vh.narrow(1, 0, weight.size(1)), f.sigma, lut);
}

absl::StatusOr<std::shared_ptr<QuantLinearV2>> QuantLinearV2::FromFactors(
    const at::Tensor& weight, const at::Tensor& bias, const LayerQuantSpecV2& spec, const at::Tensor& scale_A,
    const at::Tensor& scale_B, const at::Tensor& rank_magnitude, const at::Tensor& lut) {
  if (!weight.defined() || weight.dim() != 2 || !at::isFloatingType(weight.scalar_type())) {
    return absl::InvalidArgumentError("weight must be a 2-D floating tensor [out, in]");
  }
  const int64_t out = weight.size(0);
  const int64_t in = weight.size(1);
  if (absl::Status s = spec.ValidateForShape(out, in); !s.ok()) return s;
  const int64_t r = spec.scale_rank;
  if (absl::Status s = CheckShape(scale_A, "scale_A", {out, r}); !s.ok()) return s;
  if (absl::Status s = CheckShape(scale_B, "scale_B", {r, in}); !s.ok()) return s;
  if (absl::Status s = CheckShape(rank_magnitude, "rank_magnitude", {r}); !s.ok()) return s;
  if (absl::Status s = CheckLut(lut); !s.ok()) return s;
  if (lut.numel() != spec.lut_size) {
    return absl::InvalidArgumentError(absl::StrCat("lut has ", lut.numel(), " entries, lut_size is ", spec.lut_size));
  }
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != out)) {
    return absl::InvalidArgumentError(absl::StrCat("bias must be [", out, "]"));
  }
  return std::shared_ptr<QuantLinearV2>(new QuantLinearV2(weight, bias, spec, scale_A, scale_B, rank_magnitude, lut));
}

QuantLinearV2::QuantLinearV2(const at::Tensor& w, const at::Tensor& b, const LayerQuantSpecV2& spec,
                             const at::Tensor& a, const at::Tensor& bb, const at::Tensor& g, const at::Tensor& l)
    : spec_(spec) {
  at::NoGradGuard no_grad;
  const auto options = w.options();
  weight = register_parameter("weight", w.detach().clone(), /*requires_grad=*/false);
  if (b.defined()) bias = register_parameter("bias", b.detach().to(options).clone(), false);
  scale_A = register_parameter("scale_A", a.detach().to(options).clone(), false);
  scale_B = register_parameter("scale_B", bb.detach().to(options).clone(), false);
  rank_magnitude = register_parameter("rank_magnitude", g.detach().to(options).clone(), false);
  lut = register_buffer("lut", l.detach().to(options).clone());
  q = register_buffer("_Q", at::empty({0}, options));
  indices = register_buffer("_indices", at::empty({0}, options.dtype(at::kByte)));
  scales_baked_flag = register_buffer("_scales_baked_flag", at::zeros({1}, options.dtype(at::kChar)));
  cached_weight_ = register_buffer("_cached_weight_q", at::empty({0}, options));
  SyncFromBuffers();
}

void QuantLinearV2::SyncFromBuffers() {
  boundaries_ = LutBoundaries(lut);
  baked_ = scales_baked_flag.to(at::kCPU).item<int8_t>() != 0;
}

const at::Tensor& QuantLinearV2::Boundaries() {
  if (boundaries_.device() != weight.device()) boundaries_ = boundaries_.to(weight.device());
  return boundaries_;
}

QuantLinearV2::Factors QuantLinearV2::FactorsOf(const at::Tensor& a, const at::Tensor& b, const at::Tensor& g) const {
  if (baked_) return {a, b, g};  // spec §4.4 step 6
  at::Tensor ap = a;
  at::Tensor bp = b;
  if (spec_.force_positive_scales) {
    const bool softplus = spec_.positive_scale_method == PositiveScaleMethod::kSoftplus;
    ap = softplus ? at::softplus(a) : a.abs();
    bp = softplus ? at::softplus(b) : b.abs();
  }
  Factors f;
  f.a_dir = ap / ap.norm(2, {0}, /*keepdim=*/true).clamp_min(spec_.norm_eps);
  f.b_dir = bp / bp.norm(2, {1}, /*keepdim=*/true).clamp_min(spec_.norm_eps);
  at::Tensor act = g;
  if (spec_.magnitude_activation == MagnitudeActivation::kAbs) act = g.abs();
  if (spec_.magnitude_activation == MagnitudeActivation::kSoftplus) act = at::softplus(g);
  f.g_hat = act + spec_.magnitude_eps;
  return f;
}

QuantLinearV2::Factors QuantLinearV2::ComputeFactors() { return FactorsOf(scale_A, scale_B, rank_magnitude); }

at::Tensor QuantLinearV2::EffectiveScales() {
  Factors f = ComputeFactors();
  return ScaleProduct(f.a_dir * f.g_hat.unsqueeze(0), f.b_dir);
}

at::Tensor QuantLinearV2::ComputeIndicesNow() {
  at::NoGradGuard no_grad;
  // S in float32 from float32 copies of the parameters; no epsilon, no clamp (spec §4.5).
  Factors f = FactorsOf(scale_A.to(at::kFloat), scale_B.to(at::kFloat), rank_magnitude.to(at::kFloat));
  at::Tensor s = at::matmul(f.a_dir * f.g_hat.unsqueeze(0), f.b_dir);
  return NearestLutIndexWithBoundaries(at::div(weight.to(at::kFloat), s), Boundaries());
}

void QuantLinearV2::SetFrozenIndices(const at::Tensor& idx) {
  at::NoGradGuard no_grad;
  at::Tensor i64 = idx.to(weight.device(), at::kLong);
  q.set_data(lut.index_select(0, i64.reshape({-1})).reshape(i64.sizes()).to(weight.scalar_type()));
  indices.set_data(i64.to(at::kByte));
  weight.requires_grad_(false);
  ClearCache();
}

void QuantLinearV2::FreezeQ() { SetFrozenIndices(ComputeIndicesNow()); }

at::Tensor QuantLinearV2::Indices() {
  if (q_frozen()) return indices;
  return ComputeIndicesNow().to(at::kByte);
}

at::Tensor QuantLinearV2::QValues() {
  if (q_frozen()) return q;
  at::Tensor idx = ComputeIndicesNow();
  return lut.index_select(0, idx.reshape({-1})).reshape(idx.sizes()).to(weight.scalar_type());
}

void QuantLinearV2::SetTrainable(bool scales, bool g_only) {
  weight.requires_grad_(false);
  scale_A.requires_grad_(scales && !g_only);
  scale_B.requires_grad_(scales && !g_only);
  rank_magnitude.requires_grad_(scales);
}

void QuantLinearV2::SetScalesBaked(bool baked) {
  at::NoGradGuard no_grad;
  scales_baked_flag.fill_(baked ? 1 : 0);
  baked_ = baked;
  ClearCache();
}

V2ForwardPath QuantLinearV2::ResolvedPath() const {
  if (path_ != V2ForwardPath::kAuto) return path_;
  if (!spec_.use_ste_fp16) return V2ForwardPath::kDense;
  return scale_A.size(1) >= 16 ? V2ForwardPath::kBatched : V2ForwardPath::kLoop;
}

at::Tensor QuantLinearV2::ForwardLoop(const at::Tensor& x, const at::Tensor& qv, const Factors& f) const {
  const bool ste = spec_.use_ste_fp16;
  const at::Tensor qt = qv.t();
  at::Tensor y;
  for (int64_t k = 0; k < f.a_dir.size(1); ++k) {
    at::Tensor b_k = MaybeSte(f.b_dir.select(0, k), ste);                      // [I]
    at::Tensor a_k = MaybeSte(f.a_dir.select(1, k) * f.g_hat.select(0, k), ste);  // [O]
    at::Tensor t = MaybeSte(x * b_k, ste);                                       // [..., I]
    at::Tensor z = MaybeSte(at::matmul(t, qt), ste);                             // [..., O]
    at::Tensor term = a_k * z;
    y = y.defined() ? y + term : term;  // the running sum is not rounded (505b9fe)
  }
  return y;
}

at::Tensor QuantLinearV2::ForwardBatched(const at::Tensor& x, const at::Tensor& qv, const Factors& f) const {
  const bool ste = spec_.use_ste_fp16;
  at::Tensor bs = MaybeSte(f.b_dir, ste);                                     // [r, I]
  at::Tensor as = MaybeSte((f.a_dir * f.g_hat.unsqueeze(0)).t(), ste);        // [r, O]
  at::Tensor xr = MaybeSte(x.unsqueeze(-2) * bs, ste);                       // [..., r, I]
  at::Tensor yr = MaybeSte(at::matmul(xr, qv.t()), ste);                      // [..., r, O]
  return (yr * as).sum(-2);                                                   // [..., O]
}

at::Tensor QuantLinearV2::forward(const at::Tensor& x) {
  const auto dtype = x.scalar_type();
  at::Tensor b = bias.defined() ? bias.to(dtype) : at::Tensor();
  if (cached()) return at::linear(x, cached_weight_.to(dtype), b);

  at::Tensor qv = QValues().to(dtype);  // no graph: Q is frozen
  Factors f = ComputeFactors();
  f.a_dir = f.a_dir.to(dtype);
  f.b_dir = f.b_dir.to(dtype);
  f.g_hat = f.g_hat.to(dtype);
  at::Tensor y;
  switch (ResolvedPath()) {
    case V2ForwardPath::kLoop:
      y = ForwardLoop(x, qv, f);
      break;
    case V2ForwardPath::kBatched:
      y = ForwardBatched(x, qv, f);
      break;
    case V2ForwardPath::kDenseSte:
    case V2ForwardPath::kDense:
    case V2ForwardPath::kAuto: {
      // Σ_k a_k ⊙ (Q (b_k ⊙ x)) = x (Q ⊙ (Â diag ĝ) B̂)ᵀ: one effective weight per call.
      const bool round = ResolvedPath() == V2ForwardPath::kDenseSte && spec_.use_ste_fp16;
      const at::Tensor ag = f.a_dir * f.g_hat.unsqueeze(0);
      if (q_frozen()) {
        // One autograd node (fake_quant.h FrozenLutLinear; a fused kernel on CUDA), same values.
        return FrozenLutLinear(x, qv, indices, lut.to(dtype), ag, f.b_dir, b, round);
      }
      return at::linear(x, MaybeSte(qv * at::matmul(ag, f.b_dir), round), b);
    }
  }
  return b.defined() ? y + b : y;
}

at::Tensor QuantLinearV2::EffectiveWeight() {
  at::NoGradGuard no_grad;
  if (cached()) return cached_weight_;
  return (QValues() * EffectiveScales()).to(weight.scalar_type());
}

void QuantLinearV2::CacheEffectiveWeight() {
  at::Tensor w = EffectiveWeight().clone();
  at::NoGradGuard no_grad;
  cached_weight_.set_data(w);
}

void QuantLinearV2::ClearCache() {
  at::NoGradGuard no_grad;
  cached_weight_.set_data(at::empty({0}, weight.options()));
}

void QuantLinearV2::to(torch::Dtype dtype, bool non_blocking) {
  CastFloatingTensors(*this, dtype, non_blocking);
  SyncFromBuffers();
}

void QuantLinearV2::to(torch::Device device, torch::Dtype dtype, bool non_blocking) {
  torch::nn::Module::to(device, non_blocking);
  to(dtype, non_blocking);
}

}  // namespace qatd::quant
