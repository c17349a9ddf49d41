#include "core/train/rank_step_time.h"

#include <ATen/Functions.h>

#include "absl/strings/str_cat.h"
#include "core/train/dist_group.h"

namespace qatd::train {

absl::Status RankStepTimes::Report(DistGroup* dist, int64_t step, jobs::Reporter& reporter) {
  const double mean = count_ > 0 ? sum_ / static_cast<double>(count_) : 0.0;
  sum_ = 0;
  count_ = 0;
  if (dist == nullptr || dist->world_size() <= 1) return absl::OkStatus();  // a forced one-rank group too
  at::Tensor slots = at::zeros({dist->world_size()}, at::kDouble);
  slots.data_ptr<double>()[dist->rank()] = mean;
  if (absl::Status s = dist->AllReduce(slots); !s.ok()) return s;
  if (!dist->primary()) return absl::OkStatus();
  for (int r = 0; r < dist->world_size(); ++r) {
    reporter.Metric(absl::StrCat("rank/", r, "/step_seconds"), step, slots.data_ptr<double>()[r]);
  }
  return absl::OkStatus();
}

}  // namespace qatd::train
