#pragma once
// The worker's Reporter: every call becomes a WorkerEvent (proto/qatd/v1/worker.proto) that a
// transport delivers to the daemon: PipeReporter (length-prefixed frames on an inherited fd,
// a worker the daemon forked) or GrpcReporter (worker/grpc_reporter.h: the WorkerChannel
// service, a worker on any host). Thread-safe. Once a delivery fails (the daemon has gone),
// further events are dropped and the job's CancelToken is cancelled so the job stops.
// Remembers the last value of each metric; Finish() sends them as the job's result (except the
// per-rank rank/<r>/... series, which the job's ranks list shows).

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/common/reporter.h"
#include "qatd/v1/worker.pb.h"
#include "worker/session_inbox.h"

namespace qatd::worker {

class EventReporter : public jobs::Reporter {
 public:
  explicit EventReporter(jobs::CancelToken* cancel) : cancel_(cancel) {}

  void Progress(int64_t done, int64_t total, const std::string& unit, double rate, double eta_s) override;
  void Metric(const std::string& name, int64_t step, double value) override;
  void Log(jobs::LogLevel level, const std::string& message) override;
  void Artifact(const std::string& path, const std::string& kind) override;
  // A generated piece of text (GENERATE jobs).
  void Text(const std::string& text, int32_t token_id) override;
  // A data-parallel job's ranks (WorkerEvent.ranks).
  void Ranks(const std::vector<jobs::RankPlacement>& ranks) override;

  // The final event: `status` and the last value of every metric. UNAVAILABLE if the daemon
  // is gone.
  absl::Status Finish(const absl::Status& status, const std::string& summary = "");

  // A session job's inputs from the daemon (filled by the transport or a control pipe).
  const std::shared_ptr<SessionInbox>& session_inbox() const { return inbox_; }

 protected:
  // Delivers one event; called with the reporter's lock held, one event at a time.
  virtual absl::Status Deliver(const v1::WorkerEvent& event) = 0;

 private:
  absl::Status Send(const v1::WorkerEvent& event);

  jobs::CancelToken* cancel_;
  const std::shared_ptr<SessionInbox> inbox_ = std::make_shared<SessionInbox>();
  std::mutex mu_;
  bool broken_ = false;                       // guarded by mu_
  std::map<std::string, double> last_metric_;  // guarded by mu_
};

// Frames on `fd` (worker/framing.h); UNAVAILABLE once the daemon closed the pipe (EPIPE).
class PipeReporter : public EventReporter {
 public:
  PipeReporter(int fd, jobs::CancelToken* cancel) : EventReporter(cancel), fd_(fd) {}

 protected:
  absl::Status Deliver(const v1::WorkerEvent& event) override;

 private:
  const int fd_;
};

}  // namespace qatd::worker
