#pragma once
// Records everything that happens to jobs, in one place and one order: each event is
// persisted in the JobStore (which assigns its seq), then published to the EventHub's live
// watchers, then reflected in the Prometheus metrics. A single lock keeps publication in
// seq order. Progress events are persisted at most once per `progress_persist_interval_ms`
// per job (the job row always holds the latest); watchers see every one. Thread-safe.

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "qatd/v1/job.pb.h"
#include "qatd/v1/worker.pb.h"
#include "server/clock.h"
#include "server/event_hub.h"
#include "server/metrics.h"
#include "storage/job_store.h"

namespace qatd::server {

class JobJournal {
 public:
  JobJournal(storage::JobStore* store, EventHub* hub, DaemonMetrics* metrics, const Clock* clock,
             int64_t progress_persist_interval_ms = 1000);

  // Loads the per-state job counts for qatd_jobs.
  absl::Status Init();

  storage::JobStore& store() { return *store_; }
  const Clock& clock() const { return *clock_; }

  // A job (or pipeline stage) was inserted in QUEUED.
  void Created(const v1::Job& job);
  absl::StatusOr<v1::JobEvent> Transition(int64_t job_id, const storage::Transition& transition,
                                          std::optional<v1::JobState> expected_from = std::nullopt);
  absl::Status Progress(int64_t job_id, v1::JobKind kind, const v1::Progress& progress);
  // A metric point; rank/<r>/step_seconds is also folded into the job's ranks (Job.ranks).
  absl::Status Metric(int64_t job_id, const v1::MetricPoint& point);
  // A data-parallel job's ranks, as its rank 0 reported them: kept with the job (GetJob).
  absl::Status Ranks(int64_t job_id, const v1::RankRoster& roster);
  absl::Status Log(int64_t job_id, const v1::LogLine& line);
  absl::Status Text(int64_t job_id, const v1::GeneratedText& text);
  // Registers the artifact with the worker's digest, or digests `path` when the worker sent
  // none. NOT_FOUND if it does not exist.
  absl::Status Artifact(int64_t job_id, const v1::WorkerArtifact& reported);

  int64_t CountInState(v1::JobState state) const;
  // Finished jobs were deleted (retention): the per-state counts go down.
  void Deleted(const std::vector<v1::JobState>& states);

 private:
  absl::Status Append(int64_t job_id, const v1::JobEvent& event, bool persist);

  storage::JobStore* store_;
  EventHub* hub_;
  DaemonMetrics* metrics_;
  const Clock* clock_;
  const int64_t progress_interval_ms_;

  mutable std::mutex mu_;
  std::map<v1::JobState, int64_t> counts_;          // guarded by mu_
  std::map<int64_t, int64_t> last_progress_persist_;  // job id -> ms; guarded by mu_
};

}  // namespace qatd::server
