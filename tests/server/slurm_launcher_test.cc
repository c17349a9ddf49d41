// The Slurm executor without a cluster (server/slurm_launcher.h): the sbatch command line and
// batch script it makes, how it reads scontrol and the tasks' exit files, and what its worker
// does on cancel and at the end, against a recording CommandRunner. The real Slurm is
// tests/e2e/slurm_e2e_test.cc.
#include "server/slurm_launcher.h"

#include <signal.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <mutex>

#include "absl/strings/str_join.h"
#include "core/jobs/job_spec.h"
#include "server/daemon_options.h"
#include "server/worker_channel.h"
#include "tests/common/temp_dir.h"

namespace qatd::server {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

struct Call {
  std::vector<std::string> argv;
  std::vector<std::string> env;
};

class FakeRunner : public CommandRunner {
 public:
  std::function<CommandResult(const std::vector<std::string>&)> respond;
  absl::StatusOr<CommandResult> Run(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                                    std::chrono::milliseconds) override {
    std::lock_guard<std::mutex> lock(mu);
    calls.push_back({argv, env});
    return respond(argv);
  }
  std::vector<Call> Calls(const std::string& program) {
    std::lock_guard<std::mutex> lock(mu);
    std::vector<Call> out;
    for (const Call& c : calls) {
      if (c.argv[0] == program) out.push_back(c);
    }
    return out;
  }
  std::mutex mu;
  std::vector<Call> calls;
};

CommandResult Out(const std::string& out, int code = 0, const std::string& err = "") { return {code, out, err}; }

class SlurmLauncherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    job_dir_ = dir_.File("jobs/7");
    std::filesystem::create_directories(job_dir_);
    v1::WorkerTask task;
    task.set_job_id(7);
    task.set_job_dir(job_dir_);
    task.mutable_spec()->mutable_qat()->set_model("/m");
    task.mutable_spec()->mutable_resources()->set_device_count(2);
    launch_.job_id = 7;
    launch_.kind = "QAT";
    launch_.task_file = job_dir_ + "/task.pb";
    launch_.log_file = job_dir_ + "/worker.log";
    std::ofstream(launch_.task_file, std::ios::binary) << task.SerializeAsString();
    options_.worker_binary = "/opt/qatd/bin/qatd-worker";
    options_.partition = "gpu";
    options_.account = "lab";
    options_.extra_args = {"--gpus-per-node=8", "--time=2:00:00"};
    options_.daemon_address = "head:7433";
    options_.channel = &channel_;
    options_.runner = &runner_;
    options_.poll_interval = std::chrono::milliseconds(10);
    runner_.respond = [this](const std::vector<std::string>& argv) {
      if (argv[0] == "sbatch") return Out("42;cluster\n");
      if (argv[0] == "scontrol") return Out(absl::StrCat("JobId=42 JobName=qatd-7 JobState=", state_, " Reason=None ",
                                                          "ExitCode=", exit_code_, " NodeList=n[1-2]\n"));
      return Out("");
    };
  }

  void WriteExit(int rank, const std::string& node, int code, double time) {
    std::filesystem::create_directories(job_dir_ + "/slurm/42");
    std::ofstream(job_dir_ + "/slurm/42/task-" + std::to_string(rank) + ".exit") << rank << " " << node << " " << code
                                                                                  << " " << std::to_string(time) << "\n";
  }

  qatd::testing::TempDir dir_;
  std::string job_dir_;
  WorkerLaunch launch_;
  SlurmOptions options_;
  WorkerChannelService channel_;
  FakeRunner runner_;
  std::string state_ = "RUNNING";
  std::string exit_code_ = "0:0";
};

