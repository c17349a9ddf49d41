#include "server/worker_channel.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace qatd::server {

// One worker's Attach stream: every event read goes to the mailbox; cancels go out as
// WorkerControl messages, one write at a time.
class AttachReactor : public grpc::ServerBidiReactor<v1::WorkerEvent, v1::WorkerControl> {
 public:
  // Refuses the call.
  explicit AttachReactor(const grpc::Status& refusal) { Finish(refusal); }
  // Serves `mailbox`'s stream once Begin() is called.
  explicit AttachReactor(std::shared_ptr<WorkerMailbox> mailbox) : mailbox_(std::move(mailbox)) {}
  void Begin() { StartRead(&event_); }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // The worker half-closed (after its final event) or the stream broke: the mailbox ends,
      // and the monitor decides from whether a final event came.
      mailbox_->End(absl::OkStatus());
      std::lock_guard<std::mutex> lock(mu_);
      reading_done_ = true;
      FinishLocked();
      return;
    }
    mailbox_->Push(std::move(event_));
    event_.Clear();
    StartRead(&event_);
  }

  void SendCancel(const std::string& reason) {
    std::lock_guard<std::mutex> lock(mu_);
    if (finishing_ || cancel_sent_) return;
    cancel_sent_ = true;
    v1::WorkerControl control;
    control.set_cancel(true);
    control.set_reason(reason);
    QueueLocked(std::move(control));
  }

  // Queues `control` behind the ones being written; false once the call is finishing.
  bool Send(v1::WorkerControl control) {
    std::lock_guard<std::mutex> lock(mu_);
    if (finishing_) return false;
    QueueLocked(std::move(control));
    return true;
  }

  void OnWriteDone(bool /*ok*/) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!outbox_.empty() && !finishing_) {
      control_ = std::move(outbox_.front());
      outbox_.pop_front();
      writing_ = true;
      StartWrite(&control_);
      return;
    }
    if (reading_done_) FinishLocked();
  }

  void OnCancel() override {
    if (mailbox_ != nullptr) mailbox_->End(absl::CancelledError("the worker's stream broke"));
  }

  void OnDone() override {
    if (mailbox_ != nullptr) mailbox_->Detach(this);
    delete this;
  }

 private:
  void QueueLocked(v1::WorkerControl control) {
    if (writing_) {
      outbox_.push_back(std::move(control));
      return;
    }
    control_ = std::move(control);
    writing_ = true;
    StartWrite(&control_);
  }

  void FinishLocked() {
    if (finishing_ || writing_) return;
    finishing_ = true;
    Finish(grpc::Status::OK);
  }

  std::shared_ptr<WorkerMailbox> mailbox_;
  v1::WorkerEvent event_;
  v1::WorkerControl control_;              // the one being written
  std::deque<v1::WorkerControl> outbox_;   // guarded by mu_: waiting for control_'s write
  std::mutex mu_;
  bool reading_done_ = false;  // guarded by mu_
  bool writing_ = false;       // guarded by mu_
  bool finishing_ = false;     // guarded by mu_
  bool cancel_sent_ = false;   // guarded by mu_
};

bool WorkerMailbox::SecretMatches(const std::string& presented) const {
  // Constant time in the secret's content.
  if (presented.size() != secret_.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < secret_.size(); ++i) diff |= static_cast<unsigned char>(presented[i] ^ secret_[i]);
  return diff == 0;
}

WorkerMailbox::PopResult WorkerMailbox::Pop(std::chrono::milliseconds timeout, v1::WorkerEvent* event,
                                            absl::Status* end) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return !events_.empty() || ended_; });
  if (!events_.empty()) {
    *event = std::move(events_.front());
    events_.pop_front();
    return PopResult::kEvent;
  }
  if (ended_) {
    *end = end_;
    return PopResult::kEnded;
  }
  return PopResult::kTimeout;
}

bool WorkerMailbox::attached() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ever_attached_;
}

bool WorkerMailbox::Cancel(const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  if (reactor_ == nullptr || ended_) return false;
  reactor_->SendCancel(reason);
  return true;
}

