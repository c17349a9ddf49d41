#pragma once
// The loss terms of one optimizer step and their mean over a logging window.

#include <cstdint>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"

namespace qatd::train {

// Mean loss terms of one optimizer step (NaN when a term is not computed).
struct LossValues {
  double total = 0, kd = 0, hard_top1 = 0, hard_full = 0, local = 0, global = 0;
};

// The sum of the steps since the last log line.
struct LossWindow {
  LossValues sum;
  int64_t count = 0;
  void Add(const LossValues& v);
  LossValues Mean() const;
  // {"count": n, "sum": [total, kd, hard_top1, hard_full, local, global]} (the layer-wise
  // trainer's trainer_state.json "window").
  nlohmann::json ToJson() const;
  static absl::StatusOr<LossWindow> FromJson(const nlohmann::json& j);
};

}  // namespace qatd::train
