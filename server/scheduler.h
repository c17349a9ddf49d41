#pragma once
// The job queue and its workers (DESIGN.md §3).
//
// Order: priority (higher first), then FIFO by job id. A queued job is *ready* when every job
// it depends on has SUCCEEDED (a dependency that ended otherwise fails it with
// FAILED_PRECONDITION); the first ready job in that order starts when the DevicePool grants
// its devices, and nothing behind it starts before it (no starvation of large jobs).
//
// Starting a job: pipeline inputs (upstream artifacts) are written into its spec, a
// WorkerTask goes to <jobs_dir>/<id>/task.pb, a worker is launched on the granted devices and
// the job becomes RUNNING. A monitor thread per worker turns its event stream into journal
// entries and, when the worker is gone, decides the final state:
//   final status OK -> SUCCEEDED; CANCELLED -> CANCELLED; other -> FAILED with that status;
//   no final status -> FAILED (INTERNAL) with the exit reason ("killed by signal SIGKILL (9)"),
//   or CANCELLED if a cancel was requested.
// Cancel: a queued job is cancelled at once; a running one gets SIGTERM, and SIGKILL after
// `cancel_grace_ms`. Shutdown re-queues running jobs (they resume on the next start), as does
// Start() for jobs a previous daemon left RUNNING, except chat sessions (GenerateSpec.session),
// which are cancelled: their client went with the daemon.
//
// Thread-safe. The dispatcher thread also forks the workers, so their PR_SET_PDEATHSIG is tied
// to a thread that lives as long as the scheduler.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "qatd/v1/job.pb.h"
#include "qatd/v1/worker.pb.h"
#include "server/device_pool.h"
#include "server/disk_reserve.h"
#include "server/job_journal.h"
#include "server/metrics.h"
#include "server/worker_launcher.h"
#include "storage/job_store.h"

namespace qatd::server {

struct SchedulerOptions {
  std::string jobs_dir;            // per-job directories (task.pb, worker.log, output/)
  int64_t cancel_grace_ms = 10000;  // SIGTERM -> SIGKILL
  // A job found RUNNING at start (the daemon died under it) after this many attempts fails
  // instead of running again; 0 = no limit.
  int max_attempts = 3;
  // Released when the database cannot grow (disk full) so the job's failure can be recorded;
  // queued jobs are held until it can be filled again. Null: no reserve.
  DiskReserve* reserve = nullptr;
  std::string data_dir;  // for free-space numbers in messages
  // A chat session job (GenerateSpec.session) that gets no input this long ends CANCELLED
  // (the worker enforces it, WorkerTask.session_idle_timeout_seconds); 0 = never.
  double session_idle_timeout_seconds = 600;
};

class Scheduler {
 public:
  Scheduler(SchedulerOptions options, JobJournal* journal, DevicePool* devices, WorkerLauncher* launcher,
            DaemonMetrics* metrics);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Re-queues jobs a previous daemon left RUNNING, loads the queue and starts dispatching.
  absl::Status Start();
  // Stops dispatching, asks running workers to stop (SIGTERM, then SIGKILL after the grace
  // period) and re-queues their jobs unless they end first. Blocks until all workers are gone.
  void Shutdown();

  // The spec must be validated already (ValidateJobSpec, DevicePool::CheckFits).
  absl::StatusOr<v1::Job> Submit(const v1::JobSpec& spec);
  // `jobs` as returned by PlanPipeline.
  absl::StatusOr<v1::Pipeline> SubmitPipeline(const v1::PipelineSpec& spec, std::vector<storage::NewJob> jobs);
  // NOT_FOUND for an unknown job, FAILED_PRECONDITION for one that already ended. Returns the
  // job after the request (a running job is still RUNNING until its worker exits).
  absl::StatusOr<v1::Job> Cancel(int64_t job_id, const std::string& reason);

  // Sends `control` to the job's worker (a session's inputs), in order: held while the job is
  // queued and sent when its worker starts. NOT_FOUND for an unknown job, FAILED_PRECONDITION
  // for one that ended, UNAVAILABLE when its worker is gone.
  absl::Status SendControl(int64_t job_id, const v1::WorkerControl& control);

  int64_t queued() const;
  int64_t running() const;
  // Non-empty while queued jobs are held back (the data dir's disk is full), with the reason.
  std::string dispatch_paused() const;

 private:
  struct QueuedJob {
    int64_t id = 0;
    int priority = 0;
    int device_count = 1;
    std::vector<int64_t> depends_on;
  };
  struct RunningJob {
    int64_t id = 0;
    v1::JobKind kind = v1::JOB_KIND_UNSPECIFIED;
    std::vector<std::string> devices;
    std::unique_ptr<WorkerProcess> worker;
    std::thread monitor;
    bool session = false;  // a chat session: never re-queued (its client is gone with the daemon)
    // Guarded by Scheduler::mu_.
    bool cancel_requested = false;
    std::string cancel_reason;
    std::optional<std::chrono::steady_clock::time_point> kill_deadline;
    // Set by the monitor when the database could not record an event (disk full).
    absl::Status storage_error;
  };

  void DispatchLoop();
  void DispatchLocked();
  // Starts `job` on `devices`; on failure the job is FAILED and the devices released.
  void StartLocked(const QueuedJob& job, const std::vector<std::string>& devices);
  absl::StatusOr<v1::WorkerTask> PrepareTaskLocked(const v1::Job& job, const std::vector<std::string>& devices);
  void FailQueuedLocked(int64_t job_id, const absl::Status& error, const std::string& reason);
  void Monitor(std::shared_ptr<RunningJob> job);
  void Finish(const std::shared_ptr<RunningJob>& job, const std::optional<v1::WorkerFinal>& final,
              const WorkerExit& exit, const absl::Status& stream_status);
  // Records a running job's end; on a full disk releases the reserve and pauses dispatching,
  // and keeps an end it still cannot record for RetryDiskFullLocked.
  void RecordEndLocked(int64_t job_id, const storage::Transition& t);
  // While the disk is full: records the ends kept above and resumes dispatching once the
  // reserve is back with as much room beside it. true: still paused.
  bool RetryDiskFullLocked();
  void EnqueueLocked(const v1::Job& job);
  void WakeLocked();

  const SchedulerOptions options_;
  JobJournal* journal_;
  DevicePool* devices_;
  WorkerLauncher* launcher_;
  DaemonMetrics* metrics_;

  mutable std::mutex mu_;
  std::condition_variable wake_;
  uint64_t generation_ = 0;                                  // bumped on every change
  bool started_ = false;
  bool stopping_ = false;
  std::map<int64_t, QueuedJob> queue_;
  std::map<int64_t, std::shared_ptr<RunningJob>> running_;
  std::map<int64_t, std::vector<v1::WorkerControl>> unsent_controls_;  // queued jobs' SendControl
  std::vector<std::shared_ptr<RunningJob>> finished_;        // monitors to join
  std::string disk_full_;                                    // why dispatching is paused
  std::vector<std::pair<int64_t, storage::Transition>> unrecorded_ends_;
  std::thread dispatcher_;
};

}  // namespace qatd::server
