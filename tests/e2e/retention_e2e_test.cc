// Retention and a full disk (issue #14, failures #3 and #10), against the real binaries:
//   #3  with the data dir on a small file system, a job stayed RUNNING in the database
//       forever, `qat cancel` reported the daemon unreachable and `qat watch` hung;
//   #10 nothing was ever pruned: events, metric points and job outputs grew forever.
#include <sys/mount.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/e2e/e2e_support.h"

namespace qatd::e2e {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

grpc::Status Delete(const Daemon& daemon, const std::vector<int64_t>& ids, v1::DeleteJobsResponse* response,
                    bool dry_run = false, bool delete_outputs = false) {
  v1::DeleteJobsRequest request;
  for (int64_t id : ids) request.add_job_ids(id);
  request.set_dry_run(dry_run);
  request.set_delete_outputs(delete_outputs);
  return daemon.Stub()->DeleteJobs(daemon.Context().get(), request, response);
}

grpc::Status GetJob(const Daemon& daemon, int64_t id) {
  v1::GetJobRequest request;
  request.set_job_id(id);
  v1::Job job;
  return daemon.Stub()->GetJob(daemon.Context().get(), request, &job);
}

std::vector<v1::JobEvent> History(const Daemon& daemon, int64_t id) {
  v1::WatchJobRequest request;
  request.set_job_id(id);
  auto context = daemon.Context(std::chrono::seconds(20));
  auto stream = daemon.Stub()->WatchJob(context.get(), request);
  std::vector<v1::JobEvent> events;
  v1::JobEvent event;
  while (stream->Read(&event)) events.push_back(event);
  EXPECT_TRUE(stream->Finish().ok());
  return events;
}

v1::JobSpec ProbeInto(int steps, const std::string& output_dir) {
  v1::JobSpec spec = Probe(steps, 0);
  spec.mutable_probe()->set_output_dir(output_dir);
  return spec;
}

// #10: qat delete. Rows and the job folder go; live jobs, and jobs a live job needs, are
// refused with nothing deleted; outputs outside the data dir stay unless asked.
TEST(RetentionE2eTest, DeleteRemovesFinishedJobsAndRefusesLiveOnes) {
  qatd::testing::TempDir dir;
  const std::string root = dir.File("outputs");
  fs::create_directories(root);
  DaemonConfig config;
  config.data_dir = dir.File("data");
  config.extra_args = {"--allow-output-root", root};
  Daemon daemon(config);
  ASSERT_TRUE(daemon.Start());

  const v1::Job own = RunToEnd(daemon, ProbeInto(5, ""));
  const v1::Job outside = RunToEnd(daemon, ProbeInto(5, root + "/b"));
  const v1::Job removable = RunToEnd(daemon, ProbeInto(5, root + "/d"));
  const v1::Job running = SubmitTo(daemon, Probe(100000, 20));
  WaitForJob(daemon, running.id(), [](const v1::Job& j) { return j.state() == v1::JOB_STATE_RUNNING; });
  ASSERT_EQ(own.state(), v1::JOB_STATE_SUCCEEDED);
  const std::string own_dir = config.data_dir + "/jobs/" + std::to_string(own.id());
  ASSERT_TRUE(fs::exists(own_dir + "/task.pb"));
  EXPECT_GT(GetJobFrom(daemon, own.id()).disk_bytes(), 0) << "measured when the job ended";
  EXPECT_GT(GetJobFrom(daemon, running.id()).disk_bytes(), 0) << "measured live while it runs";

  v1::DeleteJobsResponse response;
  grpc::Status refused = Delete(daemon, {own.id(), running.id()}, &response);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(refused.error_message(), HasSubstr("is RUNNING: cancel it first"));
  EXPECT_TRUE(GetJob(daemon, own.id()).ok()) << "all or nothing";
  EXPECT_EQ(Delete(daemon, {999}, &response).error_code(), grpc::StatusCode::NOT_FOUND);

  ASSERT_TRUE(Delete(daemon, {own.id()}, &response, /*dry_run=*/true).ok());
  ASSERT_EQ(response.jobs_size(), 1);
  EXPECT_GT(response.bytes_freed(), 0);
  EXPECT_TRUE(fs::exists(own_dir)) << "a dry run deletes nothing";

  response.Clear();
  ASSERT_TRUE(Delete(daemon, {own.id()}, &response).ok());
  EXPECT_EQ(response.jobs(0).state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(GetJob(daemon, own.id()).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_FALSE(fs::exists(own_dir));

  // Outside the data dir: kept and named, unless --delete-outputs (and never the root).
  response.Clear();
  ASSERT_TRUE(Delete(daemon, {outside.id()}, &response).ok());
  ASSERT_EQ(response.jobs(0).kept_paths_size(), 1);
  EXPECT_EQ(response.jobs(0).kept_paths(0), root + "/b");
  EXPECT_TRUE(fs::exists(root + "/b/probe.txt"));
  response.Clear();
  ASSERT_TRUE(Delete(daemon, {removable.id()}, &response, false, /*delete_outputs=*/true).ok());
  EXPECT_EQ(response.jobs(0).kept_paths_size(), 0);
  EXPECT_FALSE(fs::exists(root + "/d"));
  EXPECT_TRUE(fs::exists(root));

  // Prune: the cancelled job, once it ended long enough ago.
  v1::CancelJobRequest cancel;
  cancel.set_job_id(running.id());
  v1::Job cancelled;
  ASSERT_TRUE(daemon.Stub()->CancelJob(daemon.Context().get(), cancel, &cancelled).ok());
  WaitForJob(daemon, running.id(), JobEnded);
  v1::PruneJobsRequest prune;
  prune.set_older_than_seconds(1);
  prune.add_states(v1::JOB_STATE_RUNNING);
  v1::DeleteJobsResponse pruned;
  grpc::Status bad_state = daemon.Stub()->PruneJobs(daemon.Context().get(), prune, &pruned);
  EXPECT_EQ(bad_state.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(bad_state.error_message(), HasSubstr("only finished jobs are pruned"));
  prune.clear_states();  // default: failed and cancelled
  EXPECT_TRUE(PollUntil(
      [&] {
        pruned.Clear();
        return daemon.Stub()->PruneJobs(daemon.Context().get(), prune, &pruned).ok() && pruned.jobs_size() == 1;
      },
      std::chrono::seconds(20)));
  EXPECT_EQ(pruned.jobs(0).job_id(), running.id());
  EXPECT_EQ(GetJob(daemon, running.id()).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_FALSE(fs::exists(config.data_dir + "/jobs/" + std::to_string(running.id())));
}

// #10: compaction of finished jobs: curves thinned, live-only events dropped, a succeeded
// job's resume state removed while final/ stays.
TEST(RetentionE2eTest, CompactionThinsHistoryAndDropsResumeStateOfSucceededJobs) {
  qatd::testing::TempDir dir;
  DaemonConfig config;
  config.data_dir = dir.File("data");
  config.extra_args = {"--compact-after", "3s", "--max-points-per-series", "10"};
  Daemon daemon(config);
  ASSERT_TRUE(daemon.Start());
  const v1::Job job = RunToEnd(daemon, Probe(200, 0));
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);
  // What a trainer leaves behind (the probe writes neither).
  const std::string output = config.data_dir + "/jobs/" + std::to_string(job.id()) + "/output";
  fs::create_directories(output + "/resume");
  fs::create_directories(output + "/final");
  std::ofstream(output + "/resume/optimizer.pt") << std::string(1 << 20, 'r');
  std::ofstream(output + "/final/model.safetensors") << "final";

  v1::GetMetricSeriesRequest request;
  request.set_job_id(job.id());
  request.add_names("loss/kd");
  v1::GetMetricSeriesResponse series;
  ASSERT_TRUE(daemon.Stub()->GetMetricSeries(daemon.Context().get(), request, &series).ok());
  ASSERT_EQ(series.series(0).points_size(), 200) << "not compacted before --compact-after";

  EXPECT_TRUE(PollUntil([&] { return !fs::exists(output + "/resume"); }, std::chrono::seconds(30)));
  EXPECT_TRUE(fs::exists(output + "/final/model.safetensors"));
  series.Clear();
  ASSERT_TRUE(daemon.Stub()->GetMetricSeries(daemon.Context().get(), request, &series).ok());
  const v1::MetricSeries& loss = series.series(0);
  EXPECT_LE(loss.points_size(), 10);
  EXPECT_EQ(loss.points(0).step(), 1);
  EXPECT_EQ(loss.points(loss.points_size() - 1).step(), 200);
  int metric_events = 0;
  int ends = 0;
  for (const v1::JobEvent& e : History(daemon, job.id())) {
    metric_events += e.has_metric() || e.has_progress();
    ends += e.has_state() && e.state().to() == v1::JOB_STATE_SUCCEEDED;
  }
  EXPECT_EQ(metric_events, 0);
  EXPECT_EQ(ends, 1);
  const v1::Job after = GetJobFrom(daemon, job.id());
  EXPECT_EQ(after.progress().done(), 200) << "the job row keeps its last progress";
  EXPECT_GT(after.disk_bytes(), 0);
  EXPECT_LT(after.disk_bytes(), 1 << 20) << "re-measured without the 1 MiB of resume state";
}

// Mounts a tmpfs of `bytes` at `path` (root only) and unmounts it when done.
class SmallFileSystem {
 public:
  SmallFileSystem(const std::string& path, int64_t bytes) : path_(path) {
    fs::create_directories(path);
    mounted_ = ::mount("tmpfs", path.c_str(), "tmpfs", 0, ("size=" + std::to_string(bytes)).c_str()) == 0;
  }
  ~SmallFileSystem() {
    if (mounted_) ::umount2(path_.c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }

 private:
  std::string path_;
  bool mounted_ = false;
};

// #3: the data dir fills up under a running job.
TEST(RetentionE2eTest, AFullDiskFailsTheJobAndKeepsTheDaemonAnswering) {
  qatd::testing::TempDir dir;
  SmallFileSystem small(dir.File("fs"), 8 << 20);
  if (!small.mounted()) GTEST_SKIP() << "mounting a tmpfs needs root (CI runs as root)";
  DaemonConfig config;
  config.data_dir = dir.File("fs/data");
  config.extra_args = {"--disk-reserve-mib", "1"};
  {
    Daemon daemon(config);
    ASSERT_TRUE(daemon.Start());
    // Leave about 1.5 MiB beside the reserve: the database fills it in seconds.
    const std::string filler = dir.File("fs/filler");
    {
      const int64_t free_bytes = static_cast<int64_t>(fs::space(dir.File("fs")).available);
      std::ofstream(filler) << std::string(static_cast<size_t>(std::max<int64_t>(0, free_bytes - (3 << 19))), 'f');
    }
    const v1::Job flood = SubmitTo(daemon, Probe(1000000, 0));
    const v1::Job failed = WaitForJob(daemon, flood.id(), JobEnded, std::chrono::seconds(120));
    EXPECT_EQ(failed.state(), v1::JOB_STATE_FAILED);
    EXPECT_EQ(failed.error().code(), static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED));
    EXPECT_THAT(failed.error().message(), HasSubstr("is out of space"));
    EXPECT_THAT(failed.error().message(), HasSubstr(config.data_dir));

    // The daemon answers: cancel says it ended, watch ends, the server says why it holds jobs.
    v1::CancelJobRequest cancel;
    cancel.set_job_id(flood.id());
    v1::Job reply;
    const grpc::Status cancelled = daemon.Stub()->CancelJob(daemon.Context().get(), cancel, &reply);
    EXPECT_EQ(cancelled.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << cancelled.error_message();
    const std::vector<v1::JobEvent> history = History(daemon, flood.id());
    ASSERT_FALSE(history.empty());
    EXPECT_EQ(history.back().state().to(), v1::JOB_STATE_FAILED);
    v1::ServerInfo info;
    ASSERT_TRUE(daemon.Stub()->GetServerInfo(daemon.Context().get(), v1::GetServerInfoRequest(), &info).ok());
    EXPECT_THAT(info.dispatch_paused(), HasSubstr("out of space"));

    // Queued jobs wait for room instead of failing one after another...
    const v1::Job next = SubmitTo(daemon, Probe(2, 0));
    // Observed for 2 s (the dispatcher looks for room every second): it never leaves QUEUED.
    EXPECT_FALSE(PollUntil([&] { return GetJobFrom(daemon, next.id()).state() != v1::JOB_STATE_QUEUED; },
                           std::chrono::seconds(2)));
    // ...and run once the operator frees space.
    fs::remove(filler);
    const v1::Job done = WaitForJob(daemon, next.id(), JobEnded, std::chrono::seconds(60));
    EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.ShortDebugString();
    info.Clear();
    ASSERT_TRUE(daemon.Stub()->GetServerInfo(daemon.Context().get(), v1::GetServerInfoRequest(), &info).ok());
    EXPECT_EQ(info.dispatch_paused(), "");
    EXPECT_GT(info.data_dir_free_bytes(), 0);
    std::optional<int> status = daemon.Stop();
    EXPECT_TRUE(status.has_value() && WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << daemon.LogTail();
  }
}

}  // namespace
}  // namespace qatd::e2e
