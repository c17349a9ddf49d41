#include "core/jobs/export_options.h"

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"

namespace qatd::jobs {

const char* ExportFormatName(ExportFormat format) {
  switch (format) {
    case ExportFormat::kHf: return "hf";
    case ExportFormat::kAnemll: return "anemll";
  }
  return "?";
}

absl::StatusOr<ExportOptions> ExportOptions::FromProto(const v1::ExportSpec& s, const v1::WorkerTask* task) {
  ExportOptions o;
  o.model = s.model();
  o.checkpoint = s.checkpoint();
  switch (s.format()) {
    case v1::EXPORT_FORMAT_HF: o.format = ExportFormat::kHf; break;
    case v1::EXPORT_FORMAT_ANEMLL: o.format = ExportFormat::kAnemll; break;
    default: return absl::InvalidArgumentError(absl::StrCat("format has no enum value ", s.format()));
  }
  // bf16 unless asked otherwise: what Qwen3 checkpoints ship in and transformers loads.
  const Dtype dtype = DtypeFromProto(s.dtype());
  o.dtype = dtype == Dtype::kAuto ? Dtype::kBf16 : dtype;
  if (s.has_max_shard_bytes()) o.max_shard_bytes = s.max_shard_bytes();
  o.device = DeviceOf(task);
  o.output_dir = OutputDirOf(s.output_dir(), task);
  return o;
}

absl::Status ExportOptions::Validate() const {
  QATD_RETURN_IF_ERROR(RequireField(model, "model"));
  QATD_RETURN_IF_ERROR(RequireField(checkpoint, "checkpoint"));
  QATD_RETURN_IF_ERROR(RequireField(output_dir, "output_dir"));
  if (format == ExportFormat::kAnemll) {
    return absl::InvalidArgumentError("format anemll is not implemented yet (use hf)");
  }
  if (dtype == Dtype::kAuto) return absl::InvalidArgumentError("dtype must be bf16, fp16 or fp32");
  if (max_shard_bytes < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_shard_bytes must be >= 1, got ", max_shard_bytes));
  }
  return absl::OkStatus();
}

}  // namespace qatd::jobs
