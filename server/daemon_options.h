#pragma once
// The daemon's command line (CLI11):
//   qatd [--listen HOST:PORT] [--data-dir DIR] [--metrics-address HOST:PORT]
//        [--token-file F] [--tls-cert F --tls-key F] [--max-concurrent-jobs N]
//        [--cancel-grace-seconds S] [--worker-binary F] [--worker-transport pipe|grpc] [--init]
// Defaults bind loopback only. The bearer token comes from --token-file, else from the
// QATD_TOKEN environment variable; none means no authentication.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

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
  int max_attempts = 3;  // SchedulerOptions::max_attempts
  // RLIMIT_DATA of every worker (--worker-memory-limit 16GiB; worker/memory_limit.h); 0 = none.
  uint64_t worker_memory_limit_bytes = 0;
  // Where a spec may name an output directory besides the job's own folder (--allow-output-root,
  // repeatable), and where its inputs must lie (--allow-input-root; none = anywhere readable).
  std::vector<std::string> allow_output_roots;
  std::vector<std::string> allow_input_roots;
  // The qatd-worker executable; "" = next to qatd (installed layout), else ../worker/ (build
  // tree), else $PATH.
  std::string worker_binary;
  // How a forked worker reports: "pipe" (an inherited fd) or "grpc" (the WorkerChannel
  // service on the daemon's own gRPC port, as a worker on another host does).
  std::string worker_transport = "pipe";
  // Start a new, empty database although the data dir holds job folders of an earlier one
  // (they are moved aside to jobs.before-init-<time>/). Without it the daemon refuses.
  bool init = false;
  // Retention (server/retention.h): compact a finished job's history this long after it
  // ended (< 0 = never), keep at most this many points per metric series, keep resume state.
  int64_t compact_after_ms = 60 * 60 * 1000;
  int max_points_per_series = 2000;
  bool keep_resume_state = false;
  // Room kept free on the data dir's file system for recording failures when it fills up.
  int64_t disk_reserve_mib = 64;
  // How long an ended job's per-job series stay on /metrics (DaemonMetricsOptions).
  int64_t metrics_retention_ms = 10 * 60 * 1000;
  // A chat session (`qat infer --interactive`) with no input this long ends (CANCELLED), so a
  // stalled client cannot hold a device forever; 0 = never (--session-idle-timeout).
  int64_t session_idle_timeout_ms = 10 * 60 * 1000;
  // Where jobs run (the executor, server/slurm_launcher.h): "local" (child processes) or
  // "slurm" (one batch job per attempt; needs --worker-transport grpc and a partition).
  std::string executor = "local";
  std::string slurm_partition;
  std::string slurm_account;
  std::vector<std::string> slurm_extra;  // more sbatch options, one per --slurm-extra
  int slurm_cpus_per_task = 1;
  // HOST:PORT the Slurm tasks dial to reach the daemon; "" = the bound --listen address.
  std::string slurm_daemon_address;
};

struct CommandLine {
  DaemonOptions daemon;
  int exit_code = -1;  // >= 0: exit now with this code (help, usage error)
};

// Parses argv. Usage errors and --help print to stderr/stdout and set exit_code.
CommandLine ParseCommandLine(int argc, char** argv);

}  // namespace qatd::server
