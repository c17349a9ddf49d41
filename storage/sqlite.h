#pragma once
// A thin RAII layer over the SQLite C API: one connection (SqliteDb) and its prepared
// statements (SqliteStatement), with errors as absl::Status. Not thread-safe: a connection and
// its statements are used by one thread at a time (JobStore serializes its writer and hands
// out read connections from a pool).

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qatd::storage {

// The canonical code for a SQLite result code: BUSY/LOCKED -> UNAVAILABLE, CONSTRAINT ->
// FAILED_PRECONDITION, CORRUPT/NOTADB -> DATA_LOSS, FULL -> RESOURCE_EXHAUSTED,
// CANTOPEN/PERM/READONLY -> FAILED_PRECONDITION, others INTERNAL.
absl::Status SqliteError(int rc, std::string_view what, sqlite3* db = nullptr);

class SqliteStatement {
 public:
  SqliteStatement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  SqliteStatement(SqliteStatement&& other) noexcept;
  SqliteStatement& operator=(SqliteStatement&& other) noexcept;
  SqliteStatement(const SqliteStatement&) = delete;
  SqliteStatement& operator=(const SqliteStatement&) = delete;
  ~SqliteStatement();

  // Parameters are 1-based, as in SQLite. Text and blobs are copied (SQLITE_TRANSIENT).
  SqliteStatement& Bind(int index, int64_t value);
  SqliteStatement& Bind(int index, double value);
  SqliteStatement& BindText(int index, std::string_view value);
  SqliteStatement& BindBlob(int index, std::string_view bytes);
  SqliteStatement& BindNull(int index);

  // true: a row is available; false: done. Reports a bind error from above first.
  absl::StatusOr<bool> Step();
  // Steps to completion (for statements that return no rows).
  absl::Status Run();
  absl::Status Reset();

  // Column accessors (0-based) for the current row.
  int64_t Int(int column) const;
  double Double(int column) const;
  std::string Text(int column) const;
  std::string Blob(int column) const;
  bool IsNull(int column) const;

 private:
  sqlite3* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
  int bind_error_ = SQLITE_OK;
};

class SqliteDb {
 public:
  // flags: SQLITE_OPEN_* (e.g. READWRITE|CREATE, or READONLY). Sets a busy timeout.
  static absl::StatusOr<std::unique_ptr<SqliteDb>> Open(const std::string& path, int flags);
  ~SqliteDb();
  SqliteDb(const SqliteDb&) = delete;
  SqliteDb& operator=(const SqliteDb&) = delete;

  // Runs one or more statements that return no rows of interest.
  absl::Status Exec(std::string_view sql);
  absl::StatusOr<SqliteStatement> Prepare(std::string_view sql);
  // The single integer of `SELECT ...`/`PRAGMA ...` (first column of the first row).
  absl::StatusOr<int64_t> QueryInt(std::string_view sql);
  int64_t LastInsertRowId() const;
  sqlite3* raw() const { return db_; }

 private:
  explicit SqliteDb(sqlite3* db) : db_(db) {}
  sqlite3* db_;
};

// BEGIN IMMEDIATE ... COMMIT, rolled back on destruction unless committed.
class SqliteTransaction {
 public:
  static absl::StatusOr<SqliteTransaction> Begin(SqliteDb& db);
  SqliteTransaction(SqliteTransaction&& other) noexcept : db_(other.db_) { other.db_ = nullptr; }
  SqliteTransaction(const SqliteTransaction&) = delete;
  SqliteTransaction& operator=(const SqliteTransaction&) = delete;
  ~SqliteTransaction();
  absl::Status Commit();

 private:
  explicit SqliteTransaction(SqliteDb* db) : db_(db) {}
  SqliteDb* db_;
};

}  // namespace qatd::storage
