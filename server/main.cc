// qatd: the daemon (gRPC, SQLite, scheduler, /metrics). It links no LibTorch: every job runs in
// a qatd-worker process (worker/main.cc).
#include "server/daemon.h"
#include "server/daemon_options.h"

int main(int argc, char** argv) {
  qatd::server::CommandLine command_line = qatd::server::ParseCommandLine(argc, argv);
  if (command_line.exit_code >= 0) return command_line.exit_code;
  return qatd::server::RunDaemon(command_line.daemon);
}
