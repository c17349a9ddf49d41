#include "core/train/loss_values.h"

#include <cmath>

namespace qatd::train {

void LossWindow::Add(const LossValues& v) {
  sum.total += v.total;
  sum.kd += v.kd;
  sum.hard_top1 += v.hard_top1;
  sum.hard_full += v.hard_full;
  sum.local += v.local;
  sum.global += v.global;
  ++count;
}

LossValues LossWindow::Mean() const {
  LossValues m;
  if (count == 0) return m;
  const double c = static_cast<double>(count);
  m.total = sum.total / c;
  m.kd = sum.kd / c;
  m.hard_top1 = sum.hard_top1 / c;
  m.hard_full = sum.hard_full / c;
  m.local = sum.local / c;
  m.global = sum.global / c;
  return m;
}

nlohmann::json LossWindow::ToJson() const {
  return {{"count", count}, {"sum", {sum.total, sum.kd, sum.hard_top1, sum.hard_full, sum.local, sum.global}}};
}

absl::StatusOr<LossWindow> LossWindow::FromJson(const nlohmann::json& j) {
  const nlohmann::json s = j.value("sum", nlohmann::json());
  if (!s.is_array() || s.size() != 6) {
    return absl::DataLossError("trainer_state.json: window.sum must be an array of 6 numbers");
  }
  // A term that was not computed sums to NaN, which JSON stores as null.
  auto num = [&s](int i) { return s[i].is_number() ? s[i].get<double>() : std::nan(""); };
  LossWindow w;
  w.count = j.value("count", int64_t{0});
  w.sum = {num(0), num(1), num(2), num(3), num(4), num(5)};
  return w;
}

}  // namespace qatd::train
