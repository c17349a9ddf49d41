// The daemon / worker split (DESIGN.md §3): the real qatd and qatd-worker binaries.
//   - qatd links no LibTorch; the worker does, and shows its job in ps;
//   - the gRPC worker transport (WorkerChannel): events, artifacts and the result flow as over
//     the pipe, a cancel reaches the worker as a control message, a stream without the run's
//     secret is refused;
//   - a worker whose daemon disappears stops within a bounded time.
#include <signal.h>
#include <stdlib.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "qatd/v1/worker.grpc.pb.h"
#include "tests/e2e/e2e_support.h"

namespace qatd::e2e {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string Shell(const std::string& command) {
  std::string out;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return out;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) out.append(buffer, n);
  ::pclose(pipe);
  return out;
}

std::string Cmdline(pid_t pid) {
  std::string bytes = ReadFileOrEmpty("/proc/" + std::to_string(pid) + "/cmdline");
  for (char& c : bytes) {
    if (c == '\0') c = ' ';
  }
  return bytes;
}

TEST(WorkerSplitE2eTest, TheDaemonLinksNoLibTorchAndTheWorkerDoes) {
  const std::string daemon = Shell(std::string("ldd ") + QATD_BINARY);
  ASSERT_THAT(daemon, HasSubstr("libgrpc"));  // ldd worked
  EXPECT_THAT(daemon, Not(HasSubstr("libtorch")));
  EXPECT_THAT(daemon, Not(HasSubstr("libc10")));
  EXPECT_THAT(Shell(std::string("ldd ") + QATD_WORKER_BINARY), HasSubstr("libc10"));
}

// DaemonE2eTest's helpers are protected statics; this reaches WaitFor/Get without its daemon.
class DaemonE2eTestAccess : public DaemonE2eTest {
 public:
  using DaemonE2eTest::WaitFor;
};

class WorkerTransportE2eTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    DaemonConfig config;
    config.data_dir = dir_.File("data");
    config.cancel_grace_seconds = 30;  // a cancel must not need the SIGKILL escalation
    config.extra_args = {"--worker-transport", GetParam()};
    daemon_ = std::make_unique<Daemon>(config);
    ASSERT_TRUE(daemon_->Start());
  }

  v1::Job Submit(const v1::JobSpec& spec) {
    v1::SubmitJobRequest request;
    *request.mutable_spec() = spec;
    v1::Job job;
    grpc::Status status = daemon_->Stub()->SubmitJob(daemon_->Context().get(), request, &job);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return job;
  }
  std::string WorkerLog(int64_t id) { return ReadFileOrEmpty(dir_.File("data") + "/jobs/" + std::to_string(id) + "/worker.log"); }

  qatd::testing::TempDir dir_;
  std::unique_ptr<Daemon> daemon_;
};

TEST_P(WorkerTransportE2eTest, AProbeJobsEventsArtifactsAndResultReachTheDaemon) {
  v1::JobSpec spec = Probe(5, 10);
  const v1::Job submitted = Submit(spec);
  const v1::Job job = DaemonE2eTestAccess::WaitFor(*daemon_, submitted.id(), [](const v1::Job& j) {
    return j.state() == v1::JOB_STATE_SUCCEEDED || j.state() == v1::JOB_STATE_FAILED;
  });
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.ShortDebugString() << "\n" << WorkerLog(job.id());
  EXPECT_DOUBLE_EQ(job.result().metrics().at("loss/kd"), 1.0 / 5);
  ASSERT_EQ(job.artifacts_size(), 1);
  EXPECT_EQ(job.artifacts(0).kind(), "probe");
  EXPECT_FALSE(job.artifacts(0).sha256().empty());

  // The stored history: the probe's log line, progress up to 5 of 5 (progress is persisted at a
  // bounded rate, so not every step), the end.
  v1::WatchJobRequest watch;
  watch.set_job_id(job.id());
  auto context = daemon_->Context();
  auto stream = daemon_->Stub()->WatchJob(context.get(), watch);
  v1::JobEvent event;
  int64_t progress = 0;
  bool logged = false;
  bool ended = false;
  while (!ended && stream->Read(&event)) {
    if (event.has_progress()) progress = std::max<int64_t>(progress, event.progress().done());
    if (event.has_log() && event.log().message().find("probe: 5 steps") != std::string::npos) logged = true;
    if (event.has_state() && event.state().to() == v1::JOB_STATE_SUCCEEDED) ended = true;
  }
  context->TryCancel();
  EXPECT_EQ(progress, 5);
  EXPECT_TRUE(logged);
  EXPECT_TRUE(ended);
}

