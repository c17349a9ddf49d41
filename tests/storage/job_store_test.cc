#include "storage/job_store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "storage/job_codec.h"
#include "tests/common/temp_dir.h"

namespace qatd::storage {
namespace {

class JobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = JobStore::Open(dir_.File("qatd.db"));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }

  static NewJob Probe(int priority = 0) {
    NewJob job;
    job.spec.mutable_probe()->set_steps(3);
    job.spec.set_priority(priority);
    return job;
  }

  v1::Job Create(const NewJob& job, int64_t now_ms = 1000) {
    auto created = store_->CreateJob(job, now_ms);
    EXPECT_TRUE(created.ok()) << created.status();
    return *created;
  }

  qatd::testing::TempDir dir_;
  std::unique_ptr<JobStore> store_;
};

TEST_F(JobStoreTest, CreateThenGetRoundTripsTheSpec) {
  NewJob job;
  job.spec.mutable_kd_cache()->set_teacher_model("/models/q");
  job.spec.mutable_kd_cache()->set_max_length(128);
  job.spec.set_priority(5);
  job.spec.mutable_resources()->set_device_count(2);
  v1::Job created = Create(job, 1234);
  EXPECT_GT(created.id(), 0);
  EXPECT_EQ(created.kind(), v1::JOB_KIND_KD_CACHE);
  EXPECT_EQ(created.state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(ToUnixMs(created.create_time()), 1234);
  EXPECT_EQ(created.spec().kd_cache().max_length(), 128);
  EXPECT_TRUE(created.spec().kd_cache().has_max_length());
  EXPECT_FALSE(created.spec().kd_cache().has_topk());
  EXPECT_EQ(created.attempt(), 0);

  auto missing = store_->GetJob(created.id() + 100);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(JobStoreTest, TransitionsRecordTimesPidsErrorsAndEvents) {
  v1::Job job = Create(Probe());
  Transition run;
  run.to = v1::JOB_STATE_RUNNING;
  run.reason = "started";
  run.worker_pid = 4242;
  run.devices = std::vector<std::string>{"0", "1"};
  run.bump_attempt = true;
  auto event = store_->TransitionJob(job.id(), run, 2000);
  ASSERT_TRUE(event.ok()) << event.status();
  EXPECT_GT(event->seq(), 0);
  EXPECT_EQ(event->state().from(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(event->state().to(), v1::JOB_STATE_RUNNING);

  v1::Job running = *store_->GetJob(job.id());
  EXPECT_EQ(running.worker_pid(), 4242);
  EXPECT_EQ(running.attempt(), 1);
  ASSERT_EQ(running.devices_size(), 2);
  EXPECT_EQ(running.devices(1), "1");
  EXPECT_EQ(ToUnixMs(running.start_time()), 2000);

  Transition fail;
  fail.to = v1::JOB_STATE_FAILED;
  fail.reason = "worker crashed";
  fail.error.set_code(13);
  fail.error.set_message("worker killed by signal SIGKILL");
  ASSERT_TRUE(store_->TransitionJob(job.id(), fail, 3000).ok());
  v1::Job failed = *store_->GetJob(job.id());
  EXPECT_EQ(failed.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(failed.worker_pid(), 0);
  EXPECT_EQ(failed.error().code(), 13);
  EXPECT_EQ(failed.error().message(), "worker killed by signal SIGKILL");
  EXPECT_EQ(ToUnixMs(failed.end_time()), 3000);

  // Terminal states are final.
  Transition again;
  again.to = v1::JOB_STATE_QUEUED;
  EXPECT_EQ(store_->TransitionJob(job.id(), again, 4000).status().code(), absl::StatusCode::kFailedPrecondition);

  auto transitions = store_->ListTransitions(job.id());
  ASSERT_TRUE(transitions.ok());
  ASSERT_EQ(transitions->size(), 3u);
  EXPECT_EQ((*transitions)[0].to, v1::JOB_STATE_QUEUED);
  EXPECT_EQ((*transitions)[1].to, v1::JOB_STATE_RUNNING);
  EXPECT_EQ((*transitions)[2].reason, "worker crashed");

  auto events = store_->ListEvents(job.id(), 0, 100);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 3u);
  EXPECT_LT((*events)[0].seq(), (*events)[1].seq());
  EXPECT_EQ((*events)[2].state().error().message(), "worker killed by signal SIGKILL");
}

// A data-parallel job's ranks: the roster its worker reported, each rank's latest step time
// folded in, kept after the job ended and cleared when a new attempt starts.
TEST_F(JobStoreTest, RanksKeepTheRosterAndTheLatestStepTimes) {
  v1::Job job = Create(Probe());
  EXPECT_EQ(store_->GetJob(job.id())->ranks_size(), 0);
  Transition run;
  run.to = v1::JOB_STATE_RUNNING;
  run.bump_attempt = true;
  ASSERT_TRUE(store_->TransitionJob(job.id(), run, 2000).ok());
  v1::RankRoster roster;
  for (int r = 0; r < 2; ++r) {
    v1::RankInfo* info = roster.add_ranks();
    info->set_rank(r);
    info->set_host("node" + std::to_string(r));
    info->set_device("cuda:" + std::to_string(r));
    info->set_pid(100 + r);
  }
  ASSERT_TRUE(store_->SetRanks(job.id(), roster).ok());
  ASSERT_TRUE(store_->SetRankStepSeconds(job.id(), 1, 20, 0.25).ok());
  ASSERT_TRUE(store_->SetRankStepSeconds(job.id(), 1, 25, 0.5).ok());
  v1::Job got = *store_->GetJob(job.id());
  ASSERT_EQ(got.ranks_size(), 2);
  EXPECT_EQ(got.ranks(0).host(), "node0");
  EXPECT_EQ(got.ranks(0).step_seconds(), 0);
  EXPECT_EQ(got.ranks(1).device(), "cuda:1");
  EXPECT_EQ(got.ranks(1).pid(), 101);
  EXPECT_EQ(got.ranks(1).step(), 25);
  EXPECT_EQ(got.ranks(1).step_seconds(), 0.5);
  EXPECT_EQ(store_->SetRankStepSeconds(job.id() + 100, 0, 1, 1.0).code(), absl::StatusCode::kNotFound);

  Transition requeue;  // a daemon restart: the next attempt reports its own ranks
  requeue.to = v1::JOB_STATE_QUEUED;
  ASSERT_TRUE(store_->TransitionJob(job.id(), requeue, 3000).ok());
  EXPECT_EQ(store_->GetJob(job.id())->ranks_size(), 2);
  ASSERT_TRUE(store_->TransitionJob(job.id(), run, 4000).ok());
  EXPECT_EQ(store_->GetJob(job.id())->ranks_size(), 0);
}

TEST_F(JobStoreTest, ExpectedFromGuardsRaces) {
  v1::Job job = Create(Probe());
  Transition cancel;
  cancel.to = v1::JOB_STATE_CANCELLED;
  auto wrong = store_->TransitionJob(job.id(), cancel, 10, v1::JOB_STATE_RUNNING);
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->GetJob(job.id())->state(), v1::JOB_STATE_QUEUED);
}

TEST_F(JobStoreTest, EventsMetricsAndProgress) {
  v1::Job job = Create(Probe());
  for (int step = 1; step <= 3; ++step) {
    v1::JobEvent metric;
    metric.mutable_metric()->set_name("loss/kd");
    metric.mutable_metric()->set_step(step);
    metric.mutable_metric()->set_value(1.0 / step);
    ASSERT_TRUE(store_->AppendEvent(job.id(), metric, 100 + step).ok());
  }
  v1::JobEvent eval;
  eval.mutable_metric()->set_name("eval/kd");
  eval.mutable_metric()->set_step(3);
  eval.mutable_metric()->set_value(0.9);
  ASSERT_TRUE(store_->AppendEvent(job.id(), eval, 200).ok());

  v1::JobEvent progress;
  progress.mutable_progress()->set_done(7);
  progress.mutable_progress()->set_total(10);
  auto unpersisted = store_->AppendEvent(job.id(), progress, 300, /*persist_event=*/false);
  ASSERT_TRUE(unpersisted.ok());
  EXPECT_EQ(unpersisted->seq(), 0);
  EXPECT_EQ(store_->GetJob(job.id())->progress().done(), 7);

  v1::JobEvent log;
  log.mutable_log()->set_message("hello");
  ASSERT_TRUE(store_->AppendEvent(job.id(), log, 400).ok());

  auto all = store_->GetMetricSeries(job.id(), {}, std::nullopt);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].name(), "eval/kd");
  ASSERT_EQ((*all)[1].points_size(), 3);
  EXPECT_DOUBLE_EQ((*all)[1].points(2).value(), 1.0 / 3);

  auto tail = store_->GetMetricSeries(job.id(), {"loss/kd"}, 1);
  ASSERT_TRUE(tail.ok());
  ASSERT_EQ(tail->size(), 1u);
  EXPECT_EQ((*tail)[0].points_size(), 2);
  EXPECT_EQ((*tail)[0].points(0).step(), 2);

  // created + 4 metrics + log (the progress was not persisted).
  auto events = store_->ListEvents(job.id(), 0, 100);
  ASSERT_TRUE(events.ok());
  EXPECT_EQ(events->size(), 6u);
  auto after = store_->ListEvents(job.id(), (*events)[3].seq(), 100);
  EXPECT_EQ(after->size(), 2u);
  EXPECT_EQ(after->back().log().message(), "hello");

  v1::JobEvent orphan = log;
  EXPECT_EQ(store_->AppendEvent(99999, orphan, 1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->AppendEvent(99999, eval, 1).status().code(), absl::StatusCode::kNotFound);
  v1::JobEvent state;
  state.mutable_state()->set_to(v1::JOB_STATE_RUNNING);
  EXPECT_EQ(store_->AppendEvent(job.id(), state, 1).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(JobStoreTest, ArtifactsAreRegisteredWithProducer) {
  v1::Job a = Create(Probe());
  v1::Job b = Create(Probe());
  v1::Artifact artifact;
  artifact.set_path("/data/cache");
  artifact.set_kind("kd_cache");
  artifact.set_size_bytes(1234);
  artifact.set_sha256(std::string(64, 'a'));
  auto event = store_->AddArtifact(a.id(), artifact, 50);
  ASSERT_TRUE(event.ok()) << event.status();
  EXPECT_GT(event->artifact().id(), 0);
  EXPECT_EQ(event->artifact().job_id(), a.id());
  artifact.set_kind("checkpoint");
  artifact.set_path("/data/ckpt");
  ASSERT_TRUE(store_->AddArtifact(b.id(), artifact, 60).ok());

  EXPECT_EQ(store_->ListArtifacts({})->size(), 2u);
  ArtifactFilter by_kind;
  by_kind.kind = "checkpoint";
  auto checkpoints = store_->ListArtifacts(by_kind);
  ASSERT_EQ(checkpoints->size(), 1u);
  EXPECT_EQ((*checkpoints)[0].job_id(), b.id());
  EXPECT_EQ((*checkpoints)[0].size_bytes(), 1234);
  v1::Job with = *store_->GetJob(a.id());
  ASSERT_EQ(with.artifacts_size(), 1);
  EXPECT_EQ(with.artifacts(0).path(), "/data/cache");
  EXPECT_EQ(store_->AddArtifact(4242, artifact, 1).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(JobStoreTest, ListJobsFiltersAndPages) {
  std::vector<int64_t> ids;
  for (int i = 0; i < 7; ++i) ids.push_back(Create(Probe()).id());
  NewJob kd;
  kd.spec.mutable_kd_cache();
  int64_t kd_id = Create(kd).id();
  Transition cancel;
  cancel.to = v1::JOB_STATE_CANCELLED;
  ASSERT_TRUE(store_->TransitionJob(ids[0], cancel, 5).ok());

  JobFilter page;
  page.limit = 3;
  auto first = store_->ListJobs(page);
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->size(), 3u);
  EXPECT_EQ((*first)[0].id(), kd_id);  // newest first
  page.before_id = first->back().id();
  auto second = store_->ListJobs(page);
  ASSERT_EQ(second->size(), 3u);
  EXPECT_LT((*second)[0].id(), page.before_id);

  JobFilter queued_probes;
  queued_probes.states = {v1::JOB_STATE_QUEUED};
  queued_probes.kinds = {v1::JOB_KIND_PROBE};
  queued_probes.limit = 100;
  queued_probes.include_spec = false;
  auto probes = store_->ListJobs(queued_probes);
  ASSERT_EQ(probes->size(), 6u);
  EXPECT_FALSE((*probes)[0].has_spec());
  EXPECT_EQ(*store_->CountJobs(v1::JOB_STATE_CANCELLED), 1);
}

TEST_F(JobStoreTest, PipelinesMapStageIndicesToJobIds) {
  v1::PipelineSpec spec;
  spec.set_name("q4");
  std::vector<NewJob> jobs(3);
  jobs[0].spec.mutable_kd_cache();
  jobs[0].stage = "cache";
  jobs[1].spec.mutable_qat();
  jobs[1].stage = "train";
  jobs[1].depends_on = {0};
  v1::ArtifactInput input;
  input.set_from_stage("cache");
  input.set_artifact_kind("kd_cache");
  input.set_field("kd_cache_dir");
  jobs[1].inputs = {input};
  jobs[2].spec.mutable_snap();
  jobs[2].stage = "snap";
  jobs[2].depends_on = {0, 1};
  auto pipeline = store_->CreatePipeline(spec, jobs, 77);
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();
  ASSERT_EQ(pipeline->job_ids_size(), 3);
  EXPECT_EQ(pipeline->state(), v1::JOB_STATE_QUEUED);
  v1::Job snap = *store_->GetJob(pipeline->job_ids(2));
  EXPECT_EQ(snap.pipeline_id(), pipeline->id());
  EXPECT_EQ(snap.stage(), "snap");
  ASSERT_EQ(snap.depends_on_size(), 2);
  EXPECT_EQ(snap.depends_on(0), pipeline->job_ids(0));
  EXPECT_EQ(snap.depends_on(1), pipeline->job_ids(1));
  auto inputs = store_->GetInputs(pipeline->job_ids(1));
  ASSERT_TRUE(inputs.ok());
  ASSERT_EQ(inputs->size(), 1u);
  EXPECT_EQ((*inputs)[0].field(), "kd_cache_dir");

  Transition fail;
  fail.to = v1::JOB_STATE_FAILED;
  ASSERT_TRUE(store_->TransitionJob(pipeline->job_ids(0), fail, 80).ok());
  EXPECT_EQ(store_->GetPipeline(pipeline->id())->state(), v1::JOB_STATE_FAILED);

  // Forward references are rejected and nothing is written.
  std::vector<NewJob> bad(2);
  bad[0].spec.mutable_probe();
  bad[0].depends_on = {1};
  bad[1].spec.mutable_probe();
  EXPECT_EQ(store_->CreatePipeline(spec, bad, 90).status().code(), absl::StatusCode::kInvalidArgument);
  JobFilter all;
  all.limit = 100;
  EXPECT_EQ(store_->ListJobs(all)->size(), 3u);
}

TEST_F(JobStoreTest, RequeueRunningJobsOnRestartSurvivesReopen) {
  v1::Job a = Create(Probe());
  v1::Job b = Create(Probe());
  Transition run;
  run.to = v1::JOB_STATE_RUNNING;
  run.worker_pid = 99;
  run.devices = std::vector<std::string>{"cpu"};
  run.bump_attempt = true;
  ASSERT_TRUE(store_->TransitionJob(a.id(), run, 10).ok());
  store_.reset();  // the daemon goes away with a RUNNING job

  auto reopened = JobStore::Open(dir_.File("qatd.db"));
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  auto requeued = (*reopened)->RequeueRunningJobs("daemon restarted", 20);
  ASSERT_TRUE(requeued.ok());
  ASSERT_EQ(requeued->size(), 1u);
  EXPECT_EQ((*requeued)[0], a.id());
  v1::Job again = *(*reopened)->GetJob(a.id());
  EXPECT_EQ(again.state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(again.worker_pid(), 0);
  EXPECT_EQ(again.devices_size(), 0);
  EXPECT_EQ(again.attempt(), 1);
  EXPECT_EQ((*reopened)->GetJob(b.id())->state(), v1::JOB_STATE_QUEUED);
  auto transitions = (*reopened)->ListTransitions(a.id());
  EXPECT_EQ(transitions->back().reason, "daemon restarted");
}

TEST_F(JobStoreTest, RestartCancelsRunningJobsWhoseCancelWasRequested) {
  v1::Job job = Create(Probe());
  Transition run;
  run.to = v1::JOB_STATE_RUNNING;
  run.worker_pid = 5;
  ASSERT_TRUE(store_->TransitionJob(job.id(), run, 10).ok());
  ASSERT_TRUE(store_->SetCancelRequested(job.id()).ok());
  EXPECT_TRUE(store_->GetJob(job.id())->cancel_requested());
  auto requeued = store_->RequeueRunningJobs("daemon restarted", 20);
  ASSERT_TRUE(requeued.ok());
  EXPECT_TRUE(requeued->empty());
  v1::Job cancelled = *store_->GetJob(job.id());
  EXPECT_EQ(cancelled.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(cancelled.error().code(), static_cast<int>(absl::StatusCode::kCancelled));
}

TEST_F(JobStoreTest, ConcurrentReadersDoNotBlockTheWriter) {
  v1::Job job = Create(Probe());
  std::atomic<bool> stop{false};
  std::atomic<int> reads{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 4; ++r) {
    readers.emplace_back([&] {
      for (int i = 0; i < 10 || !stop.load(); ++i) {
        auto events = store_->ListEvents(job.id(), 0, 1000);
        if (!events.ok()) {
          ADD_FAILURE() << events.status();
          return;
        }
        reads.fetch_add(1);
      }
    });
  }
  for (int i = 0; i < 200; ++i) {
    v1::JobEvent log;
    log.mutable_log()->set_message("line " + std::to_string(i));
    ASSERT_TRUE(store_->AppendEvent(job.id(), log, i).ok());
  }
  stop = true;
  for (std::thread& t : readers) t.join();
  EXPECT_EQ(store_->ListEvents(job.id(), 0, 1000)->size(), 201u);
  EXPECT_GE(reads.load(), 40);
}

}  // namespace
}  // namespace qatd::storage
