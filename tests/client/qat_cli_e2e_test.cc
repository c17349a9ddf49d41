// The real `qat` binary against the real `qatd` (one daemon per test process, with a token;
// tests/e2e/e2e_support.h). Each call runs `qat` as a child process and checks its stdout,
// stderr and exit code (0 ok, 1 job failed / RPC error, 2 usage / validation, 3 unreachable).
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/e2e/e2e_support.h"

namespace qatd::client {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

struct QatResult {
  int exit_code = -1;  // -1: killed after the timeout
  std::string out;
  std::string err;
};

std::atomic<int> g_runs{0};

// One `qat` child process: argv after the program name, environment overrides (an empty
// value unsets the variable), optional stdin text; stdout/stderr go to files under `dir`.
class QatProcess {
 public:
  QatProcess(const std::vector<std::string>& args, const std::map<std::string, std::string>& env,
             const std::string& dir, const std::string& stdin_text = "") {
    const std::string base = dir + "/qat-run-" + std::to_string(++g_runs);
    out_file_ = base + ".out";
    err_file_ = base + ".err";
    const std::string in_file = base + ".in";
    std::ofstream(in_file) << stdin_text;
    std::vector<std::string> argv = {QAT_BINARY};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> cargs;
    for (std::string& a : argv) cargs.push_back(a.data());
    cargs.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      for (const auto& [name, value] : env) {
        if (value.empty()) {
          ::unsetenv(name.c_str());
        } else {
          ::setenv(name.c_str(), value.c_str(), 1);
        }
      }
      const int in = ::open(in_file.c_str(), O_RDONLY);
      const int out = ::open(out_file_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int err = ::open(err_file_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(in, 0);
      ::dup2(out, 1);
      ::dup2(err, 2);
      ::execv(cargs[0], cargs.data());
      ::_exit(127);
    }
  }
  ~QatProcess() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  QatResult Wait(std::chrono::seconds timeout = std::chrono::seconds(180)) {
    QatResult result;
    int status = 0;
    const bool exited = e2e::PollUntil([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; }, timeout);
    if (!exited) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
    }
    reaped_ = true;
    if (exited && WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
    result.out = e2e::ReadFileOrEmpty(out_file_);
    result.err = e2e::ReadFileOrEmpty(err_file_);
    return result;
  }

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  std::string out_file_, err_file_;
};

std::ostream& operator<<(std::ostream& os, const QatResult& r) {
  return os << "exit " << r.exit_code << "\n--- stdout\n" << r.out << "--- stderr\n" << r.err;
}

class QatCliTest : public e2e::DaemonE2eTest {
 protected:
  // The daemon's address and token through the environment, as a user would set them.
  std::map<std::string, std::string> Env() const {
    return {{"QATD_ADDRESS", "127.0.0.1:" + std::to_string(daemon_->port())},
            {"QATD_TOKEN", e2e::kToken},
            {"NO_COLOR", "1"}};
  }

  QatResult Qat(const std::vector<std::string>& args, std::map<std::string, std::string> env_overrides = {},
                const std::string& stdin_text = "") {
    std::map<std::string, std::string> env = Env();
    for (const auto& [k, v] : env_overrides) env[k] = v;
    QatProcess process(args, env, dir_->path().string(), stdin_text);
    return process.Wait();
  }

  std::unique_ptr<QatProcess> Start(const std::vector<std::string>& args) {
    return std::make_unique<QatProcess>(args, Env(), dir_->path().string());
  }

  // The id in "submitted job N" / "submitted pipeline N".
  static int64_t SubmittedId(const std::string& out, const std::string& what = "job") {
    std::smatch m;
    const std::regex re("submitted " + what + " ([0-9]+)");
    if (!std::regex_search(out, m, re)) {
      ADD_FAILURE() << "no 'submitted " << what << " N' in:\n" << out;
      return 0;
    }
    return std::stoll(m[1]);
  }

