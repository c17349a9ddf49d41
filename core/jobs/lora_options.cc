#include "core/jobs/lora_options.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"
#include "core/jobs/trainer_fields.h"

namespace qatd::jobs {

absl::StatusOr<LoraJobOptions> LoraJobOptions::FromProto(const v1::LoraSpec& s, const v1::WorkerTask* task) {
  LoraJobOptions o;
  o.model = s.model();
  o.checkpoint = s.checkpoint();
  o.dtype = DtypeFromProto(s.dtype());
  o.device = DeviceOf(task);
  if (s.has_rank()) o.lora.rank = s.rank();
  o.lora.alpha = s.has_alpha() ? s.alpha() : 2.0 * static_cast<double>(o.lora.rank);
  if (s.has_dropout()) o.lora.dropout = s.dropout();
  if (s.target_modules_size() > 0) o.lora.target_modules.assign(s.target_modules().begin(), s.target_modules().end());
  switch (DtypeFromProto(s.adapter_dtype())) {
    case Dtype::kAuto:
    case Dtype::kFp32: o.lora.dtype = "fp32"; break;
    case Dtype::kBf16: o.lora.dtype = "bf16"; break;
    case Dtype::kFp16:
      return absl::InvalidArgumentError("adapter_dtype must be fp32 or bf16 (fp16 adapters would need a grad scaler)");
  }
  o.lora.seed = static_cast<uint64_t>(s.seed());
  o.write_merged = !s.skip_merged();
  switch (DtypeFromProto(s.merged_dtype())) {
    case Dtype::kAuto:
    case Dtype::kBf16: o.merged_dtype = Dtype::kBf16; break;
    case Dtype::kFp16: o.merged_dtype = Dtype::kFp16; break;
    case Dtype::kFp32: return absl::InvalidArgumentError("merged_dtype must be bf16 or fp16 (a 16-bit export)");
  }

  train::E2eOptions& t = o.train;
  ApplyTrainerFields(s, t);
  t.eval_batch_size = std::min<int64_t>(t.eval_batch_size, std::max<int64_t>(1, t.batch_size));
  t.output_dir = OutputDirOf(s.output_dir(), task);
  t.resume = IsRerun(task);
  return o;
}

absl::Status LoraJobOptions::Validate() const {
  if (model.empty()) return absl::InvalidArgumentError("model is required (a Hugging Face model directory)");
  if (checkpoint.empty()) return absl::InvalidArgumentError("checkpoint is required (a snapped qatd checkpoint)");
  if (train.kd_cache_dir.empty()) return absl::InvalidArgumentError("kd_cache_dir is required");
  if (train.output_dir.empty()) return absl::InvalidArgumentError("output_dir is required");
  QATD_RETURN_IF_ERROR(lora.Validate());
  QATD_RETURN_IF_ERROR(CheckDeviceName(device));
  // The trainer's checks, with the adapters as its trainable set.
  train::E2eOptions t = train;
  t.train_scales = true;  // stands for "something is trained": the adapters
  return t.Validate();
}

}  // namespace qatd::jobs
