#pragma once
// The one place where LibTorch exceptions become absl::Status (STYLE.md "Errors").
// Header is LibTorch-free so callers that only propagate statuses need not include ATen.

#include <functional>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qatd {

// Runs `fn`, converting c10::OutOfMemoryError to RESOURCE_EXHAUSTED, other c10::Error and
// std::exception to INTERNAL (message kept). `what` prefixes the message ("forward: ...").
absl::Status CatchTorch(const char* what, const std::function<absl::Status()>& fn);

template <typename T>
absl::StatusOr<T> CatchTorchOr(const char* what, const std::function<absl::StatusOr<T>()>& fn) {
  absl::StatusOr<T> out = absl::InternalError("unset");
  absl::Status s = CatchTorch(what, [&]() -> absl::Status {
    out = fn();
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

}  // namespace qatd
