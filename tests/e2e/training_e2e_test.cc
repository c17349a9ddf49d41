// Training jobs through the real daemon: a KD cache, then a QAT job that survives a SIGKILL of
// the daemon (re-queued, resumed from its checkpoint, completed), and a QAT job whose worker is
// SIGKILLed (the job fails with the exit reason, the daemon stays healthy).
#include <signal.h>
#include <sqlite3.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/common/temp_dir.h"
#include "tests/e2e/e2e_support.h"

namespace qatd::e2e {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

bool Terminal(v1::JobState s) {
  return s == v1::JOB_STATE_SUCCEEDED || s == v1::JOB_STATE_FAILED || s == v1::JOB_STATE_CANCELLED;
}

class Client {
 public:
  explicit Client(const Daemon* d) : d_(d) {}
  v1::Job Submit(const v1::JobSpec& spec) {
    v1::SubmitJobRequest request;
    *request.mutable_spec() = spec;
    v1::Job job;
    grpc::Status status = d_->Stub()->SubmitJob(d_->Context().get(), request, &job);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return job;
  }
  v1::Job Get(int64_t id) {
    v1::GetJobRequest request;
    request.set_job_id(id);
    v1::Job job;
    grpc::Status status = d_->Stub()->GetJob(d_->Context().get(), request, &job);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return job;
  }
  // Log lines of the job's stored history.
  std::vector<std::string> Logs(int64_t id) {
    auto context = d_->Context(30s);
    v1::WatchJobRequest watch;
    watch.set_job_id(id);
    auto reader = d_->Stub()->WatchJob(context.get(), watch);
    std::vector<std::string> lines;
    v1::JobEvent event;
    while (reader->Read(&event)) {
      if (event.has_log()) lines.push_back(event.log().message());
      if (event.has_state() && Terminal(event.state().to())) break;
    }
    context->TryCancel();
    reader->Finish();
    return lines;
  }

 private:
  const Daemon* d_;
};

v1::JobSpec QatSpec(const std::string& model, const std::string& cache, int steps) {
  v1::JobSpec spec;
  v1::QatSpec* q = spec.mutable_qat();
  q->set_model(model);
  q->set_kd_cache_dir(cache);
  q->set_train_scales(true);
  q->set_lr(1e-3);
  q->set_max_steps(steps);
  q->set_batch_size(4);
  q->set_eval_samples(8);
  q->set_eval_steps(50);
  q->set_logging_steps(5);
  q->set_save_steps(2);
  q->set_dtype(v1::DTYPE_FP32);
  q->mutable_quant()->set_lut_size(4);
  q->mutable_quant()->set_group_size(16);
  return spec;
}

TEST(TrainingE2eTest, QatJobResumesAfterDaemonKill9AndAKilledWorkerFailsItsJob) {
  const fs::path model = fs::path(QATD_TEST_DATA) / "golden" / "tiny-qwen3";
  qatd::testing::TempDir dir;
  DaemonConfig config;
  config.data_dir = dir.File("data");
  config.max_concurrent_jobs = 2;
  auto daemon = std::make_unique<Daemon>(config);
  ASSERT_TRUE(daemon->Start());
  Client client(daemon.get());

  // 1. The KD cache.
  const std::string cache = MakeTinyKdCache(*daemon, dir, 48);
  ASSERT_FALSE(cache.empty());

  // 2. QAT; the daemon is killed mid-training, restarted, and the job resumes. 80 steps with a
  // save every 2: the kill comes at step >= 6, far from the end, and the resume point is close.
  constexpr int kSteps = 80;
  v1::Job qat = client.Submit(QatSpec(model.string(), cache, kSteps));
  v1::Job job;
  ASSERT_TRUE(PollUntil(
      [&] {
        job = client.Get(qat.id());
        return Terminal(job.state()) || (job.state() == v1::JOB_STATE_RUNNING && job.progress().done() >= 6);
      },
      300s))
      << job.ShortDebugString();
  ASSERT_EQ(job.state(), v1::JOB_STATE_RUNNING) << job.error().message();
  daemon->Kill9();
  daemon = std::make_unique<Daemon>(config);
  ASSERT_TRUE(daemon->Start());
  Client again(daemon.get());
  ASSERT_TRUE(PollUntil([&] { return Terminal(again.Get(qat.id()).state()); }, 600s));
  job = again.Get(qat.id());
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.error().message();
  EXPECT_EQ(job.attempt(), 2);
  EXPECT_EQ(job.progress().done(), kSteps);
  bool resumed = false;
  for (const std::string& line : again.Logs(qat.id())) resumed |= line.find("resuming at step") != std::string::npos;
  EXPECT_TRUE(resumed) << "the second attempt did not resume from the checkpoint";
  std::string checkpoint;
  for (const auto& a : job.artifacts()) {
    if (a.kind() == "checkpoint") checkpoint = a.path();
  }
  ASSERT_FALSE(checkpoint.empty());
  EXPECT_TRUE(fs::exists(fs::path(checkpoint) / "model.safetensors"));
  EXPECT_TRUE(job.result().metrics().count("eval/kd_best")) << job.result().ShortDebugString();
  EXPECT_LE(job.result().metrics().at("eval/kd_best"), job.result().metrics().at("eval/kd_initial"));

  // 3. A worker killed mid-training fails its job; the daemon carries on.
  v1::Job doomed = again.Submit(QatSpec(model.string(), cache, 100000));
  ASSERT_TRUE(PollUntil(
      [&] {
        job = again.Get(doomed.id());
        return Terminal(job.state()) || (job.state() == v1::JOB_STATE_RUNNING && job.progress().done() >= 2);
      },
      300s));
  ASSERT_EQ(job.state(), v1::JOB_STATE_RUNNING);
  ASSERT_GT(job.worker_pid(), 0);
  ::kill(job.worker_pid(), SIGKILL);
  ASSERT_TRUE(PollUntil([&] { return Terminal(again.Get(doomed.id()).state()); }, 120s));
  job = again.Get(doomed.id());
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_THAT(job.error().message(), HasSubstr("signal"));
  v1::ServerInfo info;
  EXPECT_TRUE(daemon->Stub()->GetServerInfo(daemon->Context().get(), v1::GetServerInfoRequest(), &info).ok());
  std::optional<int> status = daemon->Stop();
  EXPECT_TRUE(status.has_value() && WIFEXITED(*status) && WEXITSTATUS(*status) == 0);
}

}  // namespace
}  // namespace qatd::e2e
