#include "core/train/e2e_options.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"
#include "core/train/train_options.h"

namespace qatd::train {

absl::Status E2eOptions::Validate() const {
  if (kd_cache_dir.empty()) return absl::InvalidArgumentError("kd_cache_dir is required");
  if (output_dir.empty()) return absl::InvalidArgumentError("output_dir is required");
  if (eval_samples < 1) return absl::InvalidArgumentError(absl::StrCat("eval_samples must be >= 1, got ", eval_samples));
  if (max_steps < 0) return absl::InvalidArgumentError(absl::StrCat("max_steps must be >= 0, got ", max_steps));
  if (batch_size < 1) return absl::InvalidArgumentError(absl::StrCat("batch_size must be >= 1, got ", batch_size));
  if (grad_accum < 1) return absl::InvalidArgumentError(absl::StrCat("grad_accum must be >= 1, got ", grad_accum));
  if (logging_steps < 1) return absl::InvalidArgumentError(absl::StrCat("logging_steps must be >= 1, got ", logging_steps));
  if (eval_steps < 0) return absl::InvalidArgumentError(absl::StrCat("eval_steps must be >= 0, got ", eval_steps));
  if (save_steps < 0) return absl::InvalidArgumentError(absl::StrCat("save_steps must be >= 0, got ", save_steps));
  if (!(clip_grad_norm >= 0)) return absl::InvalidArgumentError("clip_grad_norm must be >= 0");
  if (early_stop_patience < 0) return absl::InvalidArgumentError("early_stop_patience must be >= 0");
  if (eval_batch_size < 1) return absl::InvalidArgumentError("eval_batch_size must be >= 1");
  if (chunk_rows < 1) return absl::InvalidArgumentError("chunk_rows must be >= 1");
  if (external == nullptr && !train_weights && !train_scales && !train_g_only) {
    return absl::InvalidArgumentError("train_weights, train_scales or train_g_only must be set");
  }
  AdamWOptions adam;
  adam.lr = lr;
  adam.weight_decay = weight_decay;
  QATD_RETURN_IF_ERROR(adam.Validate());
  KdLossWeights w{temperature, hard_top1_weight, hard_full_weight};
  QATD_RETURN_IF_ERROR(w.Validate());
  LrSchedule sched{cosine, warmup_steps, std::max<int64_t>(1, max_steps), min_lr_ratio};
  return sched.Validate();
}

}  // namespace qatd::train
