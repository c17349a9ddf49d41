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
#include "core/infer/session_input.h"
#include "qatd/v1/worker.pb.h"

namespace qatd::worker {

// Runs the job described by `task` (spec with pipeline inputs resolved, output and job dirs,
// attempt number for resume). Reports through `reporter`; polls `cancel` and returns
// CANCELLED when it stops early.
using JobFunction = std::function<absl::Status(const v1::WorkerTask& task, jobs::Reporter& reporter,
                                               jobs::CancelToken& cancel)>;

// A chat session job (GenerateSpec.session): like a JobFunction, with the session's inputs
// as the daemon forwards them from the client (worker/session_inbox.h).
using SessionFunction = std::function<absl::Status(const v1::WorkerTask& task, jobs::Reporter& reporter,
                                                   infer::SessionInputs& inputs, jobs::CancelToken& cancel)>;

class JobRegistry {
 public:
  void Register(v1::JobKind kind, JobFunction run);
  void RegisterSession(v1::JobKind kind, SessionFunction run);
  // nullptr when the kind is not available.
  const JobFunction* Find(v1::JobKind kind) const;
  const SessionFunction* FindSession(v1::JobKind kind) const;
  std::vector<v1::JobKind> Kinds() const;

 private:
  std::map<v1::JobKind, JobFunction> entries_;
  std::map<v1::JobKind, SessionFunction> sessions_;
};

// Whether `spec` is a chat session (GenerateSpec.session): run by a SessionFunction.
bool IsSession(const v1::JobSpec& spec);

// PROBE: a synthetic job (proto/qatd/v1/specs.proto ProbeSpec) for smoke tests.
void RegisterProbeJob(JobRegistry& registry);
// The kinds implemented in core/jobs that this build has (defined in core_jobs.cc).
void RegisterCoreJobs(JobRegistry& registry);
// GENERATE chat sessions (generate_session_job.cc, LibTorch).
void RegisterGenerateSession(JobRegistry& registry);

}  // namespace qatd::worker
