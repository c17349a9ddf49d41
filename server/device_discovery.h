#pragma once
// Finds the host's CUDA devices without LibTorch: `nvidia-smi --query-gpu=index,memory.total,
// memory.free --format=csv,noheader` when nvidia-smi is on PATH. No nvidia-smi (or a failing
// one) means a CPU-only host.

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
};

// Parses lines like "0, 81559 MiB, 80000 MiB" (units optional: "nounits" output gives MiB
// numbers). Blank lines are skipped; INVALID_ARGUMENT names the bad line.
absl::StatusOr<std::vector<GpuInfo>> ParseNvidiaSmiCsv(std::string_view text);

// Runs `command` (the nvidia-smi query by default) and parses its output. An empty list if
// the command is missing or fails.
std::vector<GpuInfo> DiscoverGpus(const std::string& command = "");

}  // namespace qatd::server
