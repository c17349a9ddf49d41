#pragma once
// The daemon's command line (CLI11):
//   qatd [--listen HOST:PORT] [--data-dir DIR] [--metrics-address HOST:PORT]
//        [--token-file F] [--tls-cert F --tls-key F] [--max-concurrent-jobs N]
//        [--cancel-grace-seconds S]
//   qatd worker --job-file F [--event-fd N]     (started by the daemon only)
// Defaults bind loopback only. The bearer token comes from --token-file, else from the
// QATD_TOKEN environment variable; none means no authentication.

#include <string>

#include "absl/status/statusor.h"
#include "server/worker_main.h"

namespace qatd::server {

struct DaemonOptions {
  std::string listen = "127.0.0.1:7433";
  std::string data_dir;                          // default ~/.qatd
  std::string metrics_address = "127.0.0.1:9464";
  std::string token_file;
  std::string tls_cert;
  std::string tls_key;
  int max_concurrent_jobs = 1;                   // per device
  double cancel_grace_seconds = 10.0;
  double gpu_poll_seconds = 10.0;
};

struct CommandLine {
  bool worker = false;
  WorkerArgs worker_args;
  DaemonOptions daemon;
  int exit_code = -1;  // >= 0: exit now with this code (help, usage error)
};

// Parses argv. Usage errors and --help print to stderr/stdout and set exit_code.
CommandLine ParseCommandLine(int argc, char** argv);

}  // namespace qatd::server
