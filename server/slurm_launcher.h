#pragma once
// The Slurm executor (`qatd --executor slurm`, issue #15, deploy/slurm/README.md): each job
// attempt is one Slurm batch job. Launch() writes `<job dir>/slurm/job.sh` and submits it with
//   sbatch --parsable --job-name qatd-<id> --partition P [--account A] --nodes M
//          --ntasks-per-node N --cpus-per-task C --no-requeue --open-mode append
//          --output <job dir>/worker.log [--slurm-extra args...] <job dir>/slurm/job.sh
// where N is the spec's resources.device_count and M its resources.nodes (more than 1 only for
// the kinds that run data parallel, and several nodes only for QAT: submit-time validation
// refuses the rest; tested on one node only, deploy/slurm/README.md). The script runs `srun --kill-on-bad-exit=0` of `qatd-worker slurm-task` on every task
// (worker/slurm_task.h: rank from SLURM_PROCID, rendezvous through rank 0's store on its node),
// each task wrapped so that its exit code and node land in
// `<job dir>/slurm/<slurm job id>/task-<rank>.exit` ("<rank> <node> <code> <unix time>").
// Rank 0 reports to the daemon over the WorkerChannel gRPC service: the per-run secret goes in
// $QATD_JOB_SECRET in sbatch's environment (Slurm exports it to the tasks; it is not on any
// command line), so the data dir must be at the same path on every node (the task file, the
// log, the rendezvous folder).
//
// The returned WorkerProcess follows the Slurm job with `scontrol show job -o` (falling back to
// `sacct` on clusters with accounting, once slurmctld forgot the job); pid() is the Slurm job id.
//   - Signal(SIGTERM): a WorkerControl cancel while rank 0 is attached, else `scancel`;
//     Signal(SIGKILL): `scancel --signal KILL --full`, then `scancel`.
//   - A failure that rank 0 reports, or an end without a report, names the first task that
//     died ("task 1 on node n2 exited 137", a killed task's shell reports 128 + the signal),
//     else the Slurm job's end state ("Slurm job 7 ended NODE_FAIL on n[1-2]").
//   - Wait() blocks until Slurm says the job ended; a job still active 10 s after its event
//     stream ended is scancelled.
// Slurm's own requeue is off (--no-requeue): a re-run is the daemon's (its restart re-queues a
// running job, and a QAT job resumes from its resume/ checkpoint).

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "server/command_runner.h"
#include "server/worker_launcher.h"

namespace qatd::server {

class WorkerChannelService;

struct SlurmOptions {
  std::string worker_binary;  // qatd-worker, at this path on every node
  std::string partition;      // required
  std::string account;        // "" = the user's default
  std::vector<std::string> extra_args;  // appended to sbatch's options (--slurm-extra)
  int cpus_per_task = 1;
  // Where rank 0 reaches the daemon (set once the port is bound), and a TLS daemon's roots.
  std::string daemon_address;
  std::string daemon_ca_file;
  WorkerChannelService* channel = nullptr;
  CommandRunner* runner = nullptr;  // not owned
  std::chrono::milliseconds poll_interval{std::chrono::seconds(1)};
  std::chrono::milliseconds command_timeout{std::chrono::seconds(60)};
};

// The shape of a job on Slurm: nodes and tasks per node.
struct SlurmShape {
  int nodes = 1;
  int tasks_per_node = 1;
};
SlurmShape SlurmShapeOf(const v1::WorkerTask& task);

// The sbatch command line for `launch` (tests check it).
std::vector<std::string> SbatchCommand(const SlurmOptions& options, const WorkerLaunch& launch, const SlurmShape& shape,
                                       const std::string& script);

// The batch script: srun of `qatd-worker slurm-task` on every task, each task's exit recorded.
std::string BatchScript(const SlurmOptions& options, const WorkerLaunch& launch, const std::string& slurm_dir);

// What `scontrol show job -o` (or sacct) says of a job.
struct SlurmJobState {
  std::string state;     // PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, NODE_FAIL, ...; "" unknown
  std::string nodes;     // NodeList
  std::string exit_code; // "0:0" (code:signal)
  std::string reason;    // Reason (PENDING)
  bool active() const;   // pending, running or finishing
};
// Parses one line of `scontrol show job -o` (key=value pairs).
SlurmJobState ParseScontrolJob(const std::string& line);

// The task that ended badly first, from the `task-<rank>.exit` files ("rank node code time") in
// `exit_dir`: tasks whose code is not 143 (the SIGTERM srun sends the rest) before those that
// are, then the earliest, then the lowest rank: "task 1 on node n2 exited 137"; "" if none.
std::string DescribeTaskExits(const std::string& exit_dir);

class SlurmWorkerLauncher : public WorkerLauncher {
 public:
  explicit SlurmWorkerLauncher(SlurmOptions options) : options_(std::move(options)) {}
  absl::StatusOr<std::unique_ptr<WorkerProcess>> Launch(const WorkerLaunch& launch) override;
  void set_daemon_address(std::string address) {
    std::lock_guard<std::mutex> lock(mu_);
    options_.daemon_address = std::move(address);
  }

 private:
  std::mutex mu_;
  SlurmOptions options_;  // guarded by mu_
};

}  // namespace qatd::server
