#pragma once
// Size and SHA-256 of an artifact (a file or a directory), as registered in the job store.
// A directory's digest is the SHA-256 of "relative-path\0file-sha256-hex\n" lines of its
// regular files, sorted by path bytes; its size is the sum of those files' sizes. Symlinks
// are not followed.
//
// The worker digests what it produces (it can be cancelled there, and a multi-GB checkpoint
// never blocks the daemon); the daemon digests only artifacts reported without a digest.

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"

namespace qatd {

struct ArtifactDigest {
  int64_t size_bytes = 0;
  std::string sha256;  // 64 lowercase hex digits
};

// NOT_FOUND if `path` does not exist; FAILED_PRECONDITION if it (or the path itself) is a
// symlink, device, FIFO or socket (never read: it could be endless); INTERNAL on read errors.
// A file is read up to the size it had when opened. `cancelled`, polled between 1 MiB
// reads, ends the digest with CANCELLED.
absl::StatusOr<ArtifactDigest> DigestPath(const std::string& path, const std::function<bool()>& cancelled = {});

}  // namespace qatd
