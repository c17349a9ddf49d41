#pragma once
// training_log.csv of the KD trainers.

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"

namespace qatd::train {

// training_log.csv (seed columns step, train_loss, eval_loss, lr, elapsed_sec; empty cells for
// values not measured at that step), kept in memory, serialised into trainer_state.json for
// resume and rewritten atomically.
class TrainLog {
 public:
  explicit TrainLog(std::string path, std::string extra_columns = "");
  void Add(int64_t step, double train_loss, double eval_loss, double lr, double elapsed_sec, std::string extra = "");
  absl::Status Write() const;
  nlohmann::json ToJson() const { return rows_; }
  void FromJson(const nlohmann::json& j) { rows_ = j; }

 private:
  std::string path_;
  std::string extra_columns_;
  nlohmann::json rows_ = nlohmann::json::array();
};

}  // namespace qatd::train
