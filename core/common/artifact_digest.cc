#include "core/common/artifact_digest.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/common/sha256.h"

namespace qatd {
namespace fs = std::filesystem;
namespace {

// A regular file, read up to the size it had when opened: a symlink (to /dev/zero, say), a
// device or a FIFO is refused instead of read forever, and a file that keeps growing ends.
absl::StatusOr<ArtifactDigest> DigestFile(const fs::path& path, const std::function<bool()>& cancelled) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ELOOP) {
      return absl::FailedPreconditionError(absl::StrCat("artifact ", path.string(), " is a symlink, not a file"));
    }
    return absl::NotFoundError(absl::StrCat("cannot open ", path.string(), ": ", std::strerror(errno)));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::FailedPreconditionError(
        absl::StrCat("artifact ", path.string(), " is not a regular file (a device, FIFO or socket)"));
  }
  Sha256 sha;
  std::vector<char> buffer(1 << 20);
  ArtifactDigest digest;
  int64_t left = st.st_size;
  while (left > 0) {
    if (cancelled && cancelled()) {
      ::close(fd);
      return absl::CancelledError(absl::StrCat("cancelled while digesting ", path.string()));
    }
    const ssize_t n = ::read(fd, buffer.data(), static_cast<size_t>(std::min<int64_t>(left, buffer.size())));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return absl::InternalError(absl::StrCat("read error in ", path.string(), ": ", std::strerror(err)));
    }
    if (n == 0) break;  // it shrank
    sha.Update(buffer.data(), static_cast<size_t>(n));
    digest.size_bytes += n;
    left -= n;
  }
  ::close(fd);
  digest.sha256 = sha.FinishHex();
  return digest;
}

}  // namespace

absl::StatusOr<ArtifactDigest> DigestPath(const std::string& path, const std::function<bool()>& cancelled) {
  std::error_code ec;
  fs::file_status status = fs::symlink_status(path, ec);
  if (ec || !fs::exists(status)) return absl::NotFoundError(absl::StrCat("artifact ", path, " does not exist"));
  if (!fs::is_directory(status)) return DigestFile(path, cancelled);  // refuses symlinks and special files

  std::vector<std::string> files;
  for (auto it = fs::recursive_directory_iterator(path, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (it->is_regular_file() && !it->is_symlink()) files.push_back(fs::relative(it->path(), path).string());
  }
  if (ec) return absl::InternalError(absl::StrCat("cannot list ", path, ": ", ec.message()));
  std::sort(files.begin(), files.end());
  Sha256 tree;
  ArtifactDigest digest;
  for (const std::string& rel : files) {
    absl::StatusOr<ArtifactDigest> file = DigestFile(fs::path(path) / rel, cancelled);
    if (!file.ok()) return file.status();
    digest.size_bytes += file->size_bytes;
    std::string line = absl::StrCat(rel, std::string(1, '\0'), file->sha256, "\n");
    tree.Update(line.data(), line.size());
  }
  digest.sha256 = tree.FinishHex();
  return digest;
}

}  // namespace qatd
