#pragma once
// Samples of the devices jobs run on, for qatd_device_* (server/metrics.h):
// - GPUs: memory from DiscoverGpus (NVML, else nvidia-smi), utilisation from NVML when it
//   reported it, else `nvidia-smi --query-gpu=index,utilization.gpu --format=csv,noheader,nounits`.
// - A CPU-only host (no GPU found): one device "cpu" whose memory is the host's
//   (/proc/meminfo MemTotal - MemAvailable) and whose utilisation is the busy share of all
//   CPUs between two samples (/proc/stat), since jobs then run on the CPU.
// Not thread-safe: one DeviceSampler per sampling thread.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "server/device_discovery.h"
#include "server/metrics.h"

namespace qatd::server {

// "0, 37\n1, 0\n" -> {{0, 0.37}, {1, 0}}; lines that do not parse are skipped.
std::vector<std::pair<int, double>> ParseNvidiaSmiUtilization(std::string_view text);
// (used, total) bytes from /proc/meminfo text; nullopt without MemTotal/MemAvailable.
std::optional<std::pair<int64_t, int64_t>> ParseMemInfo(std::string_view text);
// (busy, total) jiffies of the "cpu" line of /proc/stat; nullopt if absent.
std::optional<std::pair<double, double>> ParseCpuJiffies(std::string_view text);

class DeviceSampler {
 public:
  // `proc_dir` and the utilisation command are seams for tests; "" = the real ones.
  explicit DeviceSampler(std::string proc_dir = "/proc", std::string nvidia_smi_utilization_command = "");
  std::vector<DeviceSample> Sample(const std::vector<GpuInfo>& gpus);

 private:
  std::string proc_dir_;
  std::string utilization_command_;
  std::optional<std::pair<double, double>> last_cpu_;
};

}  // namespace qatd::server
