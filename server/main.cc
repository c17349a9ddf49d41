// qatd: the daemon, or (`qatd worker ...`) one of its worker processes.
#include "core/cuda/allocator_defaults.h"
#include "server/daemon.h"
#include "server/daemon_options.h"
#include "server/job_registry.h"
#include "server/worker_main.h"

int main(int argc, char** argv) {
  qatd::cuda::SetAllocatorDefaults();  // before any CUDA allocation
  qatd::server::CommandLine command_line = qatd::server::ParseCommandLine(argc, argv);
  if (command_line.exit_code >= 0) return command_line.exit_code;
  qatd::server::JobRegistry registry;
  qatd::server::RegisterProbeJob(registry);
  qatd::server::RegisterCoreJobs(registry);
  if (command_line.worker) return qatd::server::RunWorker(command_line.worker_args, registry);
  return qatd::server::RunDaemon(command_line.daemon, registry);
}
