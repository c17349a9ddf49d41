#pragma once
// The trainers' train / held-out split of a KD cache (spec §17.12).

#include <cstdint>

#include "absl/status/statusor.h"
#include "core/kd/cache_reader.h"

namespace qatd::train {

// The last `eval_samples` sequences of the cache are held out (never trained on).
// INVALID_ARGUMENT when that leaves no training sequence.
absl::StatusOr<kd::KdSplits> HeldOutSplits(const kd::KdCacheReader& reader, int64_t eval_samples);

}  // namespace qatd::train
