#include "core/jobs/eval_options.h"

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"
#include "core/jobs/options_common.h"

namespace qatd::jobs {

absl::StatusOr<EvalJobOptions> EvalJobOptions::FromProto(const v1::EvalSpec& s, const v1::WorkerTask* task) {
  EvalJobOptions o;
  o.model = s.model();
  o.checkpoint = s.checkpoint();
  o.adapter = s.adapter();
  o.version = s.version() == v1::QAT_VERSION_V2 ? QatVersion::kV2 : QatVersion::kV1;
  o.kd_cache_dir = s.kd_cache_dir();
  if (s.has_eval_samples()) o.eval_samples = s.eval_samples();
  if (s.has_temperature()) o.temperature = s.temperature();
  if (s.has_batch_size()) o.batch_size = s.batch_size();
  o.dtype = DtypeFromProto(s.dtype());
  o.device = DeviceOf(task);
  return o;
}

absl::Status EvalJobOptions::Validate() const {
  QATD_RETURN_IF_ERROR(RequireField(model, "model"));
  QATD_RETURN_IF_ERROR(RequireField(kd_cache_dir, "kd_cache_dir"));
  if (version == QatVersion::kV2 && checkpoint.empty()) {
    return absl::InvalidArgumentError("version V2 needs a V2 checkpoint (without one the unquantized model runs)");
  }
  if (eval_samples < 1) return absl::InvalidArgumentError(absl::StrCat("eval_samples must be >= 1, got ", eval_samples));
  if (!(temperature > 0)) return absl::InvalidArgumentError(absl::StrCat("temperature must be > 0, got ", temperature));
  if (batch_size < 1) return absl::InvalidArgumentError(absl::StrCat("batch_size must be >= 1, got ", batch_size));
  return absl::OkStatus();
}

}  // namespace qatd::jobs
