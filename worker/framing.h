#pragma once
// Length-prefixed protobuf frames on a pipe (the worker -> daemon event stream,
// proto/qatd/v1/worker.proto): a 4-byte little-endian payload length, then the payload.

#include <cstdint>
#include <optional>
#include <string>

#include <google/protobuf/message_lite.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qatd::worker {

inline constexpr uint32_t kMaxFrameBytes = 64u << 20;

// Writes one frame, retrying short writes and EINTR. Not thread-safe per fd: callers
// serialize (PipeReporter holds a mutex). UNAVAILABLE when the reader has gone (EPIPE).
absl::Status WriteFrame(int fd, const google::protobuf::MessageLite& message);

// Reads frames from a blocking fd.
class FrameReader {
 public:
  explicit FrameReader(int fd) : fd_(fd) {}
  // The next payload; std::nullopt at a clean end of stream (EOF between frames).
  // DATA_LOSS for a truncated frame or one over kMaxFrameBytes.
  absl::StatusOr<std::optional<std::string>> Next();

 private:
  int fd_;
};

}  // namespace qatd::worker
