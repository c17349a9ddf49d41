// JobStore: the read path (pooled read-only connections).
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/common/status_macros.h"
#include "storage/job_codec.h"
#include "storage/job_store.h"

namespace qatd::storage {
namespace {

constexpr char kJobColumns[] =
    "SELECT id, kind, state, spec, pipeline_id, stage, create_ms, start_ms, end_ms, progress, result, "
    "error_code, error_message, attempt, worker_pid, devices, cancel_requested, disk_bytes, ranks FROM jobs";

absl::StatusOr<v1::Job> JobFromRow(const SqliteStatement& row, bool include_spec) {
  v1::Job job;
  job.set_id(row.Int(0));
  job.set_kind(static_cast<v1::JobKind>(row.Int(1)));
  job.set_state(static_cast<v1::JobState>(row.Int(2)));
  if (include_spec && !job.mutable_spec()->ParseFromString(row.Blob(3))) {
    return absl::DataLossError(absl::StrCat("job ", job.id(), ": unreadable spec"));
  }
  if (!row.IsNull(4)) job.set_pipeline_id(row.Int(4));
  job.set_stage(row.Text(5));
  *job.mutable_create_time() = ToTimestamp(row.Int(6));
  if (!row.IsNull(7)) *job.mutable_start_time() = ToTimestamp(row.Int(7));
  if (!row.IsNull(8)) *job.mutable_end_time() = ToTimestamp(row.Int(8));
  if (!row.IsNull(9) && !job.mutable_progress()->ParseFromString(row.Blob(9))) {
    return absl::DataLossError(absl::StrCat("job ", job.id(), ": unreadable progress"));
  }
  if (!row.IsNull(10) && !job.mutable_result()->ParseFromString(row.Blob(10))) {
    return absl::DataLossError(absl::StrCat("job ", job.id(), ": unreadable result"));
  }
  if (row.Int(11) != 0) {
    job.mutable_error()->set_code(static_cast<int32_t>(row.Int(11)));
    job.mutable_error()->set_message(row.Text(12));
  }
  job.set_attempt(static_cast<int32_t>(row.Int(13)));
  job.set_worker_pid(static_cast<int32_t>(row.Int(14)));
  for (std::string& device : SplitDevices(row.Text(15))) job.add_devices(std::move(device));
  job.set_cancel_requested(row.Int(16) != 0);
  job.set_disk_bytes(row.Int(17));
  if (!row.IsNull(18)) {
    v1::RankRoster roster;
    if (!roster.ParseFromString(row.Blob(18))) return absl::DataLossError(absl::StrCat("job ", job.id(), ": unreadable ranks"));
    *job.mutable_ranks() = std::move(*roster.mutable_ranks());
  }
  return job;
}

absl::Status LoadDependencies(SqliteDb& db, v1::Job& job) {
  QATD_ASSIGN_OR_RETURN(SqliteStatement select, db.Prepare(
      "SELECT depends_on FROM job_dependencies WHERE job_id = ? ORDER BY depends_on"));
  select.Bind(1, job.id());
  while (true) {
    QATD_ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) return absl::OkStatus();
    job.add_depends_on(select.Int(0));
  }
}

v1::Artifact ArtifactFromRow(const SqliteStatement& row) {
  v1::Artifact artifact;
  artifact.set_id(row.Int(0));
  artifact.set_job_id(row.Int(1));
  artifact.set_path(row.Text(2));
  artifact.set_kind(row.Text(3));
  artifact.set_size_bytes(row.Int(4));
  artifact.set_sha256(row.Text(5));
  *artifact.mutable_create_time() = ToTimestamp(row.Int(6));
  return artifact;
}

constexpr char kArtifactColumns[] =
    "SELECT a.id, a.job_id, a.path, a.kind, a.size_bytes, a.sha256, a.create_ms FROM artifacts a";

// "?, ?, ?" for n parameters.
std::string Placeholders(size_t n) {
  std::vector<std::string> marks(n, "?");
  return absl::StrJoin(marks, ", ");
}

}  // namespace

