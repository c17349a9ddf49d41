#pragma once
// Retention: what the daemon keeps, and for how long (server/README.md "Retention").
//
// - Delete / Prune (qat delete, qat prune): finished jobs go with their rows and their folder
//   <jobs_dir>/<id>/. An output_dir a spec named elsewhere is kept (and listed) unless
//   `delete_outputs`, and even then only when it lies under an --allow-output-root: the
//   daemon never removes what it was not allowed to write. Files go first, then rows, so a
//   failure part-way leaves a job that a second delete finishes.
// - Compaction (a background sweep): `compact_after_ms` after a job ended, its progress and
//   metric events are dropped (the job row keeps its last progress; metric points keep the
//   curves, thinned to `max_points_per_series` per series), and a SUCCEEDED job's resume
//   state (<output>/resume) is removed unless `keep_resume_state`. final/ and best/ stay.
// - Disk usage: measured when a job is compacted, deleted or (by the scheduler) ends.
//
// Thread-safe; operations run one at a time.

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "qatd/v1/service.pb.h"
#include "server/clock.h"
#include "server/job_journal.h"

namespace qatd::server {

struct RetentionOptions {
  std::string jobs_dir;
  std::vector<std::string> allowed_output_roots;
  int64_t compact_after_ms = 60 * 60 * 1000;  // < 0: never compact
  int max_points_per_series = 2000;           // >= 2
  bool keep_resume_state = false;
};

class Retention {
 public:
  Retention(RetentionOptions options, JobJournal* journal, const Clock* clock);
  ~Retention();
  Retention(const Retention&) = delete;
  Retention& operator=(const Retention&) = delete;

  // Starts the background sweep (every compact_after/4, clamped to [1 s, 60 s]).
  void Start();
  void Stop();

  // At most 1000 ids; all or nothing (see JobStore::CheckDeletable).
  absl::StatusOr<v1::DeleteJobsResponse> Delete(const std::vector<int64_t>& ids, bool delete_outputs, bool dry_run);
  // Jobs in `states` (terminal; empty = FAILED and CANCELLED) that ended more than
  // `older_than_ms` ago.
  absl::StatusOr<v1::DeleteJobsResponse> Prune(int64_t older_than_ms, std::vector<v1::JobState> states,
                                               bool delete_outputs, bool dry_run);
  // One compaction pass; returns how many jobs were compacted.
  absl::StatusOr<int> Sweep();

 private:
  absl::StatusOr<v1::DeleteJobsResponse> DeleteLocked(const std::vector<int64_t>& ids, bool delete_outputs,
                                                      bool dry_run);
  bool MayRemoveOutput(const std::string& dir) const;
  void SweepLoop();

  const RetentionOptions options_;
  JobJournal* journal_;
  const Clock* clock_;

  std::mutex op_mu_;  // one operation at a time

  std::mutex loop_mu_;
  std::condition_variable wake_;
  bool stop_ = false;  // guarded by loop_mu_
  std::thread sweeper_;
};

}  // namespace qatd::server
