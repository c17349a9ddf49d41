#pragma once
// The daemon process (DESIGN.md §3): opens the data dir (locked against a second daemon),
// the job store, the device pool, /metrics and the gRPC server (qatd.v1 + grpc.health.v1 +
// reflection), re-queues jobs a previous run left RUNNING, and serves until SIGTERM/SIGINT;
// then it stops accepting calls, stops the workers (their jobs are re-queued) and exits.
//
// Once serving it writes the bound ports to <data-dir>/metrics.port and then
// <data-dir>/qatd.port (atomically; useful with port 0): qatd.port existing means "ready".

#include "server/daemon_options.h"

namespace qatd::server {

// Returns the process exit code.
int RunDaemon(const DaemonOptions& options);

}  // namespace qatd::server
