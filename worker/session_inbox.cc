#include "worker/session_inbox.h"

#include <cstdio>
#include <optional>
#include <string>

#include "qatd/v1/worker.pb.h"
#include "worker/framing.h"

namespace qatd::worker {

void SessionInbox::Push(v1::SessionInput input) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(input));
  }
  cv_.notify_all();
}

void SessionInbox::Close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
  }
  cv_.notify_all();
}

infer::SessionInputs::Wait SessionInbox::Next(std::chrono::milliseconds timeout, v1::SessionInput* input) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, timeout, [this] { return !queue_.empty() || closed_; });
  if (!queue_.empty()) {
    *input = std::move(queue_.front());
    queue_.pop_front();
    return Wait::kInput;
  }
  return closed_ ? Wait::kClosed : Wait::kTimeout;
}

void ReadControlPipe(int fd, SessionInbox* inbox) {
  FrameReader reader(fd);
  while (true) {
    absl::StatusOr<std::optional<std::string>> frame = reader.Next();
    if (!frame.ok()) {
      std::fprintf(stderr, "qatd-worker: bad control frame: %s\n", frame.status().ToString().c_str());
      break;
    }
    if (!frame->has_value()) break;
    v1::WorkerControl control;
    if (!control.ParseFromString(**frame)) {
      std::fprintf(stderr, "qatd-worker: unparsable control message\n");
      break;
    }
    if (control.has_session()) inbox->Push(control.session());
  }
  inbox->Close();
}

}  // namespace qatd::worker
