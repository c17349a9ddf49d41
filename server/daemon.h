#pragma once
// The daemon process (DESIGN.md §3): opens the data dir (locked against a second daemon),
// the job store, the device pool, /metrics and the gRPC server (qatd.v1 + grpc.health.v1 +
// reflection), re-queues jobs a previous run left RUNNING, and serves until SIGTERM/SIGINT;
// then it stops accepting calls, stops the workers (their jobs are re-queued) and exits.
//
// Once serving it writes the bound ports to <data-dir>/qatd.port and <data-dir>/metrics.port
// (atomically; useful with port 0).

#include "server/daemon_options.h"
#include "server/job_registry.h"

namespace qatd::server {

// Returns the process exit code.
int RunDaemon(const DaemonOptions& options, const JobRegistry& registry);

}  // namespace qatd::server
