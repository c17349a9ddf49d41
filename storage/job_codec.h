#pragma once
// Small conversions shared by the store and its users: terminal states,
// timestamps, device lists.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "google/protobuf/timestamp.pb.h"
#include "qatd/v1/job.pb.h"

namespace qatd::storage {

// "QUEUED", "RUNNING", ...
std::string JobStateName(v1::JobState state);
bool IsTerminal(v1::JobState state);

// Devices the spec asks for (Resources.device_count, default 1).
int DeviceCountOf(const v1::JobSpec& spec);

google::protobuf::Timestamp ToTimestamp(int64_t unix_ms);
int64_t ToUnixMs(const google::protobuf::Timestamp& ts);

std::string JoinDevices(const std::vector<std::string>& devices);
std::vector<std::string> SplitDevices(std::string_view joined);

}  // namespace qatd::storage