TEST_P(WorkerTransportE2eTest, TheWorkerShowsItsJobInPsAndACancelStopsIt) {
  const v1::Job submitted = Submit(Probe(100000, 20));
  // Running and reporting: the worker is up (and, on gRPC, attached to the WorkerChannel).
  const v1::Job running = DaemonE2eTestAccess::WaitFor(*daemon_, submitted.id(), [](const v1::Job& j) {
    return j.state() == v1::JOB_STATE_RUNNING && j.progress().done() > 0;
  });
  ASSERT_GT(running.worker_pid(), 0);
  const std::string cmdline = Cmdline(running.worker_pid());
  EXPECT_THAT(cmdline, HasSubstr("qatd-worker job " + std::to_string(running.id()) + " PROBE --task-file "));
  EXPECT_THAT(cmdline, HasSubstr(GetParam() == "grpc" ? "--daemon 127.0.0.1:" : "--event-fd 3"));

  v1::CancelJobRequest cancel;
  cancel.set_job_id(running.id());
  v1::Job reply;
  ASSERT_TRUE(daemon_->Stub()->CancelJob(daemon_->Context().get(), cancel, &reply).ok());
  const v1::Job done =
      DaemonE2eTestAccess::WaitFor(*daemon_, running.id(), [](const v1::Job& j) { return j.state() == v1::JOB_STATE_CANCELLED; });
  EXPECT_THAT(done.error().message(), HasSubstr("probe cancelled at step"));
  if (GetParam() == "grpc") {
    // The cancel travelled as a WorkerControl message, not as a signal.
    EXPECT_THAT(WorkerLog(running.id()), HasSubstr("the daemon cancels the job"));
  }
}

INSTANTIATE_TEST_SUITE_P(Transports, WorkerTransportE2eTest, ::testing::Values("pipe", "grpc"));

TEST(WorkerChannelE2eTest, RefusesAStreamWithoutTheRunsSecret) {
  qatd::testing::TempDir dir;
  DaemonConfig config;
  config.data_dir = dir.File("data");
  config.extra_args = {"--worker-transport", "grpc"};
  Daemon daemon(config);
  ASSERT_TRUE(daemon.Start());
  auto stub = v1::WorkerChannel::NewStub(daemon.Channel());
  for (const char* secret : {"", "not-the-secret"}) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    context.AddMetadata("x-qatd-job-id", "1");
    if (*secret != '\0') context.AddMetadata("x-qatd-job-secret", secret);
    auto stream = stub->Attach(&context);
    v1::WorkerEvent event;
    event.mutable_log()->set_message("forged");
    (void)stream->Write(event);
    stream->WritesDone();
    v1::WorkerControl control;
    EXPECT_FALSE(stream->Read(&control));
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED) << "secret '" << secret << "'";
  }
}

// A stand-in daemon: accepts any worker stream and counts its events, so the test can take it
// away while the worker runs.
class CountingChannel : public v1::WorkerChannel::CallbackService {
 public:
  grpc::ServerBidiReactor<v1::WorkerEvent, v1::WorkerControl>* Attach(grpc::CallbackServerContext*) override {
    class Reactor : public grpc::ServerBidiReactor<v1::WorkerEvent, v1::WorkerControl> {
     public:
      explicit Reactor(std::atomic<int>* events) : events_(events) { StartRead(&event_); }
      void OnReadDone(bool ok) override {
        if (!ok) {
          Finish(grpc::Status::OK);
          return;
        }
        ++*events_;
        StartRead(&event_);
      }
      void OnDone() override { delete this; }

     private:
      std::atomic<int>* events_;
      v1::WorkerEvent event_;
    };
    return new Reactor(&events);
  }
  std::atomic<int> events{0};
};

