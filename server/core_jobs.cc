// The worker's job dispatch for the kinds implemented in core/jobs: the only translation unit
// of the qatd binary that includes core's job headers (the daemon's own code stays
// LibTorch-free). Each adapter maps the job's protobuf spec onto the core function's options
// struct; defaults not set in the spec are core's (which follow the seed).
//
// Available: KD_CACHE (core/jobs/kd_cache_job.h), QAT (qat_job.h), LAYERWISE
// (layerwise_job.h), CONVERT, SNAP, EVAL and GENERATE (model_jobs.h).
//
// Re-runs: a job re-queued after a daemon restart (attempt > 1) resumes: KD_CACHE continues
// its cache, QAT and LAYERWISE continue from their resume/ checkpoint (exact resume); the
// short jobs simply run again.
#include "absl/strings/str_cat.h"
#include "core/jobs/kd_cache_job.h"
#include "core/jobs/layerwise_job.h"
#include "core/jobs/model_jobs.h"
#include "core/jobs/qat_job.h"
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

// The worker sees only its own GPUs (CUDA_VISIBLE_DEVICES), renumbered from 0.
std::string DeviceOf(const v1::WorkerTask* task) {
  if (task == nullptr) return "cpu";
  return (task->devices_size() == 0 || task->devices(0) == "cpu") ? "cpu" : "cuda:0";
}

std::string OutputDirOf(const std::string& spec_dir, const v1::WorkerTask* task) {
  if (task == nullptr) return spec_dir.empty() ? "<job output directory>" : spec_dir;
  return ResolveOutputDir(spec_dir, *task);
}

// QuantSettings -> QuantConfig: preset first (else `base`), then every field that is set.
absl::StatusOr<quant::QuantConfig> QuantOf(const v1::QuantSettings& q, quant::QuantConfig base) {
  if (!q.preset().empty()) {
    auto preset = quant::QuantConfig::FromPreset(q.preset());
    if (!preset.ok()) return absl::InvalidArgumentError(absl::StrCat("quant.preset: ", preset.status().message()));
    base = *preset;
  }
  if (q.has_lut_size()) base.lut_size = q.lut_size();
  if (q.has_group_size()) base.group_size = q.group_size();
  if (q.has_scale_rank()) base.scale_rank = q.scale_rank();
  if (q.lut_include_zero()) base.lut_include_zero = true;
  if (q.quantize_attn()) base.quantize_attn = true;
  if (q.attn_lut_size() != 0) base.attn_lut_size = q.attn_lut_size();
  if (q.attn_group_size() != 0) base.attn_group_size = q.attn_group_size();
  if (q.has_attn_scale_rank()) base.attn_scale_rank = q.attn_scale_rank();
  if (q.quantize_lm_head()) base.quantize_lm_head = true;
  absl::Status valid = base.Validate();
  if (!valid.ok()) return absl::InvalidArgumentError(absl::StrCat("quant.", valid.message()));
  return base;
}

absl::StatusOr<quant::QuantConfigV2> QuantV2Of(const v1::QuantSettingsV2& q) {
  auto preset = quant::QuantConfigV2::FromPreset(q.preset().empty() ? "Q2_A4" : q.preset());
  if (!preset.ok()) return absl::InvalidArgumentError(absl::StrCat("quant_v2.preset: ", preset.status().message()));
  quant::QuantConfigV2 c = *preset;
  c.quantize_attn = true;
  if (q.has_lut_size()) c.lut_size = q.lut_size();
  if (q.has_scale_rank()) c.scale_rank = q.scale_rank();
  if (q.has_attn_lut_size()) c.attn_lut_size = q.attn_lut_size();
  if (q.has_attn_scale_rank()) c.attn_scale_rank = q.attn_scale_rank();
  if (q.has_group_size()) c.group_size = q.group_size();
  if (q.force_positive_scales()) c.force_positive_scales = true;
  if (q.magnitude_activation() == v1::MAGNITUDE_ACTIVATION_SOFTPLUS) c.magnitude_activation = quant::MagnitudeActivation::kSoftplus;
  if (q.magnitude_activation() == v1::MAGNITUDE_ACTIVATION_ABS) c.magnitude_activation = quant::MagnitudeActivation::kAbs;
  if (q.has_magnitude_eps()) c.magnitude_eps = q.magnitude_eps();
  if (q.has_norm_eps()) c.norm_eps = q.norm_eps();
  if (q.has_use_ste_fp16()) c.use_ste_fp16 = q.use_ste_fp16();
  absl::Status valid = c.Validate();
  if (!valid.ok()) return absl::InvalidArgumentError(absl::StrCat("quant_v2.", valid.message()));
  return c;
}

