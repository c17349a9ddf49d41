// The worker runtime in-process: task file -> job function -> framed events on a pipe.
#include "worker/run_worker.h"

#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/common/temp_dir.h"
#include "worker/event_reporter.h"
#include "worker/framing.h"

namespace qatd::worker {
namespace {

std::vector<v1::WorkerEvent> RunAndCollect(const v1::WorkerTask& task, const JobRegistry& registry, int* exit_code,
                                           const std::string& dir) {
  const std::string file = dir + "/task.pb";
  {
    std::ofstream out(file, std::ios::binary);
    out << task.SerializeAsString();
  }
  int fds[2];
  EXPECT_EQ(::pipe(fds), 0);
  WorkerArgs args;
  args.task_file = file;
  args.event_fd = fds[1];
  // Small jobs only: the pipe buffer holds all their events.
  *exit_code = RunWorker(args, registry);
  ::close(fds[1]);
  std::vector<v1::WorkerEvent> events;
  FrameReader reader(fds[0]);
  while (true) {
    auto frame = reader.Next();
    if (!frame.ok() || !frame->has_value()) break;
    v1::WorkerEvent event;
    EXPECT_TRUE(event.ParseFromString(**frame));
    events.push_back(event);
  }
  ::close(fds[0]);
  return events;
}

TEST(WorkerTest, RunsTheProbeJobAndEndsWithItsStatus) {
  qatd::testing::TempDir dir;
  JobRegistry registry;
  RegisterProbeJob(registry);
  v1::WorkerTask task;
  task.set_job_id(7);
  task.mutable_spec()->mutable_probe()->set_steps(3);
  task.set_output_dir(dir.File("out"));
  task.set_attempt(1);
  int code = -1;
  auto events = RunAndCollect(task, registry, &code, dir.path().string());
  EXPECT_EQ(code, 0);
  int progress = 0, metrics = 0, artifacts = 0;
  for (const auto& e : events) {
    progress += e.has_progress();
    metrics += e.has_metric();
    if (e.has_artifact()) {
      ++artifacts;
      EXPECT_EQ(e.artifact().kind(), "probe");
      EXPECT_TRUE(std::filesystem::exists(e.artifact().path()));
      // The worker digests what it reports (the daemon never hashes a worker's artifact).
      EXPECT_EQ(e.artifact().sha256().size(), 64u);
      EXPECT_EQ(e.artifact().size_bytes(), static_cast<int64_t>(std::filesystem::file_size(e.artifact().path())));
    }
  }
  EXPECT_EQ(progress, 3);
  EXPECT_EQ(metrics, 3);
  EXPECT_EQ(artifacts, 1);
  ASSERT_TRUE(events.back().has_final());
  EXPECT_EQ(events.back().final().status().code(), 0);
  EXPECT_DOUBLE_EQ(events.back().final().result().metrics().at("loss/kd"), 1.0 / 3);
}

// Issue #14.2: a cancel must stop a job in every phase, hashing a large artifact included.
TEST(WorkerTest, ACancelStopsDigestingAnArtifact) {
  qatd::testing::TempDir dir;
  std::ofstream(dir.File("big.bin")) << std::string(4 << 20, 'x');
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  jobs::CancelToken cancel;
  PipeReporter reporter(fds[1], &cancel);
  cancel.Cancel();
  reporter.Artifact(dir.File("big.bin"), "checkpoint");
  ::close(fds[1]);
  FrameReader reader(fds[0]);
  auto frame = reader.Next();
  ASSERT_TRUE(frame.ok() && frame->has_value());
  v1::WorkerEvent event;
  ASSERT_TRUE(event.ParseFromString(**frame));
  ASSERT_TRUE(event.has_log()) << event.ShortDebugString();
  EXPECT_NE(event.log().message().find("not registered: cancelled while digesting"), std::string::npos)
      << event.log().message();
  ::close(fds[0]);
}

// A data-parallel job's roster is one event; its per-rank step times stay out of the result.
TEST(WorkerTest, RanksBecomeOneEventAndPerRankMetricsStayOutOfTheResult) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  jobs::CancelToken cancel;
  PipeReporter reporter(fds[1], &cancel);
  reporter.Ranks({{0, "n1", "cuda:0", 11}, {1, "n2", "cuda:1", 22}});
  reporter.Metric("rank/1/step_seconds", 5, 0.25);
  reporter.Metric("loss/kd", 5, 1.5);
  ASSERT_TRUE(reporter.Finish(absl::OkStatus()).ok());
  ::close(fds[1]);
  std::vector<v1::WorkerEvent> events;
  FrameReader reader(fds[0]);
  for (auto frame = reader.Next(); frame.ok() && frame->has_value(); frame = reader.Next()) {
    ASSERT_TRUE(events.emplace_back().ParseFromString(**frame));
  }
  ::close(fds[0]);
  ASSERT_EQ(events.size(), 4u);
  ASSERT_TRUE(events[0].has_ranks());
  ASSERT_EQ(events[0].ranks().ranks_size(), 2);
  EXPECT_EQ(events[0].ranks().ranks(1).rank(), 1);
  EXPECT_EQ(events[0].ranks().ranks(1).host(), "n2");
  EXPECT_EQ(events[0].ranks().ranks(1).device(), "cuda:1");
  EXPECT_EQ(events[0].ranks().ranks(1).pid(), 22);
  EXPECT_EQ(events[1].metric().name(), "rank/1/step_seconds");  // the curve keeps it
  ASSERT_TRUE(events[3].has_final());
  EXPECT_EQ(events[3].final().result().metrics().count("loss/kd"), 1u);
  EXPECT_EQ(events[3].final().result().metrics().count("rank/1/step_seconds"), 0u);
}

TEST(WorkerTest, ReportsUnavailableKindsAndJobErrors) {
  qatd::testing::TempDir dir;
  JobRegistry registry;
  RegisterProbeJob(registry);
  v1::WorkerTask task;
  task.mutable_spec()->mutable_qat();
  int code = -1;
  auto events = RunAndCollect(task, registry, &code, dir.path().string());
  EXPECT_EQ(code, 0);
  ASSERT_FALSE(events.empty());
  ASSERT_TRUE(events.back().has_final());
  EXPECT_EQ(events.back().final().status().code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(events.back().final().status().message(), "job kind QAT is not available in this build");

  task.mutable_spec()->mutable_probe()->set_steps(1);
  task.mutable_spec()->mutable_probe()->set_fail(true);
  events = RunAndCollect(task, registry, &code, dir.path().string());
  EXPECT_EQ(events.back().final().status().code(), static_cast<int>(absl::StatusCode::kInternal));
}

TEST(WorkerTest, UnreadableTaskFileExitsWithCode2) {
  qatd::testing::TempDir dir;
  JobRegistry registry;
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  WorkerArgs args;
  args.task_file = dir.File("missing.pb");
  args.event_fd = fds[1];
  EXPECT_EQ(RunWorker(args, registry), 2);
  ::close(fds[1]);
  ::close(fds[0]);
}

TEST(JobRegistryTest, FindsWhatWasRegistered) {
  JobRegistry registry;
  registry.Register(v1::JOB_KIND_KD_CACHE,
                    [](const v1::WorkerTask&, jobs::Reporter&, jobs::CancelToken&) { return absl::OkStatus(); });
  EXPECT_NE(registry.Find(v1::JOB_KIND_KD_CACHE), nullptr);
  EXPECT_EQ(registry.Find(v1::JOB_KIND_QAT), nullptr);
  EXPECT_EQ(registry.Kinds(), std::vector<v1::JobKind>{v1::JOB_KIND_KD_CACHE});
}

}  // namespace
}  // namespace qatd::worker
