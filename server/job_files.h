#pragma once
// The files a job owns on disk: its folder <jobs_dir>/<id>/ (task, worker log, default
// output) and an output_dir its spec named elsewhere. Used by retention (delete, prune,
// dropping resume state) and to report disk usage. Never follows symbolic links: a link is
// counted and removed as a link, not as what it points at.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "qatd/v1/job.pb.h"

namespace qatd::server {

struct JobPaths {
  std::string job_dir;     // <jobs_dir>/<id>
  std::string output_dir;  // where the job's outputs are (default <job_dir>/output)
  bool output_outside = false;  // output_dir is not under job_dir (a spec's explicit output_dir)
};

JobPaths PathsOf(const v1::Job& job, const std::string& jobs_dir);

// Bytes that the regular files (and links) under `path` occupy (st_blocks * 512, like du);
// 0 when `path` does not exist.
int64_t DiskUsage(const std::string& path);
int64_t DiskUsage(const JobPaths& paths);

// Removes `path` and everything under it (qatd::RemoveTree); returns the bytes freed (as
// DiskUsage counted them). A missing path frees 0. Errors name what could not be removed.
absl::StatusOr<int64_t> RemoveAndMeasure(const std::string& path);

// Free bytes on the file system holding `path` (for the unprivileged user), or -1.
int64_t FreeBytes(const std::string& path);

}  // namespace qatd::server
