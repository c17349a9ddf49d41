#pragma once
// The gRPC transport of a worker's events (proto/qatd/v1/worker.proto WorkerChannel): one
// Attach stream to the daemon, authenticated by the job's id and per-run secret. Works from any
// host that reaches the daemon's gRPC port.
//
// Lifetime and failure: Connect() waits at most `daemon_timeout_seconds` for the daemon. A
// WorkerControl{cancel} from the daemon cancels the job's CancelToken; WorkerControl{session}
// inputs go to session_inbox(). If the stream breaks
// before the final event (the daemon died or the network went; gRPC keepalive pings notice a
// silent peer within ~20 s), the token is cancelled so the job stops, and a watchdog ends the
// process with exit code 3 if it is still running `daemon_timeout_seconds` later. The final
// event is delivered when the daemon ends the call with OK after reading it.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "qatd/v1/worker.grpc.pb.h"
#include "worker/event_reporter.h"

namespace qatd::worker {

struct GrpcReporterOptions {
  std::string daemon_address;  // HOST:PORT (required)
  std::string ca_file;         // PEM roots of a TLS daemon; "" = plaintext
  int64_t job_id = 0;          // required
  std::string secret;          // the run's secret (required)
  double daemon_timeout_seconds = 60.0;
};

class GrpcReporter : public EventReporter {
 public:
  // UNAVAILABLE when the daemon cannot be reached in time; INVALID_ARGUMENT for bad options.
  static absl::StatusOr<std::unique_ptr<GrpcReporter>> Connect(const GrpcReporterOptions& options,
                                                               jobs::CancelToken* cancel);
  ~GrpcReporter() override;

 protected:
  absl::Status Deliver(const v1::WorkerEvent& event) override;

 private:
  GrpcReporter(const GrpcReporterOptions& options, jobs::CancelToken* cancel,
               std::shared_ptr<grpc::Channel> channel);
  void ReadControls();
  // The daemon is gone: cancel the job and arm the exit watchdog (once).
  void MarkLost();
  // Waits (bounded) for the daemon to end the call; its status.
  absl::Status Close();

  const GrpcReporterOptions options_;
  jobs::CancelToken* cancel_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::WorkerChannel::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::WorkerEvent, v1::WorkerControl>> stream_;
  std::thread reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool reads_done_ = false;  // guarded by mu_
  std::atomic<bool> closed_{false};  // the worker half-closed (after the final event or at exit)
  std::atomic<bool> lost_{false};
};

}  // namespace qatd::worker
