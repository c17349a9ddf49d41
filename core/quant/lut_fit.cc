#include "core/quant/lut_fit.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"
#include "core/quant/fake_quant.h"
#include "core/quant/lut.h"
#include "core/quant/quant_linear_v1.h"
#include "core/quant/quant_linear_v2.h"

namespace qatd::quant {
namespace {

// Samples sorted by value with weights and prefix sums of w, w*x and w*x^2: the weighted
// error and mean of any cell in O(1).
struct SortedSamples {
  std::vector<double> x;
  std::vector<double> w;       // prefix: w[i] = weight[0] + ... + weight[i-1]
  std::vector<double> wx;      // the same for weight * x
  std::vector<double> wxx;     // the same for weight * x^2
};

SortedSamples Prepare(const at::Tensor& u, const at::Tensor& weight, int64_t max_samples) {
  at::Tensor flat = u.detach().reshape({-1});
  at::Tensor wflat = weight.defined() ? weight.detach().reshape({-1}) : at::Tensor();
  const int64_t n = flat.numel();
  const int64_t stride = max_samples > 0 && n > max_samples ? (n + max_samples - 1) / max_samples : 1;
  if (stride > 1) {
    flat = flat.slice(0, 0, n, stride);
    if (wflat.defined()) wflat = wflat.slice(0, 0, n, stride);
  }
  flat = flat.to(at::kCPU, at::kDouble).contiguous();
  auto [sorted, order] = flat.sort();
  at::Tensor ws = wflat.defined() ? wflat.to(at::kCPU, at::kDouble).index_select(0, order).contiguous()
                                  : at::ones_like(sorted);
  SortedSamples s;
  const double* px = sorted.data_ptr<double>();
  const double* pw = ws.data_ptr<double>();
  const size_t m = static_cast<size_t>(sorted.numel());
  s.x.assign(px, px + m);
  s.w.assign(m + 1, 0.0);
  s.wx.assign(m + 1, 0.0);
  s.wxx.assign(m + 1, 0.0);
  for (size_t i = 0; i < m; ++i) {
    s.w[i + 1] = s.w[i] + pw[i];
    s.wx[i + 1] = s.wx[i] + pw[i] * px[i];
    s.wxx[i + 1] = s.wxx[i] + pw[i] * px[i] * px[i];
  }
  return s;
}

// Cell j of a sorted LUT holds samples [ends[j], ends[j+1]): nearest entry, ties to the lower.
std::vector<size_t> CellEnds(const SortedSamples& s, const std::vector<double>& lut) {
  std::vector<size_t> ends(lut.size() + 1, 0);
  ends.back() = s.x.size();
  for (size_t j = 0; j + 1 < lut.size(); ++j) {
    const double boundary = 0.5 * (lut[j] + lut[j + 1]);
    ends[j + 1] = static_cast<size_t>(std::upper_bound(s.x.begin(), s.x.end(), boundary) - s.x.begin());
  }
  return ends;
}

// Weighted mean squared rounding error.
double MeanSquaredError(const SortedSamples& s, const std::vector<double>& lut) {
  const std::vector<size_t> ends = CellEnds(s, lut);
  double total = 0;
  for (size_t j = 0; j < lut.size(); ++j) {
    const size_t a = ends[j], b = ends[j + 1];
    total += (s.wxx[b] - s.wxx[a]) - 2 * lut[j] * (s.wx[b] - s.wx[a]) + lut[j] * lut[j] * (s.w[b] - s.w[a]);
  }
  return std::max(0.0, total) / std::max(s.w.back(), 1e-300);
}

// Rounds to float32 and makes the entries strictly increasing (an empty cell's entry may have
// been passed by a neighbour); with include_zero the entry nearest 0 becomes exactly 0.
std::vector<float> ToStrictFloat(const std::vector<double>& lut, bool include_zero) {
  std::vector<float> out(lut.begin(), lut.end());
  std::sort(out.begin(), out.end());
  if (include_zero) {
    size_t nearest = 0;
    for (size_t j = 1; j < out.size(); ++j) {
      if (std::fabs(out[j]) < std::fabs(out[nearest])) nearest = j;
    }
    out[nearest] = 0.0f;
  }
  for (size_t j = 1; j < out.size(); ++j) {
    if (!(out[j] > out[j - 1])) out[j] = std::nextafter(out[j - 1], std::numeric_limits<float>::infinity());
  }
  return out;
}

}  // namespace

absl::StatusOr<LutFit> FitLutKMeans(const at::Tensor& u, int lut_size, const LutFitOptions& options,
                                    const at::Tensor& weight) {
  if (!u.defined() || u.numel() == 0) return absl::InvalidArgumentError("LUT fit: no values to fit");
  if (!at::isFloatingType(u.scalar_type())) return absl::InvalidArgumentError("LUT fit: values must be floating");
  if (!at::isfinite(u).all().item<bool>()) return absl::InvalidArgumentError("LUT fit: values are not all finite");
  if (weight.defined() && (weight.sizes() != u.sizes() || !(weight >= 0).all().item<bool>())) {
    return absl::InvalidArgumentError("LUT fit: weights must have the values' shape and be >= 0");
  }
  QATD_ASSIGN_OR_RETURN(std::vector<float> uniform, MakeLutValues(lut_size, options.include_zero));
  at::NoGradGuard no_grad;
  const SortedSamples s = Prepare(u, weight, options.max_samples);
  std::vector<double> lut(uniform.begin(), uniform.end());
  LutFit fit;
  fit.mse_uniform = MeanSquaredError(s, lut);
  for (int it = 0; it < options.iterations; ++it) {
    const std::vector<size_t> ends = CellEnds(s, lut);
    bool moved = false;
    for (size_t j = 0; j < lut.size(); ++j) {
      const double mass = s.w[ends[j + 1]] - s.w[ends[j]];
      if (!(mass > 0)) continue;  // an empty cell keeps its entry
      const double mean = (s.wx[ends[j + 1]] - s.wx[ends[j]]) / mass;
      moved |= std::fabs(mean - lut[j]) > 1e-9;
      lut[j] = mean;
    }
    if (options.include_zero) {
      const std::vector<float> pinned = ToStrictFloat(lut, true);
      lut.assign(pinned.begin(), pinned.end());
    }
    ++fit.iterations;
    if (!moved) break;
  }
  fit.values = ToStrictFloat(lut, options.include_zero);
  fit.mse_fitted = MeanSquaredError(s, std::vector<double>(fit.values.begin(), fit.values.end()));
  if (!(fit.mse_fitted <= fit.mse_uniform)) {  // rounding or the zero pin made it worse: keep the grid
    fit.values = uniform;
    fit.mse_fitted = fit.mse_uniform;
  }
  return fit;
}

namespace {

// The S^2-weighted fit of u = W / S to `lut`'s size, written into `lut` (its dtype); the
// caller refreshes the layer's derived state. Weighted by S^2: the error of W itself,
// (u - LUT[idx])^2 * S^2, is what the fit lowers.
absl::StatusOr<LutFit> FitInto(at::Tensor& lut, const at::Tensor& u, const at::Tensor& scales, bool include_zero,
                               const LutFitOptions& options) {
  LutFitOptions o = options;
  o.include_zero = include_zero;
  QATD_ASSIGN_OR_RETURN(LutFit fit, FitLutKMeans(u, static_cast<int>(lut.numel()), o, scales.square()));
  at::Tensor values = at::tensor(fit.values, at::kFloat).to(lut.device(), lut.scalar_type());
  absl::Status ok = CheckLut(values);
  if (!ok.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("LUT fit: the fitted entries do not survive rounding to the layer's ",
                                                   std::string(c10::toString(lut.scalar_type())), ": ",
                                                   ok.message()));
  }
  lut.copy_(values);
  return fit;
}

}  // namespace