TEST_F(SlurmLauncherTest, SbatchAsksForOneTaskPerDeviceWithTheOperatorsOptionsAndTheSecretOnlyInTheEnvironment) {
  SlurmWorkerLauncher launcher(options_);
  absl::StatusOr<std::unique_ptr<WorkerProcess>> worker = launcher.Launch(launch_);
  ASSERT_TRUE(worker.ok()) << worker.status();
  EXPECT_EQ((*worker)->pid(), 42);
  const std::vector<Call> sbatch = runner_.Calls("sbatch");
  ASSERT_EQ(sbatch.size(), 1u);
  EXPECT_THAT(sbatch[0].argv,
              ElementsAre("sbatch", "--parsable", "--job-name=qatd-7", "--partition=gpu", "--account=lab", "--nodes=1",
                          "--ntasks-per-node=2", "--cpus-per-task=1", "--no-requeue", "--open-mode=append",
                          "--output=" + launch_.log_file, "--gpus-per-node=8", "--time=2:00:00",
                          job_dir_ + "/slurm/job.sh"));
  std::string secret;
  for (const std::string& e : sbatch[0].env) {
    if (e.rfind("QATD_JOB_SECRET=", 0) == 0) secret = e.substr(16);
  }
  EXPECT_GE(secret.size(), 32u);
  EXPECT_THAT(absl::StrJoin(sbatch[0].argv, " "), Not(HasSubstr(secret)));
  EXPECT_THAT(sbatch[0].env, Contains("QATD_TOKEN="));  // the daemon's token stays behind

  std::ifstream in(job_dir_ + "/slurm/job.sh");
  std::stringstream script;
  script << in.rdbuf();
  EXPECT_THAT(script.str(), HasSubstr("srun --kill-on-bad-exit=0"));
  EXPECT_THAT(script.str(), HasSubstr("'/opt/qatd/bin/qatd-worker' 'slurm-task' '--job-id' '7'"));
  EXPECT_THAT(script.str(), HasSubstr("'--daemon' 'head:7433'"));
  EXPECT_THAT(script.str(), HasSubstr("'--task-file' '" + launch_.task_file + "'"));
  EXPECT_THAT(script.str(), HasSubstr("task-$SLURM_PROCID.exit"));
  EXPECT_THAT(script.str(), Not(HasSubstr(secret)));

  // The first event says where the job went.
  absl::StatusOr<std::optional<v1::WorkerEvent>> first = (*worker)->NextEvent();
  ASSERT_TRUE(first.ok() && first->has_value());
  EXPECT_THAT((*first)->log().message(), HasSubstr("submitted as Slurm job 42 (partition gpu, 1 node(s) x 2 task(s)"));
}

TEST_F(SlurmLauncherTest, OneDeviceOrTheCpuIsOneTaskAndPathsAreShellQuoted) {
  v1::WorkerTask task;
  task.set_job_dir(job_dir_);
  task.mutable_spec()->mutable_eval()->set_model("/m");
  task.mutable_spec()->mutable_resources()->set_device_count(1);
  EXPECT_EQ(SlurmShapeOf(task).tasks_per_node, 1);
  EXPECT_EQ(SlurmShapeOf(task).nodes, 1);
  task.mutable_spec()->mutable_resources()->set_device_count(0);
  EXPECT_EQ(SlurmShapeOf(task).tasks_per_node, 1);
  task.mutable_spec()->mutable_resources()->clear_device_count();
  EXPECT_EQ(SlurmShapeOf(task).tasks_per_node, 1);
  options_.worker_binary = "/opt/it's here/qatd-worker";
  EXPECT_THAT(BatchScript(options_, launch_, job_dir_ + "/slurm"), HasSubstr("'/opt/it'\\''s here/qatd-worker'"));
}

