// JobStore: opening, migrations and the write path. Reads are in job_store_reads.cc.
#include "storage/job_store.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"
#include "storage/job_codec.h"
#include "storage/schema.h"
#include "core/jobs/job_kind.h"

namespace qatd::storage {
namespace {

std::string Serialize(const google::protobuf::MessageLite& message) {
  std::string bytes;
  message.SerializeToString(&bytes);
  return bytes;
}

absl::Status NotFound(int64_t job_id) { return absl::NotFoundError(absl::StrCat("job ", job_id, " not found")); }

absl::StatusOr<v1::JobState> CurrentState(SqliteDb& db, int64_t job_id) {
  QATD_ASSIGN_OR_RETURN(SqliteStatement stmt, db.Prepare("SELECT state FROM jobs WHERE id = ?"));
  stmt.Bind(1, job_id);
  QATD_ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return NotFound(job_id);
  return static_cast<v1::JobState>(stmt.Int(0));
}

}  // namespace

JobStore::JobStore(std::unique_ptr<SqliteDb> writer, std::unique_ptr<ReadPool> readers)
    : writer_(std::move(writer)), readers_(std::move(readers)) {}

JobStore::~JobStore() = default;

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Open(const std::string& path, const JobStoreOptions& options) {
  QATD_ASSIGN_OR_RETURN(std::unique_ptr<SqliteDb> writer,
                        SqliteDb::Open(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE));
  // WAL: readers on other connections never block the writer. synchronous=NORMAL is durable
  // across process crashes (a kill -9 loses nothing committed); only an OS crash may lose the
  // last transactions.
  {
    QATD_ASSIGN_OR_RETURN(SqliteStatement stmt, writer->Prepare("PRAGMA journal_mode = WAL"));
    QATD_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row || stmt.Text(0) != "wal") {
      return absl::FailedPreconditionError(absl::StrCat("cannot switch ", path, " to WAL mode"));
    }
  }
  QATD_RETURN_IF_ERROR(writer->Exec("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;"));
  // A damaged page is found now, not by the query that happens to read it months later.
  {
    QATD_ASSIGN_OR_RETURN(SqliteStatement stmt, writer->Prepare("PRAGMA quick_check"));
    QATD_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row || stmt.Text(0) != "ok") {
      return absl::DataLossError(absl::StrCat(path, " failed SQLite's integrity check (",
                                              row ? stmt.Text(0) : std::string("no result"),
                                              "): restore it from a backup or move it aside"));
    }
  }
  QATD_RETURN_IF_ERROR(MigrateSchema(*writer));
  auto readers = std::make_unique<ReadPool>(path, options.read_connections);
  return std::unique_ptr<JobStore>(new JobStore(std::move(writer), std::move(readers)));
}

