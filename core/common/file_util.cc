#include "core/common/file_util.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/common/atomic_file_writer.h"

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
  absl::StatusOr<AtomicFileWriter> writer = AtomicFileWriter::Create(path);
  if (!writer.ok()) return writer.status();
  if (absl::Status appended = writer->Append(data); !appended.ok()) return appended;
  return writer->Commit();
}

absl::Status ReplaceDirectory(const std::string& src, const std::string& dst) {
  struct stat st {};
  std::string aside;
  if (::lstat(dst.c_str(), &st) == 0) {
    aside = absl::StrCat(dst, ".old-", ::getpid());
    (void)RemoveTree(aside);
    if (::rename(dst.c_str(), aside.c_str()) != 0) {
      return FileErrorStatus(errno, "move aside", dst);
    }
  }
  if (::rename(src.c_str(), dst.c_str()) != 0) {
    const int err = errno;
    if (!aside.empty()) (void)::rename(aside.c_str(), dst.c_str());
    return FileErrorStatus(err, absl::StrCat("rename ", src, " to"), dst);
  }
  if (!aside.empty()) return RemoveTree(aside);
  return absl::OkStatus();
}

}  // namespace qatd
