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
#include "qatd/v1/worker.pb.h"

namespace qatd::jobs {

struct SpecCheckContext {
  std::string prefix = "spec";    // field path of the spec in the request
  std::set<std::string> fed_fields;  // string fields a pipeline input fills in later
  bool check_paths = true;           // input paths must exist

  // Path confinement (the daemon's trust model, server/README.md). When on, a spec's
  // output_dir must be empty (the job writes in its own folder) or, with symlinks and `..`
  // resolved, lie under one of `allowed_output_roots` and outside `jobs_dir`, and must not be
  // an existing non-empty directory (qatd never replaces what it did not create; a KD cache
  // with `resume` may continue its own cache). Input paths must lie under one of
  // `allowed_input_roots` when any is given.
  bool confine_paths = false;
  std::vector<std::string> allowed_output_roots;
  std::vector<std::string> allowed_input_roots;
  std::string jobs_dir;
  // The most nodes a job may ask for (resources.nodes): 1 where the daemon runs jobs as local
  // processes, more with its Slurm executor.
  int max_nodes = 1;
};

absl::Status ValidateJobSpec(const v1::JobSpec& spec, const SpecCheckContext& context = {});

// Whether `path` (made absolute, symlinks and `..` resolved as far as it exists) lies at or
// under `root` (resolved the same way).
bool PathIsUnder(const std::string& path, const std::string& root);

// The first run of a job (attempt 1) that names its own output_dir finds it new or empty,
// unless it continues a KD cache (resume / overwrite touch only cache files): the submit-time
// check again, at run time, for a directory filled in the meantime. FAILED_PRECONDITION naming
// the path otherwise.
absl::Status CheckOutputDirAtStart(const v1::WorkerTask& task);

// The output_dir the spec names ("" when it names none: the job writes under its own folder).
std::string SpecOutputDir(const v1::JobSpec& spec);

// The job kinds qatd-worker runs (GetServerInfo lists them).
std::vector<v1::JobKind> AvailableJobKinds();

}  // namespace qatd::jobs