absl::StatusOr<v1::Job> JobStore::GetJob(int64_t job_id) {
  QATD_ASSIGN_OR_RETURN(ReadPool::Lease lease, readers_->Acquire());
  SqliteDb& db = lease.db();
  QATD_ASSIGN_OR_RETURN(SqliteStatement select, db.Prepare(absl::StrCat(kJobColumns, " WHERE id = ?")));
  select.Bind(1, job_id);
  QATD_ASSIGN_OR_RETURN(bool found, select.Step());
  if (!found) return absl::NotFoundError(absl::StrCat("job ", job_id, " not found"));
  QATD_ASSIGN_OR_RETURN(v1::Job job, JobFromRow(select, /*include_spec=*/true));
  QATD_RETURN_IF_ERROR(LoadDependencies(db, job));
  QATD_ASSIGN_OR_RETURN(SqliteStatement artifacts, db.Prepare(absl::StrCat(kArtifactColumns,
                                                                           " WHERE a.job_id = ? ORDER BY a.id")));
  artifacts.Bind(1, job_id);
  while (true) {
    QATD_ASSIGN_OR_RETURN(bool row, artifacts.Step());
    if (!row) break;
    *job.add_artifacts() = ArtifactFromRow(artifacts);
  }
  return job;
}

absl::StatusOr<std::vector<v1::Job>> JobStore::ListJobs(const JobFilter& filter) {
  std::vector<std::string> where;
  if (!filter.states.empty()) where.push_back(absl::StrCat("state IN (", Placeholders(filter.states.size()), ")"));
  if (!filter.kinds.empty()) where.push_back(absl::StrCat("kind IN (", Placeholders(filter.kinds.size()), ")"));
  if (filter.pipeline_id != 0) where.push_back("pipeline_id = ?");
  if (filter.before_id != 0) where.push_back("id < ?");
  std::string sql(kJobColumns);
  if (!where.empty()) absl::StrAppend(&sql, " WHERE ", absl::StrJoin(where, " AND "));
  absl::StrAppend(&sql, " ORDER BY id DESC LIMIT ?");

  QATD_ASSIGN_OR_RETURN(ReadPool::Lease lease, readers_->Acquire());
  SqliteDb& db = lease.db();
  QATD_ASSIGN_OR_RETURN(SqliteStatement select, db.Prepare(sql));
  int index = 1;
  for (v1::JobState state : filter.states) select.Bind(index++, static_cast<int64_t>(state));
  for (v1::JobKind kind : filter.kinds) select.Bind(index++, static_cast<int64_t>(kind));
  if (filter.pipeline_id != 0) select.Bind(index++, filter.pipeline_id);
  if (filter.before_id != 0) select.Bind(index++, filter.before_id);
  select.Bind(index, static_cast<int64_t>(filter.limit));

  std::vector<v1::Job> jobs;
  while (true) {
    QATD_ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) break;
    QATD_ASSIGN_OR_RETURN(v1::Job job, JobFromRow(select, filter.include_spec));
    jobs.push_back(std::move(job));
  }
  for (v1::Job& job : jobs) QATD_RETURN_IF_ERROR(LoadDependencies(db, job));
  return jobs;
}

absl::StatusOr<int64_t> JobStore::CountJobs(v1::JobState state) {
  QATD_ASSIGN_OR_RETURN(ReadPool::Lease lease, readers_->Acquire());
  QATD_ASSIGN_OR_RETURN(SqliteStatement select, lease.db().Prepare("SELECT COUNT(*) FROM jobs WHERE state = ?"));
  select.Bind(1, static_cast<int64_t>(state));
  QATD_ASSIGN_OR_RETURN(bool row, select.Step());
  return row ? select.Int(0) : 0;
}

absl::StatusOr<std::vector<v1::JobEvent>> JobStore::ListEvents(int64_t job_id, int64_t after_seq, int limit) {
  QATD_ASSIGN_OR_RETURN(ReadPool::Lease lease, readers_->Acquire());
  QATD_ASSIGN_OR_RETURN(SqliteStatement select, lease.db().Prepare(
      "SELECT id, payload FROM events WHERE job_id = ? AND id > ? ORDER BY id LIMIT ?"));
  select.Bind(1, job_id).Bind(2, after_seq).Bind(3, static_cast<int64_t>(limit));
  std::vector<v1::JobEvent> events;
  while (true) {
    QATD_ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) break;
    v1::JobEvent event;
    if (!event.ParseFromString(select.Blob(1))) {
      return absl::DataLossError(absl::StrCat("event ", select.Int(0), " of job ", job_id, " is unreadable"));
    }
    event.set_seq(select.Int(0));
    events.push_back(std::move(event));
  }
  return events;
}

