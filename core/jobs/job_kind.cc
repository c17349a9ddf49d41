#include "core/jobs/job_kind.h"

#include <string_view>

namespace qatd::jobs {
namespace {

std::string StripPrefix(const std::string& name, std::string_view prefix) {
  return name.rfind(prefix, 0) == 0 ? name.substr(prefix.size()) : name;
}

}  // namespace

v1::JobKind JobKindOf(const v1::JobSpec& spec) {
  switch (spec.kind_case()) {
    case v1::JobSpec::kKdCache: return v1::JOB_KIND_KD_CACHE;
    case v1::JobSpec::kLayerwise: return v1::JOB_KIND_LAYERWISE;
    case v1::JobSpec::kQat: return v1::JOB_KIND_QAT;
    case v1::JobSpec::kConvert: return v1::JOB_KIND_CONVERT;
    case v1::JobSpec::kSnap: return v1::JOB_KIND_SNAP;
    case v1::JobSpec::kEval: return v1::JOB_KIND_EVAL;
    case v1::JobSpec::kGenerate: return v1::JOB_KIND_GENERATE;
    case v1::JobSpec::kProbe: return v1::JOB_KIND_PROBE;
    case v1::JobSpec::kExport: return v1::JOB_KIND_EXPORT;
    case v1::JobSpec::kLora: return v1::JOB_KIND_LORA;
    case v1::JobSpec::KIND_NOT_SET: break;
  }
  return v1::JOB_KIND_UNSPECIFIED;
}

std::string JobKindName(v1::JobKind kind) { return StripPrefix(v1::JobKind_Name(kind), "JOB_KIND_"); }

absl::Status FromJobError(const v1::JobError& error) {
  if (error.code() == 0) return absl::OkStatus();
  int code = error.code();
  if (code < 0 || code > 16) code = static_cast<int>(absl::StatusCode::kUnknown);
  return absl::Status(static_cast<absl::StatusCode>(code), error.message());
}

v1::JobError ToJobError(const absl::Status& status) {
  v1::JobError error;
  error.set_code(static_cast<int>(status.code()));
  error.set_message(std::string(status.message()));
  return error;
}

}  // namespace qatd::jobs
