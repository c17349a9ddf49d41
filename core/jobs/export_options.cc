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
  // Unless asked otherwise: bf16 for hf (what Qwen3 checkpoints ship in and transformers
  // loads), fp16 for anemll (the ANE computes in fp16; ANEMLL's loaders cast to it).
  const Dtype dtype = DtypeFromProto(s.dtype());
  o.dtype = dtype != Dtype::kAuto ? dtype : (o.format == ExportFormat::kAnemll ? Dtype::kFp16 : Dtype::kBf16);
  if (s.has_max_shard_bytes() && o.format == ExportFormat::kAnemll) {
    // Refused, not ignored (issue #17 item 5): the anemll folder has one file per role.
    return absl::InvalidArgumentError("max_shard_bytes applies to format hf only (anemll writes unsharded files)");
  }
  if (s.has_max_shard_bytes()) o.max_shard_bytes = s.max_shard_bytes();
  o.device = DeviceOf(task);
  o.output_dir = OutputDirOf(s.output_dir(), task);
  return o;
}

absl::Status ExportOptions::Validate() const {
  QATD_RETURN_IF_ERROR(RequireField(model, "model"));
  QATD_RETURN_IF_ERROR(RequireField(checkpoint, "checkpoint"));
  QATD_RETURN_IF_ERROR(RequireField(output_dir, "output_dir"));
  if (dtype == Dtype::kAuto) return absl::InvalidArgumentError("dtype must be bf16, fp16 or fp32");
  if (max_shard_bytes < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_shard_bytes must be >= 1, got ", max_shard_bytes));
  }
  return absl::OkStatus();
}

}  // namespace qatd::jobs
