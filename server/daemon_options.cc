#include "server/daemon_options.h"

#include <cstdlib>

#include "CLI/CLI.hpp"
#include "core/common/duration.h"
#include "server/version.h"
#include "worker/memory_limit.h"

namespace qatd::server {

CommandLine ParseCommandLine(int argc, char** argv) {
  CommandLine cl;
  DaemonOptions& d = cl.daemon;
  CLI::App app{"qatd: the LUT quantization-aware training daemon"};
  app.set_version_flag("--version", std::string("qatd ") + kQatdVersionLine);
  app.add_option("--listen", d.listen, "gRPC address HOST:PORT (port 0 = pick one; see <data-dir>/qatd.port)")
      ->capture_default_str();
  app.add_option("--data-dir", d.data_dir, "Database, logs and job directories (default ~/.qatd)");
  app.add_option("--metrics-address", d.metrics_address,
                 "Prometheus /metrics address HOST:PORT (port 0 = pick one; see <data-dir>/metrics.port)")
      ->capture_default_str();
  app.add_option("--token-file", d.token_file, "File holding the bearer token every RPC must present")
      ->check(CLI::ExistingFile);
  auto* cert = app.add_option("--tls-cert", d.tls_cert, "PEM certificate chain: serve TLS")->check(CLI::ExistingFile);
  auto* key = app.add_option("--tls-key", d.tls_key, "PEM private key for --tls-cert")->check(CLI::ExistingFile);
  cert->needs(key);
  key->needs(cert);
  app.add_option("--max-concurrent-jobs", d.max_concurrent_jobs, "Concurrent jobs per device")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  app.add_option("--cancel-grace-seconds", d.cancel_grace_seconds, "SIGTERM -> SIGKILL grace for cancelled jobs")
      ->check(CLI::Range(0.0, 3600.0))
      ->capture_default_str();
  app.add_option("--gpu-poll-seconds", d.gpu_poll_seconds, "How often GPU memory (without GPUs: host memory and CPU) is sampled")
      ->check(CLI::Range(0.5, 3600.0))
      ->capture_default_str();

  app.add_option("--worker-binary", d.worker_binary,
                 "The qatd-worker executable (default: next to qatd, then ../worker/, then $PATH)")
      ->check(CLI::ExistingFile);
  app.add_option("--worker-transport", d.worker_transport,
                 "How workers report: pipe (inherited fd) or grpc (WorkerChannel on the gRPC port)")
      ->check(CLI::IsMember({"pipe", "grpc"}))
      ->capture_default_str();
  app.add_option("--max-attempts", d.max_attempts,
                 "A job that was running whenever the daemon died fails after this many attempts (0 = no limit)")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  app.add_option("--worker-memory-limit", d.worker_memory_limit_bytes,
                 "Private memory each worker may allocate (RLIMIT_DATA; 16GiB, 512MiB, bytes; at least 1GiB; "
                 "0 = no limit); a job over it fails with RESOURCE_EXHAUSTED")
      ->transform(CLI::Validator(
          [](std::string& text) -> std::string {
            absl::StatusOr<uint64_t> bytes = worker::ParseWorkerMemoryLimit(text);
            if (!bytes.ok()) return std::string(bytes.status().message());
            text = std::to_string(*bytes);
            return "";
          },
          "SIZE"))
      ->capture_default_str();
  app.add_option("--allow-output-root", d.allow_output_roots,
                 "A directory under which specs may name their output_dir (repeatable); without any, jobs write "
                 "only in <data-dir>/jobs/<id>/")
      ->check(CLI::ExistingDirectory);
  app.add_option("--allow-input-root", d.allow_input_roots,
                 "A directory under which every input path of a spec must lie (repeatable; none = any path the "
                 "daemon can read)")
      ->check(CLI::ExistingDirectory);
  app.add_flag("--init", d.init,
               "Create a new database even though <data-dir>/jobs holds an earlier one's job folders "
               "(they are moved to jobs.before-init-<time>/); without it a missing or empty qatd.db "
               "next to job folders stops the daemon");

  std::string compact_after = "1h";
  app.add_option("--compact-after", compact_after,
                 "Compact a finished job's history this long after it ended: drop its progress and metric events, "
                 "thin its curves, drop a succeeded job's resume state (90s, 15m, 12h, 7d; 'never')")
      ->capture_default_str();
  app.add_option("--max-points-per-series", d.max_points_per_series,
                 "Metric points kept per series of a compacted job (evenly spread over its steps)")
      ->check(CLI::Range(2, 10000000))
      ->capture_default_str();
  app.add_flag("--keep-resume-state", d.keep_resume_state,
               "Keep <output>/resume of succeeded jobs at compaction (default: only final/ and best/ stay)");
  app.add_option("--disk-reserve-mib", d.disk_reserve_mib,
                 "MiB kept free in <data-dir>/reserve.bin; released when the disk fills up, so job failures can "
                 "still be recorded (0 = none)")
      ->check(CLI::Range(0, 1 << 20))
      ->capture_default_str();
  std::string metrics_retention = "10m";
  app.add_option("--metrics-retention", metrics_retention,
                 "Keep an ended job's final metric values on /metrics this long, so short jobs are scraped (30s, 10m)")
      ->capture_default_str();

  std::string session_idle_timeout = "10m";
  app.add_option("--session-idle-timeout", session_idle_timeout,
                 "End a chat session (qat infer --interactive) that gets no message this long, freeing its device "
                 "(30s, 10m, 2h; 'never'). E.g. --session-idle-timeout 30m")
      ->capture_default_str();

  app.add_option("--executor", d.executor,
                 "Where jobs run: local (child processes) or slurm (sbatch/srun; needs --worker-transport grpc)")
      ->check(CLI::IsMember({"local", "slurm"}))
      ->capture_default_str();
  app.add_option("--slurm-partition", d.slurm_partition, "Slurm partition of every job (--executor slurm)");
  app.add_option("--slurm-account", d.slurm_account, "Slurm account to charge (default: the user's)");
  app.add_option("--slurm-extra", d.slurm_extra,
                 "One more sbatch option, e.g. --slurm-extra=--gpus-per-node=8 (repeatable)")
      ->allow_extra_args(false);
  app.add_option("--slurm-cpus-per-task", d.slurm_cpus_per_task, "CPUs per Slurm task (each rank)")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  app.add_option("--slurm-daemon-address", d.slurm_daemon_address,
                 "HOST:PORT the Slurm tasks dial to reach this daemon (default: the bound --listen address)");

  try {
    app.parse(argc, argv);
    if (d.executor == "slurm" && d.worker_transport != "grpc") {
      throw CLI::ValidationError("--executor", "slurm needs --worker-transport grpc (tasks on other nodes report over "
                                               "the network), got --worker-transport " + d.worker_transport);
    }
    if (d.executor == "slurm" && d.slurm_partition.empty()) {
      throw CLI::ValidationError("--slurm-partition", "is required with --executor slurm");
    }
    if (d.executor != "slurm" && (!d.slurm_partition.empty() || !d.slurm_account.empty() || !d.slurm_extra.empty())) {
      throw CLI::ValidationError("--slurm-partition", "--slurm-* options need --executor slurm");
    }
    if (session_idle_timeout == "never") {
      d.session_idle_timeout_ms = 0;
    } else {
      absl::StatusOr<int64_t> idle_ms = ParseDurationMs(session_idle_timeout);
      if (!idle_ms.ok() || *idle_ms <= 0) {
        throw CLI::ValidationError("--session-idle-timeout",
                                   idle_ms.ok() ? "must be > 0 (or 'never')" : std::string(idle_ms.status().message()));
      }
      d.session_idle_timeout_ms = *idle_ms;
    }
    absl::StatusOr<int64_t> retention_ms = ParseDurationMs(metrics_retention);
    if (!retention_ms.ok()) throw CLI::ValidationError("--metrics-retention", std::string(retention_ms.status().message()));
    d.metrics_retention_ms = *retention_ms;
    if (compact_after == "never") {
      d.compact_after_ms = -1;
    } else {
      absl::StatusOr<int64_t> ms = ParseDurationMs(compact_after);
      if (!ms.ok()) throw CLI::ValidationError("--compact-after", std::string(ms.status().message()));
      d.compact_after_ms = *ms;
    }
  } catch (const CLI::ParseError& e) {
    cl.exit_code = app.exit(e);
    return cl;
  }
  if (d.data_dir.empty()) {
    const char* home = std::getenv("HOME");
    d.data_dir = std::string(home != nullptr ? home : ".") + "/.qatd";
  }
  return cl;
}

}  // namespace qatd::server
