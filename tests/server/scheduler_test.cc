#include "server/scheduler.h"

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "server/clock.h"
#include "server/pipeline_plan.h"
#include "storage/job_codec.h"
#include "tests/server/fake_worker.h"
#include "tests/common/temp_dir.h"

namespace qatd::server {
namespace {

using testing::FakeLauncher;
using testing::FakeWorker;

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override { OpenStore(); }

  void OpenStore() {
    auto store = storage::JobStore::Open(dir_.File("qatd.db"));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    journal_ = std::make_unique<JobJournal>(store_.get(), &hub_, &metrics_, &clock_);
  }

  void StartScheduler(int64_t grace_ms = 10000) {
    SchedulerOptions options;
    options.jobs_dir = dir_.File("jobs");
    options.cancel_grace_ms = grace_ms;
    scheduler_ = std::make_unique<Scheduler>(options, journal_.get(), &devices_, &launcher_, &metrics_);
    ASSERT_TRUE(scheduler_->Start().ok());
  }

  int64_t Submit(int priority = 0) {
    v1::JobSpec spec;
    spec.mutable_probe()->set_steps(1);
    spec.set_priority(priority);
    auto job = scheduler_->Submit(spec);
    EXPECT_TRUE(job.ok()) << job.status();
    return job->id();
  }

  // Polls the store until the job is in `state` (30 s deadline).
  v1::Job WaitForState(int64_t id, v1::JobState state) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    v1::Job job;
    while (std::chrono::steady_clock::now() < deadline) {
      job = *store_->GetJob(id);
      if (job.state() == state) return job;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ADD_FAILURE() << "job " << id << " is " << storage::JobStateName(job.state()) << ", expected "
                  << storage::JobStateName(state);
    return job;
  }

  v1::WorkerTask ReadTask(int64_t job_id) {
    std::vector<WorkerLaunch> launches = launcher_.Launches();
    for (auto it = launches.rbegin(); it != launches.rend(); ++it) {
      const WorkerLaunch& launch = *it;
      if (launch.job_id != job_id) continue;
      std::ifstream in(launch.task_file, std::ios::binary);
      std::stringstream bytes;
      bytes << in.rdbuf();
      v1::WorkerTask task;
      EXPECT_TRUE(task.ParseFromString(bytes.str()));
      return task;
    }
    ADD_FAILURE() << "job " << job_id << " was never launched";
    return {};
  }

