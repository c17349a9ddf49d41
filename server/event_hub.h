#pragma once
// Fan-out of live job events to watchers (WatchJob, Generate). Publishers are the worker
// monitors and the scheduler; subscribers are stream reactors. Events are delivered on the
// publisher's thread, outside the hub's lock, in publication order per publisher.
// Thread-safe.

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "qatd/v1/job.pb.h"

namespace qatd::server {

class EventSink {
 public:
  virtual ~EventSink() = default;
  // Must be cheap and must not call back into the hub.
  virtual void OnEvent(const v1::JobEvent& event) = 0;
};

class EventHub {
 public:
  // Delivers every later event of `job_id` to `sink` until Unsubscribe. Returns a handle.
  int64_t Subscribe(int64_t job_id, std::shared_ptr<EventSink> sink);
  // After this returns no *new* delivery to the sink starts; one already running on another
  // thread may still finish (sinks guard themselves).
  void Unsubscribe(int64_t handle);
  void Publish(const v1::JobEvent& event);
  size_t subscriber_count() const;

 private:
  struct Entry {
    int64_t job_id;
    std::shared_ptr<EventSink> sink;
  };
  mutable std::mutex mu_;
  int64_t next_handle_ = 1;
  std::map<int64_t, Entry> by_handle_;                  // guarded by mu_
  std::multimap<int64_t, int64_t> handles_by_job_;      // job id -> handle; guarded by mu_
};

}  // namespace qatd::server