absl::StatusOr<jobs::QatOptions> QatOptionsOf(const v1::QatSpec& s, const v1::WorkerTask* task) {
  jobs::QatOptions o;
  o.version = s.version() == v1::QAT_VERSION_V2 ? 2 : 1;
  o.model = s.model();
  o.kd_cache_dir = s.kd_cache_dir();
  o.init_state = s.init_state();
  quant::QuantConfig v1_base;
  v1_base.group_size = 32;  // train_anemll_qat.py's default
  auto quant = QuantOf(s.quant(), v1_base);
  if (!quant.ok()) return quant.status();
  o.quant = *quant;
  if (o.version == 2) {
    auto q2 = QuantV2Of(s.quant_v2());
    if (!q2.ok()) return q2.status();
    o.quant_v2 = *q2;
  }
  switch (s.v2_init()) {
    case v1::V2_INIT_FROM_V2: o.v2_init = "from_v2"; break;
    case v1::V2_INIT_FROM_SCRATCH: o.v2_init = "from_scratch"; break;
    default: o.v2_init = "from_v1";
  }
  o.v1_checkpoint = s.v1_checkpoint();
  o.v2_checkpoint = s.v2_checkpoint();
  o.dtype = DtypeName(s.dtype());
  o.device = DeviceOf(task);
  o.train_weights = s.train_weights();
  o.train_scales = s.train_scales();
  o.train_g_only = s.train_g_only();
  o.train_mlp_only = s.train_mlp_only();
  if (s.has_max_steps()) o.max_steps = s.max_steps();
  if (s.has_batch_size()) o.batch_size = s.batch_size();
  if (s.has_lr()) o.lr = s.lr();
  if (s.has_temperature()) o.temperature = s.temperature();
  if (s.has_hard_top1_weight()) o.hard_top1_weight = s.hard_top1_weight();
  if (s.has_hard_full_weight()) o.hard_full_weight = s.hard_full_weight();
  if (s.has_logging_steps()) o.logging_steps = s.logging_steps();
  if (s.has_eval_steps()) o.eval_steps = s.eval_steps();
  if (s.has_eval_samples()) o.eval_samples = s.eval_samples();
  o.save_steps = s.save_steps();
  if (s.has_cosine()) o.cosine = s.cosine() ? 1 : 0;
  if (s.has_warmup_steps()) o.warmup_steps = s.warmup_steps();
  if (s.has_min_lr_ratio()) o.min_lr_ratio = s.min_lr_ratio();
  o.clip_grad_norm = s.clip_grad_norm();
  if (s.has_grad_accum()) o.grad_accum = s.grad_accum();
  if (s.has_weight_decay()) o.weight_decay = s.weight_decay();
  o.early_stop_patience = s.early_stop_patience();
  o.snap_weights = s.snap_weights();
  o.snap_bake_scales = s.snap_bake_scales();
  o.skip_training = s.skip_training();
  o.seed = static_cast<uint64_t>(s.seed());
  o.output_dir = OutputDirOf(s.output_dir(), task);
  // Every QAT job keeps a resume checkpoint; a re-run after a restart continues from it.
  o.resume = task != nullptr && task->attempt() > 1;
  if (o.save_steps == 0) o.save_steps = 50;
  o.ApplyDefaults();
  return o;
}

absl::Status RunQatJob(const v1::WorkerTask& task, jobs::Reporter& reporter, jobs::CancelToken& cancel) {
  auto o = QatOptionsOf(task.spec().qat(), &task);
  if (!o.ok()) return o.status();
  return jobs::RunQat(*o, reporter, cancel);
}

