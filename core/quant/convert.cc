#include "core/quant/convert.h"

#include <ATen/core/grad_mode.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/common/torch_status.h"
#include "core/quant/lut.h"

namespace qatd::quant {

absl::StatusOr<std::vector<float>> KMeansLut(const std::vector<float>& values, int k, int iterations) {
  const int n = static_cast<int>(values.size());
  if (k < 1 || k > n) return absl::InvalidArgumentError(absl::StrCat("k-means: k must be in [1, ", n, "], got ", k));
  std::vector<double> v(values.begin(), values.end());
  std::sort(v.begin(), v.end());
  std::vector<double> centres(k);
  for (int j = 1; j <= k; ++j) centres[j - 1] = v[(static_cast<int64_t>(j) * (n - 1)) / (k + 1)];

  std::vector<double> sum(k);
  std::vector<int> count(k);
  for (int it = 0; it < iterations; ++it) {
    std::fill(sum.begin(), sum.end(), 0.0);
    std::fill(count.begin(), count.end(), 0);
    for (double x : v) {
      int best = 0;
      double best_d = std::fabs(x - centres[0]);
      for (int j = 1; j < k; ++j) {
        double d = std::fabs(x - centres[j]);
        if (d < best_d) {  // strict: an exact tie stays with the lower centre
          best = j;
          best_d = d;
        }
      }
      sum[best] += x;
      ++count[best];
    }
    for (int j = 0; j < k; ++j) {
      if (count[j] > 0) centres[j] = sum[j] / count[j];
    }
  }
  std::sort(centres.begin(), centres.end());
  return std::vector<float>(centres.begin(), centres.end());
}

namespace {

std::vector<float> ToFloatVector(const at::Tensor& t) {
  at::Tensor c = t.detach().to(at::kCPU, at::kFloat).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

at::Tensor FromFloatVector(const std::vector<float>& v) {
  at::Tensor t = at::empty({static_cast<int64_t>(v.size())}, at::kFloat);
  std::copy(v.begin(), v.end(), t.data_ptr<float>());
  return t;
}

}  // namespace

absl::StatusOr<std::shared_ptr<QuantLinearV2>> ConvertLutAndRank(QuantLinearV2& source,
                                                                 const LayerQuantSpecV2& target, uint64_t seed) {
  const int64_t r0 = source.rank();
  const int64_t n0 = source.lut.numel();
  if (target.scale_rank < r0) {
    return absl::InvalidArgumentError(
        absl::StrCat("target scale_rank ", target.scale_rank, " is smaller than the source rank ", r0));
  }
  if (target.lut_size > n0) {
    return absl::InvalidArgumentError(
        absl::StrCat("target lut_size ", target.lut_size, " is larger than the source LUT (", n0, ")"));
  }
  if (source.scales_baked()) {
    return absl::FailedPreconditionError("cannot convert a layer whose scales are baked; convert before snapping");
  }
  return CatchTorchOr<std::shared_ptr<QuantLinearV2>>(
      "convert lut/rank", [&]() -> absl::StatusOr<std::shared_ptr<QuantLinearV2>> {
        at::NoGradGuard no_grad;
        const int64_t out = source.out_features();
        const int64_t in = source.in_features();
        const int64_t extra = target.scale_rank - r0;
        at::Generator gen = at::detail::createCPUGenerator(seed);
        at::Tensor new_a = at::randn({out, extra}, gen, at::kFloat) * 0.01;
        at::Tensor new_b = at::randn({extra, in}, gen, at::kFloat) * 0.01;
        at::Tensor a = at::cat({source.scale_A.detach().to(at::kCPU, at::kFloat), new_a}, 1);
        at::Tensor b = at::cat({source.scale_B.detach().to(at::kCPU, at::kFloat), new_b}, 0);
        at::Tensor g = at::cat({source.rank_magnitude.detach().to(at::kCPU, at::kFloat),
                                at::full({extra}, 0.01, at::kFloat)});
        at::Tensor lut = source.lut.detach().to(at::kCPU, at::kFloat);
        if (target.lut_size < n0) {
          auto centres = KMeansLut(ToFloatVector(lut), target.lut_size);
          if (!centres.ok()) return centres.status();
          lut = FromFloatVector(*centres);
        }
        at::Tensor bias = source.bias.defined() ? source.bias.detach() : at::Tensor();
        auto layer = QuantLinearV2::FromFactors(source.weight.detach(), bias, target, a, b, g, lut);
        if (!layer.ok()) return layer.status();
        // Nearest actual LUT value (spec §17.5): the reference used uniform-grid boundaries here.
        (*layer)->FreezeQ();
        return layer;
      });
}

absl::StatusOr<std::shared_ptr<QuantLinearV2>> ConvertV1ToV2(QuantLinearV1& source, const LayerQuantSpecV2& target,
                                                             double norm_floor) {
  if (!source.low_rank()) {
    return absl::FailedPreconditionError("V1 -> V2 needs a low-rank V1 layer (scale_A/scale_B); this one has full scales");
  }
  if (target.scale_rank != source.rank()) {
    return absl::InvalidArgumentError(
        absl::StrCat("target scale_rank ", target.scale_rank, " must equal the V1 rank ", source.rank()));
  }
  if (target.lut_size != source.lut.numel()) {
    return absl::InvalidArgumentError(
        absl::StrCat("target lut_size ", target.lut_size, " must equal the V1 LUT size ", source.lut.numel()));
  }
  return CatchTorchOr<std::shared_ptr<QuantLinearV2>>(
      "convert v1->v2", [&]() -> absl::StatusOr<std::shared_ptr<QuantLinearV2>> {
        at::NoGradGuard no_grad;
        const int64_t in = source.in_features();
        at::Tensor a = source.scale_A.detach().to(at::kFloat);
        at::Tensor b = source.scale_B.detach().to(at::kFloat).narrow(1, 0, in);
        at::Tensor an = a.norm(2, {0}).clamp_min(norm_floor);  // [r]
        at::Tensor bn = b.norm(2, {1}).clamp_min(norm_floor);  // [r]
        at::Tensor g = an * bn;
        // The reference stores g = a·b and relies on identity activation. For softplus we store
        // its inverse so that act(g) = a·b still holds (a deliberate fix).
        if (target.magnitude_activation == MagnitudeActivation::kSoftplus) g = at::log(at::expm1(g));

        at::Tensor latent = source.weight.detach();
        if (source.snapped_mode() == SnapMode::kLut) {
          at::Tensor s = source.EffectiveScales().detach();
          if (source.padded_in() > in) s = s.narrow(1, 0, in);
          latent = latent * s.to(latent.scalar_type());
        }
        at::Tensor bias = source.bias.defined() ? source.bias.detach() : at::Tensor();
        auto layer = QuantLinearV2::FromFactors(latent, bias, target, a / an.unsqueeze(0), b / bn.unsqueeze(1), g,
                                                source.lut.detach());
        if (!layer.ok()) return layer.status();
        (*layer)->FreezeQ();
        return layer;
      });
}

}  // namespace qatd::quant
