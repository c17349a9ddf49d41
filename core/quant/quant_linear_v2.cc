#include "core/quant/quant_linear_v2.h"

#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include "core/cuda/fused_ops.h"

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

// spec §4.4 steps 1-5 as ATen operations (graph when the inputs require grad).
QuantLinearV2::Factors ComposeFactors(const at::Tensor& a, const at::Tensor& b, const at::Tensor& g,
                                      const LayerQuantSpecV2& spec) {
  at::Tensor ap = a;
  at::Tensor bp = b;
  if (spec.force_positive_scales) {
    const bool softplus = spec.positive_scale_method == PositiveScaleMethod::kSoftplus;
    ap = softplus ? at::softplus(a) : a.abs();
    bp = softplus ? at::softplus(b) : b.abs();
  }
  QuantLinearV2::Factors f;
  f.a_dir = ap / ap.norm(2, {0}, /*keepdim=*/true).clamp_min(spec.norm_eps);
  f.b_dir = bp / bp.norm(2, {1}, /*keepdim=*/true).clamp_min(spec.norm_eps);
  at::Tensor act = g;
  if (spec.magnitude_activation == MagnitudeActivation::kAbs) act = g.abs();
  if (spec.magnitude_activation == MagnitudeActivation::kSoftplus) act = at::softplus(g);
  f.g_hat = act + spec.magnitude_eps;
  return f;
}

// The activation codes of cuda::TryV2Factors (0 identity, 1 abs, 2 softplus) and back.
int64_t PositiveCode(const LayerQuantSpecV2& s) {
  if (!s.force_positive_scales) return 0;
  return s.positive_scale_method == PositiveScaleMethod::kSoftplus ? 2 : 1;
}
int64_t MagnitudeCode(const LayerQuantSpecV2& s) {
  if (s.magnitude_activation == MagnitudeActivation::kAbs) return 1;
  return s.magnitude_activation == MagnitudeActivation::kSoftplus ? 2 : 0;
}
LayerQuantSpecV2 SpecOfCodes(int64_t positive, int64_t magnitude, double norm_eps, double magnitude_eps) {
  LayerQuantSpecV2 s;
  s.force_positive_scales = positive != 0;
  s.positive_scale_method = positive == 2 ? PositiveScaleMethod::kSoftplus : PositiveScaleMethod::kAbs;
  s.magnitude_activation = magnitude == 1   ? MagnitudeActivation::kAbs
                           : magnitude == 2 ? MagnitudeActivation::kSoftplus
                                            : MagnitudeActivation::kIdentity;
  s.norm_eps = norm_eps;
  s.magnitude_eps = magnitude_eps;
  return s;
}

