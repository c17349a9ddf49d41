#pragma once
// Submit-time validation of job specs (DESIGN.md §6): INVALID_ARGUMENT naming the field by
// its path ("spec.kd_cache.max_length must be in [2, 1048576], got 1") before anything is
// queued. Checks required fields, value ranges from the seed's parameter tables, enum values,
// combinations, and that input paths exist on this host.
//
// This is the proto-level check. The worker's job registry adds each job function's own
// Validate() (core/) for the kinds this build can run (JobRegistry::Validate).

#include <set>
#include <string>

#include "absl/status/status.h"
#include "qatd/v1/job.pb.h"

namespace qatd::server {

struct SpecCheckContext {
  std::string prefix = "spec";    // field path of the spec in the request
  std::set<std::string> fed_fields;  // string fields a pipeline input fills in later
  bool check_paths = true;           // input paths must exist
};

absl::Status ValidateJobSpec(const v1::JobSpec& spec, const SpecCheckContext& context = {});

}  // namespace qatd::server
