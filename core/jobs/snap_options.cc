#include "core/jobs/snap_options.h"

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"
#include "core/jobs/options_common.h"

namespace qatd::jobs {

absl::StatusOr<SnapOptions> SnapOptions::FromProto(const v1::SnapSpec& s, const v1::WorkerTask* task) {
  SnapOptions o;
  o.model = s.model();
  o.checkpoint = s.checkpoint();
  o.fp16 = s.fp16();
  if (s.has_test_generation()) o.test_generation = s.test_generation();
  o.device = DeviceOf(task);
  o.output_dir = OutputDirOf(s.output_dir(), task);
  return o;
}

absl::Status SnapOptions::Validate() const {
  QATD_RETURN_IF_ERROR(RequireField(model, "model"));
  QATD_RETURN_IF_ERROR(RequireField(checkpoint, "checkpoint"));
  QATD_RETURN_IF_ERROR(RequireField(output_dir, "output_dir"));
  if (max_new_tokens < 1) return absl::InvalidArgumentError("max_new_tokens must be >= 1");
  return absl::OkStatus();
}

}  // namespace qatd::jobs
