#include "core/common/duration.h"

#include <cmath>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace qatd {

absl::StatusOr<int64_t> ParseDurationMs(std::string_view text) {
  const auto bad = [&] {
    return absl::InvalidArgumentError(absl::StrCat("'", std::string(text),
                                                   "' is not a duration: use a number with s, m, h, d or w "
                                                   "(e.g. 90s, 15m, 12h, 7d; a plain number means seconds)"));
  };
  if (text.empty()) return bad();
  double unit_s = 1;
  std::string_view number = text;
  switch (text.back()) {
    case 's': unit_s = 1; break;
    case 'm': unit_s = 60; break;
    case 'h': unit_s = 3600; break;
    case 'd': unit_s = 86400; break;
    case 'w': unit_s = 7 * 86400; break;
    default: unit_s = 0; break;
  }
  if (unit_s != 0) {
    number.remove_suffix(1);
  } else {
    unit_s = 1;
  }
  double value = 0;
  if (number.empty() || !absl::SimpleAtod(std::string(number), &value) || !std::isfinite(value) || value < 0) {
    return bad();
  }
  const double ms = value * unit_s * 1000.0;
  if (ms > 9.0e15) return bad();  // beyond ~285,000 years: a typo
  return static_cast<int64_t>(std::llround(ms));
}

}  // namespace qatd
