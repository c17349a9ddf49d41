#include "core/train/held_out.h"

#include "absl/strings/str_cat.h"

namespace qatd::train {

absl::StatusOr<kd::KdSplits> HeldOutSplits(const kd::KdCacheReader& reader, int64_t eval_samples) {
  const int64_t n = reader.num_sequences();
  if (eval_samples >= n) {
    return absl::InvalidArgumentError(absl::StrCat("eval_samples (", eval_samples, ") must be smaller than the ", n,
                                                   " sequences of the KD cache ", reader.dir(),
                                                   ": the held-out sequences are never trained on"));
  }
  kd::HeldOutOptions held;
  held.count = eval_samples;
  return kd::SplitTrainHeldOut(n, held);
}

}  // namespace qatd::train
