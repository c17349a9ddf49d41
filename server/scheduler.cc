#include "server/scheduler.h"

#include <signal.h>

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"
#include "core/common/file_util.h"
#include "server/job_files.h"
#include "server/pipeline_plan.h"
#include "server/status_mapping.h"
#include "spdlog/spdlog.h"
#include "storage/job_codec.h"
#include "core/jobs/job_kind.h"

namespace qatd::server {
namespace fs = std::filesystem;
namespace {

storage::Transition Terminal(v1::JobState state, const absl::Status& error, std::string reason) {
  storage::Transition t;
  t.to = state;
  t.reason = std::move(reason);
  t.error = jobs::ToJobError(error);
  return t;
}

}  // namespace

Scheduler::Scheduler(SchedulerOptions options, JobJournal* journal, DevicePool* devices, WorkerLauncher* launcher,
                     DaemonMetrics* metrics)
    : options_(std::move(options)), journal_(journal), devices_(devices), launcher_(launcher), metrics_(metrics) {}

Scheduler::~Scheduler() { Shutdown(); }

absl::Status Scheduler::Start() {
  storage::JobStore& store = journal_->store();
  QATD_ASSIGN_OR_RETURN(std::vector<int64_t> requeued,
                        store.RequeueRunningJobs("re-queued: the daemon restarted while the job was running",
                                                 journal_->clock().NowMs(), options_.max_attempts));
  for (int64_t id : requeued) spdlog::info("job {} re-queued after daemon restart", id);
  QATD_RETURN_IF_ERROR(journal_->Init());
  std::error_code ec;
  fs::create_directories(options_.jobs_dir, ec);
  if (ec) return absl::FailedPreconditionError(absl::StrCat("cannot create ", options_.jobs_dir, ": ", ec.message()));

  std::lock_guard<std::mutex> lock(mu_);
  if (options_.reserve != nullptr) {
    if (absl::Status filled = options_.reserve->Fill(); !filled.ok()) {
      disk_full_ = absl::StrCat("the data dir ", options_.data_dir, " is out of space: ", std::string(filled.message()));
      spdlog::warn("{}; queued jobs wait until there is room", disk_full_);
    }
  }
  storage::JobFilter filter;
  filter.states = {v1::JOB_STATE_QUEUED};
  filter.limit = 1000;
  while (true) {
    QATD_ASSIGN_OR_RETURN(std::vector<v1::Job> page, store.ListJobs(filter));
    for (const v1::Job& job : page) {
      if (job.spec().generate().session()) {
        // A chat session cannot resume: its client's stream ended with the previous daemon.
        const std::string why = "cancelled: the daemon restarted during the chat session";
        absl::StatusOr<v1::JobEvent> ended = journal_->Transition(
            job.id(), Terminal(v1::JOB_STATE_CANCELLED, absl::CancelledError(why), why), v1::JOB_STATE_QUEUED);
        if (!ended.ok()) spdlog::error("job {}: cannot cancel the session: {}", job.id(), ended.status().ToString());
        continue;
      }
      EnqueueLocked(job);
    }
    if (static_cast<int>(page.size()) < filter.limit) break;
    filter.before_id = page.back().id();
  }
  spdlog::info("scheduler: {} job(s) queued at start", queue_.size());
  started_ = true;
  dispatcher_ = std::thread(&Scheduler::DispatchLoop, this);
  return absl::OkStatus();
}

void Scheduler::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!started_ || stopping_) {
      stopping_ = true;
    } else {
      stopping_ = true;
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(options_.cancel_grace_ms);
      for (auto& [id, job] : running_) {
        spdlog::info("shutdown: stopping the worker of job {} (pid {})", id, job->worker->pid());
        job->worker->Signal(SIGTERM);
        if (!job->kill_deadline.has_value()) job->kill_deadline = deadline;
      }
    }
    WakeLocked();
  }
  if (dispatcher_.joinable()) dispatcher_.join();
}

void Scheduler::WakeLocked() {
  ++generation_;
  wake_.notify_all();
}

void Scheduler::EnqueueLocked(const v1::Job& job) {
  QueuedJob q;
  q.id = job.id();
  q.priority = job.spec().priority();
  q.device_count = storage::DeviceCountOf(job.spec());
  q.depends_on.assign(job.depends_on().begin(), job.depends_on().end());
  queue_[q.id] = std::move(q);
  metrics_->SetQueueDepth(static_cast<int64_t>(queue_.size()));
  WakeLocked();
}

