#include "server/job_event_feed.h"

#include "spdlog/spdlog.h"

namespace qatd::server {

JobEventFeed::JobEventFeed(EventHub* hub, storage::JobStore* store, int64_t job_id, int64_t after_seq,
                           bool with_history, size_t max_live)
    : hub_(hub),
      store_(store),
      job_id_(job_id),
      history_done_(!with_history),
      history_cursor_(after_seq),
      last_seq_(after_seq),
      max_live_(max_live) {}

JobEventFeed::~JobEventFeed() { Close(); }

void JobEventFeed::Start(std::function<void()> on_ready) {
  {
    std::lock_guard<std::mutex> lock(ready_mu_);
    on_ready_ = std::move(on_ready);
  }
  handle_ = hub_->Subscribe(job_id_, shared_from_this());
}

void JobEventFeed::Close() {
  if (handle_ != 0) {
    hub_->Unsubscribe(handle_);
    handle_ = 0;
  }
  std::lock_guard<std::mutex> lock(ready_mu_);
  on_ready_ = nullptr;
}

void JobEventFeed::OnEvent(const v1::JobEvent& event) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (overflowed_) return;
    if (live_.size() >= max_live_) {
      // The reader stalled: stop holding events for it (it resumes from last_seq()).
      overflowed_ = true;
      live_.clear();
    } else {
      live_.push_back(event);
    }
  }
  std::lock_guard<std::mutex> lock(ready_mu_);
  if (on_ready_) on_ready_();
}

bool JobEventFeed::HistoryDrained() {
  std::lock_guard<std::mutex> lock(mu_);
  return history_done_ && history_.empty();
}

bool JobEventFeed::overflowed() {
  std::lock_guard<std::mutex> lock(mu_);
  return overflowed_;
}

int64_t JobEventFeed::last_seq() {
  std::lock_guard<std::mutex> lock(mu_);
  return last_seq_;
}

std::optional<v1::JobEvent> JobEventFeed::Pop() {
  std::lock_guard<std::mutex> lock(mu_);
  while (true) {
    if (!history_.empty()) {
      v1::JobEvent event = std::move(history_.front());
      history_.pop_front();
      last_seq_ = std::max(last_seq_, event.seq());
      return event;
    }
    if (!history_done_) {
      absl::StatusOr<std::vector<v1::JobEvent>> page = store_->ListEvents(job_id_, history_cursor_, kPageSize);
      if (!page.ok()) {
        spdlog::warn("job {}: cannot read event history: {}", job_id_, page.status().ToString());
        history_done_ = true;  // carry on with live events
        continue;
      }
      for (v1::JobEvent& event : *page) {
        history_cursor_ = event.seq();
        history_.push_back(std::move(event));
      }
      if (static_cast<int>(page->size()) < kPageSize) history_done_ = true;
      continue;
    }
    while (!live_.empty()) {
      v1::JobEvent event = std::move(live_.front());
      live_.pop_front();
      if (event.seq() != 0 && event.seq() <= last_seq_) continue;  // already sent from history
      last_seq_ = std::max(last_seq_, event.seq());
      return event;
    }
    return std::nullopt;
  }
}

}  // namespace qatd::server
