#include "server/process_metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace qatd::server {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

prometheus::MetricFamily Family(const char* name, const char* help, prometheus::MetricType type, double value) {
  prometheus::MetricFamily family;
  family.name = name;
  family.help = help;
  family.type = type;
  prometheus::ClientMetric metric;
  if (type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(metric);
  return family;
}

}  // namespace

std::optional<ProcStat> ParseProcStat(std::string_view text) {
  // "pid (comm) state ppid ...": fields after the last ')' start at field 3.
  const size_t paren = text.rfind(')');
  if (paren == std::string_view::npos) return std::nullopt;
  std::vector<absl::string_view> fields = absl::StrSplit(absl::string_view(text.data() + paren + 1, text.size() - paren - 1), ' ', absl::SkipWhitespace());
  // fields[0] is field 3 (state); field n is fields[n - 3].
  if (fields.size() < 22) return std::nullopt;
  ProcStat stat;
  auto field = [&](int n, double* out) { return absl::SimpleAtod(fields[static_cast<size_t>(n - 3)], out); };
  if (!field(14, &stat.utime_ticks) || !field(15, &stat.stime_ticks) || !field(22, &stat.starttime_ticks) ||
      !field(23, &stat.vsize_bytes) || !field(24, &stat.rss_pages)) {
    return std::nullopt;
  }
  return stat;
}

std::optional<double> ParseBootTime(std::string_view proc_stat_text) {
  for (absl::string_view line : absl::StrSplit(absl::string_view(proc_stat_text.data(), proc_stat_text.size()), '\n')) {
    std::vector<absl::string_view> parts = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    double value = 0;
    if (parts.size() == 2 && parts[0] == "btime" && absl::SimpleAtod(parts[1], &value)) return value;
  }
  return std::nullopt;
}

std::vector<prometheus::MetricFamily> CollectProcessMetrics(const std::string& proc_dir) {
  using prometheus::MetricType;
  std::vector<prometheus::MetricFamily> families;
  const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
  if (std::optional<ProcStat> stat = ParseProcStat(ReadAll(proc_dir + "/self/stat")); stat && ticks > 0) {
    families.push_back(Family("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
                              MetricType::Counter, (stat->utime_ticks + stat->stime_ticks) / ticks));
    families.push_back(Family("process_resident_memory_bytes", "Resident memory size in bytes.", MetricType::Gauge,
                              stat->rss_pages * page));
    families.push_back(Family("process_virtual_memory_bytes", "Virtual memory size in bytes.", MetricType::Gauge,
                              stat->vsize_bytes));
    if (std::optional<double> boot = ParseBootTime(ReadAll(proc_dir + "/stat")); boot.has_value()) {
      families.push_back(Family("process_start_time_seconds",
                                "Start time of the process since unix epoch in seconds.", MetricType::Gauge,
                                *boot + stat->starttime_ticks / ticks));
    }
  }
  std::error_code ec;
  double open_fds = 0;
  for (std::filesystem::directory_iterator it(proc_dir + "/self/fd", ec), end; !ec && it != end; it.increment(ec)) {
    ++open_fds;
  }
  if (!ec) {
    families.push_back(
        Family("process_open_fds", "Number of open file descriptors.", MetricType::Gauge, open_fds));
  }
  struct rlimit limit {};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY) {
    families.push_back(Family("process_max_fds", "Maximum number of open file descriptors.", MetricType::Gauge,
                              static_cast<double>(limit.rlim_cur)));
  }
  return families;
}

}  // namespace qatd::server