absl::StatusOr<v1::Job> Scheduler::Submit(const v1::JobSpec& spec) {
  storage::NewJob job;
  job.spec = spec;
  QATD_ASSIGN_OR_RETURN(v1::Job created, journal_->store().CreateJob(job, journal_->clock().NowMs()));
  journal_->Created(created);
  std::lock_guard<std::mutex> lock(mu_);
  EnqueueLocked(created);
  return created;
}

absl::StatusOr<v1::Pipeline> Scheduler::SubmitPipeline(const v1::PipelineSpec& spec,
                                                       std::vector<storage::NewJob> jobs) {
  storage::JobStore& store = journal_->store();
  QATD_ASSIGN_OR_RETURN(v1::Pipeline pipeline, store.CreatePipeline(spec, std::move(jobs), journal_->clock().NowMs()));
  std::vector<v1::Job> created;
  for (int64_t id : pipeline.job_ids()) {
    QATD_ASSIGN_OR_RETURN(v1::Job job, store.GetJob(id));
    journal_->Created(job);
    created.push_back(std::move(job));
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (const v1::Job& job : created) EnqueueLocked(job);
  return pipeline;
}

absl::StatusOr<v1::Job> Scheduler::Cancel(int64_t job_id, const std::string& reason) {
  const std::string why = reason.empty() ? "cancelled by request" : absl::StrCat("cancelled: ", reason);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (queue_.erase(job_id) > 0) {
      unsent_controls_.erase(job_id);
      metrics_->SetQueueDepth(static_cast<int64_t>(queue_.size()));
      QATD_RETURN_IF_ERROR(
          journal_->Transition(job_id, Terminal(v1::JOB_STATE_CANCELLED, absl::CancelledError(why), why),
                               v1::JOB_STATE_QUEUED)
              .status());
      WakeLocked();
    } else if (auto it = running_.find(job_id); it != running_.end()) {
      RunningJob& job = *it->second;
      if (!job.cancel_requested) {
        job.cancel_requested = true;
        job.cancel_reason = why;
        QATD_RETURN_IF_ERROR(journal_->store().SetCancelRequested(job_id));
        job.worker->Signal(SIGTERM);
        job.kill_deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(options_.cancel_grace_ms);
        spdlog::info("job {}: SIGTERM to worker pid {} ({})", job_id, job.worker->pid(), why);
        WakeLocked();
      }
    } else {
      QATD_ASSIGN_OR_RETURN(v1::Job job, journal_->store().GetJob(job_id));
      if (storage::IsTerminal(job.state())) {
        return absl::FailedPreconditionError(
            absl::StrCat("job ", job_id, " already ended (", storage::JobStateName(job.state()), ")"));
      }
      return absl::UnavailableError(absl::StrCat("job ", job_id, " is not in this daemon's queue; retry"));
    }
  }
  return journal_->store().GetJob(job_id);
}

absl::Status Scheduler::SendControl(int64_t job_id, const v1::WorkerControl& control) {
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = running_.find(job_id); it != running_.end()) return it->second->worker->SendControl(control);
  if (queue_.count(job_id) > 0) {
    unsent_controls_[job_id].push_back(control);
    return absl::OkStatus();
  }
  QATD_ASSIGN_OR_RETURN(v1::Job job, journal_->store().GetJob(job_id));
  return absl::FailedPreconditionError(
      absl::StrCat("job ", job_id, " is not running (", storage::JobStateName(job.state()), ")"));
}

int64_t Scheduler::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(queue_.size());
}

int64_t Scheduler::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(running_.size());
}

std::string Scheduler::dispatch_paused() const {
  std::lock_guard<std::mutex> lock(mu_);
  return disk_full_;
}

