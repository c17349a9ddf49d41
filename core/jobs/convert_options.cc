#include "core/jobs/convert_options.h"

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"
#include "core/jobs/options_common.h"

namespace qatd::jobs {

const char* ConvertModeName(ConvertMode mode) { return mode == ConvertMode::kV1ToV2 ? "v1_to_v2" : "q4_to_q2"; }

absl::StatusOr<ConvertOptions> ConvertOptions::FromProto(const v1::ConvertSpec& s, const v1::WorkerTask* task) {
  ConvertOptions o;
  o.mode = s.mode() == v1::CONVERT_MODE_V1_TO_V2 ? ConvertMode::kV1ToV2 : ConvertMode::kQ4ToQ2;
  o.model = s.model();
  o.checkpoint = s.checkpoint();
  if (s.has_q4_rank()) o.q4_rank = s.q4_rank();
  if (s.has_q2_mlp_rank()) o.q2_mlp_rank = s.q2_mlp_rank();
  if (s.has_q2_attn_rank()) o.q2_attn_rank = s.q2_attn_rank();
  if (s.has_q2_mlp_lut_size()) o.q2_mlp_lut_size = s.q2_mlp_lut_size();
  if (s.has_q2_attn_lut_size()) o.q2_attn_lut_size = s.q2_attn_lut_size();
  QATD_ASSIGN_OR_RETURN(o.source_quant, QuantFromProto(s.source_quant(), quant::QuantConfig{}));
  o.eval = s.eval();
  o.kd_cache_dir = s.kd_cache_dir();
  if (s.has_eval_samples()) o.eval_samples = s.eval_samples();
  if (!s.rounding().empty()) {
    absl::StatusOr<quant::Rounding> r = quant::ParseRounding(s.rounding());
    if (!r.ok()) return absl::InvalidArgumentError(absl::StrCat("convert.", r.status().message()));
    o.rounding = *r;
  }
  if (s.has_calibration_sequences()) o.calibration_sequences = s.calibration_sequences();
  if (!s.lut_init().empty()) {
    if (s.lut_init() != "values" && s.lut_init() != "kmeans") {
      return absl::InvalidArgumentError(
          absl::StrCat("convert.lut_init must be 'values' or 'kmeans', got '", s.lut_init(), "'"));
    }
    o.fit_luts = s.lut_init() == "kmeans";
  }
  o.device = DeviceOf(task);
  o.output_dir = OutputDirOf(s.output_dir(), task);
  return o;
}

absl::Status ConvertOptions::Validate() const {
  QATD_RETURN_IF_ERROR(RequireField(model, "model"));
  QATD_RETURN_IF_ERROR(RequireField(checkpoint, "checkpoint"));
  QATD_RETURN_IF_ERROR(RequireField(output_dir, "output_dir"));
  if (eval && kd_cache_dir.empty()) return absl::InvalidArgumentError("kd_cache_dir is required with eval");
  if (eval_samples < 1) return absl::InvalidArgumentError(absl::StrCat("eval_samples must be >= 1, got ", eval_samples));
  if (mode != ConvertMode::kQ4ToQ2 && (rounding != quant::Rounding::kNearest || fit_luts)) {
    return absl::InvalidArgumentError("rounding gptq and lut_init kmeans are for q4_to_q2 conversions only");
  }
  if (rounding == quant::Rounding::kGptq && kd_cache_dir.empty()) {
    return absl::InvalidArgumentError("kd_cache_dir is required with rounding gptq (the calibration sequences)");
  }
  if (calibration_sequences < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("calibration_sequences must be >= 1, got ", calibration_sequences));
  }
  for (auto [v, name] : {std::pair{q4_rank, "q4_rank"}, {q2_mlp_rank, "q2_mlp_rank"}, {q2_attn_rank, "q2_attn_rank"}}) {
    if (v < 1) return absl::InvalidArgumentError(absl::StrCat(name, " must be >= 1, got ", v));
  }
  for (auto [v, name] : {std::pair{q2_mlp_lut_size, "q2_mlp_lut_size"}, {q2_attn_lut_size, "q2_attn_lut_size"}}) {
    if (v < 2 || v > 256 || (v & (v - 1)) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(name, " must be a power of two in [2, 256], got ", v));
    }
  }
  return absl::OkStatus();
}

}  // namespace qatd::jobs
