// Retention in the store: deleting finished jobs, refusing live ones and the jobs they need,
// compacting a finished job's history, and disk usage.
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "storage/job_codec.h"
#include "storage/job_store.h"
#include "tests/common/temp_dir.h"

namespace qatd::storage {
namespace {

class RetentionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = JobStore::Open(dir_.File("qatd.db"));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }

  int64_t Create(std::vector<int64_t> depends_on = {}) {
    NewJob job;
    job.spec.mutable_probe()->set_steps(3);
    job.depends_on = std::move(depends_on);
    auto created = store_->CreateJob(job, 1000);
    EXPECT_TRUE(created.ok()) << created.status();
    return created->id();
  }

  void MoveTo(int64_t id, v1::JobState state, int64_t now_ms) {
    Transition t;
    t.to = state;
    if (state == v1::JOB_STATE_FAILED) t.error.set_code(13);
    auto moved = store_->TransitionJob(id, t, now_ms);
    ASSERT_TRUE(moved.ok()) << moved.status();
  }

  void Finish(int64_t id, v1::JobState state, int64_t now_ms) {
    MoveTo(id, v1::JOB_STATE_RUNNING, now_ms - 1);
    MoveTo(id, state, now_ms);
  }

  void AddMetrics(int64_t id, const std::string& name, int n) {
    for (int step = 0; step < n; ++step) {
      v1::JobEvent event;
      event.mutable_metric()->set_name(name);
      event.mutable_metric()->set_step(step);
      event.mutable_metric()->set_value(step * 0.5);
      ASSERT_TRUE(store_->AppendEvent(id, event, 2000 + step).ok());
    }
  }

  qatd::testing::TempDir dir_;
  std::unique_ptr<JobStore> store_;
};

TEST_F(RetentionTest, DeletesEveryRowOfAFinishedJobAndKeepsOthers) {
  const int64_t a = Create();
  const int64_t b = Create();
  AddMetrics(a, "loss/kd", 5);
  AddMetrics(b, "loss/kd", 5);
  Finish(a, v1::JOB_STATE_SUCCEEDED, 5000);
  Finish(b, v1::JOB_STATE_FAILED, 5000);
  ASSERT_TRUE(store_->DeleteJobs({a}).ok());
  EXPECT_EQ(store_->GetJob(a).status().code(), absl::StatusCode::kNotFound);
  auto events = store_->ListEvents(a, 0, 100);
  ASSERT_TRUE(events.ok());
  EXPECT_TRUE(events->empty());
  auto series = store_->GetMetricSeries(a, {}, std::nullopt);
  ASSERT_TRUE(series.ok());
  EXPECT_TRUE(series->empty());
  // The other job is untouched.
  auto other = store_->GetMetricSeries(b, {}, std::nullopt);
  ASSERT_TRUE(other.ok());
  ASSERT_EQ(other->size(), 1u);
  EXPECT_EQ((*other)[0].points_size(), 5);
}