absl::StatusOr<int64_t> JobStore::InsertJobLocked(const NewJob& job, int64_t now_ms) {
  SqliteDb& db = *writer_;
  QATD_ASSIGN_OR_RETURN(SqliteStatement insert, db.Prepare(
      "INSERT INTO jobs (kind, state, priority, device_count, spec, pipeline_id, stage, inputs, create_ms) "
      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"));
  v1::PipelineStage inputs;  // reuses the stage message as a container of ArtifactInputs
  for (const v1::ArtifactInput& input : job.inputs) *inputs.add_inputs() = input;
  insert.Bind(1, static_cast<int64_t>(jobs::JobKindOf(job.spec)))
      .Bind(2, static_cast<int64_t>(v1::JOB_STATE_QUEUED))
      .Bind(3, static_cast<int64_t>(job.spec.priority()))
      .Bind(4, static_cast<int64_t>(DeviceCountOf(job.spec)))
      .BindBlob(5, Serialize(job.spec));
  if (job.pipeline_id != 0) {
    insert.Bind(6, job.pipeline_id);
  } else {
    insert.BindNull(6);
  }
  insert.BindText(7, job.stage).BindBlob(8, Serialize(inputs)).Bind(9, now_ms);
  QATD_RETURN_IF_ERROR(insert.Run());
  int64_t id = db.LastInsertRowId();

  QATD_ASSIGN_OR_RETURN(SqliteStatement dep, db.Prepare(
      "INSERT INTO job_dependencies (job_id, depends_on) VALUES (?, ?)"));
  for (int64_t upstream : job.depends_on) {
    QATD_RETURN_IF_ERROR(dep.Reset());
    dep.Bind(1, id).Bind(2, upstream);
    absl::Status inserted = dep.Run();
    if (!inserted.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("depends_on: job ", upstream, " does not exist"));
    }
  }

  v1::JobEvent created;
  v1::StateChange* change = created.mutable_state();
  change->set_from(v1::JOB_STATE_UNSPECIFIED);
  change->set_to(v1::JOB_STATE_QUEUED);
  change->set_reason("submitted");
  QATD_ASSIGN_OR_RETURN(SqliteStatement transition, db.Prepare(
      "INSERT INTO state_transitions (job_id, from_state, to_state, reason, time_ms) VALUES (?, ?, ?, ?, ?)"));
  transition.Bind(1, id)
      .Bind(2, static_cast<int64_t>(v1::JOB_STATE_UNSPECIFIED))
      .Bind(3, static_cast<int64_t>(v1::JOB_STATE_QUEUED))
      .BindText(4, "submitted")
      .Bind(5, now_ms);
  QATD_RETURN_IF_ERROR(transition.Run());
  QATD_RETURN_IF_ERROR(InsertEventLocked(id, created, now_ms).status());
  return id;
}

absl::StatusOr<v1::Job> JobStore::CreateJob(const NewJob& job, int64_t now_ms) {
  int64_t id = 0;
  {
    std::lock_guard<std::mutex> lock(write_mu_);
    QATD_ASSIGN_OR_RETURN(SqliteTransaction txn, SqliteTransaction::Begin(*writer_));
    QATD_ASSIGN_OR_RETURN(id, InsertJobLocked(job, now_ms));
    QATD_RETURN_IF_ERROR(txn.Commit());
  }
  return GetJob(id);
}

absl::StatusOr<v1::Pipeline> JobStore::CreatePipeline(const v1::PipelineSpec& spec, std::vector<NewJob> jobs,
                                                      int64_t now_ms) {
  int64_t pipeline_id = 0;
  {
    std::lock_guard<std::mutex> lock(write_mu_);
    QATD_ASSIGN_OR_RETURN(SqliteTransaction txn, SqliteTransaction::Begin(*writer_));
    QATD_ASSIGN_OR_RETURN(SqliteStatement insert, writer_->Prepare(
        "INSERT INTO pipelines (name, spec, create_ms) VALUES (?, ?, ?)"));
    insert.BindText(1, spec.name()).BindBlob(2, Serialize(spec)).Bind(3, now_ms);
    QATD_RETURN_IF_ERROR(insert.Run());
    pipeline_id = writer_->LastInsertRowId();
    std::vector<int64_t> ids;
    ids.reserve(jobs.size());
    for (size_t i = 0; i < jobs.size(); ++i) {
      NewJob& job = jobs[i];
      for (int64_t& dep : job.depends_on) {
        if (dep < 0 || static_cast<size_t>(dep) >= i) {
          return absl::InvalidArgumentError(
              absl::StrCat("pipeline stage ", i, " depends on stage index ", dep, ", which is not earlier"));
        }
        dep = ids[static_cast<size_t>(dep)];
      }
      job.pipeline_id = pipeline_id;
      QATD_ASSIGN_OR_RETURN(int64_t id, InsertJobLocked(job, now_ms));
      ids.push_back(id);
    }
    QATD_RETURN_IF_ERROR(txn.Commit());
  }
  return GetPipeline(pipeline_id);
}

absl::StatusOr<v1::JobEvent> JobStore::TransitionJob(int64_t job_id, const Transition& t, int64_t now_ms,
                                                     std::optional<v1::JobState> expected_from) {
  std::lock_guard<std::mutex> lock(write_mu_);
  SqliteDb& db = *writer_;
  QATD_ASSIGN_OR_RETURN(SqliteTransaction txn, SqliteTransaction::Begin(db));
  QATD_ASSIGN_OR_RETURN(v1::JobState from, CurrentState(db, job_id));
  if (expected_from.has_value() && from != *expected_from) {
    return absl::FailedPreconditionError(absl::StrCat("job ", job_id, " is ", JobStateName(from), ", not ",
                                                      JobStateName(*expected_from)));
  }
  if (IsTerminal(from)) {
    return absl::FailedPreconditionError(absl::StrCat("job ", job_id, " already ended (", JobStateName(from), ")"));
  }
  if (from == t.to || t.to == v1::JOB_STATE_UNSPECIFIED) {
    return absl::FailedPreconditionError(absl::StrCat("job ", job_id, " is already ", JobStateName(from)));
  }

  const bool running = t.to == v1::JOB_STATE_RUNNING;
  const bool terminal = IsTerminal(t.to);
  std::string sql =
      "UPDATE jobs SET state = ?1, error_code = ?2, error_message = ?3, worker_pid = ?4, "
      "attempt = attempt + ?5";
  if (running) absl::StrAppend(&sql, ", start_ms = ?6, end_ms = NULL, ranks = NULL");  // a new attempt reports its own
  if (terminal) absl::StrAppend(&sql, ", end_ms = ?6");
  if (t.devices.has_value() || !running) absl::StrAppend(&sql, ", devices = ?7");
  if (t.result.has_value()) absl::StrAppend(&sql, ", result = ?8");
  if (!running && !terminal) absl::StrAppend(&sql, ", cancel_requested = 0");
  absl::StrAppend(&sql, " WHERE id = ?9");
  QATD_ASSIGN_OR_RETURN(SqliteStatement update, db.Prepare(sql));
  update.Bind(1, static_cast<int64_t>(t.to))
      .Bind(2, static_cast<int64_t>(terminal ? t.error.code() : 0))
      .BindText(3, terminal ? t.error.message() : "")
      .Bind(4, static_cast<int64_t>(running ? t.worker_pid.value_or(0) : 0))
      .Bind(5, static_cast<int64_t>(t.bump_attempt ? 1 : 0))
      .Bind(9, job_id);
  if (running || terminal) update.Bind(6, now_ms);
  if (t.devices.has_value() || !running) {
    update.BindText(7, running ? JoinDevices(*t.devices) : "");
  }
  if (t.result.has_value()) update.BindBlob(8, Serialize(*t.result));
  QATD_RETURN_IF_ERROR(update.Run());

  QATD_ASSIGN_OR_RETURN(SqliteStatement record, db.Prepare(
      "INSERT INTO state_transitions (job_id, from_state, to_state, reason, error_code, error_message, time_ms) "
      "VALUES (?, ?, ?, ?, ?, ?, ?)"));
  record.Bind(1, job_id)
      .Bind(2, static_cast<int64_t>(from))
      .Bind(3, static_cast<int64_t>(t.to))
      .BindText(4, t.reason)
      .Bind(5, static_cast<int64_t>(t.error.code()))
      .BindText(6, t.error.message())
      .Bind(7, now_ms);
  QATD_RETURN_IF_ERROR(record.Run());

  v1::JobEvent event;
  v1::StateChange* change = event.mutable_state();
  change->set_from(from);
  change->set_to(t.to);
  change->set_reason(t.reason);
  if (t.error.code() != 0) *change->mutable_error() = t.error;
  QATD_ASSIGN_OR_RETURN(v1::JobEvent stored, InsertEventLocked(job_id, event, now_ms));
  QATD_RETURN_IF_ERROR(txn.Commit());
  return stored;
}

absl::StatusOr<v1::JobEvent> JobStore::InsertEventLocked(int64_t job_id, const v1::JobEvent& event, int64_t now_ms) {
  v1::JobEvent stored = event;
  stored.set_job_id(job_id);
  *stored.mutable_time() = ToTimestamp(now_ms);
  stored.set_seq(0);
  QATD_ASSIGN_OR_RETURN(SqliteStatement insert, writer_->Prepare(
      "INSERT INTO events (job_id, type, time_ms, payload) VALUES (?, ?, ?, ?)"));
  insert.Bind(1, job_id)
      .Bind(2, static_cast<int64_t>(event.event_case()))
      .Bind(3, now_ms)
      .BindBlob(4, Serialize(stored));
  QATD_RETURN_IF_ERROR(insert.Run());
  stored.set_seq(writer_->LastInsertRowId());
  return stored;
}

absl::StatusOr<v1::JobEvent> JobStore::AppendEvent(int64_t job_id, const v1::JobEvent& event, int64_t now_ms,
                                                   bool persist_event) {
  switch (event.event_case()) {
    case v1::JobEvent::kProgress:
    case v1::JobEvent::kMetric:
    case v1::JobEvent::kLog:
    case v1::JobEvent::kText:
      break;
    default:
      return absl::InvalidArgumentError("AppendEvent takes progress, metric, log or text events");
  }
  std::lock_guard<std::mutex> lock(write_mu_);
  SqliteDb& db = *writer_;
  QATD_ASSIGN_OR_RETURN(SqliteTransaction txn, SqliteTransaction::Begin(db));
  if (event.has_progress()) {
    QATD_ASSIGN_OR_RETURN(SqliteStatement update, db.Prepare("UPDATE jobs SET progress = ? WHERE id = ?"));
    update.BindBlob(1, Serialize(event.progress())).Bind(2, job_id);
    QATD_RETURN_IF_ERROR(update.Run());
    if (sqlite3_changes(db.raw()) == 0) return NotFound(job_id);
  } else if (event.has_metric()) {
    QATD_ASSIGN_OR_RETURN(SqliteStatement insert, db.Prepare(
        "INSERT INTO metric_points (job_id, name, step, value, time_ms) VALUES (?, ?, ?, ?, ?)"));
    insert.Bind(1, job_id)
        .BindText(2, event.metric().name())
        .Bind(3, event.metric().step())
        .Bind(4, event.metric().value())
        .Bind(5, now_ms);
    absl::Status inserted = insert.Run();
    if (absl::IsFailedPrecondition(inserted)) return NotFound(job_id);
    QATD_RETURN_IF_ERROR(inserted);
  }
  v1::JobEvent stored = event;
  if (persist_event) {
    absl::StatusOr<v1::JobEvent> inserted = InsertEventLocked(job_id, event, now_ms);
    if (absl::IsFailedPrecondition(inserted.status())) return NotFound(job_id);
    QATD_ASSIGN_OR_RETURN(stored, std::move(inserted));
  } else {
    stored.set_job_id(job_id);
    *stored.mutable_time() = ToTimestamp(now_ms);
    stored.set_seq(0);
  }
  if (stored.has_metric()) *stored.mutable_metric()->mutable_time() = ToTimestamp(now_ms);
  QATD_RETURN_IF_ERROR(txn.Commit());
  return stored;
}

absl::StatusOr<v1::JobEvent> JobStore::AddArtifact(int64_t job_id, const v1::Artifact& artifact, int64_t now_ms) {
  std::lock_guard<std::mutex> lock(write_mu_);
  SqliteDb& db = *writer_;
  QATD_ASSIGN_OR_RETURN(SqliteTransaction txn, SqliteTransaction::Begin(db));
  QATD_ASSIGN_OR_RETURN(SqliteStatement insert, db.Prepare(
      "INSERT INTO artifacts (job_id, path, kind, size_bytes, sha256, create_ms) VALUES (?, ?, ?, ?, ?, ?)"));
  insert.Bind(1, job_id)
      .BindText(2, artifact.path())
      .BindText(3, artifact.kind())
      .Bind(4, artifact.size_bytes())
      .BindText(5, artifact.sha256())
      .Bind(6, now_ms);
  absl::Status inserted = insert.Run();
  if (absl::IsFailedPrecondition(inserted)) return NotFound(job_id);
  QATD_RETURN_IF_ERROR(inserted);
  v1::JobEvent event;
  v1::Artifact* stored = event.mutable_artifact();
  *stored = artifact;
  stored->set_id(db.LastInsertRowId());
  stored->set_job_id(job_id);
  *stored->mutable_create_time() = ToTimestamp(now_ms);
  QATD_ASSIGN_OR_RETURN(v1::JobEvent with_seq, InsertEventLocked(job_id, event, now_ms));
  QATD_RETURN_IF_ERROR(txn.Commit());
  return with_seq;
}

absl::Status JobStore::SetCancelRequested(int64_t job_id) {
  std::lock_guard<std::mutex> lock(write_mu_);
  QATD_ASSIGN_OR_RETURN(SqliteStatement update, writer_->Prepare(
      "UPDATE jobs SET cancel_requested = 1 WHERE id = ?"));
  update.Bind(1, job_id);
  QATD_RETURN_IF_ERROR(update.Run());
  if (sqlite3_changes(writer_->raw()) == 0) return NotFound(job_id);
  return absl::OkStatus();
}

absl::Status JobStore::UpdateSpec(int64_t job_id, const v1::JobSpec& spec) {
  std::lock_guard<std::mutex> lock(write_mu_);
  QATD_ASSIGN_OR_RETURN(SqliteStatement update, writer_->Prepare("UPDATE jobs SET spec = ? WHERE id = ?"));
  update.BindBlob(1, Serialize(spec)).Bind(2, job_id);
  QATD_RETURN_IF_ERROR(update.Run());
  if (sqlite3_changes(writer_->raw()) == 0) return NotFound(job_id);
  return absl::OkStatus();
}

absl::Status JobStore::SetRanks(int64_t job_id, const v1::RankRoster& roster) {
  std::lock_guard<std::mutex> lock(write_mu_);
  QATD_ASSIGN_OR_RETURN(SqliteStatement update, writer_->Prepare("UPDATE jobs SET ranks = ? WHERE id = ?"));
  update.BindBlob(1, Serialize(roster)).Bind(2, job_id);
  QATD_RETURN_IF_ERROR(update.Run());
  if (sqlite3_changes(writer_->raw()) == 0) return NotFound(job_id);
  return absl::OkStatus();
}

absl::Status JobStore::SetRankStepSeconds(int64_t job_id, int rank, int64_t step, double seconds) {
  std::lock_guard<std::mutex> lock(write_mu_);
  v1::RankRoster roster;
  {
    QATD_ASSIGN_OR_RETURN(SqliteStatement select, writer_->Prepare("SELECT ranks FROM jobs WHERE id = ?"));
    select.Bind(1, job_id);
    QATD_ASSIGN_OR_RETURN(bool found, select.Step());
    if (!found) return NotFound(job_id);
    if (!select.IsNull(0) && !roster.ParseFromString(select.Blob(0))) {
      return absl::DataLossError(absl::StrCat("job ", job_id, ": unreadable ranks"));
    }
  }
  v1::RankInfo* info = nullptr;
  for (v1::RankInfo& r : *roster.mutable_ranks()) {
    if (r.rank() == rank) info = &r;
  }
  if (info == nullptr) {
    info = roster.add_ranks();
    info->set_rank(rank);
    std::sort(roster.mutable_ranks()->begin(), roster.mutable_ranks()->end(),
              [](const v1::RankInfo& a, const v1::RankInfo& b) { return a.rank() < b.rank(); });
    for (v1::RankInfo& r : *roster.mutable_ranks()) {
      if (r.rank() == rank) info = &r;
    }
  }
  info->set_step(step);
  info->set_step_seconds(seconds);
  QATD_ASSIGN_OR_RETURN(SqliteStatement update, writer_->Prepare("UPDATE jobs SET ranks = ? WHERE id = ?"));
  update.BindBlob(1, Serialize(roster)).Bind(2, job_id);
  return update.Run();
}

absl::StatusOr<std::vector<int64_t>> JobStore::RequeueRunningJobs(const std::string& reason, int64_t now_ms,
                                                                  int max_attempts) {
  struct Running {
    int64_t id;
    bool cancel_requested;
    int64_t attempt;
  };
  std::vector<Running> running;
  {
    QATD_ASSIGN_OR_RETURN(ReadPool::Lease lease, readers_->Acquire());
    QATD_ASSIGN_OR_RETURN(SqliteStatement select, lease.db().Prepare(
        "SELECT id, cancel_requested, attempt FROM jobs WHERE state = ? ORDER BY id"));
    select.Bind(1, static_cast<int64_t>(v1::JOB_STATE_RUNNING));
    while (true) {
      QATD_ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) break;
      running.push_back({select.Int(0), select.Int(1) != 0, select.Int(2)});
    }
  }
  std::vector<int64_t> requeued;
  for (const auto& [id, cancel_requested, attempt] : running) {
    Transition t;
    if (max_attempts > 0 && attempt >= max_attempts && !cancel_requested) {
      // A job that was running each time the daemon died may be what kills it: stop retrying.
      t.to = v1::JOB_STATE_FAILED;
      t.reason = absl::StrCat("gave up after ", attempt, " attempt(s): the daemon stopped while it ran each time (",
                              reason, "; --max-attempts ", max_attempts, ")");
      t.error.set_code(static_cast<int32_t>(absl::StatusCode::kAborted));
      t.error.set_message(t.reason);
    } else if (cancel_requested) {
      // The user asked for this job to stop; a restart must not run it again.
      t.to = v1::JOB_STATE_CANCELLED;
      t.reason = "cancelled: the daemon restarted before the worker stopped";
      t.error.set_code(static_cast<int32_t>(absl::StatusCode::kCancelled));
      t.error.set_message(t.reason);
    } else {
      t.to = v1::JOB_STATE_QUEUED;
      t.reason = reason;
      requeued.push_back(id);
    }
    QATD_RETURN_IF_ERROR(TransitionJob(id, t, now_ms, v1::JOB_STATE_RUNNING).status());
  }
  return requeued;
}

}  // namespace qatd::storage