absl::Status WorkerMailbox::Send(const v1::WorkerControl& control) {
  std::lock_guard<std::mutex> lock(mu_);
  if (ended_) return absl::UnavailableError(absl::StrCat("job ", job_id_, "'s worker stream has ended"));
  if (reactor_ == nullptr && ever_attached_) {
    return absl::UnavailableError(absl::StrCat("job ", job_id_, "'s worker stream has ended"));
  }
  if (reactor_ == nullptr || !unsent_.empty()) {  // not attached yet, or FlushUnsent still to come
    unsent_.push_back(control);
    return absl::OkStatus();
  }
  if (!reactor_->Send(control)) return absl::UnavailableError(absl::StrCat("job ", job_id_, "'s worker stream is closing"));
  return absl::OkStatus();
}

bool WorkerMailbox::Attach(AttachReactor* reactor) {
  std::lock_guard<std::mutex> lock(mu_);
  if (ever_attached_) return false;
  ever_attached_ = true;
  reactor_ = reactor;
  return true;
}

void WorkerMailbox::FlushUnsent() {
  std::lock_guard<std::mutex> lock(mu_);
  if (reactor_ == nullptr) return;
  while (!unsent_.empty()) {
    (void)reactor_->Send(std::move(unsent_.front()));
    unsent_.pop_front();
  }
}

void WorkerMailbox::Push(v1::WorkerEvent event) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (ended_) return;
    events_.push_back(std::move(event));
  }
  cv_.notify_all();
}

void WorkerMailbox::End(const absl::Status& how) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (ended_) return;
    ended_ = true;
    end_ = how;
  }
  cv_.notify_all();
}

void WorkerMailbox::Detach(AttachReactor* reactor) {
  std::lock_guard<std::mutex> lock(mu_);
  if (reactor_ == reactor) reactor_ = nullptr;
}

std::shared_ptr<WorkerMailbox> WorkerChannelService::Open(int64_t job_id, const std::string& secret) {
  auto mailbox = std::make_shared<WorkerMailbox>(job_id, secret);
  std::lock_guard<std::mutex> lock(mu_);
  open_[job_id] = mailbox;
  return mailbox;
}

void WorkerChannelService::Close(const std::shared_ptr<WorkerMailbox>& mailbox) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = open_.find(mailbox->job_id());
  if (it != open_.end() && it->second == mailbox) open_.erase(it);
}

grpc::ServerBidiReactor<v1::WorkerEvent, v1::WorkerControl>* WorkerChannelService::Attach(
    grpc::CallbackServerContext* context) {
  const auto& metadata = context->client_metadata();
  auto id_it = metadata.find("x-qatd-job-id");
  auto secret_it = metadata.find("x-qatd-job-secret");
  int64_t job_id = 0;
  if (id_it == metadata.end() || secret_it == metadata.end() ||
      !absl::SimpleAtoi(std::string(id_it->second.data(), id_it->second.size()), &job_id)) {
    return new AttachReactor(grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                                          "WorkerChannel.Attach needs x-qatd-job-id and x-qatd-job-secret"));
  }
  std::shared_ptr<WorkerMailbox> mailbox;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = open_.find(job_id);
    if (it != open_.end()) mailbox = it->second;
  }
  const std::string presented(secret_it->second.data(), secret_it->second.size());
  if (mailbox == nullptr || !mailbox->SecretMatches(presented)) {
    spdlog::warn("WorkerChannel: refused a worker stream for job {} from {} (no such run or wrong secret)", job_id,
                 context->peer());
    return new AttachReactor(
        grpc::Status(grpc::StatusCode::UNAUTHENTICATED, absl::StrCat("job ", job_id, " has no running worker with this secret")));
  }
  auto* reactor = new AttachReactor(mailbox);
  if (!mailbox->Attach(reactor)) {
    delete reactor;  // never handed to gRPC
    return new AttachReactor(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                          absl::StrCat("job ", job_id, "'s worker is already attached")));
  }
  reactor->Begin();
  mailbox->FlushUnsent();  // a session's inputs sent before the worker attached
  return reactor;
}

absl::StatusOr<std::string> NewJobSecret() {
  unsigned char bytes[32];
  int fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::InternalError(absl::StrCat("open /dev/urandom: ", std::strerror(errno)));
  size_t got = 0;
  while (got < sizeof(bytes)) {
    ssize_t n = ::read(fd, bytes + got, sizeof(bytes) - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  if (got != sizeof(bytes)) return absl::InternalError("short read from /dev/urandom");
  return absl::BytesToHexString(std::string(reinterpret_cast<const char*>(bytes), sizeof(bytes)));
}

}  // namespace qatd::server
