#include "core/train/json_file.h"

#include <fstream>

#include "absl/strings/str_cat.h"

namespace qatd::train {

absl::StatusOr<nlohmann::json> ReadJson(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded()) return absl::DataLossError(absl::StrCat(path, " is not valid JSON"));
  return j;
}

}  // namespace qatd::train
