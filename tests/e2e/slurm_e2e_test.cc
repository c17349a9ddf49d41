// The Slurm executor against a real Slurm (issue #15): the fixture starts munged, slurmctld and
// slurmd on this host (tests/e2e/slurm/slurm_cluster.sh: one node, 2 CPUs, partition "debug"),
// and a qatd with `--executor slurm`. A 2-task QAT job trains to completion through sbatch/srun
// and ends with the weights of the same job on 2 local ranks; `qat cancel` cancels it (and
// the Slurm job ends); a killed task fails the job naming the task, its node and its exit code;
// a 2-task EVAL job runs, and the data-parallel kinds may ask for several nodes.
// Skipped (with the reason) only where the Slurm and munge binaries are not installed.
#include <signal.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "core/model/safetensors.h"
#include "tests/common/temp_dir.h"
#include "tests/e2e/e2e_support.h"

namespace qatd::e2e {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

const fs::path kScript = fs::path(QATD_SOURCE_DIR) / "tests" / "e2e" / "slurm" / "slurm_cluster.sh";

// What is missing of Slurm and munge on this host ("" = nothing).
std::string MissingSlurmBinaries() {
  std::string missing;
  for (const char* bin : {"munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "scancel", "sinfo"}) {
    bool found = false;
    for (const char* dir : {"/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"}) {
      if (::access((fs::path(dir) / bin).c_str(), X_OK) == 0) found = true;
    }
    if (!found) missing += std::string(missing.empty() ? "" : ", ") + bin;
  }
  return missing;
}

std::pair<int, std::string> RunShell(const std::string& command) {
  std::string out;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return {-1, ""};
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
  const int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The same QAT job as tests/e2e/data_parallel_e2e_test.cc: 20 steps of V1 QAT on `tasks` ranks
// with a per-rank batch of 4 / tasks.
v1::JobSpec QatSpec(const std::string& cache, int tasks, int steps = 20) {
  v1::JobSpec spec;
  spec.mutable_resources()->set_device_count(tasks);
  v1::QatSpec* q = spec.mutable_qat();
  q->set_model(TinyModelDir());
  q->set_kd_cache_dir(cache);
  q->set_train_weights(true);
  q->set_train_scales(true);
  q->set_lr(1e-4);
  q->set_max_steps(steps);
  q->set_batch_size(4 / tasks);
  q->set_eval_samples(8);
  q->set_eval_steps(10);
  q->set_logging_steps(5);
  q->set_save_steps(2);
  q->set_hard_full_weight(0.0005);
  q->set_dtype(v1::DTYPE_FP32);
  q->mutable_quant()->set_lut_size(4);
  q->mutable_quant()->set_group_size(16);
  return spec;
}

std::string CheckpointOf(const v1::Job& job) {
  for (const auto& a : job.artifacts()) {
    if (a.kind() == "checkpoint") return (fs::path(a.path()) / "model.safetensors").string();
  }
  return "";
}

// max over float tensors of ||a - b|| / ||a||; non-float tensors must be equal.
double MaxRelativeDifference(const std::string& a_path, const std::string& b_path, int* compared) {
  auto a = model::SafetensorsFile::Open(a_path);
  auto b = model::SafetensorsFile::Open(b_path);
  EXPECT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(b.ok()) << b.status();
  if (!a.ok() || !b.ok()) return INFINITY;
  double max_rel = 0;
  for (const model::TensorInfo& info : (*a)->tensors()) {
    const model::TensorInfo* other = (*b)->Find(info.name);
    EXPECT_NE(other, nullptr) << info.name;
    if (other == nullptr || other->shape != info.shape) return INFINITY;
    if (info.dtype != model::DType::kF32) {
      EXPECT_EQ(std::memcmp((*a)->DataOf(info), (*b)->DataOf(*other), info.nbytes()), 0) << info.name;
      continue;
    }
    const auto* x = reinterpret_cast<const float*>((*a)->DataOf(info));
    const auto* y = reinterpret_cast<const float*>((*b)->DataOf(*other));
    double diff2 = 0, norm2 = 0;
    for (int64_t i = 0; i < info.numel(); ++i) {
      const double d = static_cast<double>(x[i]) - y[i];
      diff2 += d * d;
      norm2 += static_cast<double>(x[i]) * x[i];
    }
    max_rel = std::max(max_rel, norm2 > 0 ? std::sqrt(diff2 / norm2) : std::sqrt(diff2));
    ++*compared;
  }
  return max_rel;
}

class SlurmE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    missing_ = MissingSlurmBinaries();
    if (!missing_.empty()) return;
    dir_ = new qatd::testing::TempDir();
    auto [rc, out] = RunShell(kScript.string() + " start " + dir_->File("slurm"));
    if (rc != 0) {
      start_error_ = "slurm_cluster.sh start failed (" + std::to_string(rc) + "):\n" + out;
      return;
    }
    ::setenv("SLURM_CONF", dir_->File("slurm/slurm.conf").c_str(), 1);
    DaemonConfig config;
    config.data_dir = dir_->File("data");
    config.max_concurrent_jobs = 1;
    config.extra_args = {"--executor", "slurm", "--worker-transport", "grpc", "--slurm-partition", "debug"};
    config_ = config;
    daemon_ = new Daemon(config);
    if (!daemon_->Start()) start_error_ = "qatd --executor slurm did not start:\n" + daemon_->LogTail();
    cache_ = new std::string(MakeTinyKdCache(*daemon_, *dir_, 48));
  }
  static void TearDownTestSuite() {
    delete daemon_;
    daemon_ = nullptr;
    if (dir_ != nullptr) RunShell(kScript.string() + " stop " + dir_->File("slurm"));
    delete cache_;
    cache_ = nullptr;
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (!missing_.empty()) GTEST_SKIP() << "Slurm is not installed here (missing " << missing_ << "); "
                                        << "apt-get install slurmctld slurmd slurm-client munge";
    ASSERT_TRUE(start_error_.empty()) << start_error_;
    ASSERT_FALSE(cache_->empty()) << "the KD cache job failed (through Slurm)";
  }

  static fs::path JobDir(int64_t id) { return fs::path(dir_->File("data")) / "jobs" / std::to_string(id); }

  // The Slurm job id from the job's "submitted as Slurm job N" log line, or 0.
  static int64_t SlurmJobOf(int64_t id) {
    std::smatch m;
    static const std::regex submitted("submitted as Slurm job ([0-9]+)");
    const std::string text = ReadFile(dir_->File("data/qatd.log"));
    std::string::const_iterator from = text.begin();
    int64_t found = 0;
    const std::regex mine("job " + std::to_string(id) + ": submitted as Slurm job ([0-9]+)");
    while (std::regex_search(from, text.end(), m, mine)) {
      found = std::stoll(m[1].str());
      from = m[0].second;
    }
    return found;
  }

  // Slurm's state of job `slurm_id` (scontrol).
  static std::string SlurmState(int64_t slurm_id) {
    auto [rc, out] = RunShell("scontrol show job -o " + std::to_string(slurm_id));
    std::smatch m;
    static const std::regex state("JobState=([A-Z_]+)");
    return rc == 0 && std::regex_search(out, m, state) ? m[1].str() : "GONE";
  }

  // Waits until `job` has run `steps` steps on its tasks; task 1's pid from the job's worker.log.
  static pid_t Task1Running(int64_t job, int64_t steps) {
    constexpr char kLine[] = "Slurm task 1 of 2 on ";
    pid_t task1 = 0;
    EXPECT_TRUE(PollUntil(
        [&] {
          const v1::Job now = GetJobFrom(*daemon_, job);
          if (JobEnded(now)) return true;
          const std::string log = ReadFile(JobDir(job) / "worker.log");
          const size_t at = log.find(kLine);
          const size_t pid_at = at == std::string::npos ? at : log.find(", pid ", at);
          if (pid_at != std::string::npos) task1 = static_cast<pid_t>(std::atoi(log.c_str() + pid_at + 6));
          return task1 > 0 && now.progress().done() >= steps;
        },
        300s));
    return JobEnded(GetJobFrom(*daemon_, job)) ? 0 : task1;
  }

  inline static std::string missing_;
  inline static std::string start_error_;
  inline static qatd::testing::TempDir* dir_ = nullptr;
  inline static Daemon* daemon_ = nullptr;
  inline static std::string* cache_ = nullptr;
  inline static DaemonConfig config_;
};

TEST_F(SlurmE2eTest, ATwoTaskJobTrainsToCompletionWithTheWeightsOfTheLocalTwoRankJob) {
  v1::Job slurm = RunToEnd(*daemon_, QatSpec(*cache_, 2), 600s);
  ASSERT_EQ(slurm.state(), v1::JOB_STATE_SUCCEEDED) << slurm.error().message();
  const std::string log = ReadFile(JobDir(slurm.id()) / "worker.log");
  EXPECT_THAT(log, HasSubstr("Slurm task 0 of 2"));
  EXPECT_THAT(log, HasSubstr("Slurm task 1 of 2"));
  const int64_t slurm_id = SlurmJobOf(slurm.id());
  ASSERT_GT(slurm_id, 0);
  EXPECT_EQ(SlurmState(slurm_id), "COMPLETED");
  EXPECT_EQ(ReadFile(JobDir(slurm.id()) / "slurm" / std::to_string(slurm_id) / "task-1.exit").substr(0, 2), "1 ");
  // The job view lists the 2 tasks as ranks: the node's host name, the device, each pid and
  // its step time (rank 0 gathered them in one all-reduce).
  ASSERT_EQ(slurm.ranks_size(), 2);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(slurm.ranks(r).rank(), r);
    EXPECT_FALSE(slurm.ranks(r).host().empty());
    EXPECT_EQ(slurm.ranks(r).device(), "cpu");
    EXPECT_GT(slurm.ranks(r).pid(), 0);
    EXPECT_GT(slurm.ranks(r).step_seconds(), 0.0);
  }
  EXPECT_NE(slurm.ranks(0).pid(), slurm.ranks(1).pid());

