#include "worker/framing.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace qatd::worker {
namespace {

absl::Status WriteAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EPIPE) return absl::UnavailableError("event pipe closed by the daemon");
      return absl::InternalError(absl::StrCat("write event pipe: ", std::strerror(errno)));
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// Reads exactly `size` bytes; returns the number read before EOF.
absl::StatusOr<size_t> ReadFull(int fd, char* data, size_t size) {
  size_t got = 0;
  while (got < size) {
    ssize_t n = ::read(fd, data + got, size - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(absl::StrCat("read event pipe: ", std::strerror(errno)));
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  return got;
}

}  // namespace

absl::Status WriteFrame(int fd, const google::protobuf::MessageLite& message) {
  std::string payload;
  if (!message.SerializeToString(&payload)) return absl::InternalError("cannot serialize event");
  if (payload.size() > kMaxFrameBytes) return absl::InvalidArgumentError("event exceeds the frame limit");
  const uint32_t n = static_cast<uint32_t>(payload.size());
  std::string frame;
  frame.reserve(4 + payload.size());
  for (int i = 0; i < 4; ++i) frame.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  frame += payload;
  // One write call per frame when possible: pipes keep writes <= PIPE_BUF atomic, and larger
  // frames are still contiguous because writers hold a lock.
  return WriteAll(fd, frame.data(), frame.size());
}

absl::StatusOr<std::optional<std::string>> FrameReader::Next() {
  unsigned char header[4];
  absl::StatusOr<size_t> got = ReadFull(fd_, reinterpret_cast<char*>(header), 4);
  if (!got.ok()) return got.status();
  if (*got == 0) return std::optional<std::string>();
  if (*got < 4) return absl::DataLossError("event stream ended inside a frame header");
  const uint32_t n = static_cast<uint32_t>(header[0]) | (static_cast<uint32_t>(header[1]) << 8) |
                     (static_cast<uint32_t>(header[2]) << 16) | (static_cast<uint32_t>(header[3]) << 24);
  if (n > kMaxFrameBytes) return absl::DataLossError(absl::StrCat("event frame of ", n, " bytes exceeds the limit"));
  // Grown as the bytes arrive, so that a header promising up to 64 MiB costs what the stream
  // holds, not what it promised (found by tests/fuzz/worker_frames_fuzz.cc).
  constexpr size_t kChunk = size_t{1} << 20;
  std::string payload;
  while (payload.size() < n) {
    const size_t have = payload.size();
    const size_t want = std::min<size_t>(kChunk, n - have);
    payload.resize(have + want);
    got = ReadFull(fd_, payload.data() + have, want);
    if (!got.ok()) return got.status();
    if (*got < want) return absl::DataLossError("event stream ended inside a frame");
  }
  return std::optional<std::string>(std::move(payload));
}

}  // namespace qatd::worker
