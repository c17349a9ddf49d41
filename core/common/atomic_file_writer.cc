#include "core/common/atomic_file_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace qatd {

absl::Status FileErrorStatus(int errno_value, std::string_view operation, std::string_view file) {
  const std::string message =
      absl::StrCat("cannot ", std::string(operation), " ", std::string(file), ": ", std::strerror(errno_value));
  switch (errno_value) {
    case ENOSPC:
    case EDQUOT:
    case EFBIG: return absl::ResourceExhaustedError(message);
    case EACCES:
    case EPERM:
    case EROFS: return absl::PermissionDeniedError(message);
    case ENOENT:
    case ENOTDIR: return absl::NotFoundError(message);
    default: return absl::InternalError(message);
  }
}

absl::StatusOr<AtomicFileWriter> AtomicFileWriter::Create(const std::string& path) {
  std::string tmp = absl::StrCat(path, ".tmp-", ::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return FileErrorStatus(errno, "create", tmp);
  return AtomicFileWriter(path, std::move(tmp), fd);
}

AtomicFileWriter::AtomicFileWriter(AtomicFileWriter&& other) noexcept
    : path_(std::move(other.path_)), tmp_(std::move(other.tmp_)), fd_(other.fd_) {
  other.fd_ = -1;
}

AtomicFileWriter::~AtomicFileWriter() { Abandon(); }

void AtomicFileWriter::Abandon() {
  if (fd_ < 0) return;
  ::close(fd_);
  ::unlink(tmp_.c_str());
  fd_ = -1;
}

absl::Status AtomicFileWriter::Append(std::string_view data) {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat("write to ", path_, " after it was committed"));
  while (!data.empty()) {
    // At most 64 MiB per call: some kernels cap a single write below 2 GiB.
    const ssize_t n = ::write(fd_, data.data(), std::min<size_t>(data.size(), size_t{64} << 20));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      Abandon();
      return FileErrorStatus(err, "write", tmp_);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::Status AtomicFileWriter::Commit() {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat("commit of ", path_, " after it was committed"));
  if (::fsync(fd_) != 0) {
    const int err = errno;
    Abandon();
    return FileErrorStatus(err, "fsync", tmp_);
  }
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    return FileErrorStatus(err, "close", tmp_);
  }
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    return FileErrorStatus(err, absl::StrCat("rename ", tmp_, " to"), path_);
  }
  // Make the rename itself durable.
  const size_t slash = path_.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path_.substr(0, slash));
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    (void)::fsync(dir_fd);
    ::close(dir_fd);
  }
  return absl::OkStatus();
}

}  // namespace qatd
