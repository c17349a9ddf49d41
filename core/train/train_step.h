#pragma once
// One optimizer step of the KD trainers: the micro-batch loop (gradients accumulate, summed
// over the ranks when data parallel) and the guarded update.

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>

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
// Data parallel (`dist` distributed: more than one rank, or a forced one-rank group; the
// stream sharded over the ranks): each shard's loss is weighted by its share of the global
// batch, then the gradients and the loss terms are summed over the ranks, so every rank holds
// the gradient of the global batch. The gradients go in buckets (grad_reducer.h, bucket size
// DistOptions::bucket_bytes): with DistOptions::overlap_allreduce (the default) and a
// micro-step that is not CUDA-graphed (!micro.may_use_graphs()), each bucket's async
// all-reduce starts inside the last micro-batch's backward as soon as its gradients exist;
// else all start after the last backward (outside any captured graph). Both wait for every
// bucket before returning; DistGroup::grad_sync_stats() counts which way they ran.
absl::StatusOr<LossValues> RunMicroBatches(MicroStep& micro, kd::KdBatchStream& stream, int64_t grad_accum,
                                           AdamW& adam, DistGroup* dist = nullptr);
// The same with any batch source (bench/qat_bench's synthetic batches): `next` returns this
// rank's shard of the next global batch, as KdBatchStream::Next does.
using NextBatch = std::function<absl::StatusOr<kd::KdBatch>()>;
absl::StatusOr<LossValues> RunMicroBatches(MicroStep& micro, const NextBatch& next, int64_t grad_accum, AdamW& adam,
                                           DistGroup* dist = nullptr);

// The divergence guard, clipping and the update: FAILED_PRECONDITION naming `step_number` when
// the loss or the gradient norm is not finite (nothing is applied then); else clips (when
// clip_grad_norm > 0), steps with `lr` and zeroes the gradients. A sharded (ZeRO-1) optimizer
// updates its own parameters and then hands each to every rank of `dist`.
absl::Status ApplyStep(AdamW& adam, double lr, double clip_grad_norm, const LossValues& values, int64_t step_number,
                       DistGroup* dist = nullptr);

}  // namespace qatd::train