void Scheduler::DispatchLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    if (!finished_.empty()) {
      std::vector<std::shared_ptr<RunningJob>> done;
      done.swap(finished_);
      lock.unlock();
      for (auto& job : done) {
        if (job->monitor.joinable()) job->monitor.join();
      }
      lock.lock();
      continue;
    }
    if (stopping_ && running_.empty()) break;
    // Read the generation before dispatching: failing a job whose dependency failed wakes
    // the loop, and that wake-up must not be lost, or the next stage down the pipeline stays
    // QUEUED until something else happens.
    const uint64_t seen = generation_;
    const bool disk_full = !disk_full_.empty() && RetryDiskFullLocked();
    if (!stopping_ && !disk_full) DispatchLocked();

    // SIGKILL escalation for cancelled / stopping workers.
    const auto now = std::chrono::steady_clock::now();
    std::optional<std::chrono::steady_clock::time_point> next;
    for (auto& [id, job] : running_) {
      if (!job->kill_deadline.has_value()) continue;
      if (*job->kill_deadline <= now) {
        spdlog::warn("job {}: worker pid {} ignored SIGTERM for the grace period; SIGKILL", id, job->worker->pid());
        job->worker->Signal(SIGKILL);
        job->kill_deadline.reset();
      } else if (!next.has_value() || *job->kill_deadline < *next) {
        next = job->kill_deadline;
      }
    }
    if (disk_full) {
      // Look again for free space every second.
      const auto retry = now + std::chrono::seconds(1);
      if (!next.has_value() || retry < *next) next = retry;
    }
    auto changed = [&] { return generation_ != seen; };
    if (next.has_value()) {
      wake_.wait_until(lock, *next, changed);
    } else {
      wake_.wait(lock, changed);
    }
  }
}

void Scheduler::DispatchLocked() {
  std::vector<const QueuedJob*> order;
  for (const auto& [id, job] : queue_) order.push_back(&job);
  std::stable_sort(order.begin(), order.end(),
                   [](const QueuedJob* a, const QueuedJob* b) { return a->priority > b->priority; });
  std::vector<QueuedJob> to_start;
  std::vector<std::vector<std::string>> grants;
  std::vector<std::pair<int64_t, std::string>> to_fail;
  for (const QueuedJob* job : order) {
    bool ready = true;
    for (int64_t dep : job->depends_on) {
      absl::StatusOr<v1::Job> upstream = journal_->store().GetJob(dep);
      if (!upstream.ok()) {
        to_fail.emplace_back(job->id, absl::StrCat("dependency job ", dep, ": ", std::string(upstream.status().message())));
        ready = false;
        break;
      }
      if (upstream->state() == v1::JOB_STATE_SUCCEEDED) continue;
      ready = false;
      if (storage::IsTerminal(upstream->state())) {
        to_fail.emplace_back(job->id, absl::StrCat("dependency job ", dep,
                                                   upstream->stage().empty() ? "" : absl::StrCat(" (stage '", upstream->stage(), "')"),
                                                   " ended ", storage::JobStateName(upstream->state())));
      }
      break;
    }
    if (!ready) continue;
    std::optional<std::vector<std::string>> granted = devices_->TryAcquire(job->device_count);
    if (!granted.has_value()) break;  // strict order: nothing behind a ready job jumps ahead
    to_start.push_back(*job);
    grants.push_back(*std::move(granted));
  }
  for (const auto& [id, message] : to_fail) {
    FailQueuedLocked(id, absl::FailedPreconditionError(message), "dependency did not succeed");
  }
  for (size_t i = 0; i < to_start.size(); ++i) StartLocked(to_start[i], grants[i]);
}

void Scheduler::FailQueuedLocked(int64_t job_id, const absl::Status& error, const std::string& reason) {
  queue_.erase(job_id);
  unsent_controls_.erase(job_id);
  metrics_->SetQueueDepth(static_cast<int64_t>(queue_.size()));
  absl::StatusOr<v1::JobEvent> failed =
      journal_->Transition(job_id, Terminal(v1::JOB_STATE_FAILED, error, reason), v1::JOB_STATE_QUEUED);
  if (!failed.ok()) spdlog::error("job {}: cannot mark FAILED: {}", job_id, failed.status().ToString());
  WakeLocked();
}

