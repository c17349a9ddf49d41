// A model's config.json (core/model/qwen3_config.cc): Qwen3Config::FromJson, which the daemon
// runs at submit time on the config of every model a spec names (core/jobs/job_spec.cc) and the
// worker before it allocates the model. A config that loads must validate again unchanged.

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/model/qwen3_config.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<qatd::model::Qwen3Config> config = qatd::model::Qwen3Config::FromJson(text);
  qatd::fuzz::FuzzReport("config.json", config.status());
  if (!config.ok()) {
    QATD_FUZZ_CHECK(absl::IsInvalidArgument(config.status()));
    return 0;
  }
  QATD_FUZZ_CHECK(config->Validate().ok());
  return 0;
}
