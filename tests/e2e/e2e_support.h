#pragma once
// Helpers for end-to-end tests: child processes the test starts (and only those it kills),
// the qatd daemon on an ephemeral loopback port, polling with deadlines, a tiny HTTP client
// for Prometheus' API, and the DaemonE2eTest fixture (one daemon shared by the suite, whose
// tests live in several files).

#include <sys/types.h>
#include <sys/wait.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "grpc/health/v1/health.grpc.pb.h"
#include "qatd/v1/service.grpc.pb.h"
#include "tests/common/temp_dir.h"

namespace qatd::e2e {

// Polls `done` every 20 ms until it returns true or `timeout` passes; returns its last value.
bool PollUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout);

// A process started by the test: argv[0] is the program, output appended to `log_file`.
class ChildProcess {
 public:
  ChildProcess(const std::vector<std::string>& argv, const std::string& log_file);
  ~ChildProcess();  // SIGKILL + reap if still running
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  bool running();
  void Signal(int signal);
  // Waits for exit (up to `timeout`); the raw waitpid status, or nullopt on timeout.
  std::optional<int> Wait(std::chrono::milliseconds timeout);

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
};

struct DaemonConfig {
  std::string data_dir;
  std::string token;            // "" = none; else written next to data_dir and passed
  int max_concurrent_jobs = 4;
  double cancel_grace_seconds = 5;
  std::string tls_cert;  // PEM files: serve (and connect with) TLS
  std::string tls_key;
  std::vector<std::string> extra_args;  // appended to the command line
  std::string listen = "127.0.0.1:0";
};

// The real qatd binary (QATD_BINARY) on 127.0.0.1:0 with its metrics on 127.0.0.1:0;
// stdout/stderr go to <data_dir>.out.
class Daemon {
 public:
  explicit Daemon(DaemonConfig config);
  ~Daemon();  // SIGTERM, then SIGKILL if it does not exit within 30 s

  // Starts the process and waits for <data_dir>/qatd.port (60 s). False if it did not come up
  // (the log tail is printed).
  bool Start();
  // Graceful stop (SIGTERM); returns the waitpid status.
  std::optional<int> Stop();
  void Kill9();

  int port() const { return port_; }
  int metrics_port() const { return metrics_port_; }
  const DaemonConfig& config() const { return config_; }
  pid_t pid() const { return process_ ? process_->pid() : -1; }
  std::string LogTail() const;

  std::unique_ptr<v1::Qatd::Stub> Stub() const;
  std::shared_ptr<grpc::Channel> Channel() const;
  // A context with a deadline and, if the daemon has one, the bearer token.
  std::unique_ptr<grpc::ClientContext> Context(std::chrono::milliseconds deadline = std::chrono::seconds(30)) const;

 private:
  DaemonConfig config_;
  std::string token_file_;
  std::unique_ptr<ChildProcess> process_;
  int port_ = 0;
  int metrics_port_ = 0;
};

// GET http://127.0.0.1:<port><path>; the response body, or nullopt on connection errors or a
// non-200 status.
std::optional<std::string> HttpGet(int port, const std::string& path);

// A TCP port that was free a moment ago on 127.0.0.1.
int FreeLoopbackPort();

std::string ReadFileOrEmpty(const std::string& path);

// The bearer token of the shared DaemonE2eTest daemon.
inline constexpr char kToken[] = "e2e-token-7f3a";

inline v1::JobSpec Probe(int steps, int step_ms) {
  v1::JobSpec spec;
  spec.mutable_probe()->set_steps(steps);
  spec.mutable_probe()->set_step_ms(step_ms);
  return spec;
}

// A job in SUCCEEDED, FAILED or CANCELLED.
inline bool JobEnded(const v1::Job& job) {
  return job.state() == v1::JOB_STATE_SUCCEEDED || job.state() == v1::JOB_STATE_FAILED ||
         job.state() == v1::JOB_STATE_CANCELLED;
}

// SubmitJob / GetJob on `daemon`; a failed call is a test failure (the job is then empty).
v1::Job SubmitTo(const Daemon& daemon, const v1::JobSpec& spec);
v1::Job GetJobFrom(const Daemon& daemon, int64_t id);
// Polls GetJob until `done(job)` (deadline `timeout`); returns the job as last seen.
v1::Job WaitForJob(const Daemon& daemon, int64_t id, const std::function<bool(const v1::Job&)>& done,
                   std::chrono::milliseconds timeout = std::chrono::seconds(120));
// SubmitTo, then WaitForJob until it ended.
inline v1::Job RunToEnd(const Daemon& daemon, const v1::JobSpec& spec,
                        std::chrono::milliseconds timeout = std::chrono::seconds(120)) {
  return WaitForJob(daemon, SubmitTo(daemon, spec).id(), JobEnded, timeout);
}

// The tiny golden Qwen3 and its tokenizer (tests/data/golden).
std::string TinyModelDir();
std::string TinyTokenizerDir();

// A KD cache of the tiny model (max_length 16, top-8, fp32) over `num_sequences` blocks of a
// generated text file in `dir`, made by a KD_CACHE job on `daemon`: its path, or "" after a
// failure (a test failure too).
std::string MakeTinyKdCache(const Daemon& daemon, const qatd::testing::TempDir& dir, int num_sequences);

// One qatd (with kToken) shared by every DaemonE2eTest test, started once per suite.
class DaemonE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new qatd::testing::TempDir();
    DaemonConfig config;
    config.data_dir = dir_->File("shared");
    config.token = kToken;
    config.max_concurrent_jobs = 4;
    daemon_ = new Daemon(config);
    if (!daemon_->Start()) {  // every test of the suite then fails in SetUp
      delete daemon_;
      daemon_ = nullptr;
    }
  }
  static void TearDownTestSuite() {
    if (daemon_ != nullptr) {
      std::optional<int> status = daemon_->Stop();
      EXPECT_TRUE(status.has_value() && WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
          << "qatd did not shut down cleanly on SIGTERM; log:\n"
          << daemon_->LogTail();
    }
    delete daemon_;
    daemon_ = nullptr;
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(daemon_, nullptr) << "the shared qatd did not start"; }

  static v1::Job Submit(const v1::JobSpec& spec) { return SubmitTo(*daemon_, spec); }

  static v1::Job Get(const Daemon& daemon, int64_t id) { return GetJobFrom(daemon, id); }

  // Polls GetJob until `done(job)` (deadline `timeout`).
  static v1::Job WaitFor(const Daemon& daemon, int64_t id, const std::function<bool(const v1::Job&)>& done,
                         std::chrono::milliseconds timeout = std::chrono::seconds(120)) {
    return WaitForJob(daemon, id, done, timeout);
  }

  static bool Serving(const Daemon& daemon) {
    auto health = grpc::health::v1::Health::NewStub(daemon.Channel());
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::health::v1::HealthCheckRequest request;
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status status = health->Check(&context, request, &response);
    return status.ok() && response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
  }

  inline static qatd::testing::TempDir* dir_ = nullptr;
  inline static Daemon* daemon_ = nullptr;
};

}  // namespace qatd::e2e
