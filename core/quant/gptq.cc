#include "core/quant/gptq.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"
#include "core/common/torch_status.h"
#include "core/quant/fake_quant.h"
#include "core/quant/lut.h"
#include "core/quant/quant_linear_v1.h"
#include "core/quant/quant_linear_v2.h"

namespace qatd::quant {
namespace {

// tr(E H E^T) = sum((E @ H) * E), E = W - Q: the output error over the calibration rows.
double OutputError(const at::Tensor& w, const at::Tensor& q, const at::Tensor& h) {
  at::Tensor e = w - q;
  return at::matmul(e, h).mul_(e).sum().to(at::kDouble).item<double>();
}

// The upper Cholesky factor U of (H + damp I)^-1 (H^-1 = U^T U); damp grows 10x on failure.
absl::StatusOr<at::Tensor> InverseCholeskyUpper(const at::Tensor& h, double* damp) {
  const at::Tensor eye = at::eye(h.size(0), h.options());
  for (int attempt = 0; attempt < 5; ++attempt, *damp *= 10) {
    auto [l, info] = at::linalg_cholesky_ex(h + eye * *damp);
    if (info.item<int64_t>() != 0) continue;
    auto [u, info_u] = at::linalg_cholesky_ex(at::cholesky_inverse(l), /*upper=*/true);
    if (info_u.item<int64_t>() == 0 && at::isfinite(u).all().item<bool>()) return u;
  }
  return absl::FailedPreconditionError(
      absl::StrCat("GPTQ: the damped Hessian is not positive definite even with damping ", *damp / 10));
}

absl::Status CheckInputs(const at::Tensor& weight, const at::Tensor& scales, const at::Tensor& lut,
                         const at::Tensor& hessian, const GptqOptions& o) {
  if (!weight.defined() || weight.dim() != 2 || !at::isFloatingType(weight.scalar_type())) {
    return absl::InvalidArgumentError("GPTQ: weight must be a 2-D floating tensor [out, in]");
  }
  const int64_t out = weight.size(0), in = weight.size(1);
  if (!scales.defined() || scales.dim() != 2 || scales.size(0) != out || scales.size(1) < in) {
    return absl::InvalidArgumentError(absl::StrCat("GPTQ: scales must be [", out, ", >= ", in, "]"));
  }
  QATD_RETURN_IF_ERROR(CheckLut(lut));
  if (!hessian.defined() || hessian.dim() != 2 || hessian.size(0) != in || hessian.size(1) != in) {
    return absl::InvalidArgumentError(absl::StrCat("GPTQ: hessian must be [", in, ", ", in, "]"));
  }
  if (!at::isfinite(hessian).all().item<bool>()) return absl::InvalidArgumentError("GPTQ: hessian is not finite");
  if (!(o.damp > 0)) return absl::InvalidArgumentError(absl::StrCat("GPTQ: damp must be > 0, got ", o.damp));
  if (o.block_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("GPTQ: block_size must be >= 1, got ", o.block_size));
  }
  return absl::OkStatus();
}

// The per-layer report: `before` are the layer's nearest indices, `after` what it computes now.
GptqLayerReport LayerReport(const GptqResult& r, const at::Tensor& before, const at::Tensor& after) {
  GptqLayerReport report;
  report.error_nearest = r.error_nearest;
  report.error_gptq = r.error_gptq;
  report.dead_columns = r.dead_columns;
  report.indices_changed = before.ne(r.indices).sum().item<int64_t>();
  report.index_mismatches = after.to(at::kLong).ne(r.indices).sum().item<int64_t>();
  return report;
}

}  // namespace