absl::Status ValidateQat(const v1::JobSpec& spec) {
  auto o = QatOptionsOf(spec.qat(), nullptr);
  if (!o.ok()) return o.status();
  return o->Validate();
}

absl::StatusOr<jobs::LayerwiseOptions> LayerwiseOptionsOf(const v1::LayerwiseSpec& s, const v1::WorkerTask* task) {
  jobs::LayerwiseOptions o;
  o.model = s.model();
  o.kd_cache_dir = s.kd_cache_dir();
  o.init_state = s.init_state();
  auto quant = QuantOf(s.quant(), quant::QuantConfig{});  // group_size default 128 (train_anemll_lbl.py)
  if (!quant.ok()) return quant.status();
  o.quant = *quant;
  o.dtype = DtypeName(s.dtype());
  o.device = DeviceOf(task);
  if (s.has_train_scales()) o.train_scales = s.train_scales();
  o.train_weights = s.train_weights();
  o.train_mlp_only = s.train_mlp_only();
  if (s.has_lr()) o.lr = s.lr();
  if (s.has_batch_size()) o.batch_size = s.batch_size();
  if (s.has_epochs_per_layer()) o.epochs_per_layer = s.epochs_per_layer();
  o.steps_per_layer = s.steps_per_layer();
  if (s.has_grad_accum()) o.grad_accum = s.grad_accum();
  if (s.has_temperature()) o.temperature = s.temperature();
  if (s.has_local_weight()) o.local_weight = s.local_weight();
  if (s.has_global_weight()) o.global_weight = s.global_weight();
  if (s.has_local_tokens()) o.local_tokens = s.local_tokens();
  o.hard_top1_weight = s.hard_top1_weight();
  o.hard_full_weight = s.hard_full_weight();
  if (s.has_eval_samples()) o.eval_samples = s.eval_samples();
  o.layers.assign(s.layers().begin(), s.layers().end());
  o.seed = static_cast<uint64_t>(s.seed());
  o.output_dir = OutputDirOf(s.output_dir(), task);
  o.resume = task != nullptr && task->attempt() > 1;
  return o;
}

absl::Status RunLayerwiseJob(const v1::WorkerTask& task, jobs::Reporter& reporter, jobs::CancelToken& cancel) {
  auto o = LayerwiseOptionsOf(task.spec().layerwise(), &task);
  if (!o.ok()) return o.status();
  return jobs::RunLayerwise(*o, reporter, cancel);
}

absl::Status ValidateLayerwise(const v1::JobSpec& spec) {
  auto o = LayerwiseOptionsOf(spec.layerwise(), nullptr);
  if (!o.ok()) return o.status();
  return o->Validate();
}

jobs::ConvertOptions ConvertOptionsOf(const v1::ConvertSpec& s, const v1::WorkerTask* task) {
  jobs::ConvertOptions o;
  o.mode = s.mode() == v1::CONVERT_MODE_V1_TO_V2 ? "v1_to_v2" : "q4_to_q2";
  o.model = s.model();
  o.checkpoint = s.checkpoint();
  if (s.has_q4_rank()) o.q4_rank = s.q4_rank();
  if (s.has_q2_mlp_rank()) o.q2_mlp_rank = s.q2_mlp_rank();
  if (s.has_q2_attn_rank()) o.q2_attn_rank = s.q2_attn_rank();
  if (s.has_q2_mlp_lut_size()) o.q2_mlp_lut_size = s.q2_mlp_lut_size();
  if (s.has_q2_attn_lut_size()) o.q2_attn_lut_size = s.q2_attn_lut_size();
  if (auto q = QuantOf(s.source_quant(), quant::QuantConfig{}); q.ok()) o.source_quant = *q;
  o.eval = s.eval();
  o.kd_cache_dir = s.kd_cache_dir();
  o.device = DeviceOf(task);
  o.output_dir = OutputDirOf(s.output_dir(), task);
  return o;
}

