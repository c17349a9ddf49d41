#include "server/device_discovery.h"

#include <cstdio>
#include <cstdlib>
#include <unistd.h>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/nvml.h"

namespace qatd::server {
namespace {

constexpr char kDefaultQuery[] =
    "nvidia-smi --query-gpu=index,memory.total,memory.free --format=csv,noheader 2>/dev/null";

// "81559 MiB" / "81559" (MiB) -> bytes.
bool ParseMemory(absl::string_view field, int64_t* bytes) {
  field = absl::StripAsciiWhitespace(field);
  int64_t scale = int64_t{1} << 20;
  auto strip_suffix = [&](absl::string_view suffix, int64_t factor) {
    if (field.size() > suffix.size() && field.substr(field.size() - suffix.size()) == suffix) {
      field = absl::StripAsciiWhitespace(field.substr(0, field.size() - suffix.size()));
      scale = factor;
      return true;
    }
    return false;
  };
  (void)(strip_suffix("MiB", int64_t{1} << 20) || strip_suffix("GiB", int64_t{1} << 30) ||
         strip_suffix("KiB", int64_t{1} << 10));
  int64_t value = 0;
  if (!absl::SimpleAtoi(field, &value) || value < 0) return false;
  *bytes = value * scale;
  return true;
}

bool OnPath(const char* program) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return false;
  for (absl::string_view dir : absl::StrSplit(path, ':')) {
    if (dir.empty()) continue;
    std::string candidate = absl::StrCat(std::string(dir), "/", program);
    if (::access(candidate.c_str(), X_OK) == 0) return true;
  }
  return false;
}

}  // namespace

absl::StatusOr<std::vector<GpuInfo>> ParseNvidiaSmiCsv(std::string_view text) {
  std::vector<GpuInfo> gpus;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(absl::string_view(text.data(), text.size()), '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    std::vector<absl::string_view> fields = absl::StrSplit(line, ',');
    GpuInfo gpu;
    if (fields.size() != 3 || !absl::SimpleAtoi(absl::StripAsciiWhitespace(fields[0]), &gpu.index) ||
        !ParseMemory(fields[1], &gpu.memory_total_bytes) || !ParseMemory(fields[2], &gpu.memory_free_bytes)) {
      return absl::InvalidArgumentError(
          absl::StrCat("nvidia-smi output line ", line_number, " is not 'index, total, free': '", std::string(line), "'"));
    }
    gpus.push_back(gpu);
  }
  return gpus;
}

std::vector<GpuInfo> DiscoverGpus(const std::string& command) {
  if (command.empty()) {
    if (const Nvml* nvml = SharedNvml(); nvml != nullptr) {
      absl::StatusOr<std::vector<NvmlDevice>> devices = nvml->Devices();
      if (devices.ok()) {
        std::vector<GpuInfo> gpus;
        for (const NvmlDevice& d : *devices) {
          gpus.push_back({.index = d.index,
                          .memory_total_bytes = d.memory_total_bytes,
                          .memory_free_bytes = d.memory_free_bytes,
                          .utilization = d.utilization});
        }
        return gpus;
      }
      // A driver that answers nothing now: fall through to nvidia-smi, which says the same or fails.
    }
    if (!OnPath("nvidia-smi")) return {};
  }
  const std::string cmd = command.empty() ? kDefaultQuery : command;
  FILE* pipe = ::popen(cmd.c_str(), "re");
  if (pipe == nullptr) return {};
  std::string output;
  char buffer[4096];
  size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.append(buffer, n);
  int rc = ::pclose(pipe);
  if (rc != 0) return {};
  absl::StatusOr<std::vector<GpuInfo>> gpus = ParseNvidiaSmiCsv(output);
  if (!gpus.ok()) return {};
  return *std::move(gpus);
}

}  // namespace qatd::server
