#include "server/logging.h"

#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "spdlog/sinks/rotating_file_sink.h"
#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"

namespace qatd::server {

absl::Status InitDaemonLogging(const std::string& data_dir) {
  try {
    std::vector<spdlog::sink_ptr> sinks;
    sinks.push_back(std::make_shared<spdlog::sinks::stderr_sink_mt>());
    sinks.push_back(
        std::make_shared<spdlog::sinks::rotating_file_sink_mt>(data_dir + "/qatd.log", 10u << 20, 5));
    auto logger = std::make_shared<spdlog::logger>("qatd", sinks.begin(), sinks.end());
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %l [%t] %v");
    logger->flush_on(spdlog::level::info);
    spdlog::set_default_logger(logger);
  } catch (const spdlog::spdlog_ex& e) {
    return absl::FailedPreconditionError(absl::StrCat("cannot open the log file in ", data_dir, ": ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace qatd::server
