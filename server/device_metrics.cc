#include "server/device_metrics.h"

#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace qatd::server {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::string RunCommand(const std::string& command) {
  std::string out;
  FILE* pipe = ::popen((command + " 2>/dev/null").c_str(), "re");
  if (pipe == nullptr) return out;
  char buffer[4096];
  size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0 && out.size() < (1 << 20)) out.append(buffer, n);
  if (::pclose(pipe) != 0) out.clear();
  return out;
}

}  // namespace

std::vector<std::pair<int, double>> ParseNvidiaSmiUtilization(std::string_view text) {
  std::vector<std::pair<int, double>> out;
  for (absl::string_view line : absl::StrSplit(absl::string_view(text.data(), text.size()), '\n')) {
    std::vector<absl::string_view> parts = absl::StrSplit(line, ',');
    int index = 0;
    double percent = 0;
    if (parts.size() != 2 || !absl::SimpleAtoi(absl::StripAsciiWhitespace(parts[0]), &index)) continue;
    absl::string_view value = absl::StripAsciiWhitespace(parts[1]);
    absl::ConsumeSuffix(&value, "%");
    if (!absl::SimpleAtod(absl::StripAsciiWhitespace(value), &percent) || percent < 0 || percent > 100) continue;
    out.emplace_back(index, percent / 100.0);
  }
  return out;
}

std::optional<std::pair<int64_t, int64_t>> ParseMemInfo(std::string_view text) {
  int64_t total_kib = -1;
  int64_t available_kib = -1;
  for (absl::string_view line : absl::StrSplit(absl::string_view(text.data(), text.size()), '\n')) {
    std::vector<absl::string_view> parts = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    if (parts.size() < 2) continue;
    if (parts[0] == "MemTotal:" && !absl::SimpleAtoi(parts[1], &total_kib)) return std::nullopt;
    if (parts[0] == "MemAvailable:" && !absl::SimpleAtoi(parts[1], &available_kib)) return std::nullopt;
  }
  if (total_kib < 0 || available_kib < 0 || available_kib > total_kib) return std::nullopt;
  return std::make_pair((total_kib - available_kib) * 1024, total_kib * 1024);
}

std::optional<std::pair<double, double>> ParseCpuJiffies(std::string_view text) {
  for (absl::string_view line : absl::StrSplit(absl::string_view(text.data(), text.size()), '\n')) {
    std::vector<absl::string_view> parts = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    if (parts.size() < 5 || parts[0] != "cpu") continue;
    double total = 0;
    double idle = 0;
    for (size_t i = 1; i < parts.size(); ++i) {
      double v = 0;
      if (!absl::SimpleAtod(parts[i], &v)) return std::nullopt;
      // user nice system idle iowait irq softirq steal guest guest_nice: guest time is
      // already counted in user/nice.
      if (i <= 8) total += v;
      if (i == 4 || i == 5) idle += v;
    }
    return std::make_pair(total - idle, total);
  }
  return std::nullopt;
}

DeviceSampler::DeviceSampler(std::string proc_dir, std::string nvidia_smi_utilization_command)
    : proc_dir_(std::move(proc_dir)),
      utilization_command_(nvidia_smi_utilization_command.empty()
                               ? "nvidia-smi --query-gpu=index,utilization.gpu --format=csv,noheader,nounits"
                               : std::move(nvidia_smi_utilization_command)) {}

std::vector<DeviceSample> DeviceSampler::Sample(const std::vector<GpuInfo>& gpus) {
  std::vector<DeviceSample> samples;
  if (!gpus.empty()) {
    bool known = true;  // NVML gave every device's utilisation: no nvidia-smi process
    for (const GpuInfo& gpu : gpus) known = known && gpu.utilization >= 0;
    std::vector<std::pair<int, double>> utilization;
    if (known) {
      for (const GpuInfo& gpu : gpus) utilization.emplace_back(gpu.index, gpu.utilization);
    } else {
      utilization = ParseNvidiaSmiUtilization(RunCommand(utilization_command_));
    }
    for (const GpuInfo& gpu : gpus) {
      DeviceSample s;
      s.device = std::to_string(gpu.index);
      s.memory_total_bytes = gpu.memory_total_bytes;
      s.memory_used_bytes = gpu.memory_total_bytes - gpu.memory_free_bytes;
      for (const auto& [index, ratio] : utilization) {
        if (index == gpu.index) s.utilization = ratio;
      }
      samples.push_back(s);
    }
    return samples;
  }
  DeviceSample cpu;
  cpu.device = "cpu";
  std::optional<std::pair<int64_t, int64_t>> memory = ParseMemInfo(ReadAll(proc_dir_ + "/meminfo"));
  if (!memory.has_value()) return samples;
  cpu.memory_used_bytes = memory->first;
  cpu.memory_total_bytes = memory->second;
  std::optional<std::pair<double, double>> jiffies = ParseCpuJiffies(ReadAll(proc_dir_ + "/stat"));
  if (jiffies.has_value() && last_cpu_.has_value() && jiffies->second > last_cpu_->second) {
    cpu.utilization = (jiffies->first - last_cpu_->first) / (jiffies->second - last_cpu_->second);
    if (cpu.utilization < 0) cpu.utilization = 0;
    if (cpu.utilization > 1) cpu.utilization = 1;
  }
  last_cpu_ = jiffies;
  samples.push_back(cpu);
  return samples;
}

}  // namespace qatd::server
