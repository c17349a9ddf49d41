#pragma once
// A bounded pool of read-only SQLite connections to one database file. Connections are opened
// on demand up to `max_connections`; Acquire() waits when all are in use. Thread-safe.

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "storage/sqlite.h"

namespace qatd::storage {

class ReadPool {
 public:
  // Returns the connection to the pool on destruction.
  class Lease {
   public:
    Lease(ReadPool* pool, std::unique_ptr<SqliteDb> db) : pool_(pool), db_(std::move(db)) {}
    Lease(Lease&&) = default;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease();
    SqliteDb& db() { return *db_; }

   private:
    ReadPool* pool_;
    std::unique_ptr<SqliteDb> db_;
  };

  ReadPool(std::string path, int max_connections);
  absl::StatusOr<Lease> Acquire();

 private:
  void Release(std::unique_ptr<SqliteDb> db);

  const std::string path_;
  const int max_connections_;
  std::mutex mu_;
  std::condition_variable available_;
  std::vector<std::unique_ptr<SqliteDb>> idle_;  // guarded by mu_
  int open_ = 0;                                 // guarded by mu_
};

}  // namespace qatd::storage
