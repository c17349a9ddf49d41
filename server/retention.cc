#include "server/retention.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"
#include "core/jobs/job_spec.h"
#include "server/job_files.h"
#include "storage/job_codec.h"

namespace qatd::server {
namespace fs = std::filesystem;

namespace {
constexpr int kBatch = 1000;
constexpr int kMaxPrune = 1000000;  // per call
}  // namespace

Retention::Retention(RetentionOptions options, JobJournal* journal, const Clock* clock)
    : options_(std::move(options)), journal_(journal), clock_(clock) {}

Retention::~Retention() { Stop(); }

void Retention::Start() {
  if (options_.compact_after_ms < 0 || sweeper_.joinable()) return;
  sweeper_ = std::thread(&Retention::SweepLoop, this);
}

void Retention::Stop() {
  {
    std::lock_guard<std::mutex> lock(loop_mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (sweeper_.joinable()) sweeper_.join();
}

void Retention::SweepLoop() {
  const auto interval = std::chrono::milliseconds(std::clamp<int64_t>(options_.compact_after_ms / 4, 1000, 60000));
  std::unique_lock<std::mutex> lock(loop_mu_);
  while (!stop_) {
    lock.unlock();
    absl::StatusOr<int> swept = Sweep();
    if (!swept.ok()) spdlog::warn("retention: compaction pass failed: {}", swept.status().ToString());
    lock.lock();
    wake_.wait_for(lock, interval, [this] { return stop_; });
  }
}

bool Retention::MayRemoveOutput(const std::string& dir) const {
  for (const std::string& root : options_.allowed_output_roots) {
    // Strictly below a root: a root itself is never removed.
    if (jobs::PathIsUnder(dir, root) && fs::weakly_canonical(dir) != fs::weakly_canonical(root)) return true;
  }
  return false;
}

absl::StatusOr<v1::DeleteJobsResponse> Retention::Delete(const std::vector<int64_t>& ids, bool delete_outputs,
                                                         bool dry_run) {
  if (ids.empty()) return absl::InvalidArgumentError("job_ids: name at least one job");
  if (ids.size() > static_cast<size_t>(kBatch)) {
    return absl::InvalidArgumentError(absl::StrCat("job_ids: at most ", kBatch, " per call, got ", ids.size()));
  }
  std::lock_guard<std::mutex> lock(op_mu_);
  return DeleteLocked(ids, delete_outputs, dry_run);
}

absl::StatusOr<v1::DeleteJobsResponse> Retention::DeleteLocked(const std::vector<int64_t>& requested,
                                                               bool delete_outputs, bool dry_run) {
  std::vector<int64_t> ids = requested;
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  storage::JobStore& store = journal_->store();
  QATD_ASSIGN_OR_RETURN(std::vector<v1::Job> jobs, store.CheckDeletable(ids));
  v1::DeleteJobsResponse response;
  std::vector<std::string> remove;
  for (const v1::Job& job : jobs) {
    const JobPaths paths = PathsOf(job, options_.jobs_dir);
    v1::DeletedJob* deleted = response.add_jobs();
    deleted->set_job_id(job.id());
    deleted->set_state(job.state());
    int64_t bytes = DiskUsage(paths.job_dir);
    remove.push_back(paths.job_dir);
    std::error_code ec;
    if (paths.output_outside && fs::exists(fs::symlink_status(paths.output_dir, ec))) {
      if (delete_outputs && MayRemoveOutput(paths.output_dir)) {
        bytes += DiskUsage(paths.output_dir);
        remove.push_back(paths.output_dir);
      } else {
        deleted->add_kept_paths(paths.output_dir);
      }
    }
    deleted->set_bytes_freed(bytes);
    response.set_bytes_freed(response.bytes_freed() + bytes);
  }
  if (dry_run) return response;
  // Files first: they are what fills the disk, and a failure after this point leaves rows that
  // a second delete removes.
  for (const std::string& path : remove) QATD_RETURN_IF_ERROR(RemoveAndMeasure(path).status());
  QATD_RETURN_IF_ERROR(store.DeleteJobs(ids));
  std::vector<v1::JobState> states;
  for (const v1::Job& job : jobs) states.push_back(job.state());
  journal_->Deleted(states);
  spdlog::info("retention: deleted {} job(s), {} bytes freed", ids.size(), response.bytes_freed());
  return response;
}

absl::StatusOr<v1::DeleteJobsResponse> Retention::Prune(int64_t older_than_ms, std::vector<v1::JobState> states,
                                                        bool delete_outputs, bool dry_run) {
  if (older_than_ms <= 0) return absl::InvalidArgumentError("older_than_seconds must be > 0");
  if (states.empty()) states = {v1::JOB_STATE_FAILED, v1::JOB_STATE_CANCELLED};
  for (v1::JobState state : states) {
    if (!storage::IsTerminal(state)) {
      return absl::InvalidArgumentError(absl::StrCat("states: only finished jobs are pruned (SUCCEEDED, FAILED, "
                                                     "CANCELLED), got ", storage::JobStateName(state)));
    }
  }
  std::lock_guard<std::mutex> lock(op_mu_);
  const int64_t before = clock_->NowMs() - older_than_ms;
  QATD_ASSIGN_OR_RETURN(std::vector<int64_t> ids, journal_->store().ListEndedBefore(before, states, kMaxPrune));
  v1::DeleteJobsResponse all;
  for (size_t begin = 0; begin < ids.size(); begin += kBatch) {
    // A job still needed by a queued or running one is skipped, not an error: prune what can go.
    std::vector<int64_t> deletable;
    for (size_t i = begin; i < std::min(ids.size(), begin + kBatch); ++i) {
      if (journal_->store().CheckDeletable({ids[i]}).ok()) deletable.push_back(ids[i]);
    }
    if (deletable.empty()) continue;
    QATD_ASSIGN_OR_RETURN(v1::DeleteJobsResponse part, DeleteLocked(deletable, delete_outputs, dry_run));
    for (v1::DeletedJob& job : *part.mutable_jobs()) *all.add_jobs() = std::move(job);
    all.set_bytes_freed(all.bytes_freed() + part.bytes_freed());
  }
  return all;
}

absl::StatusOr<int> Retention::Sweep() {
  if (options_.compact_after_ms < 0) return 0;
  std::lock_guard<std::mutex> lock(op_mu_);
  storage::JobStore& store = journal_->store();
  int compacted = 0;
  while (true) {
    const int64_t before = clock_->NowMs() - options_.compact_after_ms;
    QATD_ASSIGN_OR_RETURN(std::vector<v1::Job> jobs, store.ListUncompacted(before + 1, 100));
    for (const v1::Job& job : jobs) {
      QATD_RETURN_IF_ERROR(store.CompactHistory(job.id(), options_.max_points_per_series));
      const JobPaths paths = PathsOf(job, options_.jobs_dir);
      if (job.state() == v1::JOB_STATE_SUCCEEDED && !options_.keep_resume_state) {
        const std::string resume = (fs::path(paths.output_dir) / "resume").string();
        absl::StatusOr<int64_t> freed = RemoveAndMeasure(resume);
        if (!freed.ok()) spdlog::warn("retention: job {}: {}", job.id(), freed.status().ToString());
      }
      QATD_RETURN_IF_ERROR(store.SetDiskBytes(job.id(), DiskUsage(paths)));
      ++compacted;
    }
    if (jobs.size() < 100) break;
  }
  if (compacted > 0) spdlog::info("retention: compacted the history of {} finished job(s)", compacted);
  return compacted;
}

}  // namespace qatd::server
