#include "worker/memory_limit.h"

#include <cstdlib>
#include <limits>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace qatd::worker {
namespace {

constexpr std::pair<const char*, uint64_t> kUnits[] = {
    {"b", 1},
    {"k", uint64_t{1} << 10},  {"kib", uint64_t{1} << 10}, {"kb", 1000},
    {"m", uint64_t{1} << 20},  {"mib", uint64_t{1} << 20}, {"mb", 1000 * 1000},
    {"g", uint64_t{1} << 30},  {"gib", uint64_t{1} << 30}, {"gb", 1000 * 1000 * 1000},
    {"t", uint64_t{1} << 40},  {"tib", uint64_t{1} << 40}, {"tb", uint64_t{1000} * 1000 * 1000 * 1000},
};

absl::Status BadSize(std::string_view text) {
  return absl::InvalidArgumentError(
      absl::StrCat("expected a size such as 16GiB, 512MiB or a number of bytes, got \"", std::string(text), "\""));
}

}  // namespace

absl::StatusOr<uint64_t> ParseMemorySize(std::string_view text) {
  const absl::string_view trimmed = absl::StripAsciiWhitespace(absl::string_view(text.data(), text.size()));
  size_t digits = 0;
  while (digits < trimmed.size() && absl::ascii_isdigit(static_cast<unsigned char>(trimmed[digits]))) ++digits;
  uint64_t number = 0;
  if (digits == 0 || !absl::SimpleAtoi(trimmed.substr(0, digits), &number)) return BadSize(text);
  const std::string unit = absl::AsciiStrToLower(absl::StripAsciiWhitespace(trimmed.substr(digits)));
  uint64_t scale = 1;
  if (!unit.empty()) {
    bool known = false;
    for (const auto& [name, bytes] : kUnits) {
      if (unit == name) {
        scale = bytes;
        known = true;
      }
    }
    if (!known) return BadSize(text);
  }
  if (number > std::numeric_limits<uint64_t>::max() / scale) {
    return absl::InvalidArgumentError(absl::StrCat("size \"", std::string(text), "\" is too large"));
  }
  return number * scale;
}

std::string FormatMemorySize(uint64_t bytes) {
  if (bytes == 0) return "0 bytes";
  constexpr std::pair<const char*, int> kBinary[] = {{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}};
  for (const auto& [name, shift] : kBinary) {
    const uint64_t unit = uint64_t{1} << shift;
    if (bytes % unit == 0) return absl::StrCat(bytes >> shift, " ", name);
  }
  return absl::StrCat(bytes, " bytes");
}

absl::StatusOr<uint64_t> ParseWorkerMemoryLimit(std::string_view text) {
  absl::StatusOr<uint64_t> bytes = ParseMemorySize(text);
  if (!bytes.ok()) return bytes.status();
  if (*bytes != 0 && *bytes < kMinMemoryLimitBytes) {
    return absl::InvalidArgumentError(absl::StrCat("must be 0 (no limit) or at least ",
                                                   FormatMemorySize(kMinMemoryLimitBytes),
                                                   " (a worker needs about 0.5 GiB to start LibTorch), got ",
                                                   FormatMemorySize(*bytes)));
  }
  return *bytes;
}

uint64_t MemoryLimitFromEnvironment() {
  const char* value = std::getenv(kMemoryLimitEnv);
  uint64_t bytes = 0;
  if (value == nullptr || !absl::SimpleAtoi(value, &bytes)) return 0;
  return bytes;
}

bool IsHostAllocationFailure(const absl::Status& status) {
  if (status.ok() || absl::IsCancelled(status)) return false;
  const absl::string_view message = status.message();
  return absl::StrContains(message, "bad_alloc") || absl::StrContains(message, "DefaultCPUAllocator") ||
         absl::StrContains(message, "Cannot allocate memory");
}

absl::Status ExplainAllocationFailure(const absl::Status& status, uint64_t limit_bytes) {
  if (!IsHostAllocationFailure(status)) return status;
  if (limit_bytes == 0) return absl::ResourceExhaustedError(status.message());
  return absl::ResourceExhaustedError(absl::StrCat("exceeded the worker memory limit (", FormatMemorySize(limit_bytes),
                                                   "): ", std::string(status.message())));
}

}  // namespace qatd::worker
