#pragma once
// NVIDIA's management library (NVML), loaded at run time with dlopen so that qatd builds and
// runs without the CUDA driver: device memory and utilisation straight from the driver, the
// same numbers nvidia-smi prints (it is an NVML client), without starting a process per sample.
// Device indices are NVML's (PCI bus order), as nvidia-smi's and CUDA_DEVICE_ORDER=PCI_BUS_ID.
//
//   absl::StatusOr<std::unique_ptr<Nvml>> nvml = Nvml::Load();   // NOT_FOUND on a host without it
//   absl::StatusOr<std::vector<NvmlDevice>> devices = (*nvml)->Devices();
//
// Thread-compatible: NVML itself is thread-safe, this wrapper holds no mutable state.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace qatd::server {

struct NvmlDevice {
  int index = 0;
  int64_t memory_total_bytes = 0;
  int64_t memory_free_bytes = 0;
  int64_t memory_used_bytes = 0;
  double utilization = -1;  // [0, 1]: the share of the last sample period a kernel ran; -1 unknown
};

class Nvml {
 public:
  // Opens `library` ("" = libnvidia-ml.so.1, the driver's, found by the dynamic loader) and
  // calls nvmlInit_v2. NOT_FOUND when the library cannot be opened; UNAVAILABLE when a symbol is
  // missing or the init fails (the message names which, with NVML's error string).
  static absl::StatusOr<std::unique_ptr<Nvml>> Load(const std::string& library = "");
  ~Nvml();  // nvmlShutdown, dlclose
  Nvml(const Nvml&) = delete;
  Nvml& operator=(const Nvml&) = delete;

  // Every device's memory and utilisation. A device whose utilisation NVML cannot report
  // (NVML_ERROR_NOT_SUPPORTED on some virtualised GPUs) keeps utilization -1; any other error
  // is UNAVAILABLE naming the call and the device.
  absl::StatusOr<std::vector<NvmlDevice>> Devices() const;

 private:
  struct Api;
  explicit Nvml(std::unique_ptr<Api> api);
  std::unique_ptr<Api> api_;
};

// The process's NVML, loaded on first use (nullptr when it cannot be loaded; the reason is
// logged once at INFO). Safe to call from any thread.
const Nvml* SharedNvml();

}  // namespace qatd::server
