#include "core/jobs/qat_options.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"
#include "core/jobs/options_common.h"

namespace qatd::jobs {

absl::StatusOr<QatOptions> QatOptions::FromProto(const v1::QatSpec& s, const v1::WorkerTask* task) {
  QatOptions o;
  o.version = s.version() == v1::QAT_VERSION_V2 ? 2 : 1;
  o.model = s.model();
  o.kd_cache_dir = s.kd_cache_dir();
  o.init_state = s.init_state();
  quant::QuantConfig v1_base;
  v1_base.group_size = 32;  // train_anemll_qat.py's default
  auto quant = QuantFromProto(s.quant(), v1_base);
  if (!quant.ok()) return quant.status();
  o.quant = *quant;
  if (o.version == 2) {
    auto q2 = QuantV2FromProto(s.quant_v2());
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
  o.resume = IsRerun(task);
  if (o.save_steps == 0) o.save_steps = 50;
  o.ApplyDefaults();
  return o;
}

void QatOptions::ApplyDefaults() {
  const bool v1 = version == 1;
  if (batch_size < 0) batch_size = v1 ? 32 : 8;
  if (lr < 0) lr = v1 ? 1e-5 : 5e-5;
  if (hard_top1_weight < 0) hard_top1_weight = v1 ? 0.0 : 0.2;
  if (hard_full_weight < 0) hard_full_weight = v1 ? 0.0005 : 5e-5;
  if (logging_steps < 0) logging_steps = v1 ? 50 : 20;
  if (eval_steps < 0) eval_steps = v1 ? 200 : 100;
  if (cosine < 0) cosine = v1 ? 0 : 1;
  if (warmup_steps < 0) warmup_steps = v1 ? 0 : 100;
}

absl::Status QatOptions::Validate() const {
  if (version != 1 && version != 2) return absl::InvalidArgumentError(absl::StrCat("version must be V1 or V2, got ", version));
  if (model.empty()) return absl::InvalidArgumentError("model is required (a Hugging Face model directory)");
  if (output_dir.empty()) return absl::InvalidArgumentError("output_dir is required");
  if (!skip_training && kd_cache_dir.empty()) return absl::InvalidArgumentError("kd_cache_dir is required unless skip_training");
  if (version == 1) {
    if (!skip_training && !train_weights && !train_scales) {
      return absl::InvalidArgumentError("train_weights or train_scales is required unless skip_training (V1)");
    }
    if (train_g_only) return absl::InvalidArgumentError("train_g_only applies to V2 only");
    QATD_RETURN_IF_ERROR(quant.Validate());
  } else {
    if (train_weights) return absl::InvalidArgumentError("train_weights: V2 trains scales (A, B, g) only; the indices are frozen");
    if (snap_weights || snap_bake_scales) {
      return absl::InvalidArgumentError("snap_weights: V1 only; snap V2 checkpoints with a SNAP job");
    }
    if (v2_init != "from_v1" && v2_init != "from_v2" && v2_init != "from_scratch") {
      return absl::InvalidArgumentError(absl::StrCat("v2_init must be from_v1, from_v2 or from_scratch, got ", v2_init));
    }
    if (v2_init == "from_v1" && v1_checkpoint.empty()) return absl::InvalidArgumentError("v1_checkpoint is required for V2 from V1");
    if (v2_init == "from_v2" && v2_checkpoint.empty()) return absl::InvalidArgumentError("v2_checkpoint is required for V2 from V2");
    QATD_RETURN_IF_ERROR(quant_v2.Validate());
  }
  if (snap_bake_scales && !snap_weights) return absl::InvalidArgumentError("snap_bake_scales needs snap_weights");
  if (skip_training) return absl::OkStatus();
  return ToE2eOptions().Validate();
}

train::E2eOptions QatOptions::ToE2eOptions() const {
  const QatOptions& o = *this;
  train::E2eOptions e;
  e.kd_cache_dir = o.kd_cache_dir;
  e.output_dir = o.output_dir;
  e.train_weights = o.train_weights;
  e.train_scales = o.train_scales || (o.version == 2 && !o.train_g_only);
  e.train_g_only = o.train_g_only;
  e.train_mlp_only = o.train_mlp_only;
  e.max_steps = o.max_steps;
  e.batch_size = o.batch_size;
  e.grad_accum = o.grad_accum;
  e.lr = o.lr;
  e.weight_decay = o.weight_decay;
  e.temperature = o.temperature;
  e.hard_top1_weight = o.hard_top1_weight;
  e.hard_full_weight = o.hard_full_weight;
  e.logging_steps = o.logging_steps;
  e.eval_steps = o.eval_steps;
  e.eval_samples = o.eval_samples;
  e.save_steps = o.save_steps;
  e.cosine = o.cosine == 1;
  e.warmup_steps = o.warmup_steps;
  e.min_lr_ratio = o.min_lr_ratio;
  e.clip_grad_norm = o.clip_grad_norm;
  e.early_stop_patience = o.early_stop_patience;
  e.seed = o.seed;
  e.resume = o.resume;
  e.after_durable = o.after_durable;
  e.v2_factored_forward = o.v2_factored_forward;
  e.eval_batch_size = std::min<int64_t>(8, std::max<int64_t>(1, o.batch_size));
  return e;
}

}  // namespace qatd::jobs
