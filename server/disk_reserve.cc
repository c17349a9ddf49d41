#include "server/disk_reserve.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace qatd::server {

absl::Status DiskReserve::Fill() {
  if (bytes_ <= 0) return absl::OkStatus();
  struct stat st;
  if (::stat(path_.c_str(), &st) == 0 && static_cast<int64_t>(st.st_blocks) * 512 >= bytes_) return absl::OkStatus();
  const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot create ", path_, ": ", std::strerror(errno)));
  // posix_fallocate allocates real blocks (a sparse file would reserve nothing).
  const int rc = ::posix_fallocate(fd, 0, bytes_);
  ::close(fd);
  if (rc != 0) {
    ::unlink(path_.c_str());
    const std::string why = std::strerror(rc);
    if (rc == ENOSPC) return absl::ResourceExhaustedError(absl::StrCat("no room for the disk reserve ", path_, " (", bytes_, " bytes)"));
    return absl::InternalError(absl::StrCat("cannot allocate the disk reserve ", path_, ": ", why));
  }
  return absl::OkStatus();
}

bool DiskReserve::Release() {
  if (bytes_ <= 0) return false;
  return ::unlink(path_.c_str()) == 0;
}

}  // namespace qatd::server