// (Â diag ĝ, B̂) from (A, B, g) as one autograd node: on CUDA one kernel forward and one
// backward (cuda::TryV2Factors) in place of ~30 small ATen kernels per layer, which in a
// CUDA-graph training step of Qwen3-0.6B cost ~20 ms of launch latency. Values agree with
// ComposeFactors up to the order of float32 sums (tests/core/cuda/fused_ops_test.cc). Without
// the kernel (switched off between forward and backward) the backward re-derives the gradient
// from ComposeFactors with autograd.
struct DenseFactorsFn : public torch::autograd::Function<DenseFactorsFn> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& a,
                                                const at::Tensor& b, const at::Tensor& g, int64_t positive,
                                                int64_t magnitude, double norm_eps, double magnitude_eps) {
    ctx->save_for_backward({a, b, g});
    ctx->saved_data["positive"] = positive;
    ctx->saved_data["magnitude"] = magnitude;
    ctx->saved_data["norm_eps"] = norm_eps;
    ctx->saved_data["magnitude_eps"] = magnitude_eps;
    at::Tensor ag, b_dir;
    if (!cuda::TryV2Factors(a, b, g, static_cast<int>(positive), static_cast<int>(magnitude), norm_eps, magnitude_eps,
                            &ag, &b_dir)) {
      QuantLinearV2::Factors f = ComposeFactors(a, b, g, SpecOfCodes(positive, magnitude, norm_eps, magnitude_eps));
      ag = f.a_dir * f.g_hat.unsqueeze(0);
      b_dir = f.b_dir;
    }
    return {ag, b_dir};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &a = saved[0], &b = saved[1], &g = saved[2];
    const int64_t positive = ctx->saved_data["positive"].toInt(), magnitude = ctx->saved_data["magnitude"].toInt();
    const double norm_eps = ctx->saved_data["norm_eps"].toDouble();
    const double magnitude_eps = ctx->saved_data["magnitude_eps"].toDouble();
    const at::Tensor g_ag = grads[0].defined() ? grads[0].contiguous() : grads[0];
    const at::Tensor g_b = grads[1].defined() ? grads[1].contiguous() : grads[1];
    const bool need_a = ctx->needs_input_grad(0), need_b = ctx->needs_input_grad(1), need_g = ctx->needs_input_grad(2);
    at::Tensor da, db, dg;
    if (!cuda::TryV2FactorsBackward(a, b, g, static_cast<int>(positive), static_cast<int>(magnitude), norm_eps,
                                    magnitude_eps, g_ag, g_b, need_a ? &da : nullptr, need_b ? &db : nullptr,
                                    need_g ? &dg : nullptr)) {
      at::AutoGradMode grad_on(true);
      const at::Tensor la = a.detach().requires_grad_(true), lb = b.detach().requires_grad_(true);
      const at::Tensor lg = g.detach().requires_grad_(true);
      QuantLinearV2::Factors f = ComposeFactors(la, lb, lg, SpecOfCodes(positive, magnitude, norm_eps, magnitude_eps));
      std::vector<at::Tensor> outs, outs_grad;
      if (g_ag.defined()) {
        outs.push_back(f.a_dir * f.g_hat.unsqueeze(0));
        outs_grad.push_back(g_ag);
      }
      if (g_b.defined()) {
        outs.push_back(f.b_dir);
        outs_grad.push_back(g_b);
      }
      if (!outs.empty()) {
        auto d = torch::autograd::grad(outs, {la, lb, lg}, outs_grad, /*retain_graph=*/false,
                                       /*create_graph=*/false, /*allow_unused=*/true);
        da = need_a ? d[0] : at::Tensor();
        db = need_b ? d[1] : at::Tensor();
        dg = need_g ? d[2] : at::Tensor();
      }
    }
    return {da, db, dg, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

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
  return ComposeFactors(a, b, g, spec_);
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
  if (q_frozen() && !lut_trainable()) return q;
  // While the LUT trains, _Q would be stale after every step: gather from the LUT (index_select's
  // backward is the scatter-add of dL/dQ into the LUT entries).
  at::Tensor idx = q_frozen() ? indices.to(at::kLong) : ComputeIndicesNow();
  return lut.index_select(0, idx.reshape({-1})).reshape(idx.sizes()).to(weight.scalar_type());
}

void QuantLinearV2::SetTrainable(bool scales, bool g_only) {
  weight.requires_grad_(false);
  scale_A.requires_grad_(scales && !g_only);
  scale_B.requires_grad_(scales && !g_only);
  rank_magnitude.requires_grad_(scales);
}

void QuantLinearV2::SetLutTrainable(bool on) {
  const bool was = lut_trainable();
  lut.requires_grad_(on);
  if (was && !on) {
    at::NoGradGuard no_grad;
    boundaries_ = LutBoundaries(lut);
    if (q_frozen()) SetFrozenIndices(indices);  // _Q = LUT[idx] with the trained values
  }
}

void QuantLinearV2::SortLut() {
  at::NoGradGuard no_grad;
  auto sorted = lut.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false);
  const at::Tensor& order = std::get<1>(sorted);  // sorted[k] = lut[order[k]]
  const at::Tensor identity = at::arange(lut.numel(), order.options());
  if (at::equal(order, identity)) return;
  // Entry j moves to position new_pos[j]; LUT'[new_pos[idx]] = LUT[idx] exactly.
  const at::Tensor new_pos = at::empty_like(order).scatter_(0, order, identity);
  lut.set_data(std::get<0>(sorted).contiguous());
  boundaries_ = LutBoundaries(lut);
  if (q_frozen()) {
    SetFrozenIndices(new_pos.index_select(0, indices.to(at::kLong).reshape({-1})).reshape(indices.sizes()));
  }
  ClearCache();
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

  at::Tensor qv = QValues().to(dtype);  // a graph (to the LUT) only while the LUT trains
  const V2ForwardPath path = ResolvedPath();
  if (path == V2ForwardPath::kDense || path == V2ForwardPath::kDenseSte) {
    // Σ_k a_k ⊙ (Q (b_k ⊙ x)) = x (Q ⊙ (Â diag ĝ) B̂)ᵀ: one effective weight per call.
    const bool round = path == V2ForwardPath::kDenseSte && spec_.use_ste_fp16;
    at::Tensor ag, b_dir;
    if (!baked_ && cuda::FusedKernelsEnabled() && scale_A.is_cuda() && scale_A.scalar_type() == dtype) {
      const auto factors = DenseFactorsFn::apply(scale_A, scale_B, rank_magnitude, PositiveCode(spec_),
                                                 MagnitudeCode(spec_), spec_.norm_eps, spec_.magnitude_eps);
      ag = factors[0];
      b_dir = factors[1];
    } else {
      Factors f = ComputeFactors();
      ag = f.a_dir.to(dtype) * f.g_hat.to(dtype).unsqueeze(0);
      b_dir = f.b_dir.to(dtype);
    }
    if (q_frozen()) {
      // One autograd node (fake_quant.h FrozenLutLinear; a fused kernel on CUDA), same values;
      // it forms the LUT's gradient itself when the LUT trains.
      return FrozenLutLinear(x, qv.detach(), indices, lut.to(dtype), ag, b_dir, b, round);
    }
    return at::linear(x, MaybeSte(qv * at::matmul(ag, b_dir), round), b);
  }
  Factors f = ComputeFactors();
  f.a_dir = f.a_dir.to(dtype);
  f.b_dir = f.b_dir.to(dtype);
  f.g_hat = f.g_hat.to(dtype);
  at::Tensor y;
  switch (path) {
    case V2ForwardPath::kLoop:
      y = ForwardLoop(x, qv, f);
      break;
    case V2ForwardPath::kBatched:
      y = ForwardBatched(x, qv, f);
      break;
    default:  // the dense paths returned above; ResolvedPath never gives kAuto
      break;
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
