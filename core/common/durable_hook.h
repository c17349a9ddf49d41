#pragma once
// A test seam in the spirit of LevelDB's injected Env: jobs call it each time their progress
// became durable (a resume checkpoint after optimizer step `step`; `step` KD-cache shards on
// disk). A non-OK status stops the job right there with that status, as a process killed at that
// point would stop, so tests can simulate crashes without a magic number in production options.
// Production leaves it empty.

#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace qatd {

using DurableHook = std::function<absl::Status(int64_t step)>;

// ABORTED "simulated crash after step N" once `step` reaches `at` (tests).
inline DurableHook CrashAfter(int64_t at) {
  return [at](int64_t step) {
    if (step < at) return absl::OkStatus();
    return absl::AbortedError(absl::StrCat("simulated crash after step ", step));
  };
}

}  // namespace qatd
