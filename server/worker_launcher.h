#pragma once
// Starting worker processes (DESIGN.md §3). The daemon runs every job in a child process
// `qatd-worker job <id> <KIND> --task-file F ...` (fork + exec of the qatd-worker binary), in
// its own process group, with CUDA_VISIBLE_DEVICES naming the job's devices and stdout/stderr
// appended to the job's log file. Events come back over the pipe transport (the write end of a
// pipe as fd 3) or the gRPC one (the WorkerChannel service, with a fresh secret per run in
// $QATD_JOB_SECRET); a session job's inputs go the other way (SendControl: a control pipe, or
// the same WorkerChannel stream). The child dies with the daemon (PR_SET_PDEATHSIG), so a kill -9 of the
// daemon leaves no orphan workers. Workers are the kernel OOM killer's first choice
// (oom_score_adj 500, or the daemon's own if higher) and may carry a memory limit
// (RLIMIT_DATA, worker/memory_limit.h).
//
// WorkerLauncher is the executor interface: local processes (ExecWorkerLauncher, here), Slurm
// (server/slurm_launcher.h), and fake workers in the scheduler tests.

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "qatd/v1/worker.pb.h"

namespace qatd::server {

struct WorkerExit {
  bool signaled = false;
  int exit_code = 0;  // when !signaled
  int signal = 0;     // when signaled
  // The worker's memory limit (0 = none), set when it died of a SIGKILL or SIGABRT the daemon
  // did not send: what the kernel's OOM killer or an uncaught std::bad_alloc ends it with.
  uint64_t memory_limit_bytes = 0;
  // What an executor other than local processes knows better (the Slurm executor: "Slurm job 7:
  // task 1 on node n2 exited 137"); when set, Describe() returns it.
  std::string detail;
  bool clean() const { return !signaled && exit_code == 0; }
  // "exited with code 3" / "killed by signal SIGKILL (9)" / "killed by signal SIGKILL (9) (the
  // worker memory limit is 16 GiB)".
  std::string Describe() const;
};

class WorkerProcess {
 public:
  virtual ~WorkerProcess() = default;
  virtual int pid() const = 0;
  // Read end of the event pipe (pipe transport); EOF when the worker (and everything it
  // started) is gone. -1 for other transports.
  virtual int event_fd() const = 0;
  // The next event of the worker's stream; std::nullopt at its end (the worker closed it or is
  // gone); DATA_LOSS for a corrupt stream. The default reads frames from event_fd().
  virtual absl::StatusOr<std::optional<v1::WorkerEvent>> NextEvent();
  // Sends `signal` to the worker's process group. A no-op once the worker was reaped. On the
  // gRPC transport SIGTERM becomes a WorkerControl cancel while the worker is attached.
  virtual void Signal(int signal) = 0;
  // Blocks until the worker exits and reaps it. Call once, after the end of the events.
  virtual WorkerExit Wait() = 0;
  // Sends a control message to the worker, in order with earlier ones: a session job's inputs
  // (WorkerControl.session). Pipe transport: over the control pipe of a session job; gRPC: on
  // the Attach stream (held until the worker attaches). FAILED_PRECONDITION when the worker
  // has no control channel; UNAVAILABLE once it is gone.
  virtual absl::Status SendControl(const v1::WorkerControl& control);
};

struct WorkerLaunch {
  int64_t job_id = 0;
  std::string kind;                  // "QAT", ... (shown in the worker's command line)
  std::string task_file;             // serialized v1::WorkerTask
  std::string log_file;              // stdout + stderr of the worker (appended)
  std::string cuda_visible_devices;  // "" = no GPU
  // A chat session job (GenerateSpec.session): on the pipe transport the worker also gets a
  // control pipe for SendControl (`--control-fd 4`).
  bool session = false;
};

class WorkerLauncher {
 public:
  virtual ~WorkerLauncher() = default;
  virtual absl::StatusOr<std::unique_ptr<WorkerProcess>> Launch(const WorkerLaunch& launch) = 0;
};

class WorkerChannelService;

struct ExecWorkerOptions {
  std::string executable;            // the qatd-worker binary (FindWorkerBinary)
  std::string transport = "pipe";    // pipe | grpc
  // gRPC transport: where the worker reaches the daemon, the PEM roots of a TLS daemon, and
  // the service that receives its events.
  std::string daemon_address;
  std::string daemon_ca_file;
  WorkerChannelService* channel = nullptr;
  // RLIMIT_DATA of every worker, also passed in $QATD_WORKER_MEMORY_LIMIT_BYTES; 0 = none. A
  // lower hard limit the daemon itself runs under wins.
  uint64_t memory_limit_bytes = 0;
};

class ExecWorkerLauncher : public WorkerLauncher {
 public:
  explicit ExecWorkerLauncher(ExecWorkerOptions options) : options_(std::move(options)) {}
  absl::StatusOr<std::unique_ptr<WorkerProcess>> Launch(const WorkerLaunch& launch) override;
  // The gRPC transport's daemon address, once the daemon's port is bound (before any Launch).
  void set_daemon_address(std::string address) {
    std::lock_guard<std::mutex> lock(mu_);
    options_.daemon_address = std::move(address);
  }

 private:
  std::mutex mu_;
  ExecWorkerOptions options_;  // guarded by mu_
};

// The qatd-worker executable: `flag` if set; else next to `self` (the running qatd: installed
// layout), else <dir of self>/../worker/qatd-worker (the build tree), else on $PATH. NOT_FOUND
// naming the places looked at.
absl::StatusOr<std::string> FindWorkerBinary(const std::string& flag, const std::string& self);

}  // namespace qatd::server
