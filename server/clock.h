#pragma once
// Wall-clock time as milliseconds since the Unix epoch; an interface so tests can fix it.

#include <chrono>
#include <cstdint>

namespace qatd::server {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t NowMs() const = 0;
};

class SystemClock : public Clock {
 public:
  int64_t NowMs() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

}  // namespace qatd::server