absl::StatusOr<v1::WorkerTask> Scheduler::PrepareTaskLocked(const v1::Job& job, const std::vector<std::string>& devices) {
  storage::JobStore& store = journal_->store();
  v1::JobSpec spec = job.spec();
  QATD_ASSIGN_OR_RETURN(std::vector<v1::ArtifactInput> inputs, store.GetInputs(job.id()));
  for (const v1::ArtifactInput& input : inputs) {
    std::optional<v1::Artifact> newest;
    for (int64_t dep : job.depends_on()) {
      QATD_ASSIGN_OR_RETURN(v1::Job upstream, store.GetJob(dep));
      if (upstream.stage() != input.from_stage()) continue;
      for (const v1::Artifact& artifact : upstream.artifacts()) {
        if (artifact.kind() == input.artifact_kind()) newest = artifact;
      }
    }
    if (!newest.has_value()) {
      return absl::FailedPreconditionError(absl::StrCat("stage '", input.from_stage(), "' registered no '",
                                                        input.artifact_kind(), "' artifact for field ", input.field()));
    }
    QATD_RETURN_IF_ERROR(SetSpecField(spec, input.field(), newest->path()));
  }
  if (!inputs.empty()) QATD_RETURN_IF_ERROR(store.UpdateSpec(job.id(), spec));

  const fs::path job_dir = fs::path(options_.jobs_dir) / std::to_string(job.id());
  const fs::path output_dir = job_dir / "output";
  std::error_code ec;
  fs::create_directories(output_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", output_dir.string(), ": ", ec.message()));
  v1::WorkerTask task;
  task.set_job_id(job.id());
  *task.mutable_spec() = spec;
  task.set_job_dir(job_dir.string());
  task.set_output_dir(output_dir.string());
  task.set_attempt(job.attempt() + 1);
  for (const std::string& d : devices) task.add_devices(d);
  if (spec.generate().session()) task.set_session_idle_timeout_seconds(options_.session_idle_timeout_seconds);
  return task;
}

void Scheduler::StartLocked(const QueuedJob& queued, const std::vector<std::string>& devices) {
  const int64_t id = queued.id;
  auto fail = [&](const absl::Status& error) {
    devices_->Release(devices);
    spdlog::error("job {}: cannot start: {}", id, error.ToString());
    FailQueuedLocked(id, error, "cannot start the worker");
  };
  absl::StatusOr<v1::Job> job = journal_->store().GetJob(id);
  if (!job.ok()) return fail(job.status());
  absl::StatusOr<v1::WorkerTask> task = PrepareTaskLocked(*job, devices);
  if (!task.ok()) return fail(task.status());
  const std::string task_file = (fs::path(task->job_dir()) / "task.pb").string();
  if (absl::Status written = WriteFileAtomically(task_file, task->SerializeAsString()); !written.ok()) {
    return fail(written);
  }
  WorkerLaunch launch;
  launch.job_id = id;
  launch.kind = jobs::JobKindName(job->kind());
  launch.task_file = task_file;
  launch.log_file = (fs::path(task->job_dir()) / "worker.log").string();
  launch.cuda_visible_devices = DevicePool::CudaVisibleDevices(devices);
  launch.session = job->spec().generate().session();
  absl::StatusOr<std::unique_ptr<WorkerProcess>> worker = launcher_->Launch(launch);
  if (!worker.ok()) return fail(worker.status());
  // A session's inputs that came while it was queued, first in line.
  if (auto unsent = unsent_controls_.find(id); unsent != unsent_controls_.end()) {
    for (const v1::WorkerControl& control : unsent->second) {
      if (absl::Status sent = (*worker)->SendControl(control); !sent.ok()) {
        spdlog::warn("job {}: cannot pass on a session input: {}", id, sent.ToString());
      }
    }
    unsent_controls_.erase(unsent);
  }

  auto running = std::make_shared<RunningJob>();
  running->id = id;
  running->kind = job->kind();
  running->devices = devices;
  running->worker = *std::move(worker);
  running->session = launch.session;

  storage::Transition start;
  start.to = v1::JOB_STATE_RUNNING;
  start.reason = absl::StrCat("worker pid ", running->worker->pid(), " on ", storage::JoinDevices(devices));
  start.worker_pid = running->worker->pid();
  start.devices = devices;
  start.bump_attempt = true;
  absl::StatusOr<v1::JobEvent> started = journal_->Transition(id, start, v1::JOB_STATE_QUEUED);
  queue_.erase(id);
  metrics_->SetQueueDepth(static_cast<int64_t>(queue_.size()));
  if (!started.ok()) {
    // Should not happen (only this thread starts jobs); do not leave a worker behind.
    spdlog::error("job {}: cannot mark RUNNING ({}); stopping its worker", id, started.status().ToString());
    running->worker->Signal(SIGKILL);
    running->cancel_requested = true;
  }
  spdlog::info("job {} ({}) started: worker pid {} on {}", id, jobs::JobKindName(running->kind),
               running->worker->pid(), storage::JoinDevices(devices));
  running_[id] = running;
  running->monitor = std::thread(&Scheduler::Monitor, this, running);
}

void Scheduler::Monitor(std::shared_ptr<RunningJob> job) {
  std::optional<v1::WorkerFinal> final;
  absl::Status stream_status;
  while (true) {
    absl::StatusOr<std::optional<v1::WorkerEvent>> next = job->worker->NextEvent();
    if (!next.ok()) {
      stream_status = next.status();
      break;
    }
    if (!next->has_value()) break;
    const v1::WorkerEvent& event = **next;
    absl::Status applied;
    switch (event.event_case()) {
      case v1::WorkerEvent::kProgress:
        applied = journal_->Progress(job->id, job->kind, event.progress());
        break;
      case v1::WorkerEvent::kMetric:
        applied = journal_->Metric(job->id, event.metric());
        break;
      case v1::WorkerEvent::kLog:
        applied = journal_->Log(job->id, event.log());
        break;
      case v1::WorkerEvent::kText:
        applied = journal_->Text(job->id, event.text());
        break;
      case v1::WorkerEvent::kArtifact: {
        applied = journal_->Artifact(job->id, event.artifact());
        if (!applied.ok()) {
          v1::LogLine warning;
          warning.set_level(v1::LOG_LEVEL_WARNING);
          warning.set_message(absl::StrCat("artifact ", event.artifact().path(), " not registered: ",
                                           std::string(applied.message())));
          applied = journal_->Log(job->id, warning);
        }
        break;
      }
      case v1::WorkerEvent::kRanks:
        applied = journal_->Ranks(job->id, event.ranks());
        break;
      case v1::WorkerEvent::kFinal:
        final = event.final();
        break;
      case v1::WorkerEvent::EVENT_NOT_SET:
        break;
    }
    if (!applied.ok()) {
      spdlog::error("job {}: cannot record a worker event: {}", job->id, applied.ToString());
      if (absl::IsResourceExhausted(applied)) {
        // The database cannot grow (disk full): nothing this job reports can be kept, so stop
        // it now and record why, rather than let it run unobserved.
        job->storage_error = applied;
        job->worker->Signal(SIGKILL);
        break;
      }
    }
  }
  if (!stream_status.ok()) {
    spdlog::error("job {}: bad event stream ({}); killing the worker", job->id, stream_status.ToString());
    job->worker->Signal(SIGKILL);
  }
  const WorkerExit exit = job->worker->Wait();
  // What the job's files take, for `qat status` / `qat jobs` (retention refreshes it later).
  if (absl::StatusOr<v1::Job> row = journal_->store().GetJob(job->id); row.ok()) {
    (void)journal_->store().SetDiskBytes(job->id, DiskUsage(PathsOf(*row, options_.jobs_dir)));
  }
  Finish(job, final, exit, stream_status);
}

void Scheduler::RecordEndLocked(int64_t job_id, const storage::Transition& t) {
  absl::StatusOr<v1::JobEvent> recorded = journal_->Transition(job_id, t, v1::JOB_STATE_RUNNING);
  if (recorded.ok()) return;
  if (absl::IsResourceExhausted(recorded.status())) {
    // Give SQLite the reserve's room, and start nothing new until the disk has room again.
    const bool released = options_.reserve != nullptr && options_.reserve->Release();
    disk_full_ = absl::StrCat("the data dir ", options_.data_dir, " is out of space; queued jobs wait until there is room",
                              options_.reserve != nullptr && options_.reserve->bytes() > 0
                                  ? absl::StrCat(" (", 2 * options_.reserve->bytes(), " bytes free)")
                                  : "");
    spdlog::error("job {}: the disk is full ({}); {} the disk reserve and holding queued jobs", job_id,
                  recorded.status().ToString(), released ? "released" : "no");
    recorded = journal_->Transition(job_id, t, v1::JOB_STATE_RUNNING);
    if (recorded.ok()) return;
    if (absl::IsResourceExhausted(recorded.status())) {
      unrecorded_ends_.emplace_back(job_id, t);
      return;
    }
  }
  spdlog::error("job {}: cannot record its end: {}", job_id, recorded.status().ToString());
}

bool Scheduler::RetryDiskFullLocked() {
  for (auto it = unrecorded_ends_.begin(); it != unrecorded_ends_.end();) {
    absl::StatusOr<v1::JobEvent> recorded = journal_->Transition(it->first, it->second, v1::JOB_STATE_RUNNING);
    if (!recorded.ok() && absl::IsResourceExhausted(recorded.status())) return true;
    if (!recorded.ok()) spdlog::error("job {}: cannot record its end: {}", it->first, recorded.status().ToString());
    it = unrecorded_ends_.erase(it);
  }
  if (options_.reserve != nullptr) {
    if (!options_.reserve->Fill().ok()) return true;
    // Hysteresis: resume only with as much room again beside the reserve, or the next job
    // would fill the disk at once.
    const int64_t free = FreeBytes(options_.data_dir);
    if (free >= 0 && free < options_.reserve->bytes()) return true;
  }
  spdlog::info("the data dir has room again ({} bytes free); dispatching resumes", FreeBytes(options_.data_dir));
  disk_full_.clear();
  return false;
}

void Scheduler::Finish(const std::shared_ptr<RunningJob>& job, const std::optional<v1::WorkerFinal>& final,
                       const WorkerExit& exit, const absl::Status& stream_status) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string worker = absl::StrCat("worker pid ", job->worker->pid(), " ", exit.Describe());
  storage::Transition t;
  if (final.has_value()) {
    const absl::Status status = jobs::FromJobError(final->status());
    if (status.ok()) {
      t.to = v1::JOB_STATE_SUCCEEDED;
      t.reason = "succeeded";
      t.result = final->result();
    } else if (absl::IsCancelled(status) && stopping_ && !job->cancel_requested && !job->session) {
      t.to = v1::JOB_STATE_QUEUED;
      t.reason = "re-queued: the daemon is shutting down";
    } else if (absl::IsCancelled(status)) {
      t = Terminal(v1::JOB_STATE_CANCELLED, status, job->cancel_reason.empty() ? "cancelled" : job->cancel_reason);
    } else {
      t = Terminal(v1::JOB_STATE_FAILED, status, "the job reported an error");
      t.result = final->result();
    }
  } else if (job->cancel_requested) {
    t = Terminal(v1::JOB_STATE_CANCELLED, absl::CancelledError(absl::StrCat(job->cancel_reason, "; ", worker)),
                 job->cancel_reason);
  } else if (stopping_ && !job->session) {
    t.to = v1::JOB_STATE_QUEUED;
    t.reason = absl::StrCat("re-queued: the daemon is shutting down (", worker, ")");
  } else if (stopping_) {
    const std::string why = "cancelled: the daemon shut down during the chat session";
    t = Terminal(v1::JOB_STATE_CANCELLED, absl::CancelledError(absl::StrCat(why, "; ", worker)), why);
  } else {
    std::string message = absl::StrCat(worker, " without reporting a result");
    if (!stream_status.ok()) absl::StrAppend(&message, " (", std::string(stream_status.message()), ")");
    t = Terminal(v1::JOB_STATE_FAILED, absl::InternalError(message), "worker process failed");
  }
  if (!job->storage_error.ok()) {
    t = Terminal(v1::JOB_STATE_FAILED,
                 absl::ResourceExhaustedError(absl::StrCat(
                     "the daemon could not record this job's events (", std::string(job->storage_error.message()),
                     "): the data dir ", options_.data_dir, " is out of space (", FreeBytes(options_.data_dir),
                     " bytes free); free space (qat prune, qat delete) and submit the job again")),
                 "the data dir is out of space");
  }
  RecordEndLocked(job->id, t);
  spdlog::info("job {} -> {} ({}; {})", job->id, storage::JobStateName(t.to), t.reason, worker);
  if (t.to == v1::JOB_STATE_QUEUED && !stopping_) {
    absl::StatusOr<v1::Job> again = journal_->store().GetJob(job->id);
    if (again.ok()) EnqueueLocked(*again);
  }
  devices_->Release(job->devices);
  running_.erase(job->id);
  finished_.push_back(job);
  WakeLocked();
}

}  // namespace qatd::server
