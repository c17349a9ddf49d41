#include "worker/slurm_task.h"

#include <ATen/Parallel.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/common/file_util.h"
#include "core/train/dist_group.h"
#include "worker/data_parallel.h"

namespace qatd::worker {
namespace {

bool EnvInt(const char* name, int* out) {
  const char* value = std::getenv(name);
  return value != nullptr && absl::SimpleAtoi(value, out);
}

std::chrono::milliseconds DistTimeout() {
  const char* env = std::getenv("QATD_DIST_TIMEOUT_SECONDS");
  const double seconds = env != nullptr ? std::atof(env) : 600.0;
  return std::chrono::milliseconds(static_cast<int64_t>(std::max(1.0, seconds) * 1000));
}

std::string HostName() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') return "127.0.0.1";
  return name;
}

// Slurm gives each task its CPUs; LibTorch would otherwise start one thread per core of the node.
void UseTaskCpus() {
  int cpus = 0;
  if (EnvInt("SLURM_CPUS_PER_TASK", &cpus) && cpus > 0) at::set_num_threads(cpus);
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "qatd-worker slurm-task: %s\n", message.c_str());
  return 2;
}

}  // namespace

int RunSlurmTask(const SlurmTaskArgs& args, const JobRegistry& registry) {
  int rank = -1;
  int world = 0;
  if (!EnvInt("SLURM_PROCID", &rank) || !EnvInt("SLURM_NTASKS", &world) || world < 1 || rank < 0 || rank >= world) {
    return Fail("SLURM_PROCID and SLURM_NTASKS must name this task's rank in [0, SLURM_NTASKS) (run it with srun)");
  }
  if (args.rendezvous_dir.empty()) return Fail("--rendezvous-dir is required");
  const std::string store_file = absl::StrCat(args.rendezvous_dir, "/store");
  const std::string host = HostName();
  std::fprintf(stderr, "qatd-worker: Slurm task %d of %d on %s, pid %d\n", rank, world, host.c_str(),
               static_cast<int>(::getpid()));
  UseTaskCpus();

  if (rank > 0) {
    PeerRankArgs peer;
    peer.rank = rank;
    peer.world = world;
    peer.task_file = args.worker.task_file;
    peer.gloo_hostname = host;
    const auto deadline = std::chrono::steady_clock::now() + DistTimeout();
    while (true) {
      std::ifstream in(store_file);
      if (in >> peer.store_host >> peer.store_port && peer.store_port > 0) break;
      if (std::chrono::steady_clock::now() > deadline) {
        return Fail(absl::StrCat("rank 0 did not publish its store in ", store_file, " in time"));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return RunPeerRank(peer, registry);
  }

  if (world == 1) return RunWorker(args.worker, registry);
  train::DistOptions options;
  options.rank = 0;
  options.world_size = world;
  options.store_host = host;
  options.gloo_hostname = host;
  options.timeout = DistTimeout();
  absl::StatusOr<std::unique_ptr<train::DistGroup>> group = train::DistGroup::Create(options);
  if (!group.ok()) return Fail(group.status().ToString());
  if (absl::Status s = WriteFileAtomically(store_file, absl::StrCat(host, " ", (*group)->store_port(), "\n")); !s.ok()) {
    return Fail(s.ToString());
  }
  std::fprintf(stderr, "qatd-worker: rank 0 hosts the store on %s:%d; waiting for %d rank(s)\n", host.c_str(),
               (*group)->store_port(), world - 1);
  if (absl::Status s = (*group)->Connect(); !s.ok()) return Fail(s.ToString());
  UseGroupInThisProcess(group->get());
  const int code = RunWorker(args.worker, registry);
  UseGroupInThisProcess(nullptr);
  return code;
}

}  // namespace qatd::worker