TEST_F(SlurmLauncherTest, AFailedSbatchFailsTheLaunchWithSlurmsWords) {
  runner_.respond = [](const std::vector<std::string>&) {
    return Out("", 1, "sbatch: error: invalid partition specified: gpu\n");
  };
  SlurmWorkerLauncher launcher(options_);
  absl::StatusOr<std::unique_ptr<WorkerProcess>> worker = launcher.Launch(launch_);
  ASSERT_FALSE(worker.ok());
  EXPECT_EQ(worker.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(worker.status().message(), HasSubstr("invalid partition specified: gpu"));
}

TEST_F(SlurmLauncherTest, CancelBeforeRank0AttachedIsAnScancelAndWaitNamesTheKilledTask) {
  SlurmWorkerLauncher launcher(options_);
  absl::StatusOr<std::unique_ptr<WorkerProcess>> worker = launcher.Launch(launch_);
  ASSERT_TRUE(worker.ok()) << worker.status();
  (*worker)->Signal(SIGTERM);
  ASSERT_EQ(runner_.Calls("scancel").size(), 1u);
  EXPECT_THAT(runner_.Calls("scancel")[0].argv, ElementsAre("scancel", "42"));
  (*worker)->Signal(SIGKILL);
  EXPECT_THAT(runner_.Calls("scancel")[1].argv, ElementsAre("scancel", "--signal", "KILL", "--full", "42"));

  WriteExit(0, "n1", 0, 1700000003);
  WriteExit(2, "n2", 1, 1700000002);  // failed because task 3 had died
  WriteExit(3, "n2", 137, 1700000001);
  state_ = "FAILED";
  exit_code_ = "137:0";
  const WorkerExit exit = (*worker)->Wait();
  EXPECT_FALSE(exit.clean());
  EXPECT_EQ(exit.Describe(), "(Slurm job 42) task 3 on node n2 exited 137");
}

TEST_F(SlurmLauncherTest, ANodeFailureWithoutTaskExitsNamesTheSlurmState) {
  SlurmWorkerLauncher launcher(options_);
  absl::StatusOr<std::unique_ptr<WorkerProcess>> worker = launcher.Launch(launch_);
  ASSERT_TRUE(worker.ok()) << worker.status();
  state_ = "NODE_FAIL";
  exit_code_ = "0:0";
  EXPECT_EQ((*worker)->Wait().Describe(), "(Slurm job 42) ended NODE_FAIL on n[1-2] with exit code 0:0");
  state_ = "COMPLETED";
  EXPECT_TRUE((*worker)->Wait().clean());
}

TEST_F(SlurmLauncherTest, TheEventStreamEndsOnceSlurmSaysTheJobEnded) {
  SlurmWorkerLauncher launcher(options_);
  absl::StatusOr<std::unique_ptr<WorkerProcess>> worker = launcher.Launch(launch_);
  ASSERT_TRUE(worker.ok()) << worker.status();
  ASSERT_TRUE((*worker)->NextEvent().ok());  // "submitted as ..."
  absl::StatusOr<std::optional<v1::WorkerEvent>> running = (*worker)->NextEvent();
  ASSERT_TRUE(running.ok() && running->has_value());
  EXPECT_EQ((*running)->log().message(), "Slurm job 42 running on n[1-2]");
  state_ = "CANCELLED";  // e.g. scancel by hand, before rank 0 ever attached
  absl::StatusOr<std::optional<v1::WorkerEvent>> end = (*worker)->NextEvent();
  ASSERT_TRUE(end.ok());
  EXPECT_FALSE(end->has_value());
}

TEST_F(SlurmLauncherTest, TwoNodesOfTwoDevicesAreTwoNodesOfTwoTasks) {
  v1::WorkerTask task;
  task.mutable_spec()->mutable_qat()->set_model("/m");
  task.mutable_spec()->mutable_resources()->set_device_count(2);
  task.mutable_spec()->mutable_resources()->set_nodes(2);
  const SlurmShape shape = SlurmShapeOf(task);
  EXPECT_EQ(shape.nodes, 2);
  EXPECT_EQ(shape.tasks_per_node, 2);
  const std::vector<std::string> argv = SbatchCommand(options_, launch_, shape, "job.sh");
  EXPECT_THAT(argv, Contains("--nodes=2"));
  EXPECT_THAT(argv, Contains("--ntasks-per-node=2"));
}

// resources.nodes at submit (core's ValidateJobSpec, with the daemon's executor limit).
TEST(SlurmSpecTest, SeveralNodesOnlyForDataParallelKindsAndOnlyWithTheSlurmExecutor) {
  v1::JobSpec spec;
  spec.mutable_qat()->set_model("/m");
  spec.mutable_resources()->set_nodes(2);
  jobs::SpecCheckContext local;
  local.check_paths = false;
  absl::Status refused = jobs::ValidateJobSpec(spec, local);
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.message(), HasSubstr("spec.resources.nodes is 2, but this daemon runs jobs as local processes"));
  EXPECT_THAT(refused.message(), HasSubstr("qatd --executor slurm"));
  jobs::SpecCheckContext slurm = local;
  slurm.max_nodes = 4;
  absl::Status nodes_ok = jobs::ValidateJobSpec(spec, slurm);
  EXPECT_THAT(nodes_ok.message(), Not(HasSubstr("resources.nodes")));
  spec.mutable_resources()->set_nodes(5);
  EXPECT_THAT(jobs::ValidateJobSpec(spec, slurm).message(), HasSubstr("resources.nodes is 5, more than the 4"));
  spec.mutable_resources()->set_nodes(0);
  EXPECT_THAT(jobs::ValidateJobSpec(spec, slurm).message(), HasSubstr("resources.nodes must be >= 1, got 0"));
  // The other data-parallel kinds run on several nodes too; the rest are refused.
  v1::JobSpec eval;
  eval.mutable_eval()->set_model("/m");
  eval.mutable_resources()->set_nodes(2);
  EXPECT_THAT(jobs::ValidateJobSpec(eval, slurm).message(), Not(HasSubstr("resources.nodes")));
  EXPECT_THAT(jobs::ValidateJobSpec(eval, local).message(), HasSubstr("runs jobs as local processes"));
  v1::JobSpec cache;
  cache.mutable_kd_cache()->set_teacher_model("/m");
  cache.mutable_resources()->set_nodes(2);
  EXPECT_THAT(jobs::ValidateJobSpec(cache, slurm).message(), Not(HasSubstr("resources.nodes")));
  v1::JobSpec lbl;
  lbl.mutable_layerwise()->set_model("/m");
  lbl.mutable_resources()->set_nodes(2);
  EXPECT_THAT(jobs::ValidateJobSpec(lbl, slurm).message(), Not(HasSubstr("resources.nodes")));
  v1::JobSpec snap;
  snap.mutable_snap()->set_checkpoint("/c");
  snap.mutable_resources()->set_nodes(2);
  EXPECT_THAT(jobs::ValidateJobSpec(snap, slurm).message(),
              HasSubstr("only QAT, LAYERWISE, KD_CACHE, EVAL and LORA jobs run on several nodes"));
}

