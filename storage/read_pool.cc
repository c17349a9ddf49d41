#include "storage/read_pool.h"

#include <utility>

namespace qatd::storage {

ReadPool::Lease::~Lease() {
  if (pool_ != nullptr && db_ != nullptr) pool_->Release(std::move(db_));
}

ReadPool::ReadPool(std::string path, int max_connections)
    : path_(std::move(path)), max_connections_(max_connections < 1 ? 1 : max_connections) {}

absl::StatusOr<ReadPool::Lease> ReadPool::Acquire() {
  std::unique_lock<std::mutex> lock(mu_);
  available_.wait(lock, [&] { return !idle_.empty() || open_ < max_connections_; });
  if (!idle_.empty()) {
    std::unique_ptr<SqliteDb> db = std::move(idle_.back());
    idle_.pop_back();
    return Lease(this, std::move(db));
  }
  ++open_;
  lock.unlock();
  absl::StatusOr<std::unique_ptr<SqliteDb>> db = SqliteDb::Open(path_, SQLITE_OPEN_READONLY);
  if (!db.ok()) {
    std::lock_guard<std::mutex> relock(mu_);
    --open_;
    available_.notify_one();
    return db.status();
  }
  return Lease(this, *std::move(db));
}

void ReadPool::Release(std::unique_ptr<SqliteDb> db) {
  std::lock_guard<std::mutex> lock(mu_);
  idle_.push_back(std::move(db));
  available_.notify_one();
}

}  // namespace qatd::storage
