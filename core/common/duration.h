#pragma once
// Durations as people type them on command lines: "90s", "15m", "12h", "7d", "2w", or a
// plain number of seconds; fractions allowed ("1.5h"). Used by `qat prune --older-than` and
// the daemon's retention flags.

#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"

namespace qatd {

// Milliseconds; INVALID_ARGUMENT naming the text and the accepted forms for anything else
// (negative, empty, unknown unit, overflow).
absl::StatusOr<int64_t> ParseDurationMs(std::string_view text);

}  // namespace qatd
