#pragma once
// The job store's schema as an ordered list of migrations, versioned by SQLite's
// `PRAGMA user_version` (0 = empty database). Migrations are append-only: never edit one that
// has shipped; add the next version instead.

#include <span>
#include <string_view>

#include "absl/status/status.h"
#include "storage/sqlite.h"

namespace qatd::storage {

struct Migration {
  int version;           // 1, 2, ... (user_version after it ran)
  std::string_view sql;  // one or more statements
};

// All migrations, in order.
std::span<const Migration> SchemaMigrations();

// The version a fully migrated database has.
int LatestSchemaVersion();

// Runs the missing migrations, each in its own transaction together with the user_version
// bump. FAILED_PRECONDITION if the database is newer than this build.
absl::Status MigrateSchema(SqliteDb& db, std::span<const Migration> migrations = SchemaMigrations());

}  // namespace qatd::storage
