#include "server/artifact_digest.h"


#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/common/sha256.h"

namespace qatd::server {
namespace fs = std::filesystem;
namespace {

using ::qatd::Sha256;

absl::StatusOr<ArtifactDigest> DigestFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path.string()));
  Sha256 sha;
  std::vector<char> buffer(1 << 20);
  ArtifactDigest digest;
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    std::streamsize n = in.gcount();
    if (n > 0) {
      sha.Update(buffer.data(), static_cast<size_t>(n));
      digest.size_bytes += n;
    }
  }
  if (in.bad()) return absl::InternalError(absl::StrCat("read error in ", path.string()));
  digest.sha256 = sha.FinishHex();
  return digest;
}

}  // namespace

absl::StatusOr<ArtifactDigest> DigestPath(const std::string& path) {
  std::error_code ec;
  fs::file_status status = fs::symlink_status(path, ec);
  if (ec || !fs::exists(status)) return absl::NotFoundError(absl::StrCat("artifact ", path, " does not exist"));
  if (!fs::is_directory(status)) return DigestFile(path);

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
    absl::StatusOr<ArtifactDigest> file = DigestFile(fs::path(path) / rel);
    if (!file.ok()) return file.status();
    digest.size_bytes += file->size_bytes;
    std::string line = absl::StrCat(rel, std::string(1, '\0'), file->sha256, "\n");
    tree.Update(line.data(), line.size());
  }
  digest.sha256 = tree.FinishHex();
  return digest;
}

}  // namespace qatd::server
