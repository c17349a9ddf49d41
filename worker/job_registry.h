#pragma once
// Job kind -> job function, for the worker process (DESIGN.md §2: core/jobs has one function
// per kind). qatd-worker fills it at start-up with RegisterProbeJob (LibTorch-free, here) and
// RegisterCoreJobs (core_jobs.cc: the only translation unit of the worker that includes
// core's job headers). Kinds without an entry fail in the worker with FAILED_PRECONDITION
// "job kind X is not available in this build". Submit-time validation is core's
// (core/jobs/job_spec.h), not the registry's. Not thread-safe to modify; read-only after
// start-up.

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/common/reporter.h"
#include "qatd/v1/worker.pb.h"

namespace qatd::worker {

// Runs the job described by `task` (spec with pipeline inputs resolved, output and job dirs,
// attempt number for resume). Reports through `reporter`; polls `cancel` and returns
// CANCELLED when it stops early.
using JobFunction = std::function<absl::Status(const v1::WorkerTask& task, jobs::Reporter& reporter,
                                               jobs::CancelToken& cancel)>;

class JobRegistry {
 public:
  void Register(v1::JobKind kind, JobFunction run);
  // nullptr when the kind is not available.
  const JobFunction* Find(v1::JobKind kind) const;
  std::vector<v1::JobKind> Kinds() const;

 private:
  std::map<v1::JobKind, JobFunction> entries_;
};

// PROBE: a synthetic job (proto/qatd/v1/specs.proto ProbeSpec) for smoke tests.
void RegisterProbeJob(JobRegistry& registry);
// The kinds implemented in core/jobs that this build has (defined in core_jobs.cc).
void RegisterCoreJobs(JobRegistry& registry);

}  // namespace qatd::worker
