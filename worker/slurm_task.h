#pragma once
// One Slurm task of a job that qatd's Slurm executor submitted (server/slurm_launcher.h,
// deploy/slurm/README.md): `srun` runs `qatd-worker slurm-task ...` once per task, on every
// node of the allocation, and the task's place comes from Slurm's environment:
//   SLURM_PROCID  the rank (0 .. SLURM_NTASKS-1), SLURM_NTASKS  the world size,
//   SLURM_JOB_ID  names the rendezvous folder, SLURM_CPUS_PER_TASK  intra-op threads.
// Rank 0 hosts the c10d TCPStore on an ephemeral port of its node, writes "<host> <port>" to
// `<rendezvous dir>/store` (the job's folder on the shared data dir), waits for every rank to
// join, and then is the job's worker: it reports to the daemon over the WorkerChannel gRPC
// service (--daemon, secret in $QATD_JOB_SECRET) and alone writes files, exactly as the
// `qatd-worker job` of a local data-parallel job. Ranks > 0 wait (up to
// $QATD_DIST_TIMEOUT_SECONDS) for the store file and run as peer ranks (RunPeerRank).
// Every rank binds Gloo to its own host name (gethostname), so the nodes must resolve each
// other's names.

#include <string>

#include "worker/job_registry.h"
#include "worker/run_worker.h"

namespace qatd::worker {

struct SlurmTaskArgs {
  WorkerArgs worker;           // task file, job id, daemon address (rank 0)
  std::string rendezvous_dir;  // on the shared file system; created by the batch script
};

// Exit code: rank 0 as RunWorker; other ranks as RunPeerRank; 2 for a missing or bad
// SLURM_PROCID / SLURM_NTASKS or a store that never appeared.
int RunSlurmTask(const SlurmTaskArgs& args, const JobRegistry& registry);

}  // namespace qatd::worker
