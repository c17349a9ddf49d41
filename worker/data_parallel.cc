#include "worker/data_parallel.h"

#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/common/file_util.h"
#include "core/jobs/job_kind.h"
#include "core/jobs/options_common.h"
#include "core/train/dist_group.h"

namespace qatd::worker {
namespace {

train::DistGroup* g_peer_group = nullptr;  // set in a `qatd-worker rank` process
std::atomic<jobs::CancelToken*> g_peer_cancel{nullptr};

std::chrono::milliseconds DistTimeout() {
  const char* env = std::getenv("QATD_DIST_TIMEOUT_SECONDS");
  const double seconds = env != nullptr ? std::atof(env) : 600.0;
  return std::chrono::milliseconds(static_cast<int64_t>(std::max(1.0, seconds) * 1000));
}

// Intra-op threads of one of `world` CPU ranks sharing this host: the ranks split the thread
// budget one process would use (LibTorch's intra-op count: OMP_NUM_THREADS when set, else the
// cores), so OMP_NUM_THREADS=1 gives every rank and a one-rank job the same single thread (CPU
// BLAS results can depend on the thread partition).
void ShareCpuThreads(const std::string& device, int world) {
  if (device != "cpu" || world <= 1) return;
  at::set_num_threads(std::max(1, at::get_num_threads() / world));
}

std::string DescribeWait(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exited with code ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const char* name = ::sigabbrev_np(WTERMSIG(status));
    return absl::StrCat("was killed by signal SIG", name != nullptr ? name : "?", " (", WTERMSIG(status), ")");
  }
  return "ended";
}

struct Child {
  int rank = 0;
  pid_t pid = -1;
  bool reaped = false;
  int status = 0;
};

// Starts `qatd-worker rank R ...` (this executable) with SIGTERM/SIGINT blocked until it has
// installed its handlers, dying with us.
absl::StatusOr<pid_t> SpawnRank(const std::string& exe, int rank, int world, int port, const std::string& task_file) {
  std::vector<std::string> args = {"qatd-worker", "rank",          std::to_string(rank), "--world",    std::to_string(world),
                                   "--store-port", std::to_string(port), "--task-file", task_file};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = getpid();
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  sigaddset(&block, SIGINT);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  const pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);  // the parent died before prctl
    execv(exe.c_str(), argv.data());
    _exit(127);
  }
  const int saved = errno;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) return absl::ResourceExhaustedError(absl::StrCat("cannot start rank ", rank, ": fork: ", strerror(saved)));
  return pid;
}

// Reaps the children that have ended (no wait).
void ReapEnded(std::vector<Child>& children) {
  for (Child& c : children) {
    if (!c.reaped && waitpid(c.pid, &c.status, WNOHANG) == c.pid) c.reaped = true;
  }
}

bool Failed(const Child& c) { return c.reaped && !(WIFEXITED(c.status) && WEXITSTATUS(c.status) == 0); }

// Waits for every child until `deadline`; then SIGKILLs and reaps the rest.
void ReapAll(std::vector<Child>& children, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    ReapEnded(children);
    if (std::all_of(children.begin(), children.end(), [](const Child& c) { return c.reaped; })) return;
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (Child& c : children) {
    if (c.reaped) continue;
    kill(c.pid, SIGKILL);
    if (waitpid(c.pid, &c.status, 0) == c.pid) c.reaped = true;
  }
}

std::string HostName() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

