#pragma once
// Option structs of the training building blocks (optimizer, learning-rate schedule, KD loss
// weights): plain values with defaults and a Validate(). LibTorch-free (qatd_core_base), so
// the daemon can validate a job's training settings at submit time.

#include <cstdint>

#include "absl/status/status.h"

namespace qatd::train {

struct AdamWOptions {
  double lr = 1e-5;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;
  // ZeRO-1 (issue #15): with shard_count > 1 this rank keeps the moments and fp32 masters of
  // the parameters it owns only (whole tensors, assigned by size), updates those, and
  // AdamW::BroadcastOwned hands every parameter from its owner to the other ranks.
  int shard_index = 0;
  int shard_count = 1;
  absl::Status Validate() const;  // INVALID_ARGUMENT naming the field
};

// Weights of the global loss. total = L_KD + hard_top1_weight * L_top1 + hard_full_weight * L_full.
struct KdLossWeights {
  double temperature = 2.0;       // > 0
  double hard_top1_weight = 0.0;  // >= 0; 0 skips the term
  double hard_full_weight = 0.0;  // >= 0; 0 skips the term

  // INVALID_ARGUMENT naming the field when out of range (or not finite).
  absl::Status Validate() const;
};

// Learning-rate factor of update number `step` (0-based), multiplied into the base lr.
//   constant:  1
//   warmup:    (step + 1) / warmup_steps while step < warmup_steps. DELIBERATE DIFFERENCE
//              (spec §17.11): the reference's LambdaLR gives step / warmup, so its first update
//              uses lr 0; ours starts at lr / warmup_steps and reaches lr at the end of warmup.
//   cosine:    after warmup, rho + (1 - rho) * (1 + cos(pi * (step - warmup) / (total - warmup))) / 2,
//              rho = min_lr_ratio (spec §9.1).
struct LrSchedule {
  bool cosine = false;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  double min_lr_ratio = 0.1;
  double Factor(int64_t step) const;
  absl::Status Validate() const;
};

}  // namespace qatd::train
