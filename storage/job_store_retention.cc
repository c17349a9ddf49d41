// JobStore: retention (deleting finished jobs, compacting their history, disk usage).
#include <set>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/common/status_macros.h"
#include "storage/job_codec.h"
#include "storage/job_store.h"

namespace qatd::storage {
namespace {

// Why `job_id` may not be deleted, or OK. Runs on whichever connection the caller holds (a
// reader for the dry check, the writer inside the delete transaction).
absl::Status DeletableOn(SqliteDb& db, int64_t job_id) {
  QATD_ASSIGN_OR_RETURN(SqliteStatement state, db.Prepare("SELECT state FROM jobs WHERE id = ?"));
  state.Bind(1, job_id);
  QATD_ASSIGN_OR_RETURN(bool found, state.Step());
  if (!found) return absl::NotFoundError(absl::StrCat("job ", job_id, " not found"));
  const auto job_state = static_cast<v1::JobState>(state.Int(0));
  if (!IsTerminal(job_state)) {
    return absl::FailedPreconditionError(absl::StrCat("job ", job_id, " is ", JobStateName(job_state),
                                                      ": cancel it first (qat cancel ", job_id, ")"));
  }
  QATD_ASSIGN_OR_RETURN(SqliteStatement dependents, db.Prepare(
      "SELECT d.job_id, j.state FROM job_dependencies d JOIN jobs j ON j.id = d.job_id "
      "WHERE d.depends_on = ? AND j.state IN (?, ?) ORDER BY d.job_id LIMIT 1"));
  dependents.Bind(1, job_id)
      .Bind(2, static_cast<int64_t>(v1::JOB_STATE_QUEUED))
      .Bind(3, static_cast<int64_t>(v1::JOB_STATE_RUNNING));
  QATD_ASSIGN_OR_RETURN(bool blocked, dependents.Step());
  if (blocked) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_id, " is needed by job ", dependents.Int(0), " (",
                     JobStateName(static_cast<v1::JobState>(dependents.Int(1))), "), which depends on it"));
  }
  return absl::OkStatus();
}

absl::Status RunWithId(SqliteDb& db, const char* sql, int64_t id) {
  QATD_ASSIGN_OR_RETURN(SqliteStatement stmt, db.Prepare(sql));
  stmt.Bind(1, id);
  return stmt.Run();
}

}  // namespace

absl::StatusOr<std::vector<v1::Job>> JobStore::CheckDeletable(const std::vector<int64_t>& ids) {
  {
    QATD_ASSIGN_OR_RETURN(ReadPool::Lease lease, readers_->Acquire());
    for (int64_t id : ids) QATD_RETURN_IF_ERROR(DeletableOn(lease.db(), id));
  }
  std::vector<v1::Job> jobs;
  jobs.reserve(ids.size());
  for (int64_t id : ids) {
    QATD_ASSIGN_OR_RETURN(v1::Job job, GetJob(id));
    jobs.push_back(std::move(job));
  }
  return jobs;
}

absl::StatusOr<std::vector<int64_t>> JobStore::ListEndedBefore(int64_t ended_before_ms,
                                                               const std::vector<v1::JobState>& states, int limit) {
  if (states.empty()) return std::vector<int64_t>{};
  std::vector<std::string> marks(states.size(), "?");
  QATD_ASSIGN_OR_RETURN(ReadPool::Lease lease, readers_->Acquire());
  QATD_ASSIGN_OR_RETURN(SqliteStatement select, lease.db().Prepare(absl::StrCat(
      "SELECT id FROM jobs WHERE state IN (", absl::StrJoin(marks, ", "),
      ") AND end_ms IS NOT NULL AND end_ms < ? ORDER BY end_ms, id LIMIT ?")));
  int index = 1;
  for (v1::JobState state : states) select.Bind(index++, static_cast<int64_t>(state));
  select.Bind(index++, ended_before_ms).Bind(index, static_cast<int64_t>(limit));
  std::vector<int64_t> ids;
  while (true) {
    QATD_ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) break;
    ids.push_back(select.Int(0));
  }
  return ids;
}

absl::Status JobStore::DeleteJobs(const std::vector<int64_t>& ids) {
  std::lock_guard<std::mutex> lock(write_mu_);
  SqliteDb& db = *writer_;
  QATD_ASSIGN_OR_RETURN(SqliteTransaction txn, SqliteTransaction::Begin(db));
  std::set<int64_t> pipelines;
  for (int64_t id : ids) {
    QATD_RETURN_IF_ERROR(DeletableOn(db, id));
    QATD_ASSIGN_OR_RETURN(SqliteStatement pipeline, db.Prepare("SELECT pipeline_id FROM jobs WHERE id = ?"));
    pipeline.Bind(1, id);
    QATD_ASSIGN_OR_RETURN(bool row, pipeline.Step());
    if (row && !pipeline.IsNull(0)) pipelines.insert(pipeline.Int(0));
  }
  for (int64_t id : ids) {
    QATD_RETURN_IF_ERROR(RunWithId(db, "DELETE FROM events WHERE job_id = ?", id));
    QATD_RETURN_IF_ERROR(RunWithId(db, "DELETE FROM metric_points WHERE job_id = ?", id));
    QATD_RETURN_IF_ERROR(RunWithId(db, "DELETE FROM artifacts WHERE job_id = ?", id));
    QATD_RETURN_IF_ERROR(RunWithId(db, "DELETE FROM state_transitions WHERE job_id = ?", id));
    // Finished jobs that depended on this one lose the link (their history says why they ran).
    QATD_RETURN_IF_ERROR(RunWithId(db, "DELETE FROM job_dependencies WHERE job_id = ? OR depends_on = ?1", id));
    QATD_RETURN_IF_ERROR(RunWithId(db, "DELETE FROM jobs WHERE id = ?", id));
  }
  for (int64_t pipeline : pipelines) {
    QATD_RETURN_IF_ERROR(RunWithId(
        db, "DELETE FROM pipelines WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM jobs WHERE pipeline_id = ?1)",
        pipeline));
  }
  return txn.Commit();
}

