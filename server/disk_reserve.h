#pragma once
// A ballast file that keeps room on the data dir's file system for the moment it fills up.
// When SQLite can no longer grow the database (disk full), the scheduler releases the reserve
// so that it can still record that the job failed and why, and holds queued jobs until the
// reserve can be filled again with as much free space left beside it (an operator freed
// space). Without it a full disk left jobs RUNNING forever in the database.
//
// Not thread-safe: the scheduler calls it under its lock.

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace qatd::server {

class DiskReserve {
 public:
  // `bytes` 0 disables the reserve (Fill always succeeds, Release frees nothing).
  DiskReserve(std::string path, int64_t bytes) : path_(std::move(path)), bytes_(bytes) {}

  // (Re)creates the file with `bytes` of allocated blocks. RESOURCE_EXHAUSTED when the file
  // system has no room for it (nothing is left behind then).
  absl::Status Fill();
  // Deletes the file; true if it was there.
  bool Release();

  const std::string& path() const { return path_; }
  int64_t bytes() const { return bytes_; }

 private:
  std::string path_;
  int64_t bytes_;
};

}  // namespace qatd::server
