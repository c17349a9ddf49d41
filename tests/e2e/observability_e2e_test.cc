// End-to-end test of what a Grafana / Prometheus user sees (issue #16): a real Prometheus
// (/usr/bin/prometheus, Debian's package) loads deploy/prometheus/prometheus.yml and its rule
// file and scrapes a real qatd that runs a short QAT job; then every PromQL expression of every
// dashboard in deploy/grafana/ and every rule Prometheus loaded is evaluated through the HTTP
// API and must return data (an alert's query without its threshold), with each legend's
// {{label}} present on every series. promtool checks the config, the rules and the scraped
// /metrics text. Skipped where Prometheus is not installed (GPU hosts).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/e2e/e2e_support.h"

namespace qatd::e2e {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

const fs::path kDeploy = fs::path(QATD_SOURCE_DIR) / "deploy";

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// Runs a shell command; its exit status and combined output.
std::pair<int, std::string> RunShell(const std::string& command) {
  std::string out;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return {-1, ""};
  char buffer[4096];
  size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) out.append(buffer, n);
  const int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

std::string UrlEncode(const std::string& text) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string ReplaceAll(std::string text, const std::string& from, const std::string& to) {
  for (size_t pos = text.find(from); pos != std::string::npos; pos = text.find(from, pos + to.size())) {
    text.replace(pos, from.size(), to);
  }
  return text;
}

// Grafana's variables as a dashboard on "last 1 hour" would expand them.
std::string ExpandVariables(std::string expr, int64_t job_id) {
  expr = ReplaceAll(expr, "${job_id}", std::to_string(job_id));
  expr = ReplaceAll(expr, "$job_id", std::to_string(job_id));
  expr = ReplaceAll(expr, "$__rate_interval", "30s");
  expr = ReplaceAll(expr, "$__interval", "5s");
  expr = ReplaceAll(expr, "$__range", "1h");
  return expr;
}

// {{label}} names of a legend format.
std::set<std::string> LegendLabels(const std::string& legend) {
  std::set<std::string> labels;
  static const std::regex kLabel(R"(\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\})");
  for (std::sregex_iterator it(legend.begin(), legend.end(), kLabel), end; it != end; ++it) labels.insert((*it)[1]);
  return labels;
}

// A Prometheus on a free loopback port with `config`; nullptr (and a test failure) if it did
// not become ready.
std::unique_ptr<ChildProcess> StartPrometheus(const fs::path& dir, const fs::path& config, int* port) {
  fs::create_directories(dir / "data");
  for (int attempt = 0; attempt < 3; ++attempt) {  // the free port may be taken meanwhile
    *port = FreeLoopbackPort();
    auto prometheus = std::make_unique<ChildProcess>(
        std::vector<std::string>{"/usr/bin/prometheus", "--config.file=" + config.string(),
                                 "--storage.tsdb.path=" + (dir / "data").string(),
                                 "--web.listen-address=127.0.0.1:" + std::to_string(*port), "--log.level=warn"},
        (dir / "prometheus.log").string());
    if (PollUntil([&] { return !prometheus->running() || HttpGet(*port, "/-/ready").has_value(); }, 60s) &&
        prometheus->running()) {
      return prometheus;
    }
  }
  ADD_FAILURE() << "prometheus did not start: " << ReadFileOrEmpty((dir / "prometheus.log").string());
  return nullptr;
}

class PrometheusApi {
 public:
  explicit PrometheusApi(int port) : port_(port) {}
  // The `data` of a successful reply, or a discarded json and `error` set.
  nlohmann::json Get(const std::string& path, std::string* error) const {
    std::optional<std::string> body = HttpGet(port_, path);
    if (!body.has_value()) {
      *error = "no HTTP 200 reply (a bad query answers 400)";
      return nlohmann::json::value_t::discarded;
    }
    nlohmann::json reply = nlohmann::json::parse(*body, nullptr, false);
    if (reply.is_discarded() || reply.value("status", "") != "success") {
      *error = "status is not success: " + *body;
      return nlohmann::json::value_t::discarded;
    }
    return reply["data"];
  }
  // The result vector of an instant query (empty on errors, with `error` set).
  nlohmann::json Query(const std::string& expr, std::string* error) const {
    nlohmann::json data = Get("/api/v1/query?query=" + UrlEncode(expr), error);
    if (data.is_discarded()) return nlohmann::json::array();
    if (!data["result"].is_array()) {
      *error = "resultType " + data.value("resultType", "?") + ", not a vector";
      return nlohmann::json::array();
    }
    return data["result"];
  }