  // A finished probe with `steps` steps (for the read-only commands).
  int64_t FinishedProbe(int steps) {
    const QatResult r = Qat({"probe", "--steps", std::to_string(steps), "--step-ms", "5", "--wait"});
    EXPECT_EQ(r.exit_code, 0) << r;
    return SubmittedId(r.out);
  }

  std::string MakeFile(const std::string& name, const std::string& text) {
    const std::string path = dir_->File(name);
    std::ofstream(path) << text;
    return path;
  }
};

TEST_F(QatCliTest, ServerAndHelp) {
  QatResult r = Qat({"server"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.out, HasSubstr("qatd "));
  EXPECT_THAT(r.out, HasSubstr("PROBE"));
  EXPECT_THAT(r.out, HasSubstr("KD_CACHE"));
  EXPECT_THAT(r.out, HasSubstr("DEVICE"));

  r = Qat({"--json", "server"});
  ASSERT_EQ(r.exit_code, 0) << r;
  const nlohmann::json info = nlohmann::json::parse(r.out);
  EXPECT_TRUE(info.contains("version"));
  EXPECT_TRUE(info["availableKinds"].is_array());

  r = Qat({"--help"});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.out, HasSubstr("pipeline"));
  EXPECT_THAT(r.out, Not(HasSubstr("probe ")));  // hidden: for tests
  r = Qat({"train", "--help"});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.out, HasSubstr("--lut-size"));
  EXPECT_THAT(r.out, HasSubstr("Example:"));

  // Issue #17.7: unknown commands said only "A subcommand is required".
  r = Qat({"rm", "13"});
  EXPECT_EQ(r.exit_code, 2) << r;
  EXPECT_THAT(r.err, HasSubstr("unknown command 'rm' for 'qat' (commands: "));
  EXPECT_THAT(r.err, HasSubstr("watch"));
  r = Qat({"pipeline", "rm", "3"});
  EXPECT_EQ(r.exit_code, 2) << r;
  EXPECT_THAT(r.err, HasSubstr("unknown command 'rm' for 'qat pipeline' (commands: run, status, list, cancel)"));
}

TEST_F(QatCliTest, ProbeLifecycle) {
  QatResult r = Qat({"probe", "--steps", "5", "--step-ms", "10", "--name", "smoke"});
  ASSERT_EQ(r.exit_code, 0) << r;
  const int64_t id = SubmittedId(r.out);
  const std::string sid = std::to_string(id);

  r = Qat({"watch", sid});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.out, HasSubstr("5/5 steps"));
  EXPECT_THAT(r.out, HasSubstr("loss/kd"));
  EXPECT_THAT(r.out, HasSubstr("job " + sid + " SUCCEEDED"));

