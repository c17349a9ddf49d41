#include "core/train/train_log.h"

#include <cmath>
#include <sstream>
#include <utility>

#include "absl/strings/str_format.h"
#include "core/common/file_util.h"

namespace qatd::train {

TrainLog::TrainLog(std::string path, std::string extra_columns)
    : path_(std::move(path)), extra_columns_(std::move(extra_columns)) {}

void TrainLog::Add(int64_t step, double train_loss, double eval_loss, double lr, double elapsed_sec, std::string extra) {
  auto cell = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); };
  rows_.push_back({step, cell(train_loss), cell(eval_loss), lr, elapsed_sec, extra});
}

absl::Status TrainLog::Write() const {
  std::ostringstream out;
  out << "step,train_loss,eval_loss,lr,elapsed_sec";
  if (!extra_columns_.empty()) out << "," << extra_columns_;
  out << "\n";
  auto num = [](const nlohmann::json& v) { return v.is_null() ? std::string() : absl::StrFormat("%.6f", v.get<double>()); };
  for (const auto& r : rows_) {
    out << r[0].get<int64_t>() << "," << num(r[1]) << "," << num(r[2]) << "," << absl::StrFormat("%.3e", r[3].get<double>())
        << "," << absl::StrFormat("%.1f", r[4].get<double>());
    if (!extra_columns_.empty()) out << "," << r[5].get<std::string>();
    out << "\n";
  }
  return WriteFileAtomically(path_, out.str());
}

}  // namespace qatd::train
