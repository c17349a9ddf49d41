#include "server/auth.h"

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace qatd::server {
namespace {

bool ConstantTimeEquals(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = a.size();
  for (size_t i = 0; i < n; ++i) {
    // Index b within bounds even when the sizes differ, so the loop always runs a.size() times.
    diff |= static_cast<unsigned char>(a[i] ^ (b.empty() ? 0 : b[i % b.size()]));
  }
  return diff == 0;
}

}  // namespace

absl::Status BearerTokenAuth::CheckHeader(const std::string* authorization) const {
  if (!enabled()) return absl::OkStatus();
  if (authorization == nullptr) {
    return absl::UnauthenticatedError("missing 'authorization: Bearer <token>' metadata");
  }
  constexpr absl::string_view kScheme = "bearer ";
  if (authorization->size() < kScheme.size() ||
      !absl::StartsWithIgnoreCase(absl::string_view(*authorization), kScheme)) {
    return absl::UnauthenticatedError("authorization metadata must use the Bearer scheme");
  }
  std::string presented(absl::StripAsciiWhitespace(
      absl::string_view(*authorization).substr(kScheme.size())));
  if (!ConstantTimeEquals(presented, token_)) return absl::UnauthenticatedError("invalid bearer token");
  return absl::OkStatus();
}

absl::Status BearerTokenAuth::Check(const grpc::ServerContextBase& context) const {
  if (!enabled()) return absl::OkStatus();
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return CheckHeader(nullptr);
  std::string value(it->second.data(), it->second.size());
  return CheckHeader(&value);
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read token file ", path));
  std::stringstream content;
  content << in.rdbuf();
  std::string token(absl::StripAsciiWhitespace(content.str()));
  if (token.empty()) return absl::InvalidArgumentError(absl::StrCat("token file ", path, " is empty"));
  return token;
}

}  // namespace qatd::server
