#pragma once
// Whole-file writes that readers never see half-done: write a temporary file next to the
// target, fsync it, rename it over the target (STYLE.md "Errors").

#include <string>

#include "absl/status/status.h"

namespace qatd::server {

absl::Status WriteFileAtomically(const std::string& path, const std::string& bytes);

}  // namespace qatd::server