// Every rank's placement (host, device, pid), gathered with one all-reduce that every rank
// makes once before the job's own collectives: rank r fills row r of a [world, 2 + kText]
// int64 tensor (pid, text length, the bytes of "host\ndevice"), the other rows stay 0, and
// the sum is every row. Rank 0 reports it (Reporter::Ranks); no store key or file is needed,
// so it works wherever the ranks run (one host, Slurm nodes).
absl::Status ShareRoster(train::DistGroup& group, const v1::WorkerTask& task, jobs::Reporter& reporter) {
  if (group.world_size() <= 1) return absl::OkStatus();
  constexpr int64_t kText = 256;
  const std::string text =
      absl::StrCat(HostName(), "\n", RankDevice(jobs::DeviceOf(&task), task, group.rank())).substr(0, kText);
  at::Tensor rows = at::zeros({group.world_size(), 2 + kText}, at::kLong);
  int64_t* row = rows.data_ptr<int64_t>() + group.rank() * (2 + kText);
  row[0] = ::getpid();
  row[1] = static_cast<int64_t>(text.size());
  for (size_t i = 0; i < text.size(); ++i) row[2 + i] = static_cast<unsigned char>(text[i]);
  if (absl::Status s = group.AllReduce(rows); !s.ok()) return s;
  if (!group.primary()) return absl::OkStatus();
  std::vector<jobs::RankPlacement> ranks;
  for (int r = 0; r < group.world_size(); ++r) {
    const int64_t* data = rows.data_ptr<int64_t>() + r * (2 + kText);
    std::string joined;
    for (int64_t i = 0; i < std::clamp<int64_t>(data[1], 0, kText); ++i) joined.push_back(static_cast<char>(data[2 + i]));
    const size_t cut = joined.find('\n');
    ranks.push_back({r, joined.substr(0, cut), cut == std::string::npos ? "" : joined.substr(cut + 1), data[0]});
  }
  reporter.Ranks(ranks);
  return absl::OkStatus();
}

void OnPeerSignal(int) {
  jobs::CancelToken* token = g_peer_cancel.load();
  if (token != nullptr) token->Cancel();
}

}  // namespace

void UseGroupInThisProcess(train::DistGroup* group) { g_peer_group = group; }

int WorldSizeOf(const v1::WorkerTask& task) {
  const v1::JobKind kind = jobs::JobKindOf(task.spec());
  if (kind != v1::JOB_KIND_QAT && kind != v1::JOB_KIND_KD_CACHE && kind != v1::JOB_KIND_EVAL &&
      kind != v1::JOB_KIND_LAYERWISE && kind != v1::JOB_KIND_LORA) {
    return 1;
  }
  const int asked = task.spec().resources().has_device_count() ? task.spec().resources().device_count() : 1;
  if (asked <= 1) return 1;
  const bool cpu = task.devices_size() == 0 || task.devices(0) == "cpu";
  return cpu ? asked : std::min(asked, task.devices_size());
}

std::string RankDevice(const std::string& job_device, const v1::WorkerTask& task, int rank) {
  if (job_device == "cpu" || task.devices_size() == 0) return job_device;
  return absl::StrCat("cuda:", rank % task.devices_size());
}