TEST(SlurmParseTest, ScontrolLineAndTaskExits) {
  const SlurmJobState s = ParseScontrolJob(
      "JobId=5 JobName=qatd-3 UserId=root(0) JobState=PENDING Reason=Resources Dependency=(null) ExitCode=0:0 "
      "NodeList=(null) BatchHost=vm\n");
  EXPECT_EQ(s.state, "PENDING");
  EXPECT_EQ(s.reason, "Resources");
  EXPECT_EQ(s.exit_code, "0:0");
  EXPECT_EQ(s.nodes, "");
  EXPECT_TRUE(s.active());
  EXPECT_FALSE(ParseScontrolJob("JobId=5 JobState=COMPLETED ExitCode=0:0").active());
  EXPECT_FALSE(ParseScontrolJob("JobId=5 JobState=NODE_FAIL").active());

  qatd::testing::TempDir dir;
  EXPECT_EQ(DescribeTaskExits(dir.path().string()), "");
  std::ofstream(dir.File("task-0.exit")) << "0 n1 0\n";
  EXPECT_EQ(DescribeTaskExits(dir.path().string()), "");
  std::ofstream(dir.File("task-2.exit")) << "2 n2 1\n";
  std::ofstream(dir.File("task-1.exit")) << "1 n1 1\n";
  EXPECT_EQ(DescribeTaskExits(dir.path().string()), "task 1 on node n1 exited 1");
  // srun's SIGTERM to the rest (143) comes after the task that really failed, whatever its rank.
  std::ofstream(dir.File("task-0.exit")) << "0 n1 143 1700000001.5\n";
  std::ofstream(dir.File("task-2.exit")) << "2 n2 137 1700000001.0\n";
  std::ofstream(dir.File("task-1.exit")) << "1 n1 1 1700000002.0\n";
  EXPECT_EQ(DescribeTaskExits(dir.path().string()), "task 2 on node n2 exited 137");
}

TEST(SlurmDaemonOptionsTest, SlurmNeedsTheGrpcTransportAndAPartition) {
  auto parse = [](std::vector<std::string> args) {
    args.insert(args.begin(), "qatd");
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    ::testing::internal::CaptureStderr();
    CommandLine cl = ParseCommandLine(static_cast<int>(argv.size()), argv.data());
    const std::string err = ::testing::internal::GetCapturedStderr();
    return std::make_pair(cl, err);
  };
  auto [pipe, pipe_err] = parse({"--executor", "slurm", "--slurm-partition", "debug"});
  EXPECT_NE(pipe.exit_code, -1);
  EXPECT_THAT(pipe_err, HasSubstr("--worker-transport grpc"));
  auto [nopart, nopart_err] = parse({"--executor", "slurm", "--worker-transport", "grpc"});
  EXPECT_NE(nopart.exit_code, -1);
  EXPECT_THAT(nopart_err, HasSubstr("--slurm-partition"));
  auto [ok, ok_err] = parse({"--executor", "slurm", "--worker-transport", "grpc", "--slurm-partition", "debug",
                             "--slurm-extra=--time=10", "--slurm-extra=--qos=low", "--slurm-account", "a"});
  EXPECT_EQ(ok.exit_code, -1) << ok_err;
  EXPECT_EQ(ok.daemon.executor, "slurm");
  EXPECT_THAT(ok.daemon.slurm_extra, ElementsAre("--time=10", "--qos=low"));
  EXPECT_EQ(ok.daemon.slurm_account, "a");
  auto [local, local_err] = parse({"--slurm-partition", "debug"});
  EXPECT_NE(local.exit_code, -1);
  EXPECT_THAT(local_err, HasSubstr("--executor slurm"));
}

}  // namespace
}  // namespace qatd::server
