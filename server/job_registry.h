#pragma once
// Job kind -> job function, for the worker process (DESIGN.md §2: core/jobs has one function
// per kind). The registry is filled at start-up by RegisterProbeJob (torch-free, here in
// server/) and RegisterCoreJobs (core_jobs.cc: the only translation unit of the daemon
// binary that includes core's job headers). Kinds without an entry fail in the worker with
// FAILED_PRECONDITION "job kind X is not available in this build".
//
// Each entry may carry a validator (the job's own options check from core) that the daemon
// runs at submit time, so a bad spec is rejected before it is queued. Not thread-safe to
// modify; read-only after start-up.

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/jobs/reporter.h"
#include "qatd/v1/worker.pb.h"

namespace qatd::server {

// Runs the job described by `task` (spec with pipeline inputs resolved, output and job dirs,
// attempt number for resume). Reports through `reporter`; polls `cancel` and returns
// CANCELLED when it stops early.
using JobFunction = std::function<absl::Status(const v1::WorkerTask& task, jobs::Reporter& reporter,
                                               jobs::CancelToken& cancel)>;
// Checks a spec of its kind; messages start with the field name relative to the kind's
// message ("max_length must be ..."), the registry adds the path prefix.
using JobValidator = std::function<absl::Status(const v1::JobSpec& spec)>;

class JobRegistry {
 public:
  void Register(v1::JobKind kind, JobFunction run, JobValidator validate = nullptr);
  // nullptr when the kind is not available.
  const JobFunction* Find(v1::JobKind kind) const;
  // The kind's validator, with "<prefix>.<kind field>." prepended to its message; OK when the
  // kind has none.
  absl::Status Validate(const v1::JobSpec& spec, const std::string& prefix = "spec") const;
  std::vector<v1::JobKind> Kinds() const;

 private:
  struct Entry {
    JobFunction run;
    JobValidator validate;
  };
  std::map<v1::JobKind, Entry> entries_;
};

// PROBE: a synthetic job (proto/qatd/v1/specs.proto ProbeSpec) for smoke tests.
void RegisterProbeJob(JobRegistry& registry);
// The kinds implemented in core/jobs that this build has (defined in core_jobs.cc).
void RegisterCoreJobs(JobRegistry& registry);

// The output directory a job should use: the spec's own if set, else the task's default.
std::string ResolveOutputDir(const std::string& spec_output_dir, const v1::WorkerTask& task);

}  // namespace qatd::server
