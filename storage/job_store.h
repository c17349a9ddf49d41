#pragma once
// The daemon's durable record of jobs, pipelines, state transitions, events, metric points
// and artifacts (DESIGN.md §3-§4), in one SQLite file in WAL mode.
//
// Concurrency: one process writes (the daemon). Inside it, all writes go through one
// connection guarded by a mutex; reads use a pool of read-only connections, so readers never
// wait for a writer (WAL) and never block it. All methods are thread-safe.
//
// Times are milliseconds since the Unix epoch, supplied by the caller (its Clock), so tests
// control them.

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "qatd/v1/job.pb.h"
#include "storage/read_pool.h"
#include "storage/sqlite.h"

namespace qatd::storage {

struct JobStoreOptions {
  int read_connections = 4;  // upper bound of the read pool
};

// A job to insert (state QUEUED, attempt 0).
struct NewJob {
  v1::JobSpec spec;
  int64_t pipeline_id = 0;
  std::string stage;
  std::vector<int64_t> depends_on;
  std::vector<v1::ArtifactInput> inputs;
};

// What changes with a state transition besides the state.
struct Transition {
  v1::JobState to = v1::JOB_STATE_UNSPECIFIED;
  std::string reason;
  v1::JobError error;                       // code 0 = none (cleared on QUEUED/RUNNING)
  std::optional<int32_t> worker_pid;        // set on RUNNING; cleared on leaving RUNNING
  std::optional<std::vector<std::string>> devices;
  bool bump_attempt = false;                // RUNNING: attempt += 1
  std::optional<v1::JobResult> result;
};

struct JobFilter {
  std::vector<v1::JobState> states;  // empty = any
  std::vector<v1::JobKind> kinds;    // empty = any
  int64_t pipeline_id = 0;           // 0 = any
  int64_t before_id = 0;             // 0 = from the newest
  int limit = 50;
  bool include_spec = true;
};

struct TransitionRecord {
  v1::JobState from = v1::JOB_STATE_UNSPECIFIED;
  v1::JobState to = v1::JOB_STATE_UNSPECIFIED;
  std::string reason;
  v1::JobError error;
  int64_t time_ms = 0;
};

struct ArtifactFilter {
  int64_t job_id = 0;       // 0 = any
  int64_t pipeline_id = 0;  // 0 = any
  std::string kind;         // "" = any
};

class JobStore {
 public:
  // Opens or creates the database at `path`, switches it to WAL, enables foreign keys and
  // runs the schema migrations.
  static absl::StatusOr<std::unique_ptr<JobStore>> Open(const std::string& path,
                                                        const JobStoreOptions& options = {});
  ~JobStore();

  // ---- Writes ---------------------------------------------------------------------------

  // Inserts a QUEUED job, its dependencies and its "created" transition; returns the job.
  absl::StatusOr<v1::Job> CreateJob(const NewJob& job, int64_t now_ms);

  // Inserts a pipeline and its stage jobs in one transaction. `jobs[i].depends_on` holds
  // *indices* into `jobs` (earlier stages); they become job ids. Returns the pipeline.
  absl::StatusOr<v1::Pipeline> CreatePipeline(const v1::PipelineSpec& spec, std::vector<NewJob> jobs,
                                              int64_t now_ms);

  // Moves a job from its current state to `t.to` (any other state; no-op transitions are an
  // error: FAILED_PRECONDITION), records the transition and a state-change event. Sets
  // start_ms when entering RUNNING, end_ms when entering a terminal state. Returns the event
  // (with its seq). `expected_from`, if set, must match the current state.
  absl::StatusOr<v1::JobEvent> TransitionJob(int64_t job_id, const Transition& t, int64_t now_ms,
                                             std::optional<v1::JobState> expected_from = std::nullopt);

  // Appends a progress, metric, log or text event; a metric also becomes a metric point.
  // Progress updates the job row; `persist_event` false stores only that (no event row; the
  // returned event has seq 0).
  absl::StatusOr<v1::JobEvent> AppendEvent(int64_t job_id, const v1::JobEvent& event, int64_t now_ms,
                                           bool persist_event = true);

  // Registers an artifact and appends its event. `artifact.id/job_id/create_time` are filled.
  absl::StatusOr<v1::JobEvent> AddArtifact(int64_t job_id, const v1::Artifact& artifact, int64_t now_ms);

