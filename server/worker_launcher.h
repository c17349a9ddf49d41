#pragma once
// Starting worker processes (DESIGN.md §3). The daemon runs every job in a child process
// `qatd worker --job-file F --event-fd 3` (fork + exec of its own executable), in its own
// process group, with CUDA_VISIBLE_DEVICES naming the job's devices, stdout/stderr appended
// to the job's log file, and the write end of an event pipe as fd 3. The child dies with the
// daemon (PR_SET_PDEATHSIG), so a kill -9 of the daemon leaves no orphan workers.
//
// WorkerLauncher is an interface so scheduler tests can run fake workers.

#include <sys/types.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace qatd::server {

struct WorkerExit {
  bool signaled = false;
  int exit_code = 0;  // when !signaled
  int signal = 0;     // when signaled
  bool clean() const { return !signaled && exit_code == 0; }
  // "exited with code 3" / "killed by signal SIGKILL (9)".
  std::string Describe() const;
};

class WorkerProcess {
 public:
  virtual ~WorkerProcess() = default;
  virtual int pid() const = 0;
  // Read end of the event pipe; EOF when the worker (and everything it started) is gone.
  virtual int event_fd() const = 0;
  // Sends `signal` to the worker's process group. A no-op once the worker was reaped.
  virtual void Signal(int signal) = 0;
  // Blocks until the worker exits and reaps it. Call once, after EOF on event_fd().
  virtual WorkerExit Wait() = 0;
};

struct WorkerLaunch {
  int64_t job_id = 0;
  std::string task_file;             // serialized v1::WorkerTask
  std::string log_file;              // stdout + stderr of the worker (appended)
  std::string cuda_visible_devices;  // "" = no GPU
};

class WorkerLauncher {
 public:
  virtual ~WorkerLauncher() = default;
  virtual absl::StatusOr<std::unique_ptr<WorkerProcess>> Launch(const WorkerLaunch& launch) = 0;
};

class ExecWorkerLauncher : public WorkerLauncher {
 public:
  // `executable` defaults to the running binary (/proc/self/exe).
  explicit ExecWorkerLauncher(std::string executable = "/proc/self/exe") : executable_(std::move(executable)) {}
  absl::StatusOr<std::unique_ptr<WorkerProcess>> Launch(const WorkerLaunch& launch) override;

 private:
  std::string executable_;
};

}  // namespace qatd::server
