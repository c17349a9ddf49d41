// qatd-worker: runs one job for the daemon (DESIGN.md §3).
//
//   qatd-worker job ID KIND --task-file F [--event-fd 3] [--control-fd 4]
//                                                                   a worker the daemon forked
//   qatd-worker job ID KIND --task-file F --daemon HOST:PORT [--daemon-ca F]
//                                                                   a worker on any host
//   qatd-worker rank R --world N --store-port P --task-file F       rank R of a data-parallel
//                                                                   job (rank 0 starts it)
//   qatd-worker slurm-task --job-id ID --kind KIND --task-file F --daemon HOST:PORT
//              --rendezvous-dir D                                   one srun task (slurm_task.h)
// ID and KIND are there so that `ps` shows which job a worker runs; the task file decides.
// With --daemon the job's events go over the WorkerChannel gRPC service, authenticated by the
// per-job secret in $QATD_JOB_SECRET. Exit codes: worker/run_worker.h.
#include <cstdio>
#include <string>

#include "CLI/CLI.hpp"
#include "core/cuda/allocator_defaults.h"
#include "qatd/build_info.h"
#include "worker/data_parallel.h"
#include "worker/job_registry.h"
#include "worker/run_worker.h"
#include "worker/slurm_task.h"

int main(int argc, char** argv) {
  qatd::cuda::SetAllocatorDefaults();  // before any CUDA allocation
  qatd::worker::WorkerArgs args;
  std::string kind;
  CLI::App app{"qatd-worker: runs one qatd job (started by the daemon or a cluster manager)"};
  app.set_version_flag("--version", std::string("qatd-worker ") + qatd::build::kVersionLine);
  CLI::App* job = app.add_subcommand("job", "Run the job described by --task-file");
  job->add_option("id", args.job_id, "Job id (shown by ps; must match the task)")->required();
  job->add_option("kind", kind, "Job kind (shown by ps)")->required();
  job->add_option("--task-file", args.task_file, "Serialized qatd.v1.WorkerTask")->required();
  job->add_option("--event-fd", args.event_fd, "Inherited pipe for the events (local workers)")
      ->capture_default_str();
  job->add_option("--control-fd", args.control_fd,
                  "Inherited pipe of the daemon's WorkerControl messages (a chat session's inputs)");
  job->add_option("--daemon", args.daemon_address,
                  "HOST:PORT of the daemon's WorkerChannel; the secret comes from $QATD_JOB_SECRET");
  job->add_option("--daemon-ca", args.daemon_ca_file, "PEM roots to verify a TLS daemon (default: plaintext)");
  job->add_option("--daemon-timeout-seconds", args.daemon_timeout_seconds,
                  "Stop the job when the daemon is unreachable this long")
      ->capture_default_str();
  qatd::worker::PeerRankArgs peer;
  CLI::App* rank = app.add_subcommand("rank", "Rank R > 0 of a data-parallel job (started by rank 0; worker/data_parallel.h)");
  rank->add_option("rank", peer.rank, "This rank (1 .. world-1)")->required();
  rank->add_option("--world", peer.world, "Number of ranks")->required();
  rank->add_option("--store-host", peer.store_host, "Rank 0's c10d TCPStore host")->capture_default_str();
  rank->add_option("--store-port", peer.store_port, "Rank 0's c10d TCPStore port")->required();
  rank->add_option("--task-file", peer.task_file, "Serialized qatd.v1.WorkerTask")->required();
  qatd::worker::SlurmTaskArgs slurm;
  CLI::App* task = app.add_subcommand("slurm-task", "One task of a job qatd submitted to Slurm (rank from SLURM_PROCID)");
  task->add_option("--job-id", slurm.worker.job_id, "Job id (shown by ps; must match the task)")->required();
  task->add_option("--kind", kind, "Job kind (shown by ps)");
  task->add_option("--task-file", slurm.worker.task_file, "Serialized qatd.v1.WorkerTask (shared file system)")->required();
  task->add_option("--daemon", slurm.worker.daemon_address, "HOST:PORT of the daemon's WorkerChannel (rank 0 reports)")
      ->required();
  task->add_option("--daemon-ca", slurm.worker.daemon_ca_file, "PEM roots to verify a TLS daemon");
  task->add_option("--daemon-timeout-seconds", slurm.worker.daemon_timeout_seconds,
                   "Stop the job when the daemon is unreachable this long")
      ->capture_default_str();
  task->add_option("--rendezvous-dir", slurm.rendezvous_dir, "Shared folder where rank 0 publishes its store")
      ->required();
  app.require_subcommand(1);
  CLI11_PARSE(app, argc, argv);

  qatd::worker::JobRegistry registry;
  qatd::worker::RegisterProbeJob(registry);
  qatd::worker::RegisterCoreJobs(registry);
  qatd::worker::RegisterGenerateSession(registry);
  if (rank->parsed()) return qatd::worker::RunPeerRank(peer, registry);
  if (task->parsed()) return qatd::worker::RunSlurmTask(slurm, registry);
  return qatd::worker::RunWorker(args, registry);
}
