#pragma once
// The one way qatd publishes a file (LevelDB's Env::NewWritableFile + rename idiom): bytes go
// to "<path>.tmp-<pid>", Commit() fsyncs the file, renames it over `path` and fsyncs the
// directory, so readers see the old file or the complete new one, never a torn write. A writer
// destroyed before Commit() removes its temp file. WriteFileAtomically (file_util.h) is the
// one-shot form.
//
// Errors carry one code per failure (FileErrorStatus): no space -> RESOURCE_EXHAUSTED, no
// permission / read-only -> PERMISSION_DENIED, a missing directory -> NOT_FOUND, anything
// else -> INTERNAL; the message names the operation and the file.

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qatd {

class AtomicFileWriter {
 public:
  static absl::StatusOr<AtomicFileWriter> Create(const std::string& path);
  AtomicFileWriter(AtomicFileWriter&& other) noexcept;
  AtomicFileWriter& operator=(AtomicFileWriter&&) = delete;
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  ~AtomicFileWriter();

  // Appends `data` (retrying short writes and EINTR).
  absl::Status Append(std::string_view data);
  // fsync, rename over the target, fsync the directory. The writer is spent afterwards.
  absl::Status Commit();

 private:
  AtomicFileWriter(std::string path, std::string tmp, int fd) : path_(std::move(path)), tmp_(std::move(tmp)), fd_(fd) {}
  void Abandon();

  std::string path_;
  std::string tmp_;
  int fd_ = -1;
};

// `errno_value` of `operation` ("write", "rename", ...) on `file` as a status (see above).
absl::Status FileErrorStatus(int errno_value, std::string_view operation, std::string_view file);

}  // namespace qatd
