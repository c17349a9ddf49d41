#include "core/jobs/kd_cache_options.h"

#include "core/kd/dataset.h"
#include "core/kd/render.h"

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"
#include "core/jobs/options_common.h"

namespace qatd::jobs {

namespace {

kd::DatasetFormat DatasetFormatOf(v1::DatasetFormat format) {
  switch (format) {
    case v1::DATASET_FORMAT_ALPACA: return kd::DatasetFormat::kAlpaca;
    case v1::DATASET_FORMAT_ALPACA_CHAT: return kd::DatasetFormat::kAlpacaChat;
    case v1::DATASET_FORMAT_SHAREGPT: return kd::DatasetFormat::kShareGpt;
    default: return kd::DatasetFormat::kPlain;
  }
}

kd::ThinkingMode ThinkingOf(v1::ThinkingMode mode) {
  switch (mode) {
    case v1::THINKING_MODE_ON: return kd::ThinkingMode::kOn;
    case v1::THINKING_MODE_OFF: return kd::ThinkingMode::kOff;
    case v1::THINKING_MODE_BOTH: return kd::ThinkingMode::kBoth;
    default: return kd::ThinkingMode::kNone;
  }
}

kd::TextUnit TextUnitOf(v1::TextUnit unit) {
  switch (unit) {
    case v1::TEXT_UNIT_PARAGRAPH: return kd::TextUnit::kParagraph;
    case v1::TEXT_UNIT_FILE: return kd::TextUnit::kFile;
    default: return kd::TextUnit::kLine;
  }
}

}  // namespace

absl::StatusOr<KdCacheOptions> KdCacheOptions::FromProto(const v1::KdCacheSpec& s, const v1::WorkerTask* task) {
  KdCacheOptions o;
  o.teacher_model = s.teacher_model();
  o.tokenizer = s.tokenizer();
  o.dataset = s.dataset();
  if (s.has_dataset_text_field()) o.dataset_text_field = s.dataset_text_field();
  o.text_unit = TextUnitOf(s.text_unit());
  o.dataset_format = DatasetFormatOf(s.dataset_format());
  if (s.dataset_format() == v1::DATASET_FORMAT_AUTO && task != nullptr) {
    // Detected where the job runs; at submit time job_spec.cc detects it (and checks a sample)
    // with the field named, and `plain` stands in here.
    absl::StatusOr<kd::DatasetFormat> detected =
        kd::DetectDatasetFormat({o.dataset, kd::DatasetFormat::kPlain, o.dataset_text_field, o.text_unit});
    if (!detected.ok()) {
      return absl::Status(detected.status().code(),
                          absl::StrCat("dataset_format cannot be detected: ", detected.status().message()));
    }
    o.dataset_format = *detected;
  }
  o.enable_thinking = ThinkingOf(s.enable_thinking());
  if (s.has_shuffle()) o.shuffle = s.shuffle();
  if (s.has_max_length()) o.max_length = s.max_length();
  if (s.has_topk()) o.topk = s.topk();
  o.rand_neg = s.rand_neg();
  if (s.has_num_sequences()) o.num_sequences = s.num_sequences();
  if (s.has_batch_size()) o.batch_size = s.batch_size();
  if (s.has_shard_size()) o.shard_size = s.shard_size();
  if (s.has_logits_chunk_rows()) o.logits_chunk_rows = s.logits_chunk_rows();
  o.dtype = DtypeFromProto(s.dtype());
  o.seed = static_cast<uint64_t>(s.seed());
  o.resume = s.resume();
  o.overwrite = s.overwrite();
  if (task == nullptr) {
    o.output_dir = s.output_dir().empty() ? "<job output directory>" : s.output_dir();
    o.device = "cpu";
    return o;
  }
  o.output_dir = ResolveOutputDir(s.output_dir(), *task);
  // The worker sees only its own GPUs (CUDA_VISIBLE_DEVICES), renumbered from 0.
  o.device = (task->devices_size() == 0 || task->devices(0) == "cpu") ? "cpu" : "cuda:0";
  if (task->attempt() > 1) {
    // A re-run after a daemon restart continues what the previous attempt made durable.
    o.resume = true;
    o.overwrite = false;
  }
  return o;
}

absl::Status KdCacheOptions::Validate() const {
  if (teacher_model.empty()) return absl::InvalidArgumentError("teacher_model_name_or_path is required");
  if (dataset.empty()) return absl::InvalidArgumentError("dataset_name (a local file or directory) is required");
  if (output_dir.empty()) return absl::InvalidArgumentError("output_dir is required");
  if (dataset_text_field.empty()) return absl::InvalidArgumentError("dataset_text_field must not be empty");
  QATD_RETURN_IF_ERROR(CheckRange("max_length", max_length, 2, 1 << 20));
  QATD_RETURN_IF_ERROR(CheckRange("topk", topk, 1, 1 << 16));
  QATD_RETURN_IF_ERROR(CheckRange("rand_neg", rand_neg, 0, 1 << 20));
  QATD_RETURN_IF_ERROR(CheckRange("num_sequences", num_sequences, 1, int64_t{1} << 40));
  QATD_RETURN_IF_ERROR(CheckRange("batch_size", batch_size, 1, 1 << 16));
  QATD_RETURN_IF_ERROR(CheckRange("shard_size", shard_size, 1, 1 << 24));
  QATD_RETURN_IF_ERROR(CheckRange("logits_chunk_rows", logits_chunk_rows, 0, int64_t{1} << 30));
  QATD_RETURN_IF_ERROR(CheckRange("num_threads", num_threads, 0, 256));
  QATD_RETURN_IF_ERROR(CheckDeviceName(device));
  if (resume && overwrite) return absl::InvalidArgumentError("resume and overwrite are mutually exclusive");
  return absl::OkStatus();
}

}  // namespace qatd::jobs
