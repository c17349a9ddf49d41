#include <ATen/core/grad_mode.h>
#include "core/quant/snap.h"

#include "core/common/torch_status.h"
#include "core/quant/lut.h"

#include <algorithm>

namespace qatd::quant {
namespace {

// mean|a - b| / mean|b| in float64 (0 when b is all zero).
double RelMeanAbs(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor ad = a.to(at::kDouble);
  at::Tensor bd = b.to(at::kDouble);
  double denom = bd.abs().mean().item<double>();
  double num = (ad - bd).abs().mean().item<double>();
  return denom > 0.0 ? num / denom : num;
}

double FractionChanged(const at::Tensor& before, const at::Tensor& after) {
  return before.ne(after).to(at::kDouble).mean().item<double>();
}

}  // namespace

std::vector<int64_t> LutEntryCounts(const at::Tensor& indices, int64_t lut_size) {
  at::Tensor counts = at::bincount(indices.reshape({-1}).to(at::kLong), {}, lut_size).to(at::kCPU);
  std::vector<int64_t> out(static_cast<size_t>(lut_size), 0);
  const int64_t* c = counts.data_ptr<int64_t>();
  for (int64_t i = 0; i < std::min<int64_t>(lut_size, counts.numel()); ++i) out[static_cast<size_t>(i)] = c[i];
  return out;
}

absl::StatusOr<SnapStats> SnapV1(QuantLinearV1& layer, SnapMode mode) {
  if (mode == SnapMode::kNone) return absl::InvalidArgumentError("snap mode must be 'lut' or 'baked'");
  return CatchTorchOr<SnapStats>("snap v1", [&]() -> absl::StatusOr<SnapStats> {
    at::NoGradGuard no_grad;
    const bool was_latent = layer.snapped_mode() == SnapMode::kNone;
    // Copies: the snap overwrites the weight in place, which these may alias.
    at::Tensor before = layer.EffectiveWeight().to(at::kFloat).clone();
    at::Tensor latent = was_latent ? layer.weight.detach().to(at::kFloat).clone() : before;
    at::Tensor idx = layer.ComputeIndices();
    at::Tensor values = layer.lut.index_select(0, idx.to(at::kLong).reshape({-1})).reshape(idx.sizes());
    at::Tensor s = layer.EffectiveScales();
    if (layer.padded_in() > layer.in_features()) s = s.narrow(1, 0, layer.in_features());
    at::Tensor new_weight = mode == SnapMode::kLut ? values : values.to(s.scalar_type()) * s;
    layer.SetSnapped(mode, new_weight.to(layer.weight.scalar_type()));

    SnapStats st;
    at::Tensor after = layer.EffectiveWeight().to(at::kFloat);
    st.rel_error = RelMeanAbs(after, latent);
    st.effective_change = RelMeanAbs(after, before);
    at::Tensor idx_after = layer.ComputeIndices();
    st.indices_changed = FractionChanged(idx, idx_after);
    st.lut_counts = LutEntryCounts(idx_after, layer.lut.numel());
    return st;
  });
}

absl::StatusOr<SnapStats> SnapV2ForExport(QuantLinearV2& layer) {
  return CatchTorchOr<SnapStats>("snap v2 export", [&]() -> absl::StatusOr<SnapStats> {
    at::NoGradGuard no_grad;
    if (!layer.q_frozen()) layer.FreezeQ();
    // A trained LUT: _Q from its values, sorted for CheckLut and the nearest search (the
    // output is unchanged bit for bit).
    layer.SetLutTrainable(false);
    layer.SortLut();
    at::Tensor before = layer.EffectiveWeight().to(at::kFloat).clone();
    at::Tensor latent = layer.weight.detach().to(at::kFloat).clone();
    SnapStats st;
    if (!layer.scales_baked()) {
      QuantLinearV2::Factors f = layer.ComputeFactors();
      layer.scale_A.set_data((f.a_dir * f.g_hat.unsqueeze(0)).detach().clone());
      layer.scale_B.set_data(f.b_dir.detach().clone());
      layer.rank_magnitude.set_data(at::ones_like(layer.rank_magnitude));
      layer.SetScalesBaked(true);
    }
    at::Tensor after = layer.EffectiveWeight().to(at::kFloat);
    st.rel_error = RelMeanAbs(after, latent);
    st.effective_change = RelMeanAbs(after, before);
    st.indices_changed = 0.0;  // indices are untouched
    st.lut_counts = LutEntryCounts(layer.Indices(), layer.lut.numel());
    return st;
  });
}

absl::StatusOr<SnapStats> SnapV2ForAne(QuantLinearV2& layer, const AneSnapOptions& options) {
  return CatchTorchOr<SnapStats>("snap v2 ane", [&]() -> absl::StatusOr<SnapStats> {
    at::NoGradGuard no_grad;
    if (!layer.q_frozen()) layer.FreezeQ();
    // A trained LUT: _Q from its values, sorted for CheckLut and the nearest search (the
    // output is unchanged bit for bit).
    layer.SetLutTrainable(false);
    layer.SortLut();
    at::Tensor before = layer.EffectiveWeight().to(at::kFloat).clone();
    at::Tensor latent = layer.weight.detach().to(at::kFloat).clone();
    at::Tensor idx_before = layer.Indices().clone();

    // Bake in float32, round each stored tensor to fp16 once.
    QuantLinearV2::Factors f = layer.ComputeFactors();
    at::Tensor a16 = (f.a_dir.to(at::kFloat) * f.g_hat.to(at::kFloat).unsqueeze(0)).to(at::kHalf);
    at::Tensor b16 = f.b_dir.to(at::kHalf);
    at::Tensor lut16 = layer.lut.to(at::kHalf);
    at::Tensor w16 = layer.weight.detach().to(at::kHalf);

    at::Tensor idx = idx_before;
    if (options.recompute_indices) {
      // S16 as the device computes it (fp16 result); no clamp: negative scales keep their
      // sign (spec §17.7). The division itself is done in float32 on fp16 operands.
      at::Tensor s16 = at::matmul(a16.to(at::kFloat), b16.to(at::kFloat)).to(at::kHalf);
      idx = NearestLutIndex(at::div(w16.to(at::kFloat), s16.to(at::kFloat)), lut16);
    }

    layer.weight.set_data(w16);
    if (layer.bias.defined()) layer.bias.set_data(layer.bias.detach().to(at::kHalf));
    layer.scale_A.set_data(a16);
    layer.scale_B.set_data(b16);
    layer.rank_magnitude.set_data(at::ones({layer.rank()}, a16.options()));
    layer.lut.set_data(lut16);
    layer.scales_baked_flag.fill_(1);
    layer.SyncFromBuffers();
    layer.SetFrozenIndices(idx);

    SnapStats st;
    at::Tensor after = layer.EffectiveWeight().to(at::kFloat);
    st.rel_error = RelMeanAbs(after, latent);
    st.effective_change = RelMeanAbs(after, before);
    st.indices_changed = FractionChanged(idx_before, layer.Indices());
    st.lut_counts = LutEntryCounts(layer.Indices(), layer.lut.numel());
    return st;
  });
}

}  // namespace qatd::quant