absl::Status RunDataParallel(const v1::WorkerTask& task, jobs::Reporter& reporter, jobs::CancelToken& cancel,
                             const std::function<absl::Status(train::DistGroup*)>& run) {
  if (g_peer_group != nullptr) {
    if (absl::Status s = ShareRoster(*g_peer_group, task, reporter); !s.ok()) return s;
    return run(g_peer_group);
  }
  const int world = WorldSizeOf(task);
  if (world <= 1) return run(nullptr);

  train::DistOptions options;
  options.rank = 0;
  options.world_size = world;
  options.timeout = DistTimeout();
  if (task.devices_size() == 0 || task.devices(0) == "cpu") options.device = "cpu";  // Gloo, even where a GPU is visible
  absl::StatusOr<std::unique_ptr<train::DistGroup>> group = train::DistGroup::Create(options);
  if (!group.ok()) return group.status();
  // The ranks read the same task from the job's directory (the daemon's task file may live
  // elsewhere on a worker started by a cluster manager).
  const std::string task_file = absl::StrCat(task.job_dir(), "/rank-task.pb");
  if (absl::Status s = WriteFileAtomically(task_file, task.SerializeAsString()); !s.ok()) return s;
  char exe[4096];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n <= 0) return absl::InternalError("cannot find this qatd-worker executable (/proc/self/exe)");
  exe[n] = '\0';

  std::vector<Child> children;
  for (int r = 1; r < world; ++r) {
    absl::StatusOr<pid_t> pid = SpawnRank(exe, r, world, (*group)->store_port(), task_file);
    if (!pid.ok()) {
      for (Child& c : children) kill(c.pid, SIGKILL);
      ReapAll(children, std::chrono::steady_clock::now());
      return pid.status();
    }
    children.push_back({r, *pid});
  }
  reporter.Log(jobs::LogLevel::kInfo,
               absl::StrCat("data parallel: ", world, " ranks (c10d ", (*group)->backend_name(), ", store 127.0.0.1:",
                            (*group)->store_port(), "); rank 0 is pid ", getpid(), ", ranks 1..", world - 1,
                            " its children"));
  ShareCpuThreads(RankDevice(task.devices_size() > 0 && task.devices(0) != "cpu" ? "cuda:0" : "cpu", task, 0), world);

  absl::Status status = (*group)->Connect();
  if (status.ok()) status = ShareRoster(**group, task, reporter);
  if (status.ok()) status = run(group->get());

  using Clock = std::chrono::steady_clock;
  if (status.ok()) {
    // The ranks end with the training; give them time to exit.
    ReapAll(children, Clock::now() + std::chrono::seconds(60));
  } else {
    // A rank that died is what usually fails the others: let a dying one be reaped first.
    const Clock::time_point settle = Clock::now() + std::chrono::seconds(1);
    while (Clock::now() < settle) {
      ReapEnded(children);
      if (std::any_of(children.begin(), children.end(), Failed)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  std::string culprit;
  for (const Child& c : children) {
    if (Failed(c) && culprit.empty()) culprit = absl::StrCat("rank ", c.rank, " (pid ", c.pid, ") ", DescribeWait(c.status));
  }
  for (const Child& c : children) {
    if (!c.reaped) kill(c.pid, SIGTERM);
  }
  ReapAll(children, Clock::now() + std::chrono::seconds(5));
  if (culprit.empty() && status.ok()) {
    for (const Child& c : children) {
      if (Failed(c)) culprit = absl::StrCat("rank ", c.rank, " (pid ", c.pid, ") ", DescribeWait(c.status));
    }
  }
  if (culprit.empty()) return status;
  const std::string detail = status.ok() ? "" : absl::StrCat(": ", status.message());
  return absl::AbortedError(absl::StrCat(culprit, "; the job stops (the rank's log is in worker.log)", detail));
}

int RunPeerRank(const PeerRankArgs& args, const JobRegistry& registry) {
  jobs::CancelToken cancel;
  g_peer_cancel.store(&cancel);
  struct sigaction action;
  std::memset(&action, 0, sizeof(action));
  action.sa_handler = OnPeerSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  sigset_t termination;
  sigemptyset(&termination);
  sigaddset(&termination, SIGTERM);
  sigaddset(&termination, SIGINT);
  pthread_sigmask(SIG_UNBLOCK, &termination, nullptr);

  v1::WorkerTask task;
  {
    std::ifstream in(args.task_file, std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    if (!in || !task.ParseFromString(bytes.str())) {
      std::fprintf(stderr, "qatd-worker rank %d: cannot read the task file %s\n", args.rank, args.task_file.c_str());
      return 2;
    }
  }
  jobs::StderrReporter reporter;
  std::fprintf(stderr, "qatd-worker: job %lld rank %d of %d, pid %d\n", static_cast<long long>(task.job_id()), args.rank,
               args.world, static_cast<int>(getpid()));
  train::DistOptions options;
  options.rank = args.rank;
  options.world_size = args.world;
  if (task.devices_size() == 0 || task.devices(0) == "cpu") options.device = "cpu";
  options.store_host = args.store_host;
  options.store_port = args.store_port;
  options.gloo_hostname = args.gloo_hostname;
  options.timeout = DistTimeout();
  absl::Status status;
  absl::StatusOr<std::unique_ptr<train::DistGroup>> group = train::DistGroup::Create(options);
  if (!group.ok()) status = group.status();
  if (status.ok()) status = (*group)->Connect();
  const JobFunction* run = registry.Find(jobs::JobKindOf(task.spec()));
  if (status.ok() && run == nullptr) status = absl::FailedPreconditionError("job kind not available in this build");
  if (status.ok()) {
    g_peer_group = group->get();
    ShareCpuThreads(task.devices_size() > 0 && task.devices(0) != "cpu" ? "cuda" : "cpu", args.world);
    try {
      status = (*run)(task, reporter, cancel);
    } catch (const std::exception& e) {
      status = absl::InternalError(absl::StrCat("job threw: ", e.what()));
    }
    g_peer_group = nullptr;
  }
  std::fprintf(stderr, "qatd-worker: job %lld rank %d ends: %s\n", static_cast<long long>(task.job_id()), args.rank,
               status.ToString().c_str());
  std::fflush(stderr);
  return status.ok() || cancel.cancelled() ? 0 : 1;
}

}  // namespace qatd::worker
