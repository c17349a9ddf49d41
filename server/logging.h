#pragma once
// spdlog set-up for the daemon: one line per event to stderr and to a rotating file
// (<data-dir>/qatd.log, 10 MiB x 5).

#include <string>

#include "absl/status/status.h"

namespace qatd::server {

absl::Status InitDaemonLogging(const std::string& data_dir);

}  // namespace qatd::server