  r = Qat({"status", sid});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.out, HasSubstr("SUCCEEDED"));
  EXPECT_THAT(r.out, HasSubstr("smoke"));
  EXPECT_THAT(r.out, HasSubstr("probe {"));
  EXPECT_THAT(r.out, HasSubstr("loss/kd=0.2"));

  r = Qat({"--json", "status", sid});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(nlohmann::json::parse(r.out)["state"], "JOB_STATE_SUCCEEDED");

  r = Qat({"jobs"});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.out, HasSubstr("ID"));
  EXPECT_THAT(r.out, HasSubstr("PROGRESS"));
  EXPECT_THAT(r.out, HasSubstr("PROBE"));
  EXPECT_THAT(r.out, HasSubstr("smoke"));
  r = Qat({"jobs", "--state", "succeeded", "--kind", "probe"});
  EXPECT_THAT(r.out, HasSubstr("smoke")) << r;
  r = Qat({"jobs", "--state", "queued,failed"});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.out, Not(HasSubstr("smoke")));
  r = Qat({"jobs", "--state", "sleeping"});
  EXPECT_EQ(r.exit_code, 2) << r;
  EXPECT_THAT(r.err, HasSubstr("--state"));

  // Paging: a second job, then one job per page.
  FinishedProbe(1);
  r = Qat({"jobs", "--limit", "1"});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.err, HasSubstr("--page-token"));
  r = Qat({"--json", "jobs", "--limit", "1", "--all"});
  ASSERT_EQ(r.exit_code, 0) << r;
  const nlohmann::json listing = nlohmann::json::parse(r.out);
  ASSERT_GE(listing["jobs"].size(), 2u);
  EXPECT_FALSE(listing.contains("nextPageToken"));

  r = Qat({"logs", sid});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.out, HasSubstr("probe: 5 steps of 10 ms"));
  r = Qat({"logs", sid, "-f"});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.out, HasSubstr("probe: 5 steps"));

  r = Qat({"curve", sid, "--csv"});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.out, HasSubstr("series,step,value\nloss/kd,1,1\nloss/kd,2,0.5\n"));
  EXPECT_THAT(r.out, HasSubstr("loss/kd,5,0.2"));
  r = Qat({"curve", sid});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.out, HasSubstr("loss/kd"));
  EXPECT_THAT(r.out, HasSubstr("step"));
  // Issue #17.6: a name that does not exist lists the ones that do.
  r = Qat({"curve", sid, "--metric", "nope"});
  EXPECT_NE(r.exit_code, 0) << r;
  EXPECT_THAT(r.err, HasSubstr("has no series named nope; it has: loss/kd"));
  const std::string png = dir_->File("loss.png");
  r = Qat({"curve", sid, "--png", png});
  EXPECT_EQ(r.exit_code, 0) << r;
  const std::string bytes = e2e::ReadFileOrEmpty(png);
  ASSERT_GT(bytes.size(), 100u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_EQ(bytes.substr(12, 4), "IHDR");

  r = Qat({"artifacts", sid});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.out, HasSubstr("probe.txt"));
  EXPECT_THAT(r.out, HasSubstr("SHA256"));
  r = Qat({"--json", "artifacts", sid});
  ASSERT_EQ(r.exit_code, 0) << r;
  const nlohmann::json artifacts = nlohmann::json::parse(r.out);
  ASSERT_EQ(artifacts["artifacts"].size(), 1u);
  EXPECT_EQ(artifacts["artifacts"][0]["kind"], "probe");
}