jobs::SnapOptions SnapOptionsOf(const v1::SnapSpec& s, const v1::WorkerTask* task) {
  jobs::SnapOptions o;
  o.model = s.model();
  o.checkpoint = s.checkpoint();
  o.fp16 = s.fp16();
  if (s.has_test_generation()) o.test_generation = s.test_generation();
  o.device = DeviceOf(task);
  o.output_dir = OutputDirOf(s.output_dir(), task);
  return o;
}

jobs::EvalJobOptions EvalOptionsOf(const v1::EvalSpec& s, const v1::WorkerTask* task) {
  jobs::EvalJobOptions o;
  o.model = s.model();
  o.checkpoint = s.checkpoint();
  o.kd_cache_dir = s.kd_cache_dir();
  if (s.has_eval_samples()) o.eval_samples = s.eval_samples();
  if (s.has_temperature()) o.temperature = s.temperature();
  if (s.has_batch_size()) o.batch_size = s.batch_size();
  o.dtype = DtypeName(s.dtype());
  o.device = DeviceOf(task);
  return o;
}

jobs::GenerateJobOptions GenerateOptionsOf(const v1::GenerateSpec& s, const v1::WorkerTask* task) {
  jobs::GenerateJobOptions o;
  o.model = s.model();
  o.checkpoint = s.checkpoint();
  o.tokenizer = s.tokenizer();
  o.prompt = s.prompt();
  if (s.has_system_prompt()) o.system_prompt = s.system_prompt();
  if (s.has_chat_template()) o.chat_template = s.chat_template();
  if (s.has_enable_thinking()) o.enable_thinking = s.enable_thinking();
  if (s.has_max_new_tokens()) o.max_new_tokens = s.max_new_tokens();
  o.sample = s.sample();
  if (s.has_temperature()) o.temperature = s.temperature();
  if (s.has_top_p()) o.top_p = s.top_p();
  if (s.has_repetition_penalty()) o.repetition_penalty = s.repetition_penalty();
  o.dtype = DtypeName(s.dtype());
  o.device = DeviceOf(task);
  o.seed = static_cast<uint64_t>(s.seed());
  return o;
}

}  // namespace

void RegisterCoreJobs(JobRegistry& registry) {
  registry.Register(v1::JOB_KIND_KD_CACHE, RunKdCacheJob, ValidateKdCache);
  registry.Register(v1::JOB_KIND_QAT, RunQatJob, ValidateQat);
  registry.Register(v1::JOB_KIND_LAYERWISE, RunLayerwiseJob, ValidateLayerwise);
  registry.Register(
      v1::JOB_KIND_CONVERT,
      [](const v1::WorkerTask& t, jobs::Reporter& r, jobs::CancelToken& c) {
        return jobs::RunConvert(ConvertOptionsOf(t.spec().convert(), &t), r, c);
      },
      [](const v1::JobSpec& spec) { return ConvertOptionsOf(spec.convert(), nullptr).Validate(); });
  registry.Register(
      v1::JOB_KIND_SNAP,
      [](const v1::WorkerTask& t, jobs::Reporter& r, jobs::CancelToken& c) {
        return jobs::RunSnap(SnapOptionsOf(t.spec().snap(), &t), r, c);
      },
      [](const v1::JobSpec& spec) { return SnapOptionsOf(spec.snap(), nullptr).Validate(); });
  registry.Register(
      v1::JOB_KIND_EVAL,
      [](const v1::WorkerTask& t, jobs::Reporter& r, jobs::CancelToken& c) {
        return jobs::RunEval(EvalOptionsOf(t.spec().eval(), &t), r, c);
      },
      [](const v1::JobSpec& spec) { return EvalOptionsOf(spec.eval(), nullptr).Validate(); });
  registry.Register(
      v1::JOB_KIND_GENERATE,
      [](const v1::WorkerTask& t, jobs::Reporter& r, jobs::CancelToken& c) {
        return jobs::RunGenerateJob(GenerateOptionsOf(t.spec().generate(), &t), r, c);
      },
      [](const v1::JobSpec& spec) { return GenerateOptionsOf(spec.generate(), nullptr).Validate(); });
}

}  // namespace qatd::server
