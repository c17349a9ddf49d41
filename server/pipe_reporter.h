#pragma once
// The worker's Reporter: every call becomes a length-prefixed WorkerEvent on the event pipe
// to the daemon (proto/qatd/v1/worker.proto). Thread-safe. If the daemon has gone (EPIPE),
// further events are dropped and the job's CancelToken is cancelled so the job stops.
// Remembers the last value of each metric; Finish() sends them as the job's result.

#include <map>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "core/jobs/reporter.h"
#include "qatd/v1/worker.pb.h"

namespace qatd::server {

class PipeReporter : public jobs::Reporter {
 public:
  PipeReporter(int fd, jobs::CancelToken* cancel) : fd_(fd), cancel_(cancel) {}

  void Progress(int64_t done, int64_t total, const std::string& unit, double rate, double eta_s) override;
  void Metric(const std::string& name, int64_t step, double value) override;
  void Log(jobs::LogLevel level, const std::string& message) override;
  void Artifact(const std::string& path, const std::string& kind) override;
  // A generated piece of text (GENERATE jobs).
  void Text(const std::string& text, int32_t token_id) override;

  // The final event: `status` and the last value of every metric. UNAVAILABLE if the daemon
  // is gone.
  absl::Status Finish(const absl::Status& status, const std::string& summary = "");

 private:
  absl::Status Send(const v1::WorkerEvent& event);

  const int fd_;
  jobs::CancelToken* cancel_;
  std::mutex mu_;
  bool broken_ = false;                       // guarded by mu_
  std::map<std::string, double> last_metric_;  // guarded by mu_
};

}  // namespace qatd::server
