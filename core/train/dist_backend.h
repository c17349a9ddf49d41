#pragma once
// Internal to dist_group.cc and dist_nccl.cc (never included by other headers): the c10d
// class both backends derive from, and the NCCL backend's factory. No NCCL header here: the
// CPU build compiles dist_group.cc without ever seeing one.

#include <ATen/core/Tensor.h>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <torch/version.h>

#include <chrono>
#include <string>

#include "absl/status/statusor.h"

#if TORCH_VERSION_MAJOR >= 2
#include <torch/csrc/distributed/c10d/Backend.hpp>
#else
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#endif

namespace qatd::train::internal {

// LibTorch 2.x: ProcessGroupGloo and ProcessGroupNCCL are c10d::Backends (a ProcessGroup
// dispatches to them); 1.13: both are c10d::ProcessGroups.
#if TORCH_VERSION_MAJOR >= 2
using CollectiveBackend = c10d::Backend;
#else
using CollectiveBackend = c10d::ProcessGroup;
#endif

// dist_nccl.cc, QATD_HAVE_NCCL builds only. The rank's CUDA device: `device` ("cuda:N"; empty
// or "cuda": cuda:(rank % visible devices)). FAILED_PRECONDITION when no CUDA device is
// visible, INVALID_ARGUMENT for a device that is not a visible CUDA device.
absl::StatusOr<at::Device> NcclDevice(const std::string& device, int rank);
// TORCH_NCCL_BLOCKING_WAIT=0 unless the environment sets it: DistGroup polls the work itself
// (dist_group.h). Create() calls it on the caller's thread, before any rank's Connect()
// (setenv is not thread-safe).
void SetNcclBlockingWaitDefault();
// Makes `device` the current CUDA device (of the calling thread) and builds a
// ProcessGroupNCCL (its watchdog timeout a little past `timeout`, so DistGroup's own deadline
// fires first). Throws what c10d throws.
c10::intrusive_ptr<CollectiveBackend> MakeNcclBackend(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                                      int size, std::chrono::milliseconds timeout, at::Device device);

}  // namespace qatd::train::internal
