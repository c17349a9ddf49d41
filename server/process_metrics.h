#pragma once
// The standard process_* metrics of the Prometheus client libraries, which prometheus-cpp
// lacks, read from /proc at scrape time (Linux only):
//   process_cpu_seconds_total         counter  user + system CPU time
//   process_resident_memory_bytes     gauge
//   process_virtual_memory_bytes      gauge
//   process_start_time_seconds        gauge    Unix time the process started
//   process_open_fds                  gauge
//   process_max_fds                   gauge    RLIMIT_NOFILE soft limit
// A value that cannot be read is left out (never reported as 0).

#include <prometheus/metric_family.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qatd::server {

// The fields of /proc/<pid>/stat the metrics need (proc(5) numbering).
struct ProcStat {
  double utime_ticks = 0;      // 14
  double stime_ticks = 0;      // 15
  double starttime_ticks = 0;  // 22, since boot
  double vsize_bytes = 0;      // 23
  double rss_pages = 0;        // 24
};
// Parses the text of /proc/<pid>/stat (the command name may hold spaces and parentheses);
// nullopt if it is malformed.
std::optional<ProcStat> ParseProcStat(std::string_view text);
// "btime" of /proc/stat (boot time, Unix seconds); nullopt if absent.
std::optional<double> ParseBootTime(std::string_view proc_stat_text);

// The families above for the calling process; `proc_dir` is "/proc" except in tests.
std::vector<prometheus::MetricFamily> CollectProcessMetrics(const std::string& proc_dir = "/proc");

}  // namespace qatd::server