absl::StatusOr<int64_t> JobStore::LatestEventSeq(int64_t job_id) {
  QATD_ASSIGN_OR_RETURN(ReadPool::Lease lease, readers_->Acquire());
  QATD_ASSIGN_OR_RETURN(SqliteStatement select, lease.db().Prepare(
      "SELECT COALESCE(MAX(id), 0) FROM events WHERE job_id = ?"));
  select.Bind(1, job_id);
  QATD_ASSIGN_OR_RETURN(bool row, select.Step());
  return row ? select.Int(0) : 0;
}

absl::StatusOr<std::vector<TransitionRecord>> JobStore::ListTransitions(int64_t job_id) {
  QATD_ASSIGN_OR_RETURN(ReadPool::Lease lease, readers_->Acquire());
  QATD_ASSIGN_OR_RETURN(SqliteStatement select, lease.db().Prepare(
      "SELECT from_state, to_state, reason, error_code, error_message, time_ms FROM state_transitions "
      "WHERE job_id = ? ORDER BY id"));
  select.Bind(1, job_id);
  std::vector<TransitionRecord> records;
  while (true) {
    QATD_ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) break;
    TransitionRecord record;
    record.from = static_cast<v1::JobState>(select.Int(0));
    record.to = static_cast<v1::JobState>(select.Int(1));
    record.reason = select.Text(2);
    record.error.set_code(static_cast<int32_t>(select.Int(3)));
    record.error.set_message(select.Text(4));
    record.time_ms = select.Int(5);
    records.push_back(std::move(record));
  }
  return records;
}

absl::StatusOr<std::vector<v1::MetricSeries>> JobStore::GetMetricSeries(int64_t job_id,
                                                                        const std::vector<std::string>& names,
                                                                        std::optional<int64_t> after_step) {
  std::string sql = "SELECT name, step, value, time_ms FROM metric_points WHERE job_id = ?";
  if (!names.empty()) absl::StrAppend(&sql, " AND name IN (", Placeholders(names.size()), ")");
  if (after_step.has_value()) absl::StrAppend(&sql, " AND step > ?");
  absl::StrAppend(&sql, " ORDER BY name, step, rowid");
  QATD_ASSIGN_OR_RETURN(ReadPool::Lease lease, readers_->Acquire());
  QATD_ASSIGN_OR_RETURN(SqliteStatement select, lease.db().Prepare(sql));
  int index = 1;
  select.Bind(index++, job_id);
  for (const std::string& name : names) select.BindText(index++, name);
  if (after_step.has_value()) select.Bind(index++, *after_step);
  std::vector<v1::MetricSeries> series;
  while (true) {
    QATD_ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) break;
    std::string name = select.Text(0);
    if (series.empty() || series.back().name() != name) {
      series.emplace_back();
      series.back().set_name(name);
    }
    v1::MetricPoint* point = series.back().add_points();
    point->set_name(std::move(name));
    point->set_step(select.Int(1));
    point->set_value(select.Double(2));
    *point->mutable_time() = ToTimestamp(select.Int(3));
  }
  return series;
}

