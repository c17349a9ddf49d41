#include "core/common/file_util.h"

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

}  // namespace qatd
