#pragma once
// A server-streaming reactor that relays one job's events (JobEventFeed) to a client, as
// `Msg` messages chosen by a subclass, and ends the call after the job's terminal state
// change. Used by WatchJob (every event), Generate (the text events) and GenerateSession
// (text events and turn ends).
//
// Writes are strictly one at a time; events arriving meanwhile wait in the feed. A client
// that goes away ends the call with CANCELLED (OnClientGone() is told). The reactor deletes
// itself in OnDone().

#include <grpcpp/support/server_callback.h>

#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>

#include "server/job_event_feed.h"
#include "storage/job_codec.h"

namespace qatd::server {

// `Base` is grpc::ServerWriteReactor<Msg> (WatchJob, Generate) or a
// grpc::ServerBidiReactor<Request, Msg> (GenerateSession, whose subclass reads the requests).
template <typename Msg, typename Base = grpc::ServerWriteReactor<Msg>>
class JobStreamReactor : public Base {
 public:
  // A null feed: call BeginWith() once the job exists.
  explicit JobStreamReactor(std::shared_ptr<JobEventFeed> feed) : feed_(std::move(feed)) {}

  // Subscribes and starts writing. Call once, after construction (and after queuing any
  // first message with Push()).
  void Begin() {
    feed_->Start([this] { MaybeWrite(); });
    MaybeWrite();
  }

  void OnWriteDone(bool ok) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      writing_ = false;
      if (!ok && !end_status_.has_value()) {
        end_status_ = grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
        outbox_.clear();
        gone_ = true;
      }
    }
    MaybeWrite();
  }

  void OnCancel() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      gone_ = true;
      outbox_.clear();
      if (!end_status_.has_value()) end_status_ = grpc::Status(grpc::StatusCode::CANCELLED, "client cancelled");
    }
    OnClientGone();
    MaybeWrite();
  }

  void OnDone() override {
    std::shared_ptr<JobEventFeed> feed;
    {
      std::lock_guard<std::mutex> lock(mu_);
      feed = feed_;
    }
    if (feed != nullptr) feed->Close();
    delete this;
  }

 protected:
  ~JobStreamReactor() override = default;

  // The message for an ordinary event, or nullopt to skip it.
  virtual std::optional<Msg> Translate(const v1::JobEvent& event) = 0;
  // For the terminal state change: an optional last message and the call's status.
  virtual std::pair<std::optional<Msg>, grpc::Status> OnEnd(const v1::JobEvent& event) = 0;
  virtual void OnClientGone() {}

  // Before Begin(): queues a message ahead of the job's events.
  void Push(Msg message) {
    std::lock_guard<std::mutex> lock(mu_);
    outbox_.push_back(std::move(message));
  }
  // Before Begin(): ends the call with `status` once the queued messages are written,
  // without waiting for job events.
  void EndAfterQueued(const grpc::Status& status) {
    std::lock_guard<std::mutex> lock(mu_);
    end_status_ = status;
  }
  // For a reactor made without a feed: queues `first` (e.g. the job id), subscribes to `feed`
  // and starts writing. Call once.
  void BeginWith(std::shared_ptr<JobEventFeed> feed, Msg first) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      feed_ = std::move(feed);
      outbox_.push_back(std::move(first));
    }
    Begin();
  }
  // Ends the call with `status` (unless it is ending already) once what is queued is written;
  // later job events are not relayed. Any time.
  void EndNow(const grpc::Status& status) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!end_status_.has_value()) end_status_ = status;
    }
    MaybeWrite();
  }
  // Before Begin(), for a job that had already ended: ends the call with `status` once the
  // stored history is written (no live event can follow, and the history may not hold the
  // end, e.g. when the client resumes after it).
  void EndWhenHistoryDrained(const grpc::Status& status) {
    std::lock_guard<std::mutex> lock(mu_);
    end_when_drained_ = status;
  }

 private:
  static bool IsEnd(const v1::JobEvent& event) {
    return event.has_state() && storage::IsTerminal(event.state().to());
  }

  void MaybeWrite() {
    std::unique_lock<std::mutex> lock(mu_);
    if (writing_ || finished_) return;
    while (feed_ != nullptr && outbox_.empty() && !end_status_.has_value() && !gone_) {
      std::optional<v1::JobEvent> event = feed_->Pop();
      if (!event.has_value()) {
        if (feed_->overflowed()) {
          end_status_ = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                     "the watcher fell too far behind the job's events; watch again with after_seq=" +
                                         std::to_string(feed_->last_seq()));
        } else if (end_when_drained_.has_value() && feed_->HistoryDrained()) {
          end_status_ = end_when_drained_;
        }
        break;
      }
      if (IsEnd(*event)) {
        auto [last, status] = OnEnd(*event);
        if (last.has_value()) outbox_.push_back(*std::move(last));
        end_status_ = status;
      } else if (std::optional<Msg> message = Translate(*event)) {
        outbox_.push_back(*std::move(message));
      }
    }
    if (!outbox_.empty() && !gone_) {
      current_ = std::move(outbox_.front());
      outbox_.pop_front();
      writing_ = true;
      lock.unlock();
      this->StartWrite(&current_);
      return;
    }
    if (end_status_.has_value()) {
      finished_ = true;
      grpc::Status status = *end_status_;
      lock.unlock();
      this->Finish(status);
    }
  }

  std::shared_ptr<JobEventFeed> feed_;
  std::mutex mu_;
  std::deque<Msg> outbox_;                   // guarded by mu_
  Msg current_;                              // the message being written
  bool writing_ = false;                     // guarded by mu_
  bool finished_ = false;                    // guarded by mu_
  bool gone_ = false;                        // guarded by mu_
  std::optional<grpc::Status> end_status_;   // guarded by mu_
  std::optional<grpc::Status> end_when_drained_;  // guarded by mu_
};

}  // namespace qatd::server
