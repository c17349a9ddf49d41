#pragma once
// The daemon's side of the gRPC worker transport (proto/qatd/v1/worker.proto WorkerChannel):
// workers attach one stream per job run, authenticated by the job id and the run's secret, and
// their events land in the run's WorkerMailbox, which the scheduler's monitor reads exactly as
// it reads a pipe; controls (cancel, a session's inputs) go back on the same stream. The service is registered on the daemon's gRPC port; it checks no bearer
// token (workers hold no user token) but the per-run secret, compared in constant time.
// Thread-safe.

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <condition_variable>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "qatd/v1/worker.grpc.pb.h"

namespace qatd::server {

class AttachReactor;

// The events of one job run's worker, from the stream to the monitor.
class WorkerMailbox {
 public:
  WorkerMailbox(int64_t job_id, std::string secret) : job_id_(job_id), secret_(std::move(secret)) {}

  int64_t job_id() const { return job_id_; }
  bool SecretMatches(const std::string& presented) const;

  enum class PopResult { kEvent, kEnded, kTimeout };
  // The next event, the end of the stream (with how it ended), or nothing within `timeout`.
  PopResult Pop(std::chrono::milliseconds timeout, v1::WorkerEvent* event, absl::Status* end);
  // Whether a worker has attached (ever).
  bool attached() const;
  // Asks the attached worker to cancel its job. False when no stream is attached now.
  bool Cancel(const std::string& reason);
  // Sends `control` to the worker, in order; held until the worker attaches. UNAVAILABLE
  // once its stream ended.
  absl::Status Send(const v1::WorkerControl& control);

  // Reactor side.
  bool Attach(AttachReactor* reactor);  // false: a stream was attached before
  void FlushUnsent();                    // after Attach + Begin: what Send() held back
  void Push(v1::WorkerEvent event);
  void End(const absl::Status& how);
  void Detach(AttachReactor* reactor);

 private:
  const int64_t job_id_;
  const std::string secret_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<v1::WorkerEvent> events_;  // guarded by mu_
  bool ever_attached_ = false;          // guarded by mu_
  bool ended_ = false;                  // guarded by mu_
  absl::Status end_;                    // guarded by mu_
  AttachReactor* reactor_ = nullptr;    // guarded by mu_; the attached stream, until OnDone
  std::deque<v1::WorkerControl> unsent_;  // guarded by mu_; Send() before the worker attached
};

class WorkerChannelService : public v1::WorkerChannel::CallbackService {
 public:
  // A mailbox for a new run of job `job_id`, replacing any earlier one.
  std::shared_ptr<WorkerMailbox> Open(int64_t job_id, const std::string& secret);
  // Forgets the run's mailbox (a later Attach for it is refused).
  void Close(const std::shared_ptr<WorkerMailbox>& mailbox);

  grpc::ServerBidiReactor<v1::WorkerEvent, v1::WorkerControl>* Attach(grpc::CallbackServerContext* context) override;

 private:
  std::mutex mu_;
  std::map<int64_t, std::shared_ptr<WorkerMailbox>> open_;  // guarded by mu_
};

// 32 random bytes from /dev/urandom, hex-encoded: a run's secret.
absl::StatusOr<std::string> NewJobSecret();

}  // namespace qatd::server
