#include "core/jobs/layerwise_options.h"

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"
#include "core/jobs/options_common.h"

namespace qatd::jobs {

absl::StatusOr<LayerwiseOptions> LayerwiseOptions::FromProto(const v1::LayerwiseSpec& s, const v1::WorkerTask* task) {
  LayerwiseOptions o;
  o.model = s.model();
  o.kd_cache_dir = s.kd_cache_dir();
  o.init_state = s.init_state();
  auto quant = QuantFromProto(s.quant(), quant::QuantConfig{});  // group_size default 128 (train_anemll_lbl.py)
  if (!quant.ok()) return quant.status();
  o.quant = *quant;
  o.dtype = DtypeFromProto(s.dtype());
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
  o.resume = IsRerun(task);
  return o;
}

absl::Status LayerwiseOptions::Validate() const {
  if (model.empty()) return absl::InvalidArgumentError("model is required (a Hugging Face model directory)");
  if (kd_cache_dir.empty()) return absl::InvalidArgumentError("kd_cache_dir is required");
  if (output_dir.empty()) return absl::InvalidArgumentError("output_dir is required");
  QATD_RETURN_IF_ERROR(CheckDeviceName(device));
  if (absl::Status q = quant.Validate(); !q.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("quant: ", q.message()));
  }
  return ToTrainerOptions().Validate();
}

train::LblOptions LayerwiseOptions::ToTrainerOptions() const {
  train::LblOptions t;
  t.kd_cache_dir = kd_cache_dir;
  t.dist = dist;
  t.eval_samples = eval_samples;
  t.layer_eval_samples = layer_eval_samples;
  t.train_scales = train_scales;
  t.train_weights = train_weights;
  t.train_mlp_only = train_mlp_only;
  t.layers = layers;
  t.steps_per_layer = steps_per_layer;
  t.epochs_per_layer = epochs_per_layer;
  t.batch_size = batch_size;
  t.grad_accum = grad_accum;
  t.lr = lr;
  t.temperature = temperature;
  t.local_weight = local_weight;
  t.global_weight = global_weight;
  t.local_tokens = local_tokens;
  t.hard_top1_weight = hard_top1_weight;
  t.hard_full_weight = hard_full_weight;
  t.logging_steps = logging_steps;
  t.save_steps = save_steps;
  t.seed = seed;
  t.output_dir = output_dir;
  t.resume = resume;
  t.after_durable = after_durable;
  return t;
}

}  // namespace qatd::jobs
