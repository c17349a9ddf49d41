#pragma once
// How a running job talks to the outside world (DESIGN.md §2): progress, metric points, log
// lines and artifacts. core/ only knows this interface; the daemon's worker implements it by
// streaming events over a pipe, tests and standalone commands implement it in memory/stderr.

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

namespace qatd::jobs {

enum class LogLevel { kDebug, kInfo, kWarning, kError };

// Where one rank of a data-parallel job runs (worker/data_parallel.h).
struct RankPlacement {
  int rank = 0;
  std::string host;    // host name
  std::string device;  // "cuda:1", "cpu"
  int64_t pid = 0;
};

class Reporter {
 public:
  virtual ~Reporter() = default;
  // `done` of `total` units (total 0 = unknown). `rate` is units/s (0 = unknown). `eta_s` < 0
  // when unknown. Called often; implementations must be cheap and thread-safe.
  virtual void Progress(int64_t done, int64_t total, const std::string& unit, double rate, double eta_s) = 0;
  // A point of a named series ("loss/kd", "eval/kd", "tokens_per_second") at `step`.
  virtual void Metric(const std::string& name, int64_t step, double value) = 0;
  virtual void Log(LogLevel level, const std::string& message) = 0;
  // A file or directory the job produced ("kd_cache", "checkpoint", "export").
  virtual void Artifact(const std::string& path, const std::string& kind) = 0;
  // A piece of generated text (GENERATE jobs stream their tokens). Default: dropped.
  virtual void Text(const std::string& text, int32_t token_id) {
    (void)text;
    (void)token_id;
  }
  // A data-parallel job's ranks, by rank; reported once by rank 0 after every rank joined.
  // Default: dropped.
  virtual void Ranks(const std::vector<RankPlacement>& ranks) { (void)ranks; }
};

// Cooperative cancellation: jobs poll `cancelled()` between units of work and stop cleanly
// (after making their state resumable).
class CancelToken {
 public:
  void Cancel() { cancelled_.store(true, std::memory_order_relaxed); }
  bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }

 private:
  std::atomic<bool> cancelled_{false};
};

// Prints progress and logs to stderr (standalone commands).
class StderrReporter : public Reporter {
 public:
  void Progress(int64_t done, int64_t total, const std::string& unit, double rate, double eta_s) override;
  void Metric(const std::string& name, int64_t step, double value) override;
  void Log(LogLevel level, const std::string& message) override;
  void Artifact(const std::string& path, const std::string& kind) override;
};

}  // namespace qatd::jobs
