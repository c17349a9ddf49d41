#pragma once
// The inputs of a chat session job (GenerateSpec.session) as the worker receives them from
// the daemon: WorkerControl.session messages, from the control pipe (`--control-fd`, pipe
// transport: ReadControlPipe) or the WorkerChannel stream (gRPC transport, GrpcReporter), in
// order. The session job reads them through infer::SessionInputs. Thread-safe.

#include <condition_variable>
#include <deque>
#include <mutex>

#include "core/infer/session_input.h"
#include "qatd/v1/specs.pb.h"

namespace qatd::worker {

class SessionInbox : public infer::SessionInputs {
 public:
  void Push(v1::SessionInput input);
  // No input will come any more (the channel ended); queued ones are still handed out.
  void Close();

  Wait Next(std::chrono::milliseconds timeout, v1::SessionInput* input) override;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<v1::SessionInput> queue_;  // guarded by mu_
  bool closed_ = false;                 // guarded by mu_
};

// Reads framed WorkerControl messages from `fd` (the daemon's control pipe) until EOF or a
// bad frame, pushing their `session` inputs into `inbox`, then closes the inbox. Blocks: run
// it on its own thread.
void ReadControlPipe(int fd, SessionInbox* inbox);

}  // namespace qatd::worker
