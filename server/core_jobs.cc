// The worker's job dispatch for the kinds implemented in core/jobs: the only translation unit
// of the qatd binary that includes core's job headers (the daemon's own code stays
// LibTorch-free). Each adapter maps the job's protobuf spec onto the core function's options
// struct; defaults not set in the spec are core's (which follow the seed).
//
// Available: KD_CACHE (core/jobs/kd_cache_job.h). LAYERWISE, QAT, CONVERT, SNAP, EVAL and
// GENERATE have no core job function yet; the worker fails them with FAILED_PRECONDITION.
#include "absl/strings/str_cat.h"
#include "core/jobs/kd_cache_job.h"
#include "server/job_registry.h"

namespace qatd::server {
namespace {

std::string DtypeName(v1::Dtype dtype) {
  switch (dtype) {
    case v1::DTYPE_BF16: return "bf16";
    case v1::DTYPE_FP16: return "fp16";
    case v1::DTYPE_FP32: return "fp32";
    default: return "auto";
  }
}

std::string DatasetFormatName(v1::DatasetFormat format) {
  switch (format) {
    case v1::DATASET_FORMAT_ALPACA: return "alpaca";
    case v1::DATASET_FORMAT_ALPACA_CHAT: return "alpaca_chat";
    case v1::DATASET_FORMAT_SHAREGPT: return "sharegpt";
    default: return "plain";
  }
}

std::string ThinkingName(v1::ThinkingMode mode) {
  switch (mode) {
    case v1::THINKING_MODE_ON: return "on";
    case v1::THINKING_MODE_OFF: return "off";
    case v1::THINKING_MODE_BOTH: return "both";
    default: return "none";
  }
}

std::string TextUnitName(v1::TextUnit unit) {
  switch (unit) {
    case v1::TEXT_UNIT_PARAGRAPH: return "paragraph";
    case v1::TEXT_UNIT_FILE: return "file";
    default: return "line";
  }
}

// The spec as KdCacheOptions. `task` may be null (submit-time validation): then the output
// directory is a placeholder and the device is the CPU.
jobs::KdCacheOptions KdCacheOptionsOf(const v1::KdCacheSpec& s, const v1::WorkerTask* task) {
  jobs::KdCacheOptions o;
  o.teacher_model = s.teacher_model();
  o.tokenizer = s.tokenizer();
  o.dataset = s.dataset();
  o.dataset_format = DatasetFormatName(s.dataset_format());
  if (s.has_dataset_text_field()) o.dataset_text_field = s.dataset_text_field();
  o.text_unit = TextUnitName(s.text_unit());
  o.enable_thinking = ThinkingName(s.enable_thinking());
  if (s.has_shuffle()) o.shuffle = s.shuffle();
  if (s.has_max_length()) o.max_length = s.max_length();
  if (s.has_topk()) o.topk = s.topk();
  o.rand_neg = s.rand_neg();
  if (s.has_num_sequences()) o.num_sequences = s.num_sequences();
  if (s.has_batch_size()) o.batch_size = s.batch_size();
  if (s.has_shard_size()) o.shard_size = s.shard_size();
  if (s.has_logits_chunk_rows()) o.logits_chunk_rows = s.logits_chunk_rows();
  o.dtype = DtypeName(s.dtype());
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

absl::Status RunKdCacheJob(const v1::WorkerTask& task, jobs::Reporter& reporter, jobs::CancelToken& cancel) {
  return jobs::RunKdCache(KdCacheOptionsOf(task.spec().kd_cache(), &task), reporter, cancel);
}

absl::Status ValidateKdCache(const v1::JobSpec& spec) {
  return KdCacheOptionsOf(spec.kd_cache(), nullptr).Validate();
}

}  // namespace

void RegisterCoreJobs(JobRegistry& registry) {
  registry.Register(v1::JOB_KIND_KD_CACHE, RunKdCacheJob, ValidateKdCache);
}

}  // namespace qatd::server
