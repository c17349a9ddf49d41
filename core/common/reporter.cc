#include "core/common/reporter.h"

#include <cstdio>
#include <mutex>

namespace qatd::jobs {
namespace {
std::mutex g_stderr_mu;
const char* LevelName(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarning: return "warning";
    case LogLevel::kError: return "error";
  }
  return "?";
}
}  // namespace

void StderrReporter::Progress(int64_t done, int64_t total, const std::string& unit, double rate, double eta_s) {
  std::lock_guard<std::mutex> lock(g_stderr_mu);
  if (total > 0)
    std::fprintf(stderr, "\r[%5.1f%%] %lld/%lld %s", 100.0 * done / total, static_cast<long long>(done),
                 static_cast<long long>(total), unit.c_str());
  else
    std::fprintf(stderr, "\r%lld %s", static_cast<long long>(done), unit.c_str());
  if (rate > 0) std::fprintf(stderr, "  %.0f %s/s", rate, unit.c_str());
  if (eta_s >= 0) std::fprintf(stderr, "  ETA %.0fs", eta_s);
  std::fprintf(stderr, "   ");
  if (total > 0 && done >= total) std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

void StderrReporter::Metric(const std::string& name, int64_t step, double value) {
  std::lock_guard<std::mutex> lock(g_stderr_mu);
  std::fprintf(stderr, "\n[metric] step %lld %s = %.6g\n", static_cast<long long>(step), name.c_str(), value);
}

void StderrReporter::Log(LogLevel level, const std::string& message) {
  std::lock_guard<std::mutex> lock(g_stderr_mu);
  std::fprintf(stderr, "\n[%s] %s\n", LevelName(level), message.c_str());
}

void StderrReporter::Artifact(const std::string& path, const std::string& kind) {
  std::lock_guard<std::mutex> lock(g_stderr_mu);
  std::fprintf(stderr, "\n[artifact] %s: %s\n", kind.c_str(), path.c_str());
}

}  // namespace qatd::jobs