TEST_F(RetentionTest, RefusesLiveJobsAndJobsThatLiveJobsNeedAndDeletesNothing) {
  const int64_t upstream = Create();
  Finish(upstream, v1::JOB_STATE_SUCCEEDED, 5000);
  const int64_t downstream = Create({upstream});
  const int64_t done = Create();
  Finish(done, v1::JOB_STATE_CANCELLED, 5000);

  auto queued = store_->CheckDeletable({downstream});
  EXPECT_EQ(queued.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(queued.status().message().find("is QUEUED"), std::string::npos) << queued.status();

  absl::Status needed = store_->DeleteJobs({done, upstream});
  EXPECT_EQ(needed.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(needed.message().find(absl::StrCat("needed by job ", downstream)), std::string::npos) << needed;
  EXPECT_TRUE(store_->GetJob(done).ok()) << "all or nothing";

  EXPECT_EQ(store_->DeleteJobs({999}).code(), absl::StatusCode::kNotFound);

  // Once the dependent ended, both may go, and the dependency row with them.
  Finish(downstream, v1::JOB_STATE_SUCCEEDED, 6000);
  ASSERT_TRUE(store_->DeleteJobs({upstream}).ok());
  auto left = store_->GetJob(downstream);
  ASSERT_TRUE(left.ok());
  EXPECT_EQ(left->depends_on_size(), 0);
}

TEST_F(RetentionTest, ListsJobsEndedBeforeATimeInTheGivenStates) {
  const int64_t old_failed = Create();
  const int64_t new_failed = Create();
  const int64_t old_ok = Create();
  const int64_t running = Create();
  Finish(old_failed, v1::JOB_STATE_FAILED, 1000 + 100);
  Finish(new_failed, v1::JOB_STATE_FAILED, 9000);
  Finish(old_ok, v1::JOB_STATE_SUCCEEDED, 1000 + 200);
  MoveTo(running, v1::JOB_STATE_RUNNING, 1000);
  auto ids = store_->ListEndedBefore(5000, {v1::JOB_STATE_FAILED, v1::JOB_STATE_CANCELLED}, 100);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, std::vector<int64_t>{old_failed});
  auto all = store_->ListEndedBefore(10000, {v1::JOB_STATE_FAILED, v1::JOB_STATE_SUCCEEDED}, 100);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(*all, (std::vector<int64_t>{old_failed, old_ok, new_failed}));
}

TEST_F(RetentionTest, CompactionThinsSeriesEvenlyAndDropsProgressAndMetricEvents) {
  const int64_t id = Create();
  AddMetrics(id, "loss/kd", 1001);
  AddMetrics(id, "eval/kd", 10);
  v1::JobEvent log;
  log.mutable_log()->set_message("kept");
  ASSERT_TRUE(store_->AppendEvent(id, log, 9000).ok());
  Finish(id, v1::JOB_STATE_SUCCEEDED, 10000);

  auto pending = store_->ListUncompacted(20000, 10);
  ASSERT_TRUE(pending.ok());
  ASSERT_EQ(pending->size(), 1u);
  EXPECT_EQ(store_->ListUncompacted(10000, 10)->size(), 0u) << "ended at 10000, not before";

  ASSERT_TRUE(store_->CompactHistory(id, 100).ok());
  auto series = store_->GetMetricSeries(id, {"loss/kd"}, std::nullopt);
  ASSERT_TRUE(series.ok());
  ASSERT_EQ(series->size(), 1u);
  const v1::MetricSeries& loss = (*series)[0];
  EXPECT_LE(loss.points_size(), 100);
  EXPECT_GE(loss.points_size(), 90);
  EXPECT_EQ(loss.points(0).step(), 0);
  EXPECT_EQ(loss.points(loss.points_size() - 1).step(), 1000);
  // Evenly spread: equal gaps except possibly the last.
  const int64_t gap = loss.points(1).step() - loss.points(0).step();
  for (int i = 1; i + 1 < loss.points_size(); ++i) EXPECT_EQ(loss.points(i).step() - loss.points(i - 1).step(), gap);
  // A short series is untouched.
  EXPECT_EQ((*store_->GetMetricSeries(id, {"eval/kd"}, std::nullopt))[0].points_size(), 10);

  auto events = store_->ListEvents(id, 0, 10000);
  ASSERT_TRUE(events.ok());
  int logs = 0;
  int states = 0;
  for (const v1::JobEvent& e : *events) {
    EXPECT_FALSE(e.has_metric() || e.has_progress()) << e.ShortDebugString();
    logs += e.has_log();
    states += e.has_state();
  }
  EXPECT_EQ(logs, 1);
  EXPECT_GE(states, 2);
  EXPECT_EQ(store_->ListUncompacted(20000, 10)->size(), 0u);
  EXPECT_EQ(store_->CompactHistory(id, 1).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(RetentionTest, DiskBytesRoundTrip) {
  const int64_t id = Create();
  EXPECT_EQ(store_->GetJob(id)->disk_bytes(), 0);
  ASSERT_TRUE(store_->SetDiskBytes(id, 123456).ok());
  EXPECT_EQ(store_->GetJob(id)->disk_bytes(), 123456);
  JobFilter all;
  EXPECT_EQ(store_->ListJobs(all)->at(0).disk_bytes(), 123456);
  EXPECT_EQ(store_->SetDiskBytes(id + 1, 1).code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace qatd::storage
