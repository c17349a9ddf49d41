#include "core/train/train_options.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "absl/strings/str_cat.h"

namespace qatd::train {
namespace {

absl::Status NonNegativeFinite(double v, const char* name) {
  if (!std::isfinite(v) || v < 0) return absl::InvalidArgumentError(absl::StrCat(name, " must be finite and >= 0, got ", v));
  return absl::OkStatus();
}

}  // namespace

absl::Status AdamWOptions::Validate() const {
  if (auto s = NonNegativeFinite(lr, "lr"); !s.ok()) return s;
  if (!(beta1 >= 0 && beta1 < 1)) return absl::InvalidArgumentError(absl::StrCat("beta1 must be in [0, 1), got ", beta1));
  if (!(beta2 >= 0 && beta2 < 1)) return absl::InvalidArgumentError(absl::StrCat("beta2 must be in [0, 1), got ", beta2));
  if (!(eps > 0 && std::isfinite(eps))) return absl::InvalidArgumentError(absl::StrCat("eps must be > 0, got ", eps));
  return NonNegativeFinite(weight_decay, "weight_decay");
}

absl::Status KdLossWeights::Validate() const {
  if (!(temperature > 0) || !std::isfinite(temperature))
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be a finite number > 0, got ", temperature));
  if (!(hard_top1_weight >= 0) || !std::isfinite(hard_top1_weight))
    return absl::InvalidArgumentError(
        absl::StrCat("hard_top1_weight must be a finite number >= 0, got ", hard_top1_weight));
  if (!(hard_full_weight >= 0) || !std::isfinite(hard_full_weight))
    return absl::InvalidArgumentError(
        absl::StrCat("hard_full_weight must be a finite number >= 0, got ", hard_full_weight));
  return absl::OkStatus();
}

double LrSchedule::Factor(int64_t step) const {
  if (warmup_steps > 0 && step < warmup_steps) {
    return static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  }
  if (!cosine) return 1.0;
  const int64_t span = std::max<int64_t>(1, total_steps - warmup_steps);
  const double progress = std::min(1.0, static_cast<double>(step - warmup_steps) / static_cast<double>(span));
  return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

absl::Status LrSchedule::Validate() const {
  if (warmup_steps < 0) return absl::InvalidArgumentError(absl::StrCat("warmup_steps must be >= 0, got ", warmup_steps));
  if (total_steps < 1) return absl::InvalidArgumentError(absl::StrCat("max_steps must be >= 1, got ", total_steps));
  if (!(min_lr_ratio >= 0 && min_lr_ratio <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("min_lr_ratio must be in [0, 1], got ", min_lr_ratio));
  }
  return absl::OkStatus();
}

}  // namespace qatd::train
