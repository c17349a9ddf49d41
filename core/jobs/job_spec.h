#pragma once
// The job contract (DESIGN.md §2, §6): whether a JobSpec may be queued. INVALID_ARGUMENT
// naming the field by its path ("spec.kd_cache.max_length must be in [2, 1048576], got 1")
// before anything is queued. Two passes, both here in core:
//   1. the spec's fields: required fields, ranges of the fields that are set, enum values,
//      combinations, and that input paths exist on this host;
//   2. the kind's options: <Kind>Options::FromProto(spec) + Validate() (core/jobs/*_options.h),
//      the same calls the worker makes before it runs the job. Skipped while a pipeline input
//      still fills a field in (the spec is complete only at run time).
// LibTorch-free (qatd_core_base): the daemon calls this and nothing else.

#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "qatd/v1/job.pb.h"

namespace qatd::jobs {

struct SpecCheckContext {
  std::string prefix = "spec";    // field path of the spec in the request
  std::set<std::string> fed_fields;  // string fields a pipeline input fills in later
  bool check_paths = true;           // input paths must exist
};

absl::Status ValidateJobSpec(const v1::JobSpec& spec, const SpecCheckContext& context = {});

// The job kinds qatd-worker runs (GetServerInfo lists them).
std::vector<v1::JobKind> AvailableJobKinds();

}  // namespace qatd::jobs
