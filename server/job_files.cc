#include "server/job_files.h"

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "core/common/file_util.h"
#include "core/jobs/job_spec.h"

namespace qatd::server {
namespace fs = std::filesystem;

JobPaths PathsOf(const v1::Job& job, const std::string& jobs_dir) {
  JobPaths paths;
  paths.job_dir = (fs::path(jobs_dir) / std::to_string(job.id())).string();
  const std::string named = jobs::SpecOutputDir(job.spec());
  if (named.empty()) {
    paths.output_dir = (fs::path(paths.job_dir) / "output").string();
  } else {
    paths.output_dir = named;
    paths.output_outside = !jobs::PathIsUnder(named, paths.job_dir);
  }
  return paths;
}

namespace {

int64_t Blocks(const struct stat& st) { return static_cast<int64_t>(st.st_blocks) * 512; }

}  // namespace

int64_t DiskUsage(const std::string& path) {
  struct stat st;
  if (path.empty() || ::lstat(path.c_str(), &st) != 0) return 0;
  int64_t bytes = Blocks(st);
  if (!S_ISDIR(st.st_mode)) return bytes;
  std::error_code ec;
  // recursive_directory_iterator does not follow directory links by default.
  for (fs::recursive_directory_iterator it(path, fs::directory_options::skip_permission_denied, ec), end;
       !ec && it != end; it.increment(ec)) {
    if (::lstat(it->path().c_str(), &st) == 0) bytes += Blocks(st);
  }
  return bytes;
}

int64_t DiskUsage(const JobPaths& paths) {
  int64_t bytes = DiskUsage(paths.job_dir);
  if (paths.output_outside) bytes += DiskUsage(paths.output_dir);
  return bytes;
}

absl::StatusOr<int64_t> RemoveAndMeasure(const std::string& path) {
  const int64_t bytes = DiskUsage(path);
  if (absl::Status removed = RemoveTree(path); !removed.ok()) return removed;  // links removed, not followed
  return bytes;
}

int64_t FreeBytes(const std::string& path) {
  struct statvfs vfs;
  if (::statvfs(path.c_str(), &vfs) != 0) return -1;
  return static_cast<int64_t>(vfs.f_bavail) * static_cast<int64_t>(vfs.f_frsize);
}

}  // namespace qatd::server
