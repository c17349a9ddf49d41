#pragma once
// One job's events for a streaming RPC, in order and without gaps or duplicates: the stored
// history after `after_seq` (paged from the JobStore), then the live events from the
// EventHub. It subscribes *before* reading history; since the journal persists an event
// before publishing it, every event is either in a history page or in the live queue, and
// live events already seen in history are dropped by seq. Unpersisted events (seq 0,
// throttled progress) pass through as they come. Thread-safe.
//
// Bounded: a watcher that does not read (a stalled client) holds at most `max_live` live events;
// past that the feed drops them and reports overflowed(), so the stream ends with
// RESOURCE_EXHAUSTED and the client resumes from the last seq it got (WatchJob after_seq).

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>

#include "qatd/v1/job.pb.h"
#include "server/event_hub.h"
#include "storage/job_store.h"

namespace qatd::server {

class JobEventFeed : public EventSink, public std::enable_shared_from_this<JobEventFeed> {
 public:
  static constexpr size_t kDefaultMaxLive = 4096;

  JobEventFeed(EventHub* hub, storage::JobStore* store, int64_t job_id, int64_t after_seq, bool with_history,
               size_t max_live = kDefaultMaxLive);
  ~JobEventFeed() override;

  // Subscribes; `on_ready` runs (on the publisher's thread) whenever new events arrive.
  void Start(std::function<void()> on_ready);
  // The next event, or nullopt if none is available now. May read a history page.
  std::optional<v1::JobEvent> Pop();
  // Unsubscribes and waits for a running on_ready to return; no on_ready starts afterwards.
  void Close();
  // The stored history has been handed out entirely (only live events can follow).
  bool HistoryDrained();
  // Live events were dropped because the reader fell `max_live` behind.
  bool overflowed();
  // The last seq handed out (where a client resumes).
  int64_t last_seq();

  void OnEvent(const v1::JobEvent& event) override;

 private:
  static constexpr int kPageSize = 256;

  EventHub* hub_;
  storage::JobStore* store_;
  const int64_t job_id_;

  std::mutex mu_;
  std::deque<v1::JobEvent> history_;  // guarded by mu_
  std::deque<v1::JobEvent> live_;     // guarded by mu_
  bool history_done_;                 // guarded by mu_
  int64_t history_cursor_;            // last seq read from the store; guarded by mu_
  int64_t last_seq_;                  // last seq handed out; guarded by mu_
  const size_t max_live_;
  bool overflowed_ = false;           // guarded by mu_

  std::mutex ready_mu_;
  std::function<void()> on_ready_;    // guarded by ready_mu_
  int64_t handle_ = 0;
};

}  // namespace qatd::server
