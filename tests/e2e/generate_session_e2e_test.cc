// `qat infer --interactive` and the GenerateSession RPC through the real qatd, qatd-worker and
// qat binaries (issue #17 item 8): one GENERATE job and one model load per session, with chat
// history; a vanished or idle client ends the session's job.
#include <sys/wait.h>

#include <chrono>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/e2e/e2e_support.h"

namespace qatd::e2e {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

struct CliRun {
  int exit_code = -1;
  std::string output;
};

// `printf STDIN | qat --address ... ARGS` (stdout and stderr together).
CliRun RunQat(const Daemon& daemon, const qatd::testing::TempDir& dir, const std::vector<std::string>& args,
              const std::string& stdin_text) {
  static int runs = 0;
  std::string command = "printf %s " + ShellQuote(stdin_text) + " | " + ShellQuote(QAT_BINARY) +
                        " --address 127.0.0.1:" + std::to_string(daemon.port());
  for (const std::string& a : args) command += " " + ShellQuote(a);
  const std::string log = dir.File("qat-session-" + std::to_string(++runs) + ".out");
  ChildProcess child({"/bin/sh", "-c", command}, log);
  CliRun run;
  std::optional<int> status = child.Wait(300s);
  if (status && WIFEXITED(*status)) run.exit_code = WEXITSTATUS(*status);
  run.output = ReadFileOrEmpty(log);
  return run;
}

std::vector<v1::Job> GenerateJobs(const Daemon& daemon) {
  v1::ListJobsRequest request;
  request.add_kinds(v1::JOB_KIND_GENERATE);
  request.set_page_size(1000);
  v1::ListJobsResponse response;
  EXPECT_TRUE(daemon.Stub()->ListJobs(daemon.Context().get(), request, &response).ok());
  return {response.jobs().begin(), response.jobs().end()};
}

std::vector<double> Series(const Daemon& daemon, int64_t job_id, const std::string& name) {
  v1::GetMetricSeriesRequest request;
  request.set_job_id(job_id);
  request.add_names(name);
  v1::GetMetricSeriesResponse response;
  EXPECT_TRUE(daemon.Stub()->GetMetricSeries(daemon.Context().get(), request, &response).ok());
  std::vector<double> values;
  for (const auto& series : response.series()) {
    for (const auto& point : series.points()) values.push_back(point.value());
  }
  return values;
}

// Both worker transports carry a session's inputs: the pipe one (a control pipe) and gRPC.
class GenerateSessionE2eTest : public ::testing::TestWithParam<std::string> {};

INSTANTIATE_TEST_SUITE_P(Transports, GenerateSessionE2eTest, ::testing::Values("pipe", "grpc"));

TEST_P(GenerateSessionE2eTest, InteractiveInferIsOneJobWithChatHistory) {
  qatd::testing::TempDir dir;
  DaemonConfig config;
  config.data_dir = dir.File("data");
  config.extra_args = {"--worker-transport", GetParam()};
  Daemon daemon(config);
  ASSERT_TRUE(daemon.Start());

  // The second line is much shorter than the first: its prompt has more tokens than the
  // first's only if it carries the first exchange (the history).
  const CliRun run = RunQat(daemon, dir,
                            {"infer", "--model", TinyModelDir(), "--tokenizer", TinyTokenizerDir(), "--interactive",
                             "--max-new-tokens", "3", "--no-thinking", "--dtype", "fp32"},
                            "please tell me a long story about a cat and a dog\nhi\n");
  EXPECT_EQ(run.exit_code, 0) << run.output;

  const std::vector<v1::Job> jobs = GenerateJobs(daemon);
  ASSERT_EQ(jobs.size(), 1u) << "one GENERATE job per interactive session; qat printed:\n" << run.output;
  const v1::Job job = WaitForJob(daemon, jobs[0].id(), JobEnded, 60s);
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.error().message();
  const std::vector<double> prompt_tokens = Series(daemon, job.id(), "generate/prompt_tokens");
  ASSERT_EQ(prompt_tokens.size(), 2u);
  EXPECT_GT(prompt_tokens[1], prompt_tokens[0]) << "the second turn's prompt holds the first exchange";
}

TEST(GenerateSessionCommandsE2eTest, ResetAndSystemStartTheConversationOver) {
  qatd::testing::TempDir dir;
  DaemonConfig config;
  config.data_dir = dir.File("data");
  Daemon daemon(config);
  ASSERT_TRUE(daemon.Start());
  const CliRun run = RunQat(daemon, dir,
                            {"infer", "--model", TinyModelDir(), "--tokenizer", TinyTokenizerDir(), "-i",
                             "--prompt", "hi", "--max-new-tokens", "2", "--no-thinking", "--dtype", "fp32"},
                            "hi\n/reset\nhi\n/system You are a pirate who speaks at length.\nhi\n/bogus\n/exit\n"
                            "never sent\n");
  EXPECT_EQ(run.exit_code, 0) << run.output;
  EXPECT_THAT(run.output, HasSubstr("unknown command"));
  const std::vector<v1::Job> jobs = GenerateJobs(daemon);
  ASSERT_EQ(jobs.size(), 1u) << run.output;
  const v1::Job job = WaitForJob(daemon, jobs[0].id(), JobEnded, 60s);
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.error().message();
  const std::vector<double> p = Series(daemon, job.id(), "generate/prompt_tokens");
  ASSERT_EQ(p.size(), 4u) << "the line after /exit is never sent";
  EXPECT_GT(p[1], p[0]);   // "hi" after "hi" (--prompt, the first message): the history
  EXPECT_EQ(p[2], p[0]);   // after /reset: as the first
  EXPECT_GT(p[3], p[0]);   // a longer system prompt, no history
  EXPECT_LT(p[3], p[1] + 8);
}

// A raw GenerateSession call on `daemon`: the stream and its context.
struct Session {
  std::unique_ptr<grpc::ClientContext> context;
  std::unique_ptr<grpc::ClientReaderWriter<v1::GenerateSessionRequest, v1::GenerateSessionResponse>> stream;
  int64_t job_id = 0;
};

Session OpenSession(const Daemon& daemon, v1::Qatd::Stub& stub) {
  Session s;
  s.context = daemon.Context(300s);
  s.stream = stub.GenerateSession(s.context.get());
  v1::GenerateSessionRequest start;
  start.mutable_start()->mutable_spec()->set_model(TinyModelDir());
  start.mutable_start()->mutable_spec()->set_tokenizer(TinyTokenizerDir());
  start.mutable_start()->mutable_spec()->set_max_new_tokens(2);
  start.mutable_start()->mutable_spec()->set_dtype(v1::DTYPE_FP32);
  EXPECT_TRUE(s.stream->Write(start));
  v1::GenerateSessionResponse first;
  EXPECT_TRUE(s.stream->Read(&first));
  s.job_id = first.job_id();
  return s;
}

// The reason of the job's last state change (its stored history, through WatchJob).
std::string LastStateReason(const Daemon& daemon, int64_t job_id) {
  v1::WatchJobRequest request;
  request.set_job_id(job_id);
  auto context = daemon.Context();
  auto reader = daemon.Stub()->WatchJob(context.get(), request);
  v1::JobEvent event;
  std::string reason;
  while (reader->Read(&event)) {
    if (event.has_state()) reason = event.state().reason();
  }
  EXPECT_TRUE(reader->Finish().ok());
  return reason;
}

TEST(GenerateSessionLifeE2eTest, AVanishedClientCancelsTheSessionJob) {
  qatd::testing::TempDir dir;
  DaemonConfig config;
  config.data_dir = dir.File("data");
  Daemon daemon(config);
  ASSERT_TRUE(daemon.Start());
  auto stub = daemon.Stub();
  Session s = OpenSession(daemon, *stub);
  ASSERT_GT(s.job_id, 0);
  // One turn answered: the worker holds the model and waits for the next message.
  v1::GenerateSessionRequest turn;
  turn.mutable_input()->set_user("hello");
  ASSERT_TRUE(s.stream->Write(turn));
  v1::GenerateSessionResponse response;
  bool done = false;
  while (!done && s.stream->Read(&response)) done = response.has_turn_done();
  ASSERT_TRUE(done);
  EXPECT_EQ(response.turn_done().turn(), 1);
  EXPECT_GT(response.turn_done().prompt_tokens(), 0);
  EXPECT_EQ(GetJobFrom(daemon, s.job_id).state(), v1::JOB_STATE_RUNNING);

  s.context->TryCancel();  // the client goes away without ending the session
  const v1::Job job = WaitForJob(daemon, s.job_id, JobEnded, 60s);
  EXPECT_EQ(job.state(), v1::JOB_STATE_CANCELLED) << job.error().message();
  EXPECT_THAT(LastStateReason(daemon, s.job_id), HasSubstr("client went away"));
}

TEST(GenerateSessionLifeE2eTest, AnIdleSessionEndsAfterTheDaemonsTimeout) {
  qatd::testing::TempDir dir;
  DaemonConfig config;
  config.data_dir = dir.File("data");
  config.extra_args = {"--session-idle-timeout", "2s"};
  Daemon daemon(config);
  ASSERT_TRUE(daemon.Start());
  auto stub = daemon.Stub();
  Session s = OpenSession(daemon, *stub);
  ASSERT_GT(s.job_id, 0);
  // The client stays connected and says nothing: the stream ends with the job.
  v1::GenerateSessionResponse response;
  while (s.stream->Read(&response)) {
  }
  const grpc::Status status = s.stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("idle"));
  const v1::Job job = WaitForJob(daemon, s.job_id, JobEnded, 60s);
  EXPECT_EQ(job.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_THAT(job.error().message(), HasSubstr("--session-idle-timeout"));
}

TEST(GenerateSessionLifeE2eTest, SessionsStartOnlyThroughGenerateSessionWithoutAPrompt) {
  qatd::testing::TempDir dir;
  DaemonConfig config;
  config.data_dir = dir.File("data");
  Daemon daemon(config);
  ASSERT_TRUE(daemon.Start());
  auto stub = daemon.Stub();

  v1::SubmitJobRequest submit;
  submit.mutable_spec()->mutable_generate()->set_model(TinyModelDir());
  submit.mutable_spec()->mutable_generate()->set_session(true);
  v1::Job job;
  grpc::Status status = stub->SubmitJob(daemon.Context().get(), submit, &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("spec.generate.session"));

  auto context = daemon.Context();
  auto stream = stub->GenerateSession(context.get());
  v1::GenerateSessionRequest start;
  start.mutable_start()->mutable_spec()->set_model(TinyModelDir());
  start.mutable_start()->mutable_spec()->set_prompt("the prompt belongs in a turn");
  ASSERT_TRUE(stream->Write(start));
  v1::GenerateSessionResponse response;
  EXPECT_FALSE(stream->Read(&response));
  status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("start.spec.prompt must be empty"));
  EXPECT_TRUE(GenerateJobs(daemon).empty());
}

}  // namespace
}  // namespace qatd::e2e
