#pragma once
// SHA-256 (FIPS 180-4), used to fingerprint the tokenizer and the dataset a KD cache was built
// from, so that `resume` can refuse to mix caches of different inputs.
//
// Not constant-time and not meant for secrets. Thread safety: a Sha256 object is not
// shareable while being updated; distinct objects are independent.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace qatd {

class Sha256 {
 public:
  Sha256();
  // Feeds `size` bytes. May be called any number of times before Finish().
  void Update(const void* data, size_t size);
  void Update(std::string_view bytes) { Update(bytes.data(), bytes.size()); }
  // The 32-byte digest. The object must not be updated afterwards.
  std::array<uint8_t, 32> Finish();
  // Finish() as 64 lowercase hex digits.
  std::string FinishHex();

 private:
  void Compress(const uint8_t* block);

  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

// Hex digest of `bytes`.
std::string Sha256Hex(std::string_view bytes);

// Hex digest of the contents of the regular file at `path` (streamed in 1 MiB reads, up to the
// size it had when opened; core/common/input_file.h). NOT_FOUND if it cannot be opened,
// INVALID_ARGUMENT for a device or FIFO, INTERNAL on a read error.
absl::StatusOr<std::string> Sha256File(const std::string& path);

}  // namespace qatd