 private:
  int port_;
};

// A short QAT job on the tiny golden model (KD cache first); its id, or -1 after a failure.
int64_t RunShortQatJob(const Daemon& daemon, const qatd::testing::TempDir& dir) {
  const fs::path model = fs::path(QATD_TEST_DATA) / "golden" / "tiny-qwen3";
  const std::string cache = MakeTinyKdCache(daemon, dir, 32);
  if (cache.empty()) return -1;

  v1::JobSpec spec;
  v1::QatSpec* q = spec.mutable_qat();
  q->set_model(model.string());
  q->set_kd_cache_dir(cache);
  q->set_train_scales(true);
  q->set_lr(1e-3);
  q->set_max_steps(30);
  q->set_batch_size(4);
  q->set_eval_samples(8);
  q->set_eval_steps(10);
  q->set_logging_steps(2);
  q->set_hard_top1_weight(0.1);
  q->set_snap_weights(true);  // reports snap/relative_error
  q->set_dtype(v1::DTYPE_FP32);
  q->mutable_quant()->set_lut_size(4);
  q->mutable_quant()->set_group_size(16);
  v1::Job qat = RunToEnd(daemon, spec, 300s);
  EXPECT_EQ(qat.state(), v1::JOB_STATE_SUCCEEDED) << qat.ShortDebugString();
  return qat.state() == v1::JOB_STATE_SUCCEEDED ? qat.id() : -1;
}

TEST(ObservabilityE2eTest, EveryDashboardAndAlertQueryReturnsDataFromARealQatd) {
  if (!fs::exists("/usr/bin/prometheus") || !fs::exists("/usr/bin/promtool")) {
    GTEST_SKIP() << "needs /usr/bin/prometheus and /usr/bin/promtool (Debian package prometheus)";
  }
  const fs::path rules = kDeploy / "prometheus" / "rules" / "qatd.rules.yml";
  {  // The files as shipped.
    auto [config_rc, config_out] = RunShell("promtool check config " + (kDeploy / "prometheus" / "prometheus.yml").string());
    EXPECT_EQ(config_rc, 0) << config_out;
    EXPECT_THAT(config_out, HasSubstr("1 rule files found"));
    auto [rules_rc, rules_out] = RunShell("promtool check rules " + rules.string());
    EXPECT_EQ(rules_rc, 0) << rules_out;
    // When each alert fires and when it does not (synthetic series).
    auto [unit_rc, unit_out] = RunShell("cd " + rules.parent_path().string() + " && promtool test rules qatd.rules.test.yml");
    EXPECT_EQ(unit_rc, 0) << unit_out;
  }

  qatd::testing::TempDir dir;
  DaemonConfig config;
  config.data_dir = dir.File("data");
  config.max_concurrent_jobs = 2;
  config.extra_args = {"--gpu-poll-seconds", "1"};  // two device samples give a utilisation
  Daemon daemon(config);
  ASSERT_TRUE(daemon.Start());

  // deploy/prometheus/prometheus.yml pointed at this qatd, scraping every second, its rules by
  // absolute path.
  std::string prom_config = ReadAll(kDeploy / "prometheus" / "prometheus.yml");
  ASSERT_THAT(prom_config, HasSubstr("127.0.0.1:9464"));
  ASSERT_THAT(prom_config, HasSubstr("rules/qatd.rules.yml"));
  prom_config = ReplaceAll(prom_config, "127.0.0.1:9464", "127.0.0.1:" + std::to_string(daemon.metrics_port()));
  prom_config = ReplaceAll(prom_config, "rules/qatd.rules.yml", rules.string());
  prom_config = std::regex_replace(prom_config, std::regex(R"((scrape|evaluation)_interval: *\w+)"), "$1_interval: 1s");
  const fs::path prom_dir = dir.path() / "prometheus";
  fs::create_directories(prom_dir);
  std::ofstream(prom_dir / "prometheus.yml") << prom_config;
  auto [check_rc, check_out] = RunShell("promtool check config " + (prom_dir / "prometheus.yml").string());
  ASSERT_EQ(check_rc, 0) << check_out;
  int port = 0;
  std::unique_ptr<ChildProcess> prometheus = StartPrometheus(prom_dir, prom_dir / "prometheus.yml", &port);
  ASSERT_NE(prometheus, nullptr);
  PrometheusApi api(port);
  std::string error;
  // Scraping before the jobs run, so counters have their 0 before the increments.
  ASSERT_TRUE(PollUntil([&] { return !api.Query("qatd_build_info", &error).empty(); }, 120s))
      << error << ReadFileOrEmpty((prom_dir / "prometheus.log").string());

  const int64_t job_id = RunShortQatJob(daemon, dir);
  ASSERT_GT(job_id, 0);
  const std::string job = "{job_id=\"" + std::to_string(job_id) + "\"}";
  // The ended job's final values stay on /metrics (--metrics-retention); wait until Prometheus
  // has scraped them.
  ASSERT_TRUE(PollUntil(
      [&] {
        return !api.Query("qatd_job_running" + job + " == 0", &error).empty() &&
               !api.Query("qatd_job_eval_perplexity" + job, &error).empty();
      },
      120s))
      << error;
  // promtool lints the exposition text qatd serves.
  std::optional<std::string> metrics = HttpGet(daemon.metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.has_value());
  std::ofstream(dir.File("metrics.txt")) << *metrics;
  auto [lint_rc, lint_out] = RunShell("promtool check metrics < " + dir.File("metrics.txt"));
  EXPECT_EQ(lint_rc, 0) << lint_out;
  EXPECT_THAT(*metrics, ::testing::Not(HasSubstr("{job=")));

  // Every target of every dashboard.
  int dashboards = 0;
  int expressions = 0;
  for (const auto& entry : fs::directory_iterator(kDeploy / "grafana")) {
    if (entry.path().extension() != ".json") continue;
    ++dashboards;
    SCOPED_TRACE(entry.path().filename().string());
    nlohmann::json dashboard = nlohmann::json::parse(ReadAll(entry.path()), nullptr, false);
    ASSERT_FALSE(dashboard.is_discarded());
    for (const auto& variable : dashboard["templating"]["list"]) {  // label_values(metric, label)
      std::smatch m;
      const std::string query = variable["query"].is_object() ? variable["query"].value("query", "")
                                                               : variable.value("query", "");
      ASSERT_TRUE(std::regex_match(query, m, std::regex(R"(label_values\((\w+), *(\w+)\))"))) << query;
      nlohmann::json values = api.Get("/api/v1/label/" + m[2].str() + "/values?match[]=" + m[1].str(), &error);
      ASSERT_FALSE(values.is_discarded()) << error;
      if (m[2] == "job_id") EXPECT_THAT(values.dump(), HasSubstr("\"" + std::to_string(job_id) + "\""));
    }
    for (const auto& panel : dashboard["panels"]) {
      EXPECT_EQ(panel["datasource"].value("uid", ""), "prometheus") << panel.value("title", "");
      for (const auto& target : panel["targets"]) {
        const std::string expr = ExpandVariables(target.value("expr", ""), job_id);
        SCOPED_TRACE(panel.value("title", "") + ": " + expr);
        ++expressions;
        nlohmann::json result;
        // A rate() window may need a few more scrapes; an error or no data for 30 s fails.
        PollUntil(
            [&] {
              error.clear();
              result = api.Query(expr, &error);
              return error.empty() && !result.empty();
            },
            30s);
        EXPECT_TRUE(error.empty()) << error;
        EXPECT_FALSE(result.empty()) << "no data";
        for (const std::string& label : LegendLabels(target.value("legendFormat", ""))) {
          for (const auto& series : result) {
            EXPECT_TRUE(series["metric"].contains(label)) << "legend {{" << label << "}}: " << series["metric"].dump();
          }
        }
      }
    }
  }
  EXPECT_GE(dashboards, 2);
  EXPECT_GE(expressions, 20);

  // Every rule Prometheus loaded from the rule file: no evaluation error, and the query under
  // the alert's threshold has data.
  nlohmann::json groups;
  ASSERT_TRUE(PollUntil(
      [&] {
        groups = api.Get("/api/v1/rules", &error);
        if (groups.is_discarded() || groups["groups"].empty()) return false;
        for (const auto& rule : groups["groups"][0]["rules"]) {
          if (rule.value("health", "") != "ok") return false;  // "unknown" until evaluated
        }
        return true;
      },
      60s))
      << (groups.is_discarded() ? error : groups.dump());
  int alerts = 0;
  static const std::regex kThreshold(R"(^(.*\S)\s*(==|!=|>=|<=|>|<)\s*([-+0-9.eE]+)$)");
  for (const auto& group : groups["groups"]) {
    for (const auto& rule : group["rules"]) {
      const std::string query = rule.value("query", "");
      SCOPED_TRACE(rule.value("name", "") + ": " + query);
      ++alerts;
      std::smatch m;
      ASSERT_TRUE(std::regex_match(query, m, kThreshold)) << "not <query> <comparison> <threshold>";
      error.clear();
      api.Query(query, &error);  // may be empty: the alert is not firing
      EXPECT_TRUE(error.empty()) << error;
      EXPECT_FALSE(api.Query(m[1].str(), &error).empty()) << "no data under the threshold; " << error;
    }
  }
  EXPECT_EQ(alerts, 4);
  EXPECT_TRUE(PollUntil([&] { return api.Query("ALERTS", &error).empty(); }, 1s)) << "an alert fires on a healthy qatd";

  prometheus->Signal(SIGTERM);
  EXPECT_TRUE(prometheus->Wait(60s).has_value());
}

// `--version` of the three binaries: one string, the version and commit of qatd_build_info.
TEST(ObservabilityE2eTest, VersionFlagsMatchBuildInfo) {
  auto [qatd_rc, qatd_out] = RunShell(std::string(QATD_BINARY) + " --version");
  auto [worker_rc, worker_out] = RunShell(std::string(QATD_WORKER_BINARY) + " --version");
  auto [qat_rc, qat_out] = RunShell(std::string(QAT_BINARY) + " --version");
  EXPECT_EQ(qatd_rc, 0) << qatd_out;
  EXPECT_EQ(worker_rc, 0) << worker_out;
  EXPECT_EQ(qat_rc, 0) << qat_out;
  std::smatch m;
  ASSERT_TRUE(std::regex_match(qatd_out, m, std::regex(R"(qatd (([^ ]+) \(git ([^,]+), torch [^,]+, cuda [^)]+\))\n)")))
      << qatd_out;
  const std::string line = m[1];
  const std::string version = m[2];
  const std::string git_sha = m[3];
  EXPECT_EQ(worker_out, "qatd-worker " + line + "\n");
  EXPECT_EQ(qat_out, "qat " + line + "\n");

  qatd::testing::TempDir dir;
  DaemonConfig config;
  config.data_dir = dir.File("data");
  Daemon daemon(config);
  ASSERT_TRUE(daemon.Start());
  std::optional<std::string> metrics = HttpGet(daemon.metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.has_value());
  std::smatch info;
  ASSERT_TRUE(std::regex_search(*metrics, info, std::regex(R"(qatd_build_info\{([^}]*)\} 1)"))) << *metrics;
  EXPECT_THAT(info[1].str(), HasSubstr("git_sha=\"" + git_sha + "\""));
  EXPECT_THAT(info[1].str(), HasSubstr("version=\"" + version + "\""));
}

}  // namespace
}  // namespace qatd::e2e
