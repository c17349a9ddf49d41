#pragma once
// The devices jobs run on and how many jobs each holds (DESIGN.md §3). Every GPU accepts up
// to `max_jobs_per_device` concurrent jobs; so does the "cpu" pseudo-device, which runs the
// jobs that ask for 0 devices and, on a host without GPUs, every job. Thread-safe.

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "qatd/v1/service.pb.h"
#include "server/device_discovery.h"

namespace qatd::server {

inline constexpr char kCpuDevice[] = "cpu";

class DevicePool {
 public:
  DevicePool(const std::vector<GpuInfo>& gpus, int max_jobs_per_device);

  bool has_gpus() const { return gpu_count_ > 0; }
  int max_jobs_per_device() const { return max_jobs_; }

  // FAILED_PRECONDITION when a job asking for `device_count` devices can never run here.
  absl::Status CheckFits(int device_count) const;
  // The devices for such a job if they are free now (GPU ids "0", "1", ... or {"cpu"}).
  // Prefers the least loaded GPUs, then the ones with the most free memory.
  std::optional<std::vector<std::string>> TryAcquire(int device_count);
  void Release(const std::vector<std::string>& devices);
  void UpdateMemory(const std::vector<GpuInfo>& gpus);
  std::vector<v1::DeviceInfo> Snapshot() const;

  // The CUDA_VISIBLE_DEVICES value for an acquired set ("" for the cpu).
  static std::string CudaVisibleDevices(const std::vector<std::string>& devices);

 private:
  struct Slot {
    v1::DeviceInfo info;
  };
  Slot* FindLocked(const std::string& id);

  const int max_jobs_;
  int gpu_count_ = 0;
  mutable std::mutex mu_;
  std::vector<Slot> slots_;  // GPUs by index, then "cpu"; guarded by mu_
};

}  // namespace qatd::server
