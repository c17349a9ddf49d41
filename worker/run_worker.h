#pragma once
// The worker process (`qatd-worker job ID KIND --task-file F ...`): reads its WorkerTask, runs
// the job function of its kind with an EventReporter, and ends the event stream with the job's
// final status. SIGTERM/SIGINT, or a cancel from the daemon over gRPC, cancel the job
// cooperatively (CancelToken).
//
// Transports (proto/qatd/v1/worker.proto): the pipe on `event_fd` (a worker the daemon forked),
// or, when `daemon_address` is set, the WorkerChannel gRPC service with the per-job secret from
// $QATD_JOB_SECRET (a worker on any host). A worker that loses its daemon stops the job and
// exits within `daemon_timeout_seconds`.
//
// Exit codes: 0 = the final status was delivered (whatever it says); 2 = unreadable task or
// bad arguments; 3 = the daemon was unreachable or gone before the final status was delivered.

#include <cstdint>
#include <string>

#include "worker/job_registry.h"

namespace qatd::worker {

struct WorkerArgs {
  int64_t job_id = 0;          // 0 = take the task's
  std::string task_file;
  int event_fd = 3;
  int control_fd = -1;         // a session job's control pipe (pipe transport); -1 = none
  std::string daemon_address;  // HOST:PORT: the gRPC transport
  std::string daemon_ca_file;  // PEM roots for a TLS daemon; "" = plaintext
  double daemon_timeout_seconds = 60.0;
};

int RunWorker(const WorkerArgs& args, const JobRegistry& registry);

}  // namespace qatd::worker
