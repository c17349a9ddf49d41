#include "server/job_event_feed.h"

#include <gtest/gtest.h>

#include "server/clock.h"
#include "server/job_journal.h"
#include "tests/common/temp_dir.h"

namespace qatd::server {
namespace {

class JobEventFeedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = storage::JobStore::Open(dir_.File("qatd.db"));
    ASSERT_TRUE(store.ok());
    store_ = std::move(*store);
    journal_ = std::make_unique<JobJournal>(store_.get(), &hub_, &metrics_, &clock_, /*progress ms=*/1000000);
    ASSERT_TRUE(journal_->Init().ok());
    storage::NewJob job;
    job.spec.mutable_probe();
    job_id_ = store_->CreateJob(job, 1)->id();
  }

  void Log(const std::string& text) {
    v1::LogLine line;
    line.set_message(text);
    ASSERT_TRUE(journal_->Log(job_id_, line).ok());
  }

  std::vector<v1::JobEvent> Drain(JobEventFeed& feed) {
    std::vector<v1::JobEvent> out;
    while (auto e = feed.Pop()) out.push_back(*e);
    return out;
  }

  qatd::testing::TempDir dir_;
  std::unique_ptr<storage::JobStore> store_;
  EventHub hub_;
  DaemonMetrics metrics_;
  SystemClock clock_;
  std::unique_ptr<JobJournal> journal_;
  int64_t job_id_ = 0;
};

TEST_F(JobEventFeedTest, HistoryThenLiveWithoutDuplicates) {
  for (int i = 0; i < 300; ++i) Log("old " + std::to_string(i));  // more than one page
  auto feed = std::make_shared<JobEventFeed>(&hub_, store_.get(), job_id_, 0, true);
  int ready = 0;
  feed->Start([&] { ++ready; });
  Log("new 0");  // persisted and published after subscribing: must appear once
  std::vector<v1::JobEvent> events = Drain(*feed);
  ASSERT_EQ(events.size(), 302u);  // created + 300 + 1
  EXPECT_TRUE(events[0].has_state());
  for (size_t i = 1; i < events.size(); ++i) EXPECT_LT(events[i - 1].seq(), events[i].seq());
  EXPECT_EQ(events.back().log().message(), "new 0");
  EXPECT_GE(ready, 1);

  // Throttled progress (seq 0) is delivered live.
  v1::Progress progress;
  progress.set_done(1);
  ASSERT_TRUE(journal_->Progress(job_id_, v1::JOB_KIND_PROBE, progress).ok());  // first: persisted
  ASSERT_TRUE(journal_->Progress(job_id_, v1::JOB_KIND_PROBE, progress).ok());  // throttled
  events = Drain(*feed);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_GT(events[0].seq(), 0);
  EXPECT_EQ(events[1].seq(), 0);
  feed->Close();
  Log("after close");
  EXPECT_FALSE(feed->Pop().has_value());
  EXPECT_EQ(hub_.subscriber_count(), 0u);
}

TEST_F(JobEventFeedTest, AfterSeqSkipsHistory) {
  Log("a");
  Log("b");
  const int64_t latest = *store_->LatestEventSeq(job_id_);
  auto feed = std::make_shared<JobEventFeed>(&hub_, store_.get(), job_id_, latest, true);
  feed->Start([] {});
  Log("c");
  std::vector<v1::JobEvent> events = Drain(*feed);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].log().message(), "c");
  feed->Close();
}

}  // namespace
}  // namespace qatd::server
