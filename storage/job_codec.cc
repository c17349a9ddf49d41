#include "storage/job_codec.h"

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace qatd::storage {
namespace {

std::string StripPrefix(const std::string& name, std::string_view prefix) {
  if (name.rfind(prefix, 0) == 0) return name.substr(prefix.size());
  return name;
}

}  // namespace

std::string JobStateName(v1::JobState state) {
  return StripPrefix(v1::JobState_Name(state), "JOB_STATE_");
}

bool IsTerminal(v1::JobState state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED ||
         state == v1::JOB_STATE_CANCELLED;
}

int DeviceCountOf(const v1::JobSpec& spec) {
  return spec.resources().has_device_count() ? spec.resources().device_count() : 1;
}

google::protobuf::Timestamp ToTimestamp(int64_t unix_ms) {
  google::protobuf::Timestamp ts;
  int64_t seconds = unix_ms / 1000;
  int64_t millis = unix_ms % 1000;
  if (millis < 0) {
    millis += 1000;
    seconds -= 1;
  }
  ts.set_seconds(seconds);
  ts.set_nanos(static_cast<int32_t>(millis * 1000000));
  return ts;
}

int64_t ToUnixMs(const google::protobuf::Timestamp& ts) {
  return ts.seconds() * 1000 + ts.nanos() / 1000000;
}

std::string JoinDevices(const std::vector<std::string>& devices) { return absl::StrJoin(devices, ","); }

std::vector<std::string> SplitDevices(std::string_view joined) {
  if (joined.empty()) return {};
  return absl::StrSplit(absl::string_view(joined.data(), joined.size()), ',');
}

}  // namespace qatd::storage