absl::StatusOr<LutFit> FitLayerLut(QuantLinearV1& layer, const LutFitOptions& options) {
  if (layer.snapped_mode() != SnapMode::kNone) {
    return absl::FailedPreconditionError("LUT fit: the layer is snapped; fit its LUT before snapping");
  }
  at::NoGradGuard no_grad;
  const int64_t in = layer.in_features();
  at::Tensor scales = layer.EffectiveScales().detach().slice(1, 0, in).to(at::kFloat);
  at::Tensor u = layer.weight.detach().to(at::kFloat) / scales;
  QATD_ASSIGN_OR_RETURN(LutFit fit, FitInto(layer.lut, u, scales, layer.spec().lut_include_zero, options));
  layer.SyncFromBuffers();
  return fit;
}

absl::StatusOr<LutFit> FitLayerLutV2(QuantLinearV2& layer, const LutFitOptions& options) {
  if (layer.scales_baked()) return absl::FailedPreconditionError("LUT fit: the V2 layer is baked (snapped)");
  at::NoGradGuard no_grad;
  at::Tensor scales = layer.EffectiveScales().detach().to(at::kFloat);
  scales = at::where(scales.abs() < kMinScale, at::where(scales < 0, -kMinScale, kMinScale), scales);
  const at::Tensor u = layer.weight.detach().to(at::kFloat) / scales;
  const bool frozen = layer.q_frozen();
  QATD_ASSIGN_OR_RETURN(LutFit fit, FitInto(layer.lut, u, scales, layer.spec().lut_include_zero, options));
  layer.SyncFromBuffers();
  if (frozen) layer.FreezeQ();  // the nearest entries of the new LUT
  return fit;
}

}  // namespace qatd::quant