TEST_F(QatCliTest, WaitWithJsonStreamsEvents) {
  const QatResult r = Qat({"--json", "probe", "--steps", "3", "--step-ms", "5", "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r;
  std::istringstream lines(r.out);
  std::string line;
  int events = 0;
  bool succeeded = false;
  while (std::getline(lines, line)) {
    const nlohmann::json j = nlohmann::json::parse(line);  // every line is one JSON object
    ++events;
    // The first line is the submitted Job (state is a string); then JobEvents.
    if (j.contains("state") && j["state"].is_object() && j["state"].value("to", "") == "JOB_STATE_SUCCEEDED") {
      succeeded = true;
    }
  }
  EXPECT_GE(events, 5);
  EXPECT_TRUE(succeeded) << r;
}

TEST_F(QatCliTest, FailedJobExitsNonZero) {
  const QatResult r = Qat({"probe", "--steps", "1", "--fail", "--wait"});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_THAT(r.out, HasSubstr("FAILED"));
  EXPECT_THAT(r.out, HasSubstr("probe failure requested"));
}

// Issue #14.10: nothing was ever deleted. `qat jobs` / `qat status` show what a job takes on
// disk; `qat delete` and `qat prune` free it.
TEST_F(QatCliTest, DeleteAndPruneFinishedJobs) {
  const int64_t done = FinishedProbe(2);
  const std::string sid = std::to_string(done);
  QatResult r = Qat({"jobs"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.out, HasSubstr("DISK"));
  EXPECT_THAT(r.out, ::testing::ContainsRegex(sid + " +PROBE +SUCCEEDED .* [0-9.]+ KiB"));
  r = Qat({"status", sid});
  EXPECT_THAT(r.out, HasSubstr("(qat delete " + sid + " frees it)"));

  r = Qat({"prune", "--older-than", "soon"});
  EXPECT_EQ(r.exit_code, 2) << r;
  EXPECT_THAT(r.err, HasSubstr("--older-than: 'soon' is not a duration"));
  r = Qat({"prune", "--older-than", "1s", "--state", "running"});
  EXPECT_EQ(r.exit_code, 2) << r;
  EXPECT_THAT(r.err, HasSubstr("'running' is not a finished state"));
  r = Qat({"prune", "--older-than", "7d", "--state", "succeeded", "--dry-run"});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.out, HasSubstr("nothing to delete"));

  r = Qat({"delete", sid, "--dry-run"});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.out, HasSubstr("would delete job " + sid + " (SUCCEEDED)"));
  EXPECT_EQ(Qat({"status", sid}).exit_code, 0) << "a dry run deletes nothing";
  r = Qat({"delete", sid});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.out, HasSubstr("deleted 1 job(s)"));
  r = Qat({"status", sid});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_THAT(r.err, HasSubstr("not found"));

  auto running = Start({"probe", "--steps", "100000", "--step-ms", "20", "--wait"});
  int64_t live = 0;
  ASSERT_TRUE(e2e::PollUntil(
      [&] {
        const QatResult jobs = Qat({"jobs", "--state", "running"});
        std::smatch m;
        if (!std::regex_search(jobs.out, m, std::regex("\\n([0-9]+) +PROBE +RUNNING"))) return false;
        live = std::stoll(m[1]);
        return true;
      },
      std::chrono::seconds(30)));
  r = Qat({"delete", std::to_string(live)});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_THAT(r.err, HasSubstr("is RUNNING: cancel it first (qat cancel " + std::to_string(live) + ")"));
  EXPECT_EQ(Qat({"cancel", std::to_string(live)}).exit_code, 0);
  running->Wait();
  ASSERT_TRUE(e2e::PollUntil(
      [&] {
        r = Qat({"prune", "--older-than", "1s"});
        return r.exit_code == 0 && r.out.find("deleted job " + std::to_string(live) + " (CANCELLED)") != std::string::npos;
      },
      std::chrono::seconds(20)))
      << r;
}

TEST_F(QatCliTest, CancelRunningProbeEndsWatch) {
  QatResult r = Qat({"probe", "--steps", "100000", "--step-ms", "100"});
  ASSERT_EQ(r.exit_code, 0) << r;
  const int64_t id = SubmittedId(r.out);
  // Running, and past its first step (so its first log line is stored).
  WaitFor(*daemon_, id,
          [](const v1::Job& job) { return job.state() == v1::JOB_STATE_RUNNING && job.progress().done() >= 1; });
  auto watch = Start({"watch", std::to_string(id)});

  // Stored history only: returns while the job keeps running.
  r = Qat({"logs", std::to_string(id)});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.out, HasSubstr("probe: 100000 steps"));
  EXPECT_EQ(Get(*daemon_, id).state(), v1::JOB_STATE_RUNNING);

  r = Qat({"cancel", std::to_string(id), "--reason", "test over"});
  EXPECT_EQ(r.exit_code, 0) << r;
  const QatResult watched = watch->Wait();
  EXPECT_EQ(watched.exit_code, 1) << watched;
  EXPECT_THAT(watched.out, HasSubstr("CANCELLED"));
  EXPECT_EQ(Get(*daemon_, id).state(), v1::JOB_STATE_CANCELLED);
}