  absl::Status SetCancelRequested(int64_t job_id);
  // Replaces the spec (pipeline inputs resolved into it).
  absl::Status UpdateSpec(int64_t job_id, const v1::JobSpec& spec);
  // A data-parallel job's ranks (Job.ranks), as its worker reported them; cleared when an
  // attempt starts.
  absl::Status SetRanks(int64_t job_id, const v1::RankRoster& roster);
  // Folds rank `rank`'s latest step time (metric rank/<r>/step_seconds) into Job.ranks; a
  // rank not listed yet is added.
  absl::Status SetRankStepSeconds(int64_t job_id, int rank, int64_t step, double seconds);
  // Daemon restart: every RUNNING job goes back to QUEUED with `reason` (returned ids), except
  // one whose cancel was requested, which becomes CANCELLED, and one that has had
  // `max_attempts` attempts already (> 0), which FAILS (ABORTED, naming the count).
  absl::StatusOr<std::vector<int64_t>> RequeueRunningJobs(const std::string& reason, int64_t now_ms,
                                                          int max_attempts = 0);

  // ---- Reads (read pool) ----------------------------------------------------------------

  // NOT_FOUND "job N not found". Includes artifacts and dependencies.
  absl::StatusOr<v1::Job> GetJob(int64_t job_id);
  // Newest first.
  absl::StatusOr<std::vector<v1::Job>> ListJobs(const JobFilter& filter);
  absl::StatusOr<int64_t> CountJobs(v1::JobState state);
  // Events with seq > after_seq, oldest first, at most `limit`.
  absl::StatusOr<std::vector<v1::JobEvent>> ListEvents(int64_t job_id, int64_t after_seq, int limit);
  // The seq of the job's newest stored event (0 if none).
  absl::StatusOr<int64_t> LatestEventSeq(int64_t job_id);
  absl::StatusOr<std::vector<TransitionRecord>> ListTransitions(int64_t job_id);
  // Series by name, points by step; `names` empty = all; points with step > after_step.
  absl::StatusOr<std::vector<v1::MetricSeries>> GetMetricSeries(int64_t job_id, const std::vector<std::string>& names,
                                                                std::optional<int64_t> after_step);
  absl::StatusOr<std::vector<v1::Artifact>> ListArtifacts(const ArtifactFilter& filter);
  absl::StatusOr<std::vector<v1::ArtifactInput>> GetInputs(int64_t job_id);
  absl::StatusOr<v1::Pipeline> GetPipeline(int64_t pipeline_id);

  // ---- Retention (job_store_retention.cc) -----------------------------------------------

  // The jobs `ids` (with specs, without artifacts), if every one exists (NOT_FOUND), has
  // ended, and no queued or running job depends on it (FAILED_PRECONDITION naming both).
  absl::StatusOr<std::vector<v1::Job>> CheckDeletable(const std::vector<int64_t>& ids);
  // Ids of the jobs in `states` (terminal ones) that ended before `ended_before_ms`, oldest
  // first, at most `limit`.
  absl::StatusOr<std::vector<int64_t>> ListEndedBefore(int64_t ended_before_ms,
                                                       const std::vector<v1::JobState>& states, int limit);
  // Deletes the jobs' rows (events, metric points, artifacts, transitions, dependencies) in
  // one transaction, after CheckDeletable again; a pipeline left without jobs goes too.
  absl::Status DeleteJobs(const std::vector<int64_t>& ids);
  // Finished jobs that ended before `ended_before_ms` and were not compacted yet, oldest
  // first, at most `limit` (with specs).
  absl::StatusOr<std::vector<v1::Job>> ListUncompacted(int64_t ended_before_ms, int limit);
  // Compacts a finished job's history: drops its progress and metric events (the metric
  // points stay, for curves), thins each metric series to at most `max_points_per_series`
  // points (evenly by step, the first and the last kept; >= 2) and marks it compacted.
  absl::Status CompactHistory(int64_t job_id, int max_points_per_series);
  absl::Status SetDiskBytes(int64_t job_id, int64_t bytes);

 private:
  JobStore(std::unique_ptr<SqliteDb> writer, std::unique_ptr<ReadPool> readers);

  absl::StatusOr<v1::JobEvent> InsertEventLocked(int64_t job_id, const v1::JobEvent& event, int64_t now_ms);
  absl::StatusOr<int64_t> InsertJobLocked(const NewJob& job, int64_t now_ms);

  std::mutex write_mu_;
  std::unique_ptr<SqliteDb> writer_;  // guarded by write_mu_
  std::unique_ptr<ReadPool> readers_;
};

}  // namespace qatd::storage