void WorkerStopsWhenItsDaemonDisappears(bool ignore_cancel) {
  qatd::testing::TempDir dir;
  CountingChannel channel;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&channel);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);

  v1::WorkerTask task;
  task.set_job_id(7);
  task.mutable_spec()->mutable_probe()->set_steps(100000);
  task.mutable_spec()->mutable_probe()->set_step_ms(20);
  task.mutable_spec()->mutable_probe()->set_ignore_cancel(ignore_cancel);
  task.set_output_dir(dir.File("out"));
  task.set_attempt(1);
  std::ofstream(dir.File("task.pb"), std::ios::binary) << task.SerializeAsString();

  ::setenv("QATD_JOB_SECRET", "stand-in", 1);
  ChildProcess worker({QATD_WORKER_BINARY, "job", "7", "PROBE", "--task-file", dir.File("task.pb"), "--daemon",
                       "127.0.0.1:" + std::to_string(port), "--daemon-timeout-seconds", "3"},
                      dir.File("worker.log"));
  ::unsetenv("QATD_JOB_SECRET");
  ASSERT_TRUE(PollUntil([&] { return channel.events.load() >= 5; }, std::chrono::seconds(60)))
      << ReadFileOrEmpty(dir.File("worker.log"));
  ASSERT_TRUE(worker.running());

  server->Shutdown(std::chrono::system_clock::now());  // the daemon goes away mid-job
  server.reset();
  // Cancelled at once; a job that ignores the cancel is ended by the 3 s watchdog.
  std::optional<int> status = worker.Wait(std::chrono::seconds(30));
  ASSERT_TRUE(status.has_value()) << "the worker outlived its daemon; log:\n" << ReadFileOrEmpty(dir.File("worker.log"));
  EXPECT_TRUE(WIFEXITED(*status));
  EXPECT_EQ(WEXITSTATUS(*status), 3);
  const std::string log = ReadFileOrEmpty(dir.File("worker.log"));
  EXPECT_THAT(log, HasSubstr("lost the daemon"));
  if (ignore_cancel) EXPECT_THAT(log, HasSubstr("did not stop within 3 s"));
}

TEST(WorkerChannelE2eTest, AWorkerWhoseDaemonDisappearsCancelsItsJobAndExits) { WorkerStopsWhenItsDaemonDisappears(false); }

TEST(WorkerChannelE2eTest, AWorkerWhoseJobIgnoresTheCancelIsEndedByItsWatchdog) {
  WorkerStopsWhenItsDaemonDisappears(true);
}

TEST_P(WorkerTransportE2eTest, ACancelDuringTheWorkersStartUpStillEndsTheJobCooperatively) {
  // SIGTERM can arrive while the worker is still loading LibTorch, before its handler exists:
  // the launcher starts it with SIGTERM blocked and the worker unblocks it once it can cancel.
  const v1::Job submitted = Submit(Probe(100000, 20));
  DaemonE2eTestAccess::WaitFor(*daemon_, submitted.id(), [](const v1::Job& j) { return j.state() == v1::JOB_STATE_RUNNING; });
  v1::CancelJobRequest cancel;
  cancel.set_job_id(submitted.id());
  v1::Job reply;
  ASSERT_TRUE(daemon_->Stub()->CancelJob(daemon_->Context().get(), cancel, &reply).ok());
  const v1::Job done =
      DaemonE2eTestAccess::WaitFor(*daemon_, submitted.id(), [](const v1::Job& j) { return j.state() == v1::JOB_STATE_CANCELLED; });
  EXPECT_THAT(done.error().message(), HasSubstr("probe cancelled at step"));
  EXPECT_THAT(done.error().message(), Not(HasSubstr("killed by signal")));
}

TEST(WorkerChannelE2eTest, AWorkerThatCannotReachItsDaemonExits3) {
  qatd::testing::TempDir dir;
  v1::WorkerTask task;
  task.set_job_id(8);
  task.mutable_spec()->mutable_probe()->set_steps(1);
  std::ofstream(dir.File("task.pb"), std::ios::binary) << task.SerializeAsString();
  ::setenv("QATD_JOB_SECRET", "x", 1);
  ChildProcess worker({QATD_WORKER_BINARY, "job", "8", "PROBE", "--task-file", dir.File("task.pb"), "--daemon",
                       "127.0.0.1:" + std::to_string(FreeLoopbackPort()), "--daemon-timeout-seconds", "1"},
                      dir.File("worker.log"));
  ::unsetenv("QATD_JOB_SECRET");
  std::optional<int> status = worker.Wait(std::chrono::seconds(30));
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(WEXITSTATUS(*status), 3);
  EXPECT_THAT(ReadFileOrEmpty(dir.File("worker.log")), HasSubstr("cannot reach the daemon"));
}

}  // namespace
}  // namespace qatd::e2e
