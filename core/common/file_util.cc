#include "core/common/file_util.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace qatd {
namespace {

thread_local std::string* g_failed_entry = nullptr;

int RemoveEntry(const char* path, const struct stat*, int type, struct FTW*) {
  const int rc = (type == FTW_DP) ? ::rmdir(path) : ::unlink(path);
  if (rc != 0 && errno != ENOENT) {
    if (g_failed_entry != nullptr) *g_failed_entry = absl::StrCat(path, ": ", std::strerror(errno));
    return 1;  // stop the walk
  }
  return 0;
}

}  // namespace

absl::Status RemoveTree(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return absl::InternalError(absl::StrCat("cannot stat ", path, ": ", std::strerror(errno)));
  }
  std::string failed;
  g_failed_entry = &failed;
  const int rc = ::nftw(path.c_str(), RemoveEntry, 32, FTW_DEPTH | FTW_PHYS);
  g_failed_entry = nullptr;
  if (rc != 0) {
    return absl::InternalError(absl::StrCat("cannot remove ", failed.empty() ? path : failed));
  }
  return absl::OkStatus();
}

absl::Status WriteFileAtomically(const std::string& path, std::string_view data) {
  const std::string tmp = absl::StrCat(path, ".tmp-", ::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot create ", tmp, ": ", std::strerror(errno)));
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const std::string err = std::strerror(errno);
      ::close(fd);
      ::unlink(tmp.c_str());
      return absl::InternalError(absl::StrCat("cannot write ", tmp, ": ", err));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat("cannot flush ", tmp, ": ", std::strerror(errno)));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string err = std::strerror(errno);
    ::unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ", path, ": ", err));
  }
  return absl::OkStatus();
}

absl::Status ReplaceDirectory(const std::string& src, const std::string& dst) {
  struct stat st {};
  std::string aside;
  if (::lstat(dst.c_str(), &st) == 0) {
    aside = absl::StrCat(dst, ".old-", ::getpid());
    (void)RemoveTree(aside);
    if (::rename(dst.c_str(), aside.c_str()) != 0) {
      return absl::InternalError(absl::StrCat("cannot move ", dst, " aside: ", std::strerror(errno)));
    }
  }
  if (::rename(src.c_str(), dst.c_str()) != 0) {
    const std::string err = std::strerror(errno);
    if (!aside.empty()) (void)::rename(aside.c_str(), dst.c_str());
    return absl::InternalError(absl::StrCat("cannot rename ", src, " to ", dst, ": ", err));
  }
  if (!aside.empty()) return RemoveTree(aside);
  return absl::OkStatus();
}

}  // namespace qatd
