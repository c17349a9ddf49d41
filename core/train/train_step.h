#pragma once
// One optimizer step of the KD trainers: the micro-batch loop (gradients accumulate, summed
// over the ranks when data parallel) and the guarded update.

#include <ATen/ATen.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/kd/cache_reader.h"
#include "core/train/dist_group.h"
#include "core/train/loss_values.h"
#include "core/train/micro_step.h"
#include "core/train/optimizer.h"

namespace qatd::train {

// Zeroes the gradients, runs grad_accum micro-batches of the global KD loss through `micro`
// (micro_step.h; CUDA graphs when it can) and backpropagates each divided by grad_accum
// (gradients accumulate in the parameters). Returns the mean terms (0 for a term that is off).
// Data parallel (`dist` with more than one rank, the stream sharded over the ranks): each
// shard's loss is weighted by its share of the global batch, then the gradients and the loss
// terms are summed over the ranks (bucketed all-reduces after the last backward, outside any
// captured CUDA graph), so every rank holds the gradient of the global batch.
absl::StatusOr<LossValues> RunMicroBatches(MicroStep& micro, kd::KdBatchStream& stream, int64_t grad_accum,
                                           AdamW& adam, DistGroup* dist = nullptr);

// The divergence guard, clipping and the update: FAILED_PRECONDITION naming `step_number` when
// the loss or the gradient norm is not finite (nothing is applied then); else clips (when
// clip_grad_norm > 0), steps with `lr` and zeroes the gradients. A sharded (ZeRO-1) optimizer
// updates its own parameters and then hands each to every rank of `dist`.
absl::Status ApplyStep(AdamW& adam, double lr, double clip_grad_norm, const LossValues& values, int64_t step_number,
                       DistGroup* dist = nullptr);

}  // namespace qatd::train
