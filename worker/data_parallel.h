#pragma once
// Data-parallel jobs on one host (issue #15, DESIGN.md §3). A QAT, LAYERWISE, KD_CACHE or EVAL
// job whose spec asks for resources.device_count N > 1 runs as N ranks, one process per device, joined by a PyTorch
// c10d process group (core/train/dist_group.h: Gloo; rendezvous through a c10d TCPStore on an
// ephemeral port of 127.0.0.1):
//   - the process the daemon started (`qatd-worker job ID QAT ...`) is rank 0: it hosts the
//     store, starts ranks 1..N-1 as its children (`qatd-worker rank R --world N --store-port P
//     --task-file <job dir>/rank-task.pb`, shown so by ps), talks to the daemon and writes
//     every file;
//   - on a GPU host rank r trains on the r-th device of the job's CUDA_VISIBLE_DEVICES; on a
//     host without GPUs the N ranks are CPU processes sharing the cores (intra-op threads
//     divided among them).
// The ranks are in rank 0's process group, so the daemon's SIGTERM (cancel) reaches all of them
// and they agree to stop at the next step; each dies with its parent (PR_SET_PDEATHSIG). A rank
// that dies makes the others' next collective fail at once, one that hangs makes it fail after
// $QATD_DIST_TIMEOUT_SECONDS (default 600); rank 0 then stops the rest and fails the job
// naming the rank and how it ended ("rank 1 (pid 4242) was killed by signal SIGKILL (9)").
//
// What the ranks split: QAT and LAYERWISE every global batch (gradients summed), EVAL the
// held-out sequences (sums all-reduced), KD_CACHE the shards (rank r writes shards r, r + N, ...;
// the cache is byte for byte the one-rank cache). Other job kinds run on one rank.

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "core/common/reporter.h"
#include "qatd/v1/worker.pb.h"
#include "worker/job_registry.h"

namespace qatd::train {
class DistGroup;
}

namespace qatd::worker {

// How many ranks the task runs as (1 unless it is a QAT, LAYERWISE, KD_CACHE or EVAL job asking
// for more than one device).
int WorldSizeOf(const v1::WorkerTask& task);

// The device rank `rank` trains on, given the job's own device ("cpu" or "cuda:0").
std::string RankDevice(const std::string& job_device, const v1::WorkerTask& task, int rank);

// Runs `run` with the job's group: nullptr for one rank; for more, as rank 0 (see above) or, in
// a `qatd-worker rank` process, as that rank.
absl::Status RunDataParallel(const v1::WorkerTask& task, jobs::Reporter& reporter, jobs::CancelToken& cancel,
                             const std::function<absl::Status(train::DistGroup*)>& run);

struct PeerRankArgs {
  int rank = 1;
  int world = 2;
  std::string store_host = "127.0.0.1";
  int store_port = 0;
  std::string task_file;
  std::string gloo_hostname = "127.0.0.1";  // this rank's address as the others reach it
};

// Makes RunDataParallel use `group` (not owned; nullptr to stop): a Slurm task's rank 0, whose
// peers Slurm started (worker/slurm_task.h).
void UseGroupInThisProcess(train::DistGroup* group);

// `qatd-worker rank R ...`: joins rank 0's group and runs the task's job function as rank R,
// logging on stderr (the job's worker.log). Exit code 0 when the job ended well on this rank,
// 1 when it failed, 2 for an unreadable task.
int RunPeerRank(const PeerRankArgs& args, const JobRegistry& registry);

}  // namespace qatd::worker
