// The NCCL backend of DistGroup (dist_group.h). Compiled only when the build has NCCL
// (QATD_HAVE_NCCL and USE_C10D_NCCL, core/train/CMakeLists.txt).
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include <algorithm>
#include <cstdlib>
#include <exception>

#include "absl/strings/str_cat.h"
#include "core/train/dist_backend.h"

namespace qatd::train::internal {

absl::StatusOr<at::Device> NcclDevice(const std::string& device, int rank) {
  const int count = static_cast<int>(c10::cuda::device_count());
  if (count <= 0) return absl::FailedPreconditionError("the NCCL backend needs a CUDA device and this process sees none");
  int index = rank % count;
  if (!device.empty() && device != "cuda") {
    at::Device parsed(at::kCPU);
    try {
      parsed = at::Device(device);
    } catch (const std::exception&) {
      return absl::InvalidArgumentError(absl::StrCat("device must be cuda or cuda:N for NCCL, got '", device, "'"));
    }
    if (!parsed.is_cuda()) {
      return absl::InvalidArgumentError(absl::StrCat("device must be cuda or cuda:N for NCCL, got '", device, "'"));
    }
    if (parsed.has_index()) index = parsed.index();
  }
  if (index < 0 || index >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("device cuda:", index, " is not visible to this process (", count, " CUDA device(s))"));
  }
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index));
}

void SetNcclBlockingWaitDefault() {
  // No blocking wait: WorkNCCL::wait() only orders the current stream after the collective,
  // and DistGroup polls the work itself (dist_group.cc WaitWork) with its own deadline. Torch's
  // blocking wait sleeps between looks at the work (a sleep quantum per wait, several per
  // step: measured 0.90x of the plain step through a one-rank group on an H200). With it off,
  // LibTorch's watchdog (async error handling) stays on as the backstop: its timeout is set a
  // little past DistGroup's, so DistGroup's ABORTED comes first. The ProcessGroupNCCL
  // constructor reads the variable; a value already in the environment wins.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 2)
  const char* blocking_wait = "TORCH_NCCL_BLOCKING_WAIT";
#else
  const char* blocking_wait = "NCCL_BLOCKING_WAIT";
#endif
  setenv(blocking_wait, "0", /*overwrite=*/0);
}

c10::intrusive_ptr<CollectiveBackend> MakeNcclBackend(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                                      int size, std::chrono::milliseconds timeout, at::Device device) {
  // One device per rank: NCCL's communicator is keyed by the tensors' device, and kernels the
  // trainer launches without a guard go to the current device.
  c10::cuda::set_device(device.index());
  c10::intrusive_ptr<c10d::ProcessGroupNCCL::Options> options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout + std::max(std::chrono::milliseconds(30000), timeout / 10);  // the watchdog: after DistGroup's own deadline
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, options);
}

}  // namespace qatd::train::internal
