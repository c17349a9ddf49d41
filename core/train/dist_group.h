#pragma once
// The data-parallel ranks of one job (issue #15, DESIGN.md §3): a PyTorch c10d process group
// joined through a c10d TCPStore. Gloo carries the collectives on CPU tensors (Debian's
// LibTorch 1.13 ships it; the headers come from libgloo-dev). NCCL for CUDA tensors is not
// wired yet: a CUDA job with more than one rank is refused (see the closing note of issue #15).
//
// Rendezvous: rank 0 hosts the TCPStore (port 0 = an ephemeral port, read back with
// store_port() so that it can hand it to the ranks it starts), every rank connects to it; then
// Connect() builds the process group and compares the ranks' software versions, so that a
// rank running another build fails the job at start with both versions named.
//
// Every collective is bounded by `timeout`: a rank that died makes the others' next collective
// fail at once (its sockets close), a rank that hangs makes it fail after the timeout; either
// way the call returns ABORTED naming the collective, never spins forever.
//
// A world of one (the default) has no process group and every collective is a no-op, so the
// one-rank path costs nothing. Not thread-safe: one thread drives the collectives.

#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace qatd::train {

struct DistOptions {
  int rank = 0;
  int world_size = 1;
  std::string store_host = "127.0.0.1";  // rank 0's address as the other ranks reach it
  int store_port = 0;                    // rank 0 with 0: an ephemeral port
  // The address Gloo binds for its pairs (this rank's own address as the others reach it).
  std::string gloo_hostname = "127.0.0.1";
  std::chrono::milliseconds timeout{std::chrono::minutes(10)};
  std::string version;  // this rank's build; ranks whose versions differ fail Connect()
};

enum class ReduceOp { kSum, kMax, kMin };

class DistGroup {
 public:
  // The store (hosted by rank 0). INVALID_ARGUMENT for a rank outside [0, world_size);
  // UNAVAILABLE when the store cannot be hosted or reached before the timeout; UNIMPLEMENTED
  // when world_size > 1 and this build has no Gloo.
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
  bool distributed() const { return options_.world_size > 1; }

  // In place, on every rank. Tensors must be contiguous CPU tensors (Gloo).
  absl::Status AllReduce(at::Tensor& tensor, ReduceOp op = ReduceOp::kSum);
  // Sums a list of tensors: flattened per dtype into buckets of at most `bucket_bytes`, one
  // all-reduce per bucket, copied back. Undefined tensors are not allowed.
  absl::Status AllReduceSum(const std::vector<at::Tensor>& tensors, int64_t bucket_bytes = 32 << 20);
  absl::Status Broadcast(at::Tensor& tensor, int root = 0);
  absl::Status Barrier();
  // True on every rank when `flag` is true on any rank (one small all-reduce).
  absl::StatusOr<bool> Any(bool flag);

  // The number of collectives run so far (tests, metrics).
  int64_t collectives() const { return collectives_; }

 private:
  struct Impl;
  explicit DistGroup(DistOptions options);
  DistOptions options_;
  int port_ = 0;
  int64_t collectives_ = 0;
  std::unique_ptr<Impl> impl_;
};

// The build string ranks compare ("qatd <version> torch <torch version>").
std::string DistBuildString();

}  // namespace qatd::train