TEST_F(QatCliTest, ErrorPaths) {
  QatResult r = Qat({"status", "999999"});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_THAT(r.err, HasSubstr("NOT_FOUND"));

  r = Qat({"train", "--dtype", "bf17"});
  EXPECT_EQ(r.exit_code, 2) << r;
  EXPECT_THAT(r.err, HasSubstr("--dtype"));
  EXPECT_THAT(r.err, HasSubstr("bf17"));

  r = Qat({"server"}, {{"QATD_ADDRESS", "127.0.0.1:" + std::to_string(e2e::FreeLoopbackPort())}});
  EXPECT_EQ(r.exit_code, 3) << r;
  EXPECT_THAT(r.err, HasSubstr("cannot reach qatd"));
  EXPECT_THAT(r.err, HasSubstr("is the daemon running?"));
  r = Qat({"watch", "1"}, {{"QATD_ADDRESS", "127.0.0.1:" + std::to_string(e2e::FreeLoopbackPort())}});
  EXPECT_EQ(r.exit_code, 3) << r;  // streams notice it too

  r = Qat({"server", "--token", "wrong"});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_THAT(r.err, HasSubstr("token"));
  EXPECT_THAT(r.err, HasSubstr("--token"));
  r = Qat({"jobs"}, {{"QATD_TOKEN", ""}});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_THAT(r.err, HasSubstr("token"));
  const std::string token_file = MakeFile("token.txt", std::string(e2e::kToken) + "\n");
  r = Qat({"server", "--token-file", token_file}, {{"QATD_TOKEN", ""}});
  EXPECT_EQ(r.exit_code, 0) << r;

  // A spec the daemon rejects: INVALID_ARGUMENT naming the field, exit 2.
  const std::string model = dir_->File("model");
  std::filesystem::create_directories(model);
  r = Qat({"cache", "--model", model});
  EXPECT_EQ(r.exit_code, 2) << r;
  EXPECT_THAT(r.err, HasSubstr("spec.kd_cache.dataset"));
  EXPECT_THAT(r.err, HasSubstr("--dataset"));
  r = Qat({"train", "--model", model, "--kd-cache", model, "--train-scales", "--lut-size", "12"});
  EXPECT_EQ(r.exit_code, 2) << r;
  EXPECT_THAT(r.err, HasSubstr("lut_size"));
}

TEST_F(QatCliTest, InferStreamsOrReportsTheJobError) {
  const std::string model = dir_->File("model");
  std::filesystem::create_directories(model);
  // No real model here: the GENERATE job fails (unavailable in this build, or no config.json);
  // the stream ends with that status and qat reports it.
  QatResult r = Qat({"infer", "--model", model, "--prompt", "What is 2+2?"});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_THAT(r.err, HasSubstr("qat: "));
  r = Qat({"infer", "--model", model, "--interactive"}, {}, "hello\nquit\n");
  EXPECT_EQ(r.exit_code, 1) << r;
  r = Qat({"infer", "--model", model});
  EXPECT_EQ(r.exit_code, 2) << r;  // the daemon requires a prompt
  EXPECT_THAT(r.err, HasSubstr("prompt"));
}

