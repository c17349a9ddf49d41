#include "core/train/lora_options.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace qatd::train {

const std::vector<std::string>& LoraTargetNames() {
  static const std::vector<std::string> names = {"q_proj",    "k_proj", "v_proj",  "o_proj",
                                                 "gate_proj", "up_proj", "down_proj"};
  return names;
}

absl::Status LoraConfig::Validate() const {
  if (rank < 1 || rank > 4096) return absl::InvalidArgumentError(absl::StrCat("rank must be in [1, 4096], got ", rank));
  if (!(alpha > 0) || !std::isfinite(alpha)) {
    return absl::InvalidArgumentError(absl::StrCat("alpha must be a finite number > 0, got ", alpha));
  }
  if (!(dropout >= 0 && dropout < 1)) {
    return absl::InvalidArgumentError(absl::StrCat("dropout must be in [0, 1), got ", dropout));
  }
  if (target_modules.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("target_modules must name at least one of ", absl::StrJoin(LoraTargetNames(), " ")));
  }
  std::set<std::string> seen;
  for (const std::string& t : target_modules) {
    const auto& names = LoraTargetNames();
    if (std::find(names.begin(), names.end(), t) == names.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("target_modules: unknown module \"", t, "\"; allowed: ", absl::StrJoin(names, " ")));
    }
    if (!seen.insert(t).second) {
      return absl::InvalidArgumentError(absl::StrCat("target_modules: \"", t, "\" is named twice"));
    }
  }
  if (dtype != "fp32" && dtype != "bf16") {
    return absl::InvalidArgumentError(absl::StrCat("dtype must be fp32 or bf16, got \"", dtype, "\""));
  }
  return absl::OkStatus();
}

}  // namespace qatd::train
