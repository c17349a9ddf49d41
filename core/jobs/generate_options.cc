#include "core/jobs/generate_options.h"

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"
#include "core/jobs/options_common.h"

namespace qatd::jobs {

absl::StatusOr<GenerateJobOptions> GenerateJobOptions::FromProto(const v1::GenerateSpec& s, const v1::WorkerTask* task) {
  GenerateJobOptions o;
  o.model = s.model();
  o.checkpoint = s.checkpoint();
  o.adapter = s.adapter();
  o.tokenizer = s.tokenizer();
  o.prompt = s.prompt();
  o.session = s.session();
  if (s.has_system_prompt()) o.system_prompt = s.system_prompt();
  if (s.has_chat_template()) o.chat_template = s.chat_template();
  if (s.has_enable_thinking()) o.enable_thinking = s.enable_thinking();
  if (s.has_max_new_tokens()) o.max_new_tokens = s.max_new_tokens();
  o.sample = s.sample();
  if (s.has_temperature()) o.temperature = s.temperature();
  if (s.has_top_p()) o.top_p = s.top_p();
  if (s.has_repetition_penalty()) o.repetition_penalty = s.repetition_penalty();
  o.dtype = DtypeFromProto(s.dtype());
  o.device = DeviceOf(task);
  o.seed = static_cast<uint64_t>(s.seed());
  return o;
}

absl::Status GenerateJobOptions::Validate() const {
  QATD_RETURN_IF_ERROR(RequireField(model, "model"));
  if (!session) {
    QATD_RETURN_IF_ERROR(RequireField(prompt, "prompt"));
  }
  if (max_new_tokens < 1) return absl::InvalidArgumentError(absl::StrCat("max_new_tokens must be >= 1, got ", max_new_tokens));
  if (sample && !(temperature > 0)) return absl::InvalidArgumentError("temperature must be > 0 when sampling");
  if (sample && !(top_p > 0 && top_p <= 1)) return absl::InvalidArgumentError("top_p must be in (0, 1]");
  if (!(repetition_penalty > 0)) return absl::InvalidArgumentError("repetition_penalty must be > 0");
  return absl::OkStatus();
}

}  // namespace qatd::jobs
