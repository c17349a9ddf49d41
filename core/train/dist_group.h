#pragma once
// The data-parallel ranks of one job (issue #15, DESIGN.md §3): a PyTorch c10d process group
// joined through a c10d TCPStore.
//
// Backend (DistOptions::backend, backend_name()). NCCL carries the collectives of a job on
// CUDA devices when this build has it (QATD_HAVE_NCCL: a CUDA LibTorch whose c10d NCCL header
// and nccl.h were found at configure time; the NCCL code sits in dist_nccl.cc, so a CPU build
// never sees NCCL headers). Each rank drives one device: DistOptions::device, or else
// cuda:(rank % visible devices), which is also what the worker gives rank r (worker/
// data_parallel.h RankDevice); Create() makes it the process's current CUDA device. Gloo
// carries everything else: CPU jobs, and CUDA jobs of a build without NCCL (Gloo stages CUDA
// tensors through host memory). kAuto picks NCCL when built with it and this process sees a
// CUDA device (the daemon hides every GPU from a CPU job) unless `device` says "cpu".
// The collectives accept tensors on any device: a tensor the backend cannot take (a CPU tensor
// with NCCL) is staged through the group's device() and copied back. The small tensors of
// Barrier() and Any() live on device().
//
// Rendezvous: rank 0 hosts the TCPStore (port 0 = an ephemeral port, read back with
// store_port() so that it can hand it to the ranks it starts), every rank connects to it; then
// Connect() builds the process group and compares the ranks' software versions, so that a
// rank running another build fails the job at start with both versions named.
//
// Every collective is bounded by `timeout`: a rank that died makes the others' next collective
// fail (Gloo: at once, its sockets close), a rank that hangs makes it fail after the timeout;
// either way the call returns ABORTED naming the collective, never spins forever. NCCL: the
// group is built without torch's blocking wait (TORCH_NCCL_BLOCKING_WAIT=0 unless the
// environment sets it); DistGroup waits itself: the host polls the work until its kernels
// finished (yielding, then 50 us sleeps) or the timeout passed since the collective started
// (then ABORTED), and wait() orders the current stream after it. So a blocking collective
// still blocks the host, and collective_seconds() still measures how long this rank waited
// for the others. LibTorch's watchdog stays on, with a timeout a little longer than ours, as
// the backstop that tears the process down if a collective never ends.
//
// A world of one has no process group and every collective is a no-op, so the one-rank path
// costs nothing, unless DistOptions::force_group asks for a real one-rank group (the store and
// the process group are built and every collective runs; bench/qat_bench --dist measures the
// distributed path's overhead with it). Not thread-safe: one thread at a time drives the
// collectives (the gradient hooks of train_step.h run on autograd's thread while the caller is
// blocked in backward()).

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace qatd::train {

class GradReducer;  // grad_reducer.h

enum class DistBackend { kAuto, kGloo, kNccl };

struct DistOptions {
  int rank = 0;
  int world_size = 1;
  std::string store_host = "127.0.0.1";  // rank 0's address as the other ranks reach it
  int store_port = 0;                    // rank 0 with 0: an ephemeral port
  // The address Gloo binds for its pairs (this rank's own address as the others reach it).
  std::string gloo_hostname = "127.0.0.1";
  std::chrono::milliseconds timeout{std::chrono::minutes(10)};
  std::string version;  // this rank's build; ranks whose versions differ fail Connect()
  // kAuto: NCCL for a CUDA job of a build with NCCL, else Gloo. kNccl in a build without it,
  // or with no CUDA device: UNIMPLEMENTED / FAILED_PRECONDITION from Create().
  DistBackend backend = DistBackend::kAuto;
  // This rank's device ("cpu", "cuda", "cuda:N"); empty: cuda:(rank % visible devices) when
  // this process sees a CUDA device, else cpu. Only NCCL groups use it.
  std::string device;
  // World size 1 still builds the store and a one-rank process group and runs every
  // collective (measuring the distributed path on one device; tests).
  bool force_group = false;
  // The gradient all-reduce of a step (train_step.h RunMicroBatches): buckets of at most
  // bucket_bytes in reverse parameter order; with overlap_allreduce each bucket's async
  // all-reduce starts from the last micro-batch's backward as soon as its gradients exist
  // (only when the micro-step is not CUDA-graphed); else all start after the last backward.
  bool overlap_allreduce = true;
  int64_t bucket_bytes = 25 << 20;
};

enum class ReduceOp { kSum, kMax, kMin };

// How the gradient all-reduces of the steps so far ran (tests and metrics; train_step.cc).
struct GradSyncStats {
  int64_t steps = 0;             // steps whose gradients were summed
  int64_t overlapped_steps = 0;  // of them, with the backward hooks armed
  int64_t buckets_in_backward = 0;     // bucket all-reduces started from inside a backward
  int64_t buckets_after_backward = 0;  // started after the last backward returned
};

class DistGroup {
 public:
  // The store (hosted by rank 0). INVALID_ARGUMENT for a rank outside [0, world_size) or a
  // bad device; UNAVAILABLE when the store cannot be hosted or reached before the timeout;
  // UNIMPLEMENTED when a process group is needed and this build has no backend for it.
  static absl::StatusOr<std::unique_ptr<DistGroup>> Create(const DistOptions& options);
  ~DistGroup();
  DistGroup(const DistGroup&) = delete;
  DistGroup& operator=(const DistGroup&) = delete;

  // Rank 0: the store's port (the ephemeral one when asked for 0).
  int store_port() const { return port_; }
  // Builds the process group (blocks until every rank joined) and checks the versions.
  absl::Status Connect();

  int rank() const { return options_.rank; }
  int world_size() const { return options_.world_size; }
  bool primary() const { return options_.rank == 0; }
  // True when collectives run: more than one rank, or a forced one-rank group.
  bool distributed() const { return options_.world_size > 1 || options_.force_group; }
  const DistOptions& options() const { return options_; }
  // "gloo", "nccl", or "none" (no process group).
  const char* backend_name() const;
  // Where the backend's collectives run (cpu for Gloo, the rank's CUDA device for NCCL).
  at::Device device() const { return device_; }

  // In place, on every rank.
  absl::Status AllReduce(at::Tensor& tensor, ReduceOp op = ReduceOp::kSum);
  // Sums a list of tensors: flattened per dtype into buckets of at most `bucket_bytes`, one
  // all-reduce per bucket, copied back. Undefined tensors are not allowed.
  absl::Status AllReduceSum(const std::vector<at::Tensor>& tensors, int64_t bucket_bytes = 32 << 20);
  absl::Status Broadcast(at::Tensor& tensor, int root = 0);
  absl::Status Barrier();
  // True on every rank when `flag` is true on any rank (one small all-reduce).
  absl::StatusOr<bool> Any(bool flag);

  // Starts an in-place sum of `tensor` (contiguous) over the ranks and returns without
  // waiting; the tensor must stay alive and untouched until WaitPending(). Every rank must
  // start the same collectives in the same order.
  absl::Status StartAllReduceSum(at::Tensor& tensor);
  // Waits for every started collective, in order (bounded by the timeout, ABORTED naming it).
  absl::Status WaitPending();
  int64_t pending() const;

  // The number of collectives run or started so far (tests, metrics).
  int64_t collectives() const { return collectives_; }
  // Host wall seconds spent so far inside blocking collectives (AllReduce, Broadcast and the
  // waits for started all-reduces): the time a rank waited for the others, which the per-rank
  // step time leaves out (rank_step_time.h).
  double collective_seconds() const { return collective_seconds_; }
  GradSyncStats& grad_sync_stats() { return grad_sync_stats_; }
  // The gradient all-reduce of this group's steps, kept here so that its hooks are registered
  // once (train_step.cc builds it at the first step and rebuilds it for other parameters).
  GradReducer* grad_reducer() { return grad_reducer_.get(); }
  void set_grad_reducer(std::unique_ptr<GradReducer> reducer);

 private:
  struct Impl;
  explicit DistGroup(DistOptions options);
  absl::Status NoGroup() const;
  DistOptions options_;
  at::Device device_{at::kCPU};
  int port_ = 0;
  int64_t collectives_ = 0;
  double collective_seconds_ = 0;
  GradSyncStats grad_sync_stats_;
  std::unique_ptr<Impl> impl_;
  std::unique_ptr<GradReducer> grad_reducer_;  // declared after impl_: destroyed before it
};

// The build string ranks compare ("qatd <version> torch <torch version>").
std::string DistBuildString();

// True when this build can run NCCL process groups (QATD_HAVE_NCCL).
bool DistHasNccl();

}  // namespace qatd::train
