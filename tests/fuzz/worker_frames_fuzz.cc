// The worker -> daemon event stream on a pipe (worker/framing.cc): FrameReader over the input
// bytes, each payload parsed as a WorkerEvent the way the daemon does
// (server/worker_launcher.cc WorkerProcess::NextEvent), until a clean end or an error. Each
// event read is written again with WriteFrame and must read back as the same bytes.

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "qatd/v1/worker.pb.h"
#include "tests/fuzz/fuzz_check.h"
#include "worker/framing.h"

namespace {

// An in-memory file holding `bytes`, positioned at its start (a pipe would block past 64 KiB).
int MemoryFd(const void* bytes, size_t size) {
  const int fd = ::memfd_create("qatd-fuzz-frames", MFD_CLOEXEC);
  QATD_FUZZ_CHECK(fd >= 0);
  const auto* p = static_cast<const char*>(bytes);
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(fd, p + done, size - done);
    QATD_FUZZ_CHECK(n > 0);
    done += static_cast<size_t>(n);
  }
  QATD_FUZZ_CHECK(::lseek(fd, 0, SEEK_SET) == 0);
  return fd;
}

void CheckRewrite(const qatd::v1::WorkerEvent& event) {
  const int fd = ::memfd_create("qatd-fuzz-rewrite", MFD_CLOEXEC);
  QATD_FUZZ_CHECK(fd >= 0);
  QATD_FUZZ_CHECK(qatd::worker::WriteFrame(fd, event).ok());
  QATD_FUZZ_CHECK(::lseek(fd, 0, SEEK_SET) == 0);
  qatd::worker::FrameReader reader(fd);
  absl::StatusOr<std::optional<std::string>> frame = reader.Next();
  QATD_FUZZ_CHECK(frame.ok() && frame->has_value() && **frame == event.SerializeAsString());
  absl::StatusOr<std::optional<std::string>> end = reader.Next();
  QATD_FUZZ_CHECK(end.ok() && !end->has_value());
  ::close(fd);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int fd = MemoryFd(data, size);
  qatd::worker::FrameReader reader(fd);
  for (;;) {
    absl::StatusOr<std::optional<std::string>> frame = reader.Next();
    qatd::fuzz::FuzzReport("frame", frame.status());
    if (!frame.ok()) {
      QATD_FUZZ_CHECK(absl::IsDataLoss(frame.status()));
      break;
    }
    if (!frame->has_value()) break;
    QATD_FUZZ_CHECK((*frame)->size() <= qatd::worker::kMaxFrameBytes);
    qatd::v1::WorkerEvent event;
    if (!event.ParseFromString(**frame)) continue;  // the daemon reports DATA_LOSS and stops
    CheckRewrite(event);
  }
  ::close(fd);
  return 0;
}
