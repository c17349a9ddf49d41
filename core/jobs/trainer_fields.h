#pragma once
// The trainer settings that QatSpec and LoraSpec share (same proto field names, same meaning),
// copied into the end-to-end trainer's options in one place.

#include "core/train/e2e_options.h"

namespace qatd::jobs {

// Sets `t` from the spec's shared fields; unset optional fields keep E2eOptions' defaults. A
// save_steps of 0 becomes 50: every daemon job keeps a resume point.
template <typename Spec>
void ApplyTrainerFields(const Spec& s, train::E2eOptions& t) {
  t.kd_cache_dir = s.kd_cache_dir();
  if (s.has_max_steps()) t.max_steps = s.max_steps();
  if (s.has_batch_size()) t.batch_size = s.batch_size();
  if (s.has_lr()) t.lr = s.lr();
  if (s.has_temperature()) t.temperature = s.temperature();
  if (s.has_hard_top1_weight()) t.hard_top1_weight = s.hard_top1_weight();
  if (s.has_hard_full_weight()) t.hard_full_weight = s.hard_full_weight();
  if (s.has_logging_steps()) t.logging_steps = s.logging_steps();
  if (s.has_eval_steps()) t.eval_steps = s.eval_steps();
  if (s.has_eval_samples()) t.eval_samples = s.eval_samples();
  t.save_steps = s.save_steps() > 0 ? s.save_steps() : 50;
  if (s.has_cosine()) t.cosine = s.cosine();
  if (s.has_warmup_steps()) t.warmup_steps = s.warmup_steps();
  if (s.has_min_lr_ratio()) t.min_lr_ratio = s.min_lr_ratio();
  t.clip_grad_norm = s.clip_grad_norm();
  if (s.has_grad_accum()) t.grad_accum = s.grad_accum();
  if (s.has_weight_decay()) t.weight_decay = s.weight_decay();
  t.early_stop_patience = s.early_stop_patience();
  t.seed = static_cast<uint64_t>(s.seed());
}

}  // namespace qatd::jobs
