#include "absl/status/status.h"
#include "client/spec_commands.h"

namespace qatd::client {

void SpecCommand::Register(CLI::App* app) {
  flags_ = std::make_unique<SpecFlags>(app);
  AddJobFlags(*flags_, &spec_);
  AddFlags(*flags_);
  app->footer("Example:\n  " + Example() + "\n");
}

absl::StatusOr<v1::JobSpec> SpecCommand::Build() {
  spec_.Clear();
  errors_.clear();
  Init(spec_);
  flags_->Apply();
  if (!errors_.empty()) return absl::InvalidArgumentError(errors_.front());
  return spec_;
}

}  // namespace qatd::client
