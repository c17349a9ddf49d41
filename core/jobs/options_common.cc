#include "core/jobs/options_common.h"

#include <regex>

#include "absl/strings/str_cat.h"

namespace qatd::jobs {

absl::Status RequireField(const std::string& value, const char* field) {
  if (value.empty()) return absl::InvalidArgumentError(absl::StrCat(field, " is required"));
  return absl::OkStatus();
}

absl::Status CheckRange(const char* field, int64_t value, int64_t lo, int64_t hi) {
  if (value < lo || value > hi) {
    return absl::InvalidArgumentError(absl::StrCat(field, " must be in [", lo, ", ", hi, "], got ", value));
  }
  return absl::OkStatus();
}

const char* DtypeName(Dtype dtype) {
  switch (dtype) {
    case Dtype::kBf16: return "bf16";
    case Dtype::kFp16: return "fp16";
    case Dtype::kFp32: return "fp32";
    case Dtype::kAuto: break;
  }
  return "auto";
}

absl::StatusOr<Dtype> ParseDtype(const std::string& d) {
  if (d == "auto") return Dtype::kAuto;
  if (d == "bf16" || d == "bfloat16") return Dtype::kBf16;
  if (d == "fp16" || d == "float16") return Dtype::kFp16;
  if (d == "fp32" || d == "float32") return Dtype::kFp32;
  return absl::InvalidArgumentError(absl::StrCat("dtype must be one of auto, bf16, fp16, fp32; got '", d, "'"));
}

absl::Status CheckDeviceName(const std::string& device) {
  static const std::regex kDevice("auto|cpu|cuda(:[0-9]+)?");
  if (std::regex_match(device, kDevice)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("device must be auto, cpu, cuda or cuda:N; got '", device, "'"));
}

Dtype DtypeFromProto(v1::Dtype dtype) {
  switch (dtype) {
    case v1::DTYPE_BF16: return Dtype::kBf16;
    case v1::DTYPE_FP16: return Dtype::kFp16;
    case v1::DTYPE_FP32: return Dtype::kFp32;
    default: return Dtype::kAuto;
  }
}

std::string DeviceOf(const v1::WorkerTask* task) {
  if (task == nullptr) return "cpu";
  return (task->devices_size() == 0 || task->devices(0) == "cpu") ? "cpu" : "cuda:0";
}

std::string OutputDirOf(const std::string& spec_output_dir, const v1::WorkerTask* task) {
  if (task == nullptr) return spec_output_dir.empty() ? "<job output directory>" : spec_output_dir;
  return ResolveOutputDir(spec_output_dir, *task);
}

std::string ResolveOutputDir(const std::string& spec_output_dir, const v1::WorkerTask& task) {
  return spec_output_dir.empty() ? task.output_dir() : spec_output_dir;
}

bool IsRerun(const v1::WorkerTask* task) { return task != nullptr && task->attempt() > 1; }

absl::StatusOr<quant::QuantConfig> QuantFromProto(const v1::QuantSettings& q, quant::QuantConfig base) {
  if (!q.preset().empty()) {
    auto preset = quant::QuantConfig::FromPreset(q.preset());
    if (!preset.ok()) return absl::InvalidArgumentError(absl::StrCat("quant.preset: ", preset.status().message()));
    base = *preset;
  }
  if (q.has_lut_size()) base.lut_size = q.lut_size();
  if (q.has_group_size()) base.group_size = q.group_size();
  if (q.has_scale_rank()) base.scale_rank = q.scale_rank();
  if (q.lut_include_zero()) base.lut_include_zero = true;
  if (q.quantize_attn()) base.quantize_attn = true;
  if (q.attn_lut_size() != 0) base.attn_lut_size = q.attn_lut_size();
  if (q.attn_group_size() != 0) base.attn_group_size = q.attn_group_size();
  if (q.has_attn_scale_rank()) base.attn_scale_rank = q.attn_scale_rank();
  if (q.quantize_lm_head()) base.quantize_lm_head = true;
  if (!q.lut_init().empty()) {
    absl::StatusOr<quant::LutInit> init = quant::ParseLutInit(q.lut_init());
    if (!init.ok()) return absl::InvalidArgumentError(absl::StrCat("quant.", init.status().message()));
    base.lut_init = *init;
  }
  if (!q.rounding().empty()) {
    absl::StatusOr<quant::Rounding> rounding = quant::ParseRounding(q.rounding());
    if (!rounding.ok()) return absl::InvalidArgumentError(absl::StrCat("quant.", rounding.status().message()));
    base.rounding = *rounding;
  }
  if (q.calibration_sequences() != 0) base.calibration_sequences = q.calibration_sequences();
  absl::Status valid = base.Validate();
  if (!valid.ok()) return absl::InvalidArgumentError(absl::StrCat("quant.", valid.message()));
  return base;
}

absl::StatusOr<quant::QuantConfigV2> QuantV2FromProto(const v1::QuantSettingsV2& q) {
  auto preset = quant::QuantConfigV2::FromPreset(q.preset().empty() ? "Q2_A4" : q.preset());
  if (!preset.ok()) return absl::InvalidArgumentError(absl::StrCat("quant_v2.preset: ", preset.status().message()));
  quant::QuantConfigV2 c = *preset;
  c.quantize_attn = true;
  if (q.has_lut_size()) c.lut_size = q.lut_size();
  if (q.has_scale_rank()) c.scale_rank = q.scale_rank();
  if (q.has_attn_lut_size()) c.attn_lut_size = q.attn_lut_size();
  if (q.has_attn_scale_rank()) c.attn_scale_rank = q.attn_scale_rank();
  if (q.has_group_size()) c.group_size = q.group_size();
  if (q.force_positive_scales()) c.force_positive_scales = true;
  if (q.magnitude_activation() == v1::MAGNITUDE_ACTIVATION_SOFTPLUS) c.magnitude_activation = quant::MagnitudeActivation::kSoftplus;
  if (q.magnitude_activation() == v1::MAGNITUDE_ACTIVATION_ABS) c.magnitude_activation = quant::MagnitudeActivation::kAbs;
  if (q.has_magnitude_eps()) c.magnitude_eps = q.magnitude_eps();
  if (q.has_norm_eps()) c.norm_eps = q.norm_eps();
  if (q.has_use_ste_fp16()) c.use_ste_fp16 = q.use_ste_fp16();
  absl::Status valid = c.Validate();
  if (!valid.ok()) return absl::InvalidArgumentError(absl::StrCat("quant_v2.", valid.message()));
  return c;
}

}  // namespace qatd::jobs
