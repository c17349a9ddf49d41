#include "storage/schema.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"

namespace qatd::storage {
namespace {

// Times are integer milliseconds since the Unix epoch. Protobuf payloads (spec, progress,
// result, events) are stored as serialized bytes; the columns next to them hold what queries
// filter or sort by.
constexpr std::string_view kV1 = R"sql(
CREATE TABLE pipelines (
  id          INTEGER PRIMARY KEY,
  name        TEXT NOT NULL,
  spec        BLOB NOT NULL,
  create_ms   INTEGER NOT NULL
);

CREATE TABLE jobs (
  id               INTEGER PRIMARY KEY,
  kind             INTEGER NOT NULL,
  state            INTEGER NOT NULL,
  priority         INTEGER NOT NULL DEFAULT 0,
  device_count     INTEGER NOT NULL DEFAULT 1,
  spec             BLOB NOT NULL,
  pipeline_id      INTEGER REFERENCES pipelines(id),
  stage            TEXT NOT NULL DEFAULT '',
  inputs           BLOB,
  create_ms        INTEGER NOT NULL,
  start_ms         INTEGER,
  end_ms           INTEGER,
  progress         BLOB,
  result           BLOB,
  error_code       INTEGER NOT NULL DEFAULT 0,
  error_message    TEXT NOT NULL DEFAULT '',
  attempt          INTEGER NOT NULL DEFAULT 0,
  worker_pid       INTEGER NOT NULL DEFAULT 0,
  devices          TEXT NOT NULL DEFAULT '',
  cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_by_state ON jobs(state, priority DESC, id);
CREATE INDEX jobs_by_pipeline ON jobs(pipeline_id);

CREATE TABLE job_dependencies (
  job_id      INTEGER NOT NULL REFERENCES jobs(id),
  depends_on  INTEGER NOT NULL REFERENCES jobs(id),
  PRIMARY KEY (job_id, depends_on)
) WITHOUT ROWID;

CREATE TABLE state_transitions (
  id             INTEGER PRIMARY KEY,
  job_id         INTEGER NOT NULL REFERENCES jobs(id),
  from_state     INTEGER NOT NULL,
  to_state       INTEGER NOT NULL,
  reason         TEXT NOT NULL DEFAULT '',
  error_code     INTEGER NOT NULL DEFAULT 0,
  error_message  TEXT NOT NULL DEFAULT '',
  time_ms        INTEGER NOT NULL
);
CREATE INDEX state_transitions_by_job ON state_transitions(job_id, id);

CREATE TABLE events (
  id       INTEGER PRIMARY KEY,
  job_id   INTEGER NOT NULL REFERENCES jobs(id),
  type     INTEGER NOT NULL,
  time_ms  INTEGER NOT NULL,
  payload  BLOB NOT NULL
);
CREATE INDEX events_by_job ON events(job_id, id);

CREATE TABLE metric_points (
  job_id   INTEGER NOT NULL REFERENCES jobs(id),
  name     TEXT NOT NULL,
  step     INTEGER NOT NULL,
  value    REAL NOT NULL,
  time_ms  INTEGER NOT NULL
);
CREATE INDEX metric_points_by_series ON metric_points(job_id, name, step);

CREATE TABLE artifacts (
  id           INTEGER PRIMARY KEY,
  job_id       INTEGER NOT NULL REFERENCES jobs(id),
  path         TEXT NOT NULL,
  kind         TEXT NOT NULL,
  size_bytes   INTEGER NOT NULL,
  sha256       TEXT NOT NULL,
  create_ms    INTEGER NOT NULL
);
CREATE INDEX artifacts_by_job ON artifacts(job_id, id);
CREATE INDEX artifacts_by_kind ON artifacts(kind, id);
)sql";

// Retention (server/retention.h): the bytes a job takes on disk, whether its history was
// compacted, and the indexes that pruning by end time and dependency checks use.
constexpr std::string_view kV2 = R"sql(
ALTER TABLE jobs ADD COLUMN disk_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN compacted INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_by_end ON jobs(state, end_ms);
CREATE INDEX job_dependencies_by_target ON job_dependencies(depends_on);
)sql";

// Data parallel (issue #15): the ranks of a job as its rank 0 reported them (a serialized
// v1::RankRoster, each rank's latest step time folded in); NULL for one rank.
constexpr std::string_view kV3 = R"sql(
ALTER TABLE jobs ADD COLUMN ranks BLOB;
)sql";

constexpr Migration kMigrations[] = {
    {1, kV1},
    {2, kV2},
    {3, kV3},
};

}  // namespace

std::span<const Migration> SchemaMigrations() { return kMigrations; }

int LatestSchemaVersion() { return kMigrations[std::size(kMigrations) - 1].version; }

absl::Status MigrateSchema(SqliteDb& db, std::span<const Migration> migrations) {
  QATD_ASSIGN_OR_RETURN(int64_t current, db.QueryInt("PRAGMA user_version"));
  int latest = migrations.empty() ? 0 : migrations.back().version;
  if (current > latest) {
    return absl::FailedPreconditionError(absl::StrCat("database schema version ", current,
                                                      " is newer than this qatd (", latest,
                                                      "); refusing to open it"));
  }
  for (const Migration& migration : migrations) {
    if (migration.version <= current) continue;
    QATD_ASSIGN_OR_RETURN(SqliteTransaction txn, SqliteTransaction::Begin(db));
    absl::Status applied = db.Exec(migration.sql);
    if (!applied.ok()) {
      return absl::Status(applied.code(), absl::StrCat("migration ", migration.version, ": ",
                                                       std::string(applied.message())));
    }
    QATD_RETURN_IF_ERROR(db.Exec(absl::StrCat("PRAGMA user_version = ", migration.version)));
    QATD_RETURN_IF_ERROR(txn.Commit());
    current = migration.version;
  }
  return absl::OkStatus();
}

}  // namespace qatd::storage
