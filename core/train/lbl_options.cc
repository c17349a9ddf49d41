#include "core/train/lbl_options.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"
#include "core/train/train_options.h"

namespace qatd::train {

absl::Status LblOptions::Validate() const {
  auto bad = [](const std::string& m) { return absl::InvalidArgumentError(m); };
  if (kd_cache_dir.empty()) return bad("kd_cache_dir is required");
  if (output_dir.empty()) return bad("output_dir is required");
  if (eval_samples < 1) return bad(absl::StrCat("eval_samples must be >= 1, got ", eval_samples));
  if (layer_eval_samples < 0) return bad(absl::StrCat("layer_eval_samples must be >= 0, got ", layer_eval_samples));
  if (!train_scales && !train_weights) return bad("train_scales or train_weights must be set");
  for (int64_t l : layers) {
    if (l < 0) return bad(absl::StrCat("layers must hold decoder layer indices >= 0, got ", l));
  }
  if (steps_per_layer < 0) return bad(absl::StrCat("steps_per_layer must be >= 0, got ", steps_per_layer));
  if (steps_per_layer == 0 && epochs_per_layer < 1) {
    return bad(absl::StrCat("epochs_per_layer must be >= 1 when steps_per_layer is 0, got ", epochs_per_layer));
  }
  if (batch_size < 1) return bad(absl::StrCat("batch_size must be >= 1, got ", batch_size));
  if (grad_accum < 1) return bad(absl::StrCat("grad_accum must be >= 1, got ", grad_accum));
  if (!(local_weight >= 0) || !std::isfinite(local_weight)) {
    return bad(absl::StrCat("local_weight must be a finite value >= 0, got ", local_weight));
  }
  if (!(global_weight >= 0) || !std::isfinite(global_weight)) {
    return bad(absl::StrCat("global_weight must be a finite value >= 0, got ", global_weight));
  }
  if (local_weight == 0 && global_weight == 0) return bad("local_weight and global_weight cannot both be 0");
  if (local_tokens < 1) return bad(absl::StrCat("local_tokens must be >= 1, got ", local_tokens));
  if (logging_steps < 1) return bad(absl::StrCat("logging_steps must be >= 1, got ", logging_steps));
  if (save_steps < 0) return bad(absl::StrCat("save_steps must be >= 0, got ", save_steps));
  if (eval_batch_size < 1) return bad(absl::StrCat("eval_batch_size must be >= 1, got ", eval_batch_size));
  if (chunk_rows < 1) return bad(absl::StrCat("chunk_rows must be >= 1, got ", chunk_rows));
  AdamWOptions adam;
  adam.lr = lr;
  adam.weight_decay = weight_decay;
  QATD_RETURN_IF_ERROR(adam.Validate());
  return KdLossWeights{temperature, hard_top1_weight, hard_full_weight}.Validate();
}

}  // namespace qatd::train
