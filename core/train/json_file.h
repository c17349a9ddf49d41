#pragma once
// Reading a JSON file (checkpoint config.json, trainer_state.json).

#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"

namespace qatd::train {

// NOT_FOUND when `path` cannot be read; DATA_LOSS when it is not valid JSON.
absl::StatusOr<nlohmann::json> ReadJson(const std::string& path);

}  // namespace qatd::train