  qatd::testing::TempDir dir_;
  std::unique_ptr<storage::JobStore> store_;
  EventHub hub_;
  DaemonMetrics metrics_;
  SystemClock clock_;
  std::unique_ptr<JobJournal> journal_;
  DevicePool devices_{{}, 1};
  FakeLauncher launcher_;
  std::unique_ptr<Scheduler> scheduler_;
};

TEST_F(SchedulerTest, RunsByPriorityThenFifo) {
  StartScheduler();
  const int64_t blocker = Submit();
  FakeWorker* first = launcher_.WaitFor(blocker);
  ASSERT_NE(first, nullptr);
  WaitForState(blocker, v1::JOB_STATE_RUNNING);
  const int64_t a = Submit(0);
  const int64_t b = Submit(0);
  const int64_t c = Submit(5);
  const int64_t d = Submit(5);
  EXPECT_EQ(scheduler_->queued(), 4);
  first->Finish(absl::OkStatus());
  for (int64_t next : {c, d, a, b}) {
    FakeWorker* worker = launcher_.WaitFor(next);
    ASSERT_NE(worker, nullptr);
    WaitForState(next, v1::JOB_STATE_RUNNING);
    worker->Finish(absl::OkStatus());
    WaitForState(next, v1::JOB_STATE_SUCCEEDED);
  }
  EXPECT_EQ(launcher_.LaunchOrder(), (std::vector<int64_t>{blocker, c, d, a, b}));
  EXPECT_EQ(scheduler_->queued(), 0);
}

TEST_F(SchedulerTest, WorkerEventsAreRecorded) {
  StartScheduler();
  const int64_t id = Submit();
  FakeWorker* worker = launcher_.WaitFor(id);
  ASSERT_NE(worker, nullptr);
  WaitForState(id, v1::JOB_STATE_RUNNING);
  worker->Progress(3, 10);
  v1::WorkerEvent metric;
  metric.mutable_metric()->set_name("loss/kd");
  metric.mutable_metric()->set_step(3);
  metric.mutable_metric()->set_value(0.5);
  worker->Send(metric);
  v1::WorkerEvent log;
  log.mutable_log()->set_message("hello from the worker");
  worker->Send(log);
  const std::string artifact_path = dir_.File("artifact.bin");
  std::ofstream(artifact_path) << "abc";
  v1::WorkerEvent artifact;
  artifact.mutable_artifact()->set_path(artifact_path);
  artifact.mutable_artifact()->set_kind("checkpoint");
  worker->Send(artifact);
  v1::WorkerEvent final;
  final.mutable_final()->mutable_result()->set_summary("done");
  (*final.mutable_final()->mutable_result()->mutable_metrics())["loss/kd"] = 0.5;
  worker->Send(final);
  worker->Exit(false, 0);

  v1::Job job = WaitForState(id, v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job.progress().done(), 3);
  EXPECT_EQ(job.result().summary(), "done");
  EXPECT_EQ(job.result().metrics().at("loss/kd"), 0.5);
  ASSERT_EQ(job.artifacts_size(), 1);
  EXPECT_EQ(job.artifacts(0).size_bytes(), 3);
  // sha256("abc")
  EXPECT_EQ(job.artifacts(0).sha256(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  auto series = store_->GetMetricSeries(id, {"loss/kd"}, std::nullopt);
  ASSERT_EQ(series->size(), 1u);
  EXPECT_EQ((*series)[0].points(0).value(), 0.5);
  auto events = store_->ListEvents(id, 0, 100);
  bool saw_log = false;
  for (const v1::JobEvent& e : *events) saw_log |= e.has_log() && e.log().message() == "hello from the worker";
  EXPECT_TRUE(saw_log);
  EXPECT_EQ(job.worker_pid(), 0);
  EXPECT_EQ(job.attempt(), 1);
}

TEST_F(SchedulerTest, CrashedWorkerFailsItsJobWithTheExitReason) {
  StartScheduler();
  const int64_t killed = Submit();
  FakeWorker* worker = launcher_.WaitFor(killed);
  ASSERT_NE(worker, nullptr);
  WaitForState(killed, v1::JOB_STATE_RUNNING);
  worker->Exit(true, 9);
  v1::Job job = WaitForState(killed, v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.error().code(), static_cast<int>(absl::StatusCode::kInternal));
  EXPECT_NE(job.error().message().find("killed by signal SIGKILL (9)"), std::string::npos) << job.error().message();

  const int64_t exited = Submit();
  worker = launcher_.WaitFor(exited);
  ASSERT_NE(worker, nullptr);
  WaitForState(exited, v1::JOB_STATE_RUNNING);
  worker->Exit(false, 3);
  job = WaitForState(exited, v1::JOB_STATE_FAILED);
  EXPECT_NE(job.error().message().find("exited with code 3"), std::string::npos) << job.error().message();

  // A job's own error passes through unchanged.
  const int64_t failing = Submit();
  worker = launcher_.WaitFor(failing);
  ASSERT_NE(worker, nullptr);
  WaitForState(failing, v1::JOB_STATE_RUNNING);
  worker->Finish(absl::FailedPreconditionError("job kind QAT is not available in this build"));
  job = WaitForState(failing, v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.error().code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(job.error().message(), "job kind QAT is not available in this build");
}

TEST_F(SchedulerTest, CancelsQueuedAndRunningJobs) {
  StartScheduler();
  const int64_t running = Submit();
  FakeWorker* worker = launcher_.WaitFor(running);
  ASSERT_NE(worker, nullptr);
  WaitForState(running, v1::JOB_STATE_RUNNING);
  const int64_t queued = Submit();

  auto cancelled = scheduler_->Cancel(queued, "not needed");
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(cancelled->error().code(), static_cast<int>(absl::StatusCode::kCancelled));

  auto requested = scheduler_->Cancel(running, "");
  ASSERT_TRUE(requested.ok());
  EXPECT_TRUE(requested->cancel_requested());
  ASSERT_TRUE(worker->WaitForSignal(SIGTERM));
  worker->Finish(absl::CancelledError("stopped at step 3"));
  v1::Job job = WaitForState(running, v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(job.error().message(), "stopped at step 3");

  EXPECT_EQ(scheduler_->Cancel(running, "").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(scheduler_->Cancel(9999, "").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(launcher_.LaunchOrder(), std::vector<int64_t>{running});  // the queued one never ran
}

TEST_F(SchedulerTest, CancelEscalatesToSigkillAfterTheGracePeriod) {
  StartScheduler(/*grace_ms=*/50);
  const int64_t id = Submit();
  FakeWorker* worker = launcher_.WaitFor(id);
  ASSERT_NE(worker, nullptr);
  WaitForState(id, v1::JOB_STATE_RUNNING);
  ASSERT_TRUE(scheduler_->Cancel(id, "stuck").ok());
  ASSERT_TRUE(worker->WaitForSignal(SIGTERM));
  ASSERT_TRUE(worker->WaitForSignal(SIGKILL));  // the fake ignores SIGTERM
  v1::Job job = WaitForState(id, v1::JOB_STATE_CANCELLED);
  EXPECT_NE(job.error().message().find("SIGKILL"), std::string::npos) << job.error().message();
}

TEST_F(SchedulerTest, PipelineStagesWaitForDependenciesAndReceiveArtifacts) {
  StartScheduler();
  v1::PipelineSpec spec;
  spec.set_name("two");
  v1::PipelineStage* second = spec.add_stages();  // listed first: order comes from the DAG
  second->set_name("second");
  second->mutable_spec()->mutable_probe();
  second->add_depends_on("first");
  v1::ArtifactInput* input = second->add_inputs();
  input->set_from_stage("first");
  input->set_artifact_kind("probe");
  input->set_field("output_dir");
  v1::PipelineStage* first = spec.add_stages();
  first->set_name("first");
  first->mutable_spec()->mutable_probe();
  auto planned = PlanPipeline(spec);
  ASSERT_TRUE(planned.ok()) << planned.status();
  auto pipeline = scheduler_->SubmitPipeline(spec, *planned);
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();
  const int64_t first_id = pipeline->job_ids(0);
  const int64_t second_id = pipeline->job_ids(1);
  EXPECT_EQ(store_->GetJob(first_id)->stage(), "first");

  FakeWorker* worker = launcher_.WaitFor(first_id);
  ASSERT_NE(worker, nullptr);
  WaitForState(first_id, v1::JOB_STATE_RUNNING);
  EXPECT_EQ(store_->GetJob(second_id)->state(), v1::JOB_STATE_QUEUED);
  const std::string produced = dir_.File("produced");
  std::filesystem::create_directories(produced);
  v1::WorkerEvent artifact;
  artifact.mutable_artifact()->set_path(produced);
  artifact.mutable_artifact()->set_kind("probe");
  worker->Send(artifact);
  worker->Finish(absl::OkStatus());

  FakeWorker* next = launcher_.WaitFor(second_id);
  ASSERT_NE(next, nullptr);
  EXPECT_EQ(ReadTask(second_id).spec().probe().output_dir(), produced);
  EXPECT_EQ(store_->GetJob(second_id)->spec().probe().output_dir(), produced);
  next->Finish(absl::OkStatus());
  WaitForState(second_id, v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(store_->GetPipeline(pipeline->id())->state(), v1::JOB_STATE_SUCCEEDED);
}

TEST_F(SchedulerTest, FailedDependencyFailsDownstreamStages) {
  StartScheduler();
  v1::PipelineSpec spec;
  v1::PipelineStage* a = spec.add_stages();
  a->set_name("a");
  a->mutable_spec()->mutable_probe();
  v1::PipelineStage* b = spec.add_stages();
  b->set_name("b");
  b->mutable_spec()->mutable_probe();
  b->add_depends_on("a");
  auto pipeline = scheduler_->SubmitPipeline(spec, *PlanPipeline(spec));
  ASSERT_TRUE(pipeline.ok());
  FakeWorker* worker = launcher_.WaitFor(pipeline->job_ids(0));
  ASSERT_NE(worker, nullptr);
  WaitForState(pipeline->job_ids(0), v1::JOB_STATE_RUNNING);
  worker->Finish(absl::InternalError("boom"));
  v1::Job downstream = WaitForState(pipeline->job_ids(1), v1::JOB_STATE_FAILED);
  EXPECT_EQ(downstream.error().code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_NE(downstream.error().message().find("stage 'a'"), std::string::npos) << downstream.error().message();
  EXPECT_EQ(launcher_.LaunchOrder().size(), 1u);
}

TEST_F(SchedulerTest, FailedDependencyFailsTheWholeChainDownstream) {
  // a -> b -> c -> d: a fails; b fails because of a, and c and d must follow without any
  // other event waking the scheduler (this used to leave c QUEUED).
  StartScheduler();
  v1::PipelineSpec spec;
  const char* names[] = {"a", "b", "c", "d"};
  for (int i = 0; i < 4; ++i) {
    v1::PipelineStage* stage = spec.add_stages();
    stage->set_name(names[i]);
    stage->mutable_spec()->mutable_probe();
    if (i > 0) stage->add_depends_on(names[i - 1]);
  }
  auto pipeline = scheduler_->SubmitPipeline(spec, *PlanPipeline(spec));
  ASSERT_TRUE(pipeline.ok());
  FakeWorker* worker = launcher_.WaitFor(pipeline->job_ids(0));
  ASSERT_NE(worker, nullptr);
  WaitForState(pipeline->job_ids(0), v1::JOB_STATE_RUNNING);
  worker->Finish(absl::InternalError("boom"));
  for (int i = 1; i < 4; ++i) {
    v1::Job job = WaitForState(pipeline->job_ids(i), v1::JOB_STATE_FAILED);
    EXPECT_EQ(job.error().code(), static_cast<int>(absl::StatusCode::kFailedPrecondition)) << names[i];
  }
  EXPECT_EQ(launcher_.LaunchOrder().size(), 1u);
}

TEST_F(SchedulerTest, ShutdownRequeuesRunningJobsAndTheNextStartResumesThem) {
  StartScheduler();
  const int64_t id = Submit();
  FakeWorker* worker = launcher_.WaitFor(id);
  ASSERT_NE(worker, nullptr);
  WaitForState(id, v1::JOB_STATE_RUNNING);
  std::thread stopper([&] { scheduler_->Shutdown(); });
  ASSERT_TRUE(worker->WaitForSignal(SIGTERM));
  worker->Finish(absl::CancelledError("interrupted"));  // what a worker does on SIGTERM
  stopper.join();
  v1::Job job = *store_->GetJob(id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(job.attempt(), 1);

  scheduler_.reset();
  StartScheduler(/*grace_ms=*/50);
  // Launched again, as its second attempt.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (launcher_.LaunchOrder().size() < 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(launcher_.LaunchOrder(), (std::vector<int64_t>{id, id}));
  job = WaitForState(id, v1::JOB_STATE_RUNNING);
  EXPECT_EQ(job.attempt(), 2);
  EXPECT_EQ(ReadTask(id).attempt(), 2);
}

v1::WorkerControl UserTurn(const std::string& text) {
  v1::WorkerControl control;
  control.mutable_session()->set_user(text);
  return control;
}

TEST_F(SchedulerTest, ASessionsInputsReachItsWorkerInOrderEvenWhileQueued) {
  StartScheduler();
  const int64_t blocker = Submit();
  FakeWorker* first = launcher_.WaitFor(blocker);
  ASSERT_NE(first, nullptr);
  v1::JobSpec spec;
  spec.mutable_generate()->set_model("m");
  spec.mutable_generate()->set_session(true);
  absl::StatusOr<v1::Job> session = scheduler_->Submit(spec);
  ASSERT_TRUE(session.ok()) << session.status();
  const int64_t id = session->id();
  // Queued behind the blocker: held.
  ASSERT_TRUE(scheduler_->SendControl(id, UserTurn("one")).ok());
  v1::WorkerControl reset;
  reset.mutable_session()->set_reset(true);
  ASSERT_TRUE(scheduler_->SendControl(id, reset).ok());
  first->Finish(absl::OkStatus());

  FakeWorker* worker = launcher_.WaitFor(id);
  ASSERT_NE(worker, nullptr);
  WaitForState(id, v1::JOB_STATE_RUNNING);
  ASSERT_TRUE(scheduler_->SendControl(id, UserTurn("two")).ok());
  std::vector<v1::WorkerControl> got = worker->Controls();
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].session().user(), "one");
  EXPECT_TRUE(got[1].session().reset());
  EXPECT_EQ(got[2].session().user(), "two");
  EXPECT_TRUE(launcher_.Launches().back().session);
  EXPECT_FALSE(launcher_.Launches().front().session);
  EXPECT_EQ(ReadTask(id).session_idle_timeout_seconds(), 600);

  worker->Finish(absl::OkStatus());
  WaitForState(id, v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(scheduler_->SendControl(id, UserTurn("late")).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(SchedulerTest, ShutdownCancelsASessionInsteadOfRequeuingIt) {
  StartScheduler();
  v1::JobSpec spec;
  spec.mutable_generate()->set_model("m");
  spec.mutable_generate()->set_session(true);
  const int64_t id = scheduler_->Submit(spec)->id();
  FakeWorker* worker = launcher_.WaitFor(id);
  ASSERT_NE(worker, nullptr);
  WaitForState(id, v1::JOB_STATE_RUNNING);
  std::thread stopper([&] { scheduler_->Shutdown(); });
  ASSERT_TRUE(worker->WaitForSignal(SIGTERM));
  worker->Finish(absl::CancelledError("interrupted"));
  stopper.join();
  EXPECT_EQ(store_->GetJob(id)->state(), v1::JOB_STATE_CANCELLED);
}

TEST_F(SchedulerTest, ASessionLeftQueuedByAnEarlierDaemonIsCancelledNotRun) {
  // Its client's stream ended with that daemon: nobody could send it a message.
  storage::NewJob job;
  job.spec.mutable_generate()->set_model("m");
  job.spec.mutable_generate()->set_session(true);
  absl::StatusOr<v1::Job> created = store_->CreateJob(job, clock_.NowMs());
  ASSERT_TRUE(created.ok()) << created.status();
  const int64_t probe_id = [&] {
    storage::NewJob probe;
    probe.spec.mutable_probe()->set_steps(1);
    return store_->CreateJob(probe, clock_.NowMs())->id();
  }();
  StartScheduler();
  FakeWorker* probe = launcher_.WaitFor(probe_id);  // the queue was loaded
  ASSERT_NE(probe, nullptr);
  probe->Finish(absl::OkStatus());
  const v1::Job session = *store_->GetJob(created->id());
  EXPECT_EQ(session.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(launcher_.LaunchOrder(), (std::vector<int64_t>{probe_id}));
}

}  // namespace
}  // namespace qatd::server