TEST_F(QatCliTest, PipelineRecipesAndFiles) {
  const std::string model = dir_->File("model");
  std::filesystem::create_directories(model);
  const std::string dataset = MakeFile("data.txt", "hello world\n");

  QatResult r = Qat({"pipeline", "run", "q4", "--model", model, "--dataset", dataset, "--print"});
  ASSERT_EQ(r.exit_code, 0) << r;
  for (const char* stage : {"\"cache\"", "\"scales\"", "\"weights\"", "\"both\"", "\"snap\"", "\"infer\""}) {
    EXPECT_THAT(r.out, HasSubstr(stage));
  }
  r = Qat({"pipeline", "run", "q5"});
  EXPECT_EQ(r.exit_code, 2) << r;
  r = Qat({"pipeline", "run", "q4", "--dataset", dataset, "--print"});
  EXPECT_EQ(r.exit_code, 2) << r;
  EXPECT_THAT(r.err, HasSubstr("--model"));

  // The daemon accepts the recipe's DAG (it validates stages, inputs and paths).
  r = Qat({"pipeline", "run", "q4", "--model", model, "--dataset", dataset, "--steps-scale", "0.01"});
  ASSERT_EQ(r.exit_code, 0) << r;
  const int64_t q4 = SubmittedId(r.out, "pipeline");
  r = Qat({"pipeline", "status", std::to_string(q4)});
  EXPECT_EQ(r.exit_code, 0) << r;
  for (const char* stage : {"cache", "scales", "weights", "both", "snap", "infer"})
    EXPECT_THAT(r.out, HasSubstr(stage));
  r = Qat({"--json", "pipeline", "status", std::to_string(q4)});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(nlohmann::json::parse(r.out)["jobs"].size(), 6u);

  r = Qat({"pipeline", "run", "q2", "--model", model, "--kd-cache", model, "--print"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.out, HasSubstr("v2_checkpoint"));
  EXPECT_THAT(r.out, Not(HasSubstr("\"cache\"")));
  r = Qat({"pipeline", "run", "q2", "--model", model, "--dataset", dataset});
  ASSERT_EQ(r.exit_code, 0) << r;
  const int64_t q2 = SubmittedId(r.out, "pipeline");
  r = Qat({"pipeline", "status", std::to_string(q2)});
  EXPECT_EQ(r.exit_code, 0) << r;
  for (const char* stage : {"cache", "scales", "convert", "v2", "snap", "infer"}) EXPECT_THAT(r.out, HasSubstr(stage));

  // A PipelineSpec file of two probes.
  const std::string file = MakeFile("probes.textproto", R"(
name: "two-probes"
stages { name: "a" spec { probe { steps: 2 step_ms: 5 } } }
stages { name: "b" depends_on: "a" spec { probe { steps: 3 step_ms: 5 } } }
)");
  r = Qat({"pipeline", "run", file, "--wait"});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.out, HasSubstr("two-probes"));
  EXPECT_THAT(r.out, HasSubstr("loss/kd=0.5"));  // stage a's final metric
  EXPECT_THAT(r.out, Not(HasSubstr("FAILED")));
  // --wait on a failing pipeline: exit 1 and the table names the failures.
  const std::string failing = MakeFile("failing.textproto", R"(
name: "fails"
stages { name: "a" spec { probe { steps: 1 fail: true } } }
stages { name: "b" depends_on: "a" spec { probe { steps: 1 } } }
)");
  r = Qat({"pipeline", "run", failing, "--wait"});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_THAT(r.out, HasSubstr("STAGE"));
  EXPECT_THAT(r.out, HasSubstr("probe failure requested"));
  EXPECT_THAT(r.out, HasSubstr("dependency job"));
  const std::string bad = MakeFile("bad.textproto", "stages { nme: 1 }\n");
  r = Qat({"pipeline", "run", bad});
  EXPECT_EQ(r.exit_code, 2) << r;
  EXPECT_THAT(r.err, HasSubstr("line 1"));
}

