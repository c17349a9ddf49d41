#pragma once
// Bearer-token authentication (DESIGN.md §6): when a token is configured, every qatd.v1 RPC
// must carry `authorization: Bearer <token>` metadata, else UNAUTHENTICATED. The comparison
// takes the same time wherever the first difference is. Thread-safe (immutable).

#include <grpcpp/server_context.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qatd::server {

class BearerTokenAuth {
 public:
  // An empty token disables the check.
  explicit BearerTokenAuth(std::string token) : token_(std::move(token)) {}

  bool enabled() const { return !token_.empty(); }
  // OK, or UNAUTHENTICATED saying what is wrong (missing header / bad scheme / wrong token).
  absl::Status Check(const grpc::ServerContextBase& context) const;
  // The header value alone ("Bearer abc"); exposed for tests.
  absl::Status CheckHeader(const std::string* authorization) const;

 private:
  std::string token_;
};

// The token in `path`: its content with surrounding whitespace removed. INVALID_ARGUMENT if
// it is empty, NOT_FOUND if the file cannot be read.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

}  // namespace qatd::server