absl::StatusOr<std::vector<v1::Artifact>> JobStore::ListArtifacts(const ArtifactFilter& filter) {
  std::string sql(kArtifactColumns);
  std::vector<std::string> where;
  if (filter.pipeline_id != 0) {
    absl::StrAppend(&sql, " JOIN jobs j ON j.id = a.job_id");
    where.push_back("j.pipeline_id = ?");
  }
  if (filter.job_id != 0) where.push_back("a.job_id = ?");
  if (!filter.kind.empty()) where.push_back("a.kind = ?");
  if (!where.empty()) absl::StrAppend(&sql, " WHERE ", absl::StrJoin(where, " AND "));
  absl::StrAppend(&sql, " ORDER BY a.id");
  QATD_ASSIGN_OR_RETURN(ReadPool::Lease lease, readers_->Acquire());
  QATD_ASSIGN_OR_RETURN(SqliteStatement select, lease.db().Prepare(sql));
  int index = 1;
  if (filter.pipeline_id != 0) select.Bind(index++, filter.pipeline_id);
  if (filter.job_id != 0) select.Bind(index++, filter.job_id);
  if (!filter.kind.empty()) select.BindText(index++, filter.kind);
  std::vector<v1::Artifact> artifacts;
  while (true) {
    QATD_ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) break;
    artifacts.push_back(ArtifactFromRow(select));
  }
  return artifacts;
}

absl::StatusOr<std::vector<v1::ArtifactInput>> JobStore::GetInputs(int64_t job_id) {
  QATD_ASSIGN_OR_RETURN(ReadPool::Lease lease, readers_->Acquire());
  QATD_ASSIGN_OR_RETURN(SqliteStatement select, lease.db().Prepare("SELECT inputs FROM jobs WHERE id = ?"));
  select.Bind(1, job_id);
  QATD_ASSIGN_OR_RETURN(bool found, select.Step());
  if (!found) return absl::NotFoundError(absl::StrCat("job ", job_id, " not found"));
  v1::PipelineStage holder;
  if (!select.IsNull(0) && !holder.ParseFromString(select.Blob(0))) {
    return absl::DataLossError(absl::StrCat("job ", job_id, ": unreadable inputs"));
  }
  return std::vector<v1::ArtifactInput>(holder.inputs().begin(), holder.inputs().end());
}

absl::StatusOr<v1::Pipeline> JobStore::GetPipeline(int64_t pipeline_id) {
  QATD_ASSIGN_OR_RETURN(ReadPool::Lease lease, readers_->Acquire());
  SqliteDb& db = lease.db();
  QATD_ASSIGN_OR_RETURN(SqliteStatement select, db.Prepare("SELECT spec, create_ms FROM pipelines WHERE id = ?"));
  select.Bind(1, pipeline_id);
  QATD_ASSIGN_OR_RETURN(bool found, select.Step());
  if (!found) return absl::NotFoundError(absl::StrCat("pipeline ", pipeline_id, " not found"));
  v1::Pipeline pipeline;
  pipeline.set_id(pipeline_id);
  if (!pipeline.mutable_spec()->ParseFromString(select.Blob(0))) {
    return absl::DataLossError(absl::StrCat("pipeline ", pipeline_id, ": unreadable spec"));
  }
  *pipeline.mutable_create_time() = ToTimestamp(select.Int(1));

  QATD_ASSIGN_OR_RETURN(SqliteStatement jobs, db.Prepare(
      "SELECT id, state FROM jobs WHERE pipeline_id = ? ORDER BY id"));
  jobs.Bind(1, pipeline_id);
  std::map<v1::JobState, int> counts;
  while (true) {
    QATD_ASSIGN_OR_RETURN(bool row, jobs.Step());
    if (!row) break;
    pipeline.add_job_ids(jobs.Int(0));
    ++counts[static_cast<v1::JobState>(jobs.Int(1))];
  }
  // Derived state: a failure or cancellation marks the pipeline; otherwise running while any
  // stage runs, succeeded when all did, queued before that.
  v1::JobState state = v1::JOB_STATE_QUEUED;
  if (counts[v1::JOB_STATE_FAILED] > 0) {
    state = v1::JOB_STATE_FAILED;
  } else if (counts[v1::JOB_STATE_CANCELLED] > 0) {
    state = v1::JOB_STATE_CANCELLED;
  } else if (counts[v1::JOB_STATE_SUCCEEDED] == pipeline.job_ids_size() && pipeline.job_ids_size() > 0) {
    state = v1::JOB_STATE_SUCCEEDED;
  } else if (counts[v1::JOB_STATE_RUNNING] > 0 || counts[v1::JOB_STATE_SUCCEEDED] > 0) {
    state = v1::JOB_STATE_RUNNING;
  }
  pipeline.set_state(state);
  return pipeline;
}

}  // namespace qatd::storage