  // The reference: the same job on 2 local ranks of a daemon with the local executor.
  DaemonConfig config;
  config.data_dir = dir_->File("local");
  Daemon local(config);
  ASSERT_TRUE(local.Start());
  // That daemon runs jobs as local processes: several nodes are refused at submit, with the numbers.
  v1::JobSpec two_nodes = QatSpec(*cache_, 2);
  two_nodes.mutable_resources()->set_nodes(2);
  v1::SubmitJobRequest request;
  *request.mutable_spec() = two_nodes;
  v1::Job refused;
  grpc::Status submitted = local.Stub()->SubmitJob(local.Context().get(), request, &refused);
  EXPECT_EQ(submitted.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(submitted.error_message(), HasSubstr("resources.nodes is 2, but this daemon runs jobs as local processes"));
  v1::Job reference = RunToEnd(local, QatSpec(*cache_, 2), 600s);
  ASSERT_EQ(reference.state(), v1::JOB_STATE_SUCCEEDED) << reference.error().message();
  int compared = 0;
  const double rel = MaxRelativeDifference(CheckpointOf(reference), CheckpointOf(slurm), &compared);
  std::printf("[ slurm ] 2 Slurm tasks vs 2 local ranks after 20 steps: relative L2 weight difference %.3g over %d "
              "tensors\n", rel, compared);
  EXPECT_GT(compared, 4);
  EXPECT_LE(rel, 1e-6);
  EXPECT_NEAR(reference.result().metrics().at("eval/kd_best"), slurm.result().metrics().at("eval/kd_best"),
              1e-5 * std::fabs(reference.result().metrics().at("eval/kd_best")));
}

TEST_F(SlurmE2eTest, QatCancelCancelsTheJobAndEndsTheSlurmJob) {
  v1::Job job = SubmitTo(*daemon_, QatSpec(*cache_, 2, 100000));
  ASSERT_GT(Task1Running(job.id(), 2), 0) << GetJobFrom(*daemon_, job.id()).error().message();
  const std::string log = dir_->File("qat-cancel.out");
  ChildProcess qat({QAT_BINARY, "--address", "127.0.0.1:" + std::to_string(daemon_->port()), "cancel",
                    std::to_string(job.id())},
                   log);
  std::optional<int> status = qat.Wait(60s);
  ASSERT_TRUE(status.has_value() && WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << ReadFile(log);
  v1::Job ended = WaitForJob(*daemon_, job.id(), JobEnded, 120s);
  EXPECT_EQ(ended.state(), v1::JOB_STATE_CANCELLED) << ended.error().message();
  const int64_t slurm_id = SlurmJobOf(job.id());
  ASSERT_GT(slurm_id, 0);
  std::string state;
  EXPECT_TRUE(PollUntil(
      [&] {
        state = SlurmState(slurm_id);
        return state != "RUNNING" && state != "PENDING" && state != "COMPLETING";
      },
      60s))
      << state;
}

// Two nodes of 2 tasks reach Slurm as --nodes=2 --ntasks-per-node=2; this one-node cluster can
// never run them (PENDING, reason PartitionConfig), and the job's log says so. The multi-node
// rendezvous itself needs a second node to test.
TEST_F(SlurmE2eTest, TwoNodesOfTwoDevicesAreSubmittedAsFourTasksOnTwoNodes) {
  v1::JobSpec spec = QatSpec(*cache_, 2);
  spec.mutable_resources()->set_nodes(2);
  v1::Job job = SubmitTo(*daemon_, spec);
  int64_t slurm_id = 0;
  ASSERT_TRUE(PollUntil(
      [&] {
        slurm_id = SlurmJobOf(job.id());
        return slurm_id > 0 && SlurmState(slurm_id) == "PENDING";
      },
      60s));
  auto [rc, shown] = RunShell("scontrol show job -o " + std::to_string(slurm_id));
  EXPECT_THAT(shown, HasSubstr("NumNodes=2"));
  EXPECT_THAT(shown, HasSubstr("NumTasks=4"));
  EXPECT_TRUE(PollUntil(
      [&] {
        return ReadFile(dir_->File("data/qatd.log")).find("submitted as Slurm job " + std::to_string(slurm_id) +
                                                           " (partition debug, 2 node(s) x 2 task(s)") !=
               std::string::npos;
      },
      10s));
  v1::CancelJobRequest cancel;
  cancel.set_job_id(job.id());
  v1::Job cancelled;
  ASSERT_TRUE(daemon_->Stub()->CancelJob(daemon_->Context().get(), cancel, &cancelled).ok());
  EXPECT_EQ(WaitForJob(*daemon_, job.id(), JobEnded, 120s).state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(SlurmState(slurm_id), "CANCELLED");
}

// The other data-parallel kinds run as Slurm tasks too: a 2-task EVAL job splits the held-out
// sequences over its tasks and lists both ranks; asking them for several nodes is accepted at
// submit (this one-node cluster cannot start it: it is cancelled while Slurm holds it).
TEST_F(SlurmE2eTest, ATwoTaskEvalJobRunsAndOtherKindsMayAskForSeveralNodes) {
  v1::JobSpec eval;
  eval.mutable_resources()->set_device_count(2);
  eval.mutable_eval()->set_model(TinyModelDir());
  eval.mutable_eval()->set_kd_cache_dir(*cache_);
  eval.mutable_eval()->set_eval_samples(11);
  eval.mutable_eval()->set_batch_size(4);
  eval.mutable_eval()->set_dtype(v1::DTYPE_FP32);
  const v1::Job done = RunToEnd(*daemon_, eval, 300s);
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error().message();
  EXPECT_THAT(ReadFile(JobDir(done.id()) / "worker.log"), HasSubstr("Slurm task 1 of 2"));
  ASSERT_EQ(done.ranks_size(), 2);
  EXPECT_NE(done.ranks(0).pid(), done.ranks(1).pid());
  EXPECT_GT(done.result().metrics().at("eval/kd"), 0.0);

  eval.mutable_resources()->set_nodes(2);
  v1::SubmitJobRequest request;
  *request.mutable_spec() = eval;
  v1::Job queued;
  const grpc::Status submitted = daemon_->Stub()->SubmitJob(daemon_->Context().get(), request, &queued);
  ASSERT_TRUE(submitted.ok()) << submitted.error_message();
  v1::CancelJobRequest cancel;
  cancel.set_job_id(queued.id());
  v1::Job cancelled;
  ASSERT_TRUE(daemon_->Stub()->CancelJob(daemon_->Context().get(), cancel, &cancelled).ok());
  EXPECT_EQ(WaitForJob(*daemon_, queued.id(), JobEnded, 120s).state(), v1::JOB_STATE_CANCELLED);
}

// A job Slurm cannot start yet (another Slurm job holds both CPUs) is PENDING there; qat cancel
// then becomes an scancel (no rank 0 to tell).
TEST_F(SlurmE2eTest, QatCancelOfAJobPendingInSlurmScancelsIt) {
  auto [rc, blocker] = RunShell("sbatch --parsable --ntasks=2 --output=/dev/null --wrap='sleep 600'");
  ASSERT_EQ(rc, 0) << blocker;
  const std::string blocker_id = blocker.substr(0, blocker.find_first_of(";\n"));
  v1::Job job = SubmitTo(*daemon_, QatSpec(*cache_, 2, 100000));
  int64_t slurm_id = 0;
  ASSERT_TRUE(PollUntil(
      [&] {
        slurm_id = SlurmJobOf(job.id());
        return slurm_id > 0 && SlurmState(slurm_id) == "PENDING";
      },
      60s));
  const std::string log = dir_->File("qat-cancel-pending.out");
  ChildProcess qat({QAT_BINARY, "--address", "127.0.0.1:" + std::to_string(daemon_->port()), "cancel",
                    std::to_string(job.id())},
                   log);
  std::optional<int> status = qat.Wait(60s);
  ASSERT_TRUE(status.has_value() && WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << ReadFile(log);
  v1::Job ended = WaitForJob(*daemon_, job.id(), JobEnded, 120s);
  EXPECT_EQ(ended.state(), v1::JOB_STATE_CANCELLED) << ended.error().message();
  EXPECT_EQ(SlurmState(slurm_id), "CANCELLED");
  RunShell("scancel " + blocker_id);
  EXPECT_TRUE(PollUntil([&] { return SlurmState(std::stoll(blocker_id)) != "RUNNING"; }, 60s));
}

TEST_F(SlurmE2eTest, AKilledTaskFailsTheJobNamingTheTaskItsNodeAndExitCode) {
  v1::Job job = SubmitTo(*daemon_, QatSpec(*cache_, 2, 100000));
  const pid_t task1 = Task1Running(job.id(), 2);
  ASSERT_GT(task1, 0) << GetJobFrom(*daemon_, job.id()).error().message();
  ASSERT_EQ(::kill(task1, SIGKILL), 0);
  v1::Job ended = WaitForJob(*daemon_, job.id(), JobEnded, 120s);
  EXPECT_EQ(ended.state(), v1::JOB_STATE_FAILED);
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  std::string node(host);
  node = node.substr(0, node.find('.'));
  EXPECT_THAT(ended.error().message(), HasSubstr("task 1 on node " + node + " exited 137"));
  std::printf("[ slurm ] killed task: %s\n", ended.error().message().c_str());
  const int64_t slurm_id = SlurmJobOf(job.id());
  std::string state;
  EXPECT_TRUE(PollUntil(
      [&] {
        state = SlurmState(slurm_id);
        return state != "RUNNING" && state != "PENDING" && state != "COMPLETING";
      },
      60s))
      << state;
}

// The daemon killed mid-job: rank 0 loses it and stops its Slurm job; the restarted daemon
// re-queues the job, submits a new Slurm job, and that one resumes from the last checkpoint.
// (Last in the file: it replaces the suite's daemon.)
TEST_F(SlurmE2eTest, ADaemonKilledMidJobReRunsItAsANewSlurmJobThatResumes) {
  v1::Job job = SubmitTo(*daemon_, QatSpec(*cache_, 2, 60));
  ASSERT_GT(Task1Running(job.id(), 6), 0) << GetJobFrom(*daemon_, job.id()).error().message();
  const int64_t first = SlurmJobOf(job.id());
  ASSERT_GT(first, 0);
  daemon_->Kill9();
  delete daemon_;
  daemon_ = new Daemon(config_);
  ASSERT_TRUE(daemon_->Start()) << daemon_->LogTail();
  v1::Job ended = WaitForJob(*daemon_, job.id(), JobEnded, 300s);
  ASSERT_EQ(ended.state(), v1::JOB_STATE_SUCCEEDED) << ended.error().message();
  EXPECT_GE(ended.attempt(), 2);
  const int64_t second = SlurmJobOf(job.id());
  EXPECT_GT(second, first);
  EXPECT_NE(SlurmState(first), "RUNNING");
  EXPECT_THAT(ReadFile(JobDir(job.id()) / "worker.log"), HasSubstr("resuming at step"));
  std::printf("[ slurm ] re-run: Slurm job %lld then %lld, attempt %d\n", static_cast<long long>(first),
              static_cast<long long>(second), ended.attempt());
}

}  // namespace
}  // namespace qatd::e2e
