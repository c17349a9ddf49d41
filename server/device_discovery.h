#pragma once
// Finds the host's CUDA devices without LibTorch: through NVML (the driver's
// libnvidia-ml.so.1, server/nvml.h) when it loads, else `nvidia-smi --query-gpu=index,
// memory.total,memory.free --format=csv,noheader` when nvidia-smi is on PATH. Neither (or a
// failing nvidia-smi) means a CPU-only host.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace qatd::server {

struct GpuInfo {
  int index = 0;
  int64_t memory_total_bytes = 0;
  int64_t memory_free_bytes = 0;
  double utilization = -1;  // [0, 1] when NVML reported it; -1 = unknown (ask nvidia-smi)
};

// Parses lines like "0, 81559 MiB, 80000 MiB" (units optional: "nounits" output gives MiB
// numbers). Blank lines are skipped; INVALID_ARGUMENT names the bad line.
absl::StatusOr<std::vector<GpuInfo>> ParseNvidiaSmiCsv(std::string_view text);

// NVML's devices when `command` is empty and NVML loads; else runs `command` (the nvidia-smi
// query by default) and parses its output. An empty list if the command is missing or fails.
std::vector<GpuInfo> DiscoverGpus(const std::string& command = "");

}  // namespace qatd::server