// Issue #17, item 1: the README's `qat pipeline run q4 --model ./tiny --dataset alpaca.json`
// sent dataset_format plain, and all six stages failed in the worker. The daemon now detects
// the format; a wrong one fails at submit, naming the field and the flag.
TEST_F(QatCliTest, DatasetFormatIsDetectedOrRefusedAtSubmit) {
  const std::string model = dir_->File("model");
  std::filesystem::create_directories(model);
  const std::string alpaca = MakeFile("alpaca.json", R"([{"instruction": "Say hi", "input": "", "output": "hi"}])");
  QatResult r = Qat({"pipeline", "run", "q4", "--model", model, "--dataset", alpaca, "--steps-scale", "0.01"});
  ASSERT_EQ(r.exit_code, 0) << r;
  r = Qat({"pipeline", "run", "q4", "--model", model, "--dataset", alpaca, "--dataset-format", "plain"});
  EXPECT_EQ(r.exit_code, 2) << r;
  EXPECT_THAT(r.err, HasSubstr("spec.stages[0].spec.kd_cache.dataset_format plain does not fit the dataset: " + alpaca +
                               "[0]: missing string field 'text' (the records look like alpaca_chat)"));
  EXPECT_THAT(r.err, HasSubstr("(flag --dataset-format)"));
  r = Qat({"cache", "--model", model, "--dataset", alpaca, "--dataset-format", "sharegpt"});
  EXPECT_EQ(r.exit_code, 2) << r;
  EXPECT_THAT(r.err, HasSubstr("spec.kd_cache.dataset_format sharegpt does not fit the dataset"));
  EXPECT_THAT(r.err, HasSubstr("(flag --dataset-format)"));
  const std::string odd = MakeFile("odd.jsonl", "{\"question\": \"a\"}\n");
  r = Qat({"cache", "--model", model, "--dataset", odd});
  EXPECT_EQ(r.exit_code, 2) << r;
  EXPECT_THAT(r.err, HasSubstr("spec.kd_cache.dataset_format cannot be detected from the dataset"));
  EXPECT_THAT(r.err, HasSubstr("(flag --dataset-format)"));
}

// Issue #17, item 7: the 100% progress line printed up to three times (on the last step, then
// again for the metrics that followed it). Steps 1.1 s apart get past the 1 s throttle.
TEST_F(QatCliTest, TheCompleteProgressLinePrintsOnce) {
  const QatResult r = Qat({"probe", "--steps", "2", "--step-ms", "1100", "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r;
  size_t count = 0;
  for (size_t at = r.out.find("2/2 steps (100%)"); at != std::string::npos; at = r.out.find("2/2 steps (100%)", at + 1)) {
    ++count;
  }
  EXPECT_EQ(count, 1u) << r;
  EXPECT_THAT(r.out, HasSubstr("2/2 steps (100%)  loss/kd 0.5"));  // with the last step's metric
}

// Issue #17, item 7: `qat pipeline list` and `qat pipeline cancel` did not exist ("A
// subcommand is required").
TEST_F(QatCliTest, PipelineListAndCancel) {
  const std::string file = MakeFile("slow.textproto", R"(
name: "slow-probes"
stages { name: "a" spec { probe { steps: 1000 step_ms: 100 } } }
stages { name: "b" depends_on: "a" spec { probe { steps: 1 } } }
)");
  QatResult r = Qat({"pipeline", "run", file});
  ASSERT_EQ(r.exit_code, 0) << r;
  const int64_t id = SubmittedId(r.out, "pipeline");
  r = Qat({"pipeline", "list"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.out, HasSubstr("STAGES"));
  EXPECT_TRUE(std::regex_search(r.out, std::regex("(^|\\n)" + std::to_string(id) + " +slow-probes +(QUEUED|RUNNING) +0/2")))
      << r;
  r = Qat({"--json", "pipeline", "list", "--limit", "1"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(nlohmann::json::parse(r.out)["id"], std::to_string(id));

  r = Qat({"pipeline", "cancel", std::to_string(id)});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.out, HasSubstr("pipeline " + std::to_string(id) + ": cancel requested for 2 job(s)"));
  EXPECT_TRUE(e2e::PollUntil(
      [&] {
        const QatResult s = Qat({"pipeline", "status", std::to_string(id)});
        return s.out.find("RUNNING") == std::string::npos && s.out.find("QUEUED") == std::string::npos;
      },
      std::chrono::seconds(60)));
  r = Qat({"pipeline", "status", std::to_string(id)});
  EXPECT_THAT(r.out, HasSubstr("CANCELLED")) << r;
  // A second cancel finds nothing left to stop.
  r = Qat({"pipeline", "cancel", std::to_string(id)});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.out, HasSubstr("cancel requested for 0 job(s); 2 already finished"));
  r = Qat({"pipeline", "cancel", "999999"});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_THAT(r.err, HasSubstr("NOT_FOUND"));
}

}  // namespace
}  // namespace qatd::client
