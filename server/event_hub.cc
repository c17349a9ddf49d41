#include "server/event_hub.h"

namespace qatd::server {

int64_t EventHub::Subscribe(int64_t job_id, std::shared_ptr<EventSink> sink) {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t handle = next_handle_++;
  by_handle_[handle] = Entry{job_id, std::move(sink)};
  handles_by_job_.emplace(job_id, handle);
  return handle;
}

void EventHub::Unsubscribe(int64_t handle) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_handle_.find(handle);
  if (it == by_handle_.end()) return;
  auto range = handles_by_job_.equal_range(it->second.job_id);
  for (auto j = range.first; j != range.second; ++j) {
    if (j->second == handle) {
      handles_by_job_.erase(j);
      break;
    }
  }
  by_handle_.erase(it);
}

void EventHub::Publish(const v1::JobEvent& event) {
  std::vector<std::shared_ptr<EventSink>> sinks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto range = handles_by_job_.equal_range(event.job_id());
    for (auto it = range.first; it != range.second; ++it) sinks.push_back(by_handle_[it->second].sink);
  }
  for (const auto& sink : sinks) sink->OnEvent(event);
}

size_t EventHub::subscriber_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return by_handle_.size();
}

}  // namespace qatd::server
