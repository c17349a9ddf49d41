#include "server/artifact_digest.h"

#include <openssl/evp.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"

namespace qatd::server {
namespace fs = std::filesystem;
namespace {

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new(), &EVP_MD_CTX_free) { EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr); }
  void Update(const void* data, size_t size) { EVP_DigestUpdate(ctx_.get(), data, size); }
  std::string FinishHex() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    EVP_DigestFinal_ex(ctx_.get(), digest, &length);
    static const char kHex[] = "0123456789abcdef";
    std::string hex;
    for (unsigned int i = 0; i < length; ++i) {
      hex.push_back(kHex[digest[i] >> 4]);
      hex.push_back(kHex[digest[i] & 15]);
    }
    return hex;
  }

 private:
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx_;
};

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

std::string Sha256Hex(const std::string& bytes) {
  Sha256 sha;
  sha.Update(bytes.data(), bytes.size());
  return sha.FinishHex();
}

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
