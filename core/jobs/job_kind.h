#pragma once
// Names of the job contract's enums and the conversions of a job's outcome (proto messages
// only; LibTorch-free, shared by the daemon, the store and the worker).

#include <string>

#include "absl/status/status.h"
#include "qatd/v1/job.pb.h"

namespace qatd::jobs {

// The kind named by the spec's oneof; JOB_KIND_UNSPECIFIED when none is set.
v1::JobKind JobKindOf(const v1::JobSpec& spec);
// "KD_CACHE", "QAT", ... (the enum name without its prefix).
std::string JobKindName(v1::JobKind kind);

// A job's error (canonical code + message) as an absl::Status; OK for code 0. Codes outside
// the canonical range become UNKNOWN.
absl::Status FromJobError(const v1::JobError& error);
v1::JobError ToJobError(const absl::Status& status);

}  // namespace qatd::jobs
