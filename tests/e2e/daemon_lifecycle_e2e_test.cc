// End-to-end tests of the daemon's surroundings and lifecycle: a real Prometheus scraping the
// shared daemon's /metrics, a daemon serving TLS, and a daemon killed with SIGKILL and restarted
// on the same data dir. Same rules as daemon_e2e_test.cc: every wait polls with a deadline, and
// the tests kill only processes they started.
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <filesystem>
#include <fstream>

#include "nlohmann/json.hpp"
#include "tests/e2e/e2e_support.h"
#include "tests/common/temp_dir.h"

namespace qatd::e2e {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

// True once `pid` no longer runs (gone, or a zombie nobody reaped yet).
bool ProcessGone(pid_t pid) {
  if (::kill(pid, 0) != 0) return errno == ESRCH;
  std::string stat = ReadFileOrEmpty("/proc/" + std::to_string(pid) + "/stat");
  const size_t paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] == 'Z';
}

TEST_F(DaemonE2eTest, PrometheusScrapesQueueDepthAndRpcCounters) {
  ASSERT_TRUE(fs::exists("/usr/bin/prometheus")) << "the prometheus server binary is required";
  ASSERT_GT(daemon_->metrics_port(), 0);
  Submit(Probe(0, 0));  // at least one SubmitJob call to count
  // qatd's own endpoint first.
  std::optional<std::string> metrics = HttpGet(daemon_->metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.has_value());
  EXPECT_THAT(*metrics, HasSubstr("qatd_queue_depth"));
  EXPECT_THAT(*metrics, HasSubstr("qatd_rpc_requests_total{"));
  EXPECT_THAT(*metrics, HasSubstr("qatd_rpc_latency_seconds_bucket"));
  EXPECT_THAT(*metrics, HasSubstr("qatd_jobs{state=\"succeeded\"}"));

  const fs::path prom_dir = dir_->path() / "prometheus";
  fs::create_directories(prom_dir / "data");
  {
    std::ofstream config(prom_dir / "prometheus.yml");
    config << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
           << "scrape_configs:\n  - job_name: qatd\n    static_configs:\n"
           << "      - targets: ['127.0.0.1:" << daemon_->metrics_port() << "']\n";
  }
  int port = 0;
  std::unique_ptr<ChildProcess> prometheus;
  // The port is chosen free but could be taken before Prometheus binds it: retry a few times.
  for (int attempt = 0; attempt < 3 && prometheus == nullptr; ++attempt) {
    port = FreeLoopbackPort();
    auto candidate = std::make_unique<ChildProcess>(
        std::vector<std::string>{"/usr/bin/prometheus", "--config.file=" + (prom_dir / "prometheus.yml").string(),
                                 "--storage.tsdb.path=" + (prom_dir / "data").string(),
                                 "--web.listen-address=127.0.0.1:" + std::to_string(port), "--log.level=warn"},
        (prom_dir / "prometheus.log").string());
    if (PollUntil([&] { return !candidate->running() || HttpGet(port, "/-/ready").has_value(); }, 60s) &&
        candidate->running()) {
      prometheus = std::move(candidate);
    }
  }
  ASSERT_NE(prometheus, nullptr) << ReadFileOrEmpty((prom_dir / "prometheus.log").string());

  auto has_result = [&](const std::string& query) {
    std::optional<std::string> body = HttpGet(port, "/api/v1/query?query=" + query);
    if (!body.has_value()) return false;
    nlohmann::json reply = nlohmann::json::parse(*body, nullptr, false);
    return !reply.is_discarded() && reply.value("status", "") == "success" && reply["data"]["result"].is_array() &&
           !reply["data"]["result"].empty();
  };
  EXPECT_TRUE(PollUntil([&] { return has_result("qatd_queue_depth"); }, 120s))
      << ReadFileOrEmpty((prom_dir / "prometheus.log").string());
  // URL-encoded: qatd_rpc_requests_total{method="qatd.v1.Qatd/SubmitJob"}
  EXPECT_TRUE(PollUntil(
      [&] { return has_result("qatd_rpc_requests_total%7Bmethod%3D%22qatd.v1.Qatd%2FSubmitJob%22%7D"); }, 120s));
  prometheus->Signal(SIGTERM);
  EXPECT_TRUE(prometheus->Wait(60s).has_value());
}

TEST(DaemonTlsE2eTest, ServesTlsWhenGivenACertificate) {
  qatd::testing::TempDir dir;
  const std::string cert = dir.File("cert.pem");
  const std::string key = dir.File("key.pem");
  {
    ChildProcess openssl({"/usr/bin/openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                          "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=localhost", "-addext",
                          "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", cert, "-days", "2"},
                         dir.File("openssl.log"));
    std::optional<int> status = openssl.Wait(60s);
    if (!status.has_value() || !WIFEXITED(*status) || WEXITSTATUS(*status) != 0 || !fs::exists(cert)) {
      GTEST_SKIP() << "openssl could not make a test certificate: " << ReadFileOrEmpty(dir.File("openssl.log"));
    }
  }
  DaemonConfig config;
  config.data_dir = dir.File("data");
  config.token = kToken;
  config.tls_cert = cert;
  config.tls_key = key;
  Daemon daemon(config);
  ASSERT_TRUE(daemon.Start());
  v1::ServerInfo info;
  grpc::Status status = daemon.Stub()->GetServerInfo(daemon.Context().get(), v1::GetServerInfoRequest(), &info);
  EXPECT_TRUE(status.ok()) << status.error_message();

  // A plaintext client cannot talk to it.
  auto plain = v1::Qatd::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(daemon.port()), grpc::InsecureChannelCredentials()));
  status = plain->GetServerInfo(daemon.Context(5s).get(), v1::GetServerInfoRequest(), &info);
  EXPECT_FALSE(status.ok());
  std::optional<int> exit = daemon.Stop();
  EXPECT_TRUE(exit.has_value() && WIFEXITED(*exit) && WEXITSTATUS(*exit) == 0);
}