absl::StatusOr<std::vector<v1::Job>> JobStore::ListUncompacted(int64_t ended_before_ms, int limit) {
  std::vector<int64_t> ids;
  {
    QATD_ASSIGN_OR_RETURN(ReadPool::Lease lease, readers_->Acquire());
    QATD_ASSIGN_OR_RETURN(SqliteStatement select, lease.db().Prepare(
        "SELECT id FROM jobs WHERE compacted = 0 AND state IN (?, ?, ?) AND end_ms IS NOT NULL AND end_ms < ? "
        "ORDER BY end_ms, id LIMIT ?"));
    select.Bind(1, static_cast<int64_t>(v1::JOB_STATE_SUCCEEDED))
        .Bind(2, static_cast<int64_t>(v1::JOB_STATE_FAILED))
        .Bind(3, static_cast<int64_t>(v1::JOB_STATE_CANCELLED))
        .Bind(4, ended_before_ms)
        .Bind(5, static_cast<int64_t>(limit));
    while (true) {
      QATD_ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) break;
      ids.push_back(select.Int(0));
    }
  }
  std::vector<v1::Job> jobs;
  for (int64_t id : ids) {
    QATD_ASSIGN_OR_RETURN(v1::Job job, GetJob(id));
    jobs.push_back(std::move(job));
  }
  return jobs;
}

absl::Status JobStore::CompactHistory(int64_t job_id, int max_points_per_series) {
  if (max_points_per_series < 2) {
    return absl::InvalidArgumentError(absl::StrCat("max_points_per_series must be >= 2, got ", max_points_per_series));
  }
  std::lock_guard<std::mutex> lock(write_mu_);
  SqliteDb& db = *writer_;
  QATD_ASSIGN_OR_RETURN(SqliteTransaction txn, SqliteTransaction::Begin(db));
  {
    // Progress and metric events only serve live watchers; the job row keeps the last
    // progress and metric_points keep the curves.
    QATD_ASSIGN_OR_RETURN(SqliteStatement events, db.Prepare(
        "DELETE FROM events WHERE job_id = ? AND type IN (?, ?)"));
    events.Bind(1, job_id)
        .Bind(2, static_cast<int64_t>(v1::JobEvent::kProgress))
        .Bind(3, static_cast<int64_t>(v1::JobEvent::kMetric));
    QATD_RETURN_IF_ERROR(events.Run());
  }
  {
    // Keep points 0, s, 2s, ... and the last, with the stride s = ceil((n-1)/(max-1)): at most
    // `max` points per series, spread evenly over the steps.
    QATD_ASSIGN_OR_RETURN(SqliteStatement thin, db.Prepare(
        "DELETE FROM metric_points WHERE rowid IN ("
        " SELECT rowid FROM ("
        "  SELECT rowid, ROW_NUMBER() OVER (PARTITION BY name ORDER BY step, rowid) - 1 AS i,"
        "         COUNT(*) OVER (PARTITION BY name) AS n"
        "  FROM metric_points WHERE job_id = ?1)"
        " WHERE n > ?2 AND i != n - 1 AND i % ((n - 1 + ?2 - 2) / (?2 - 1)) != 0)"));
    thin.Bind(1, job_id).Bind(2, static_cast<int64_t>(max_points_per_series));
    QATD_RETURN_IF_ERROR(thin.Run());
  }
  QATD_RETURN_IF_ERROR(RunWithId(db, "UPDATE jobs SET compacted = 1 WHERE id = ?", job_id));
  return txn.Commit();
}

absl::Status JobStore::SetDiskBytes(int64_t job_id, int64_t bytes) {
  std::lock_guard<std::mutex> lock(write_mu_);
  QATD_ASSIGN_OR_RETURN(SqliteStatement update, writer_->Prepare("UPDATE jobs SET disk_bytes = ? WHERE id = ?"));
  update.Bind(1, bytes).Bind(2, job_id);
  QATD_RETURN_IF_ERROR(update.Run());
  if (sqlite3_changes(writer_->raw()) == 0) return absl::NotFoundError(absl::StrCat("job ", job_id, " not found"));
  return absl::OkStatus();
}

}  // namespace qatd::storage