absl::StatusOr<GptqResult> GptqRound(const at::Tensor& weight, const at::Tensor& scales, const at::Tensor& lut,
                                     const at::Tensor& hessian, const GptqOptions& options) {
  QATD_RETURN_IF_ERROR(CheckInputs(weight, scales, lut, hessian, options));
  return CatchTorchOr<GptqResult>("GPTQ", [&]() -> absl::StatusOr<GptqResult> {
    at::NoGradGuard no_grad;
    const int64_t in = weight.size(1);
    const at::Device device = weight.device();
    const at::Tensor w0 = weight.detach().to(at::kFloat);
    at::Tensor s = scales.detach().narrow(1, 0, in).to(device, at::kFloat);
    if (options.signed_scales) {
      s = at::where(s.abs() < kMinScale, at::where(s < 0, -kMinScale, kMinScale), s);
    } else {
      s = s.clamp_min(kMinScale);
    }
    const at::Tensor values = lut.detach().to(device, at::kFloat);
    const at::Tensor boundaries = LutBoundaries(lut).to(device);
    const at::Tensor h0 = hessian.detach().to(device, at::kFloat);
    auto quantize = [&](const at::Tensor& w, const at::Tensor& sc, at::Tensor* idx) {
      *idx = NearestLutIndexWithBoundaries(w / sc, boundaries);
      return values.index_select(0, idx->reshape({-1})).reshape(idx->sizes()) * sc;
    };

    GptqResult r;
    at::Tensor rtn_idx;
    const at::Tensor rtn = quantize(w0, s, &rtn_idx);
    r.error_nearest = OutputError(w0, rtn, h0);

    // Columns as rows ([I, O], contiguous) so that each step touches contiguous memory.
    at::Tensor h = h0.clone();
    const at::Tensor dead = h.diagonal() == 0;
    r.dead_columns = dead.sum().item<int64_t>();
    h.diagonal().masked_fill_(dead, 1.0);
    at::Tensor wt = w0.t().contiguous();
    at::Tensor st = s.t().contiguous();
    at::Tensor perm;
    if (options.act_order) {
      perm = std::get<1>(h.diagonal().sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
      wt = wt.index_select(0, perm);
      st = st.index_select(0, perm);
      h = h.index_select(0, perm).index_select(1, perm);
    }
    r.damp = options.damp * h.diagonal().mean().item<double>();
    QATD_ASSIGN_OR_RETURN(const at::Tensor u, InverseCholeskyUpper(h, &r.damp));

    at::Tensor qt = at::empty_like(wt);
    at::Tensor it = at::empty(wt.sizes(), wt.options().dtype(at::kLong));
    for (int64_t i1 = 0; i1 < in; i1 += options.block_size) {
      const int64_t count = std::min(options.block_size, in - i1);
      at::Tensor w1 = wt.narrow(0, i1, count);  // a view: updated in place
      at::Tensor u1 = u.narrow(0, i1, count).narrow(1, i1, count);
      at::Tensor err1 = at::empty_like(w1);
      for (int64_t i = 0; i < count; ++i) {
        const at::Tensor w = w1.select(0, i);
        at::Tensor idx;
        const at::Tensor q = quantize(w, st.select(0, i1 + i), &idx);
        qt.select(0, i1 + i).copy_(q);
        it.select(0, i1 + i).copy_(idx);
        at::Tensor e = err1.select(0, i);
        at::div_out(e, w - q, u1.select(0, i).select(0, i));
        if (i + 1 < count) {
          w1.narrow(0, i + 1, count - i - 1).addr_(u1.select(0, i).narrow(0, i + 1, count - i - 1), e, 1.0, -1.0);
        }
      }
      const int64_t rest = in - i1 - count;
      if (rest > 0) {
        wt.narrow(0, i1 + count, rest).sub_(at::matmul(u.narrow(0, i1, count).narrow(1, i1 + count, rest).t(), err1));
      }
    }
    if (options.act_order) {
      qt = at::empty_like(qt).index_copy_(0, perm, qt);
      it = at::empty_like(it).index_copy_(0, perm, it);
    }
    r.q = qt.t().contiguous();
    r.indices = it.t().contiguous();
    r.error_gptq = OutputError(w0, r.q, h0);
    return r;
  });
}

absl::StatusOr<GptqLayerReport> ApplyGptqRounding(QuantLinearV1& layer, const at::Tensor& hessian,
                                                  const GptqOptions& options) {
  if (layer.snapped_mode() != SnapMode::kNone) {
    return absl::FailedPreconditionError("GPTQ: the layer is snapped; round it before snapping");
  }
  at::NoGradGuard no_grad;
  const at::Tensor scales = layer.EffectiveScales().detach();
  const at::Tensor before = layer.ComputeIndices().to(at::kLong);
  QATD_ASSIGN_OR_RETURN(GptqResult r, GptqRound(layer.weight, scales, layer.lut, hessian, options));
  return CatchTorchOr<GptqLayerReport>("GPTQ", [&]() -> absl::StatusOr<GptqLayerReport> {
    layer.weight.copy_(r.q.to(layer.weight.scalar_type()));
    layer.ClearCache();
    return LayerReport(r, before, layer.ComputeIndices());
  });
}

absl::StatusOr<GptqLayerReport> ApplyGptqRoundingV2(QuantLinearV2& layer, const at::Tensor& hessian,
                                                    GptqOptions options) {
  if (layer.scales_baked()) {
    return absl::FailedPreconditionError("GPTQ: the V2 layer is baked (snapped); round it before snapping");
  }
  options.signed_scales = true;
  at::NoGradGuard no_grad;
  const at::Tensor scales = layer.EffectiveScales().detach();
  const at::Tensor before = layer.Indices().to(at::kLong);
  QATD_ASSIGN_OR_RETURN(GptqResult r, GptqRound(layer.weight, scales, layer.lut, hessian, options));
  return CatchTorchOr<GptqLayerReport>("GPTQ", [&]() -> absl::StatusOr<GptqLayerReport> {
    layer.SetFrozenIndices(r.indices);
    return LayerReport(r, before, layer.Indices());
  });
}

}  // namespace qatd::quant