// A daemon of its own: killed with SIGKILL while a job runs, then restarted on the same data
// dir.
TEST(DaemonRestartE2eTest, Kill9ThenRestartKeepsTheDatabaseAndRequeuesRunningJobs) {
  qatd::testing::TempDir dir;
  DaemonConfig config;
  config.data_dir = dir.File("data");
  config.max_concurrent_jobs = 2;
  auto daemon = std::make_unique<Daemon>(config);
  ASSERT_TRUE(daemon->Start());

  auto submit = [&](const v1::JobSpec& spec) {
    v1::SubmitJobRequest request;
    *request.mutable_spec() = spec;
    v1::Job job;
    grpc::Status status = daemon->Stub()->SubmitJob(daemon->Context().get(), request, &job);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return job;
  };
  auto get = [&](int64_t id) {
    v1::GetJobRequest request;
    request.set_job_id(id);
    v1::Job job;
    EXPECT_TRUE(daemon->Stub()->GetJob(daemon->Context().get(), request, &job).ok());
    return job;
  };
  v1::Job finished = submit(Probe(1, 0));
  ASSERT_TRUE(PollUntil([&] { return get(finished.id()).state() == v1::JOB_STATE_SUCCEEDED; }, 120s));
  v1::Job running = submit(Probe(1000000, 20));
  v1::Job job;
  ASSERT_TRUE(PollUntil(
      [&] {
        job = get(running.id());
        return job.state() == v1::JOB_STATE_RUNNING && job.worker_pid() > 0;
      },
      120s));
  const pid_t old_worker = job.worker_pid();

  daemon->Kill9();
  // The worker dies with the daemon (PR_SET_PDEATHSIG).
  EXPECT_TRUE(PollUntil([&] { return ProcessGone(old_worker); }, 60s)) << "worker " << old_worker << " outlived the daemon";

  // The database is intact and still says RUNNING.
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open_v2((config.data_dir + "/qatd.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
    sqlite3_stmt* stmt = nullptr;
    ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &stmt, nullptr), SQLITE_OK);
    ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
    EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0)), "ok");
    sqlite3_finalize(stmt);
    ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT state FROM jobs WHERE id = ?", -1, &stmt, nullptr), SQLITE_OK);
    sqlite3_bind_int64(stmt, 1, running.id());
    ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
    EXPECT_EQ(sqlite3_column_int(stmt, 0), v1::JOB_STATE_RUNNING);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
  }

  daemon = std::make_unique<Daemon>(config);
  ASSERT_TRUE(daemon->Start());
  EXPECT_EQ(get(finished.id()).state(), v1::JOB_STATE_SUCCEEDED);
  ASSERT_TRUE(PollUntil(
      [&] {
        job = get(running.id());
        return job.state() == v1::JOB_STATE_RUNNING && job.attempt() == 2 && job.worker_pid() > 0;
      },
      120s))
      << job.ShortDebugString();
  EXPECT_NE(job.worker_pid(), old_worker);

  // Its history shows the re-queue.
  auto context = daemon->Context();
  v1::WatchJobRequest watch;
  watch.set_job_id(running.id());
  auto reader = daemon->Stub()->WatchJob(context.get(), watch);
  v1::JobEvent event;
  bool requeued = false;
  int states_seen = 0;
  while (!requeued && reader->Read(&event)) {
    if (!event.has_state()) continue;
    ++states_seen;
    requeued = event.state().from() == v1::JOB_STATE_RUNNING && event.state().to() == v1::JOB_STATE_QUEUED &&
               event.state().reason().find("restarted") != std::string::npos;
  }
  context->TryCancel();
  reader->Finish();
  EXPECT_TRUE(requeued) << "saw " << states_seen << " state changes";

  v1::CancelJobRequest cancel;
  cancel.set_job_id(running.id());
  v1::Job cancelled;
  ASSERT_TRUE(daemon->Stub()->CancelJob(daemon->Context().get(), cancel, &cancelled).ok());
  ASSERT_TRUE(PollUntil([&] { return get(running.id()).state() == v1::JOB_STATE_CANCELLED; }, 120s));
  std::optional<int> status = daemon->Stop();
  EXPECT_TRUE(status.has_value() && WIFEXITED(*status) && WEXITSTATUS(*status) == 0);
}

}  // namespace
}  // namespace qatd::e2e
