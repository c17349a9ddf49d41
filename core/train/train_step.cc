#include "core/train/train_step.h"

#include <cmath>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"
#include "core/common/torch_status.h"
#include "core/train/grad_reducer.h"

namespace qatd::train {

absl::StatusOr<LossValues> RunMicroBatches(MicroStep& micro, kd::KdBatchStream& stream, int64_t grad_accum,
                                           AdamW& adam, DistGroup* dist) {
  return RunMicroBatches(
      micro, [&stream]() { return stream.Next(); }, grad_accum, adam, dist);
}

absl::StatusOr<LossValues> RunMicroBatches(MicroStep& micro, const NextBatch& next, int64_t grad_accum, AdamW& adam,
                                           DistGroup* dist) {
  LossValues values;
  const bool sharded = dist != nullptr && dist->distributed();
  GradReducer* reducer = nullptr;
  if (sharded) {
    const int64_t bucket_bytes = dist->options().bucket_bytes;
    if (dist->grad_reducer() == nullptr || !dist->grad_reducer()->Matches(adam.params(), bucket_bytes)) {
      dist->set_grad_reducer(std::make_unique<GradReducer>(*dist, adam.params(), bucket_bytes));
    }
    reducer = dist->grad_reducer();
    // The gradients are views of the reducer's buckets (grad_reducer.h): zeroed in place, and
    // bound again where something replaced one.
    adam.set_zero_grads_in_place(true);
  }
  // Hooks do not run when a captured graph replays (and must not start collectives inside a
  // capture): a micro-step that may be graphed keeps the all-reduces after the backward.
  const bool overlap = sharded && dist->options().overlap_allreduce && !micro.may_use_graphs();
  // However the step ends, the hooks are disarmed (an error path must not leave them armed
  // for the next step's earlier micro-batches).
  struct Disarm {
    GradReducer* r;
    ~Disarm() {
      if (r != nullptr) r->Disarm();
    }
  } disarm{reducer};
  QATD_RETURN_IF_ERROR(CatchTorch("training step", [&]() -> absl::Status {
    adam.ZeroGrad();
    // A graph captured before the gradients were bound (steps without the group) writes the
    // old ones: captured again at the next micro-batch.
    if (reducer != nullptr && reducer->Bind() > 0) micro.Reset();
    at::Tensor sums;  // [4] float: total, kd, top1, full
    for (int64_t micro_batch = 0; micro_batch < grad_accum; ++micro_batch) {
      QATD_ASSIGN_OR_RETURN(kd::KdBatch batch, next());
      // Each term is a mean over the global batch's positions (every sequence has L - 1), so a
      // shard's mean weighs rows / global_rows and the ranks' sum is the global mean.
      const double share = sharded ? static_cast<double>(batch.rows()) / static_cast<double>(batch.global_rows) : 1.0;
      if (batch.rows() == 0) continue;  // an empty shard of a last partial batch
      // The last micro-batch's backward starts each gradient bucket's all-reduce as soon as
      // the bucket is complete (grad_reducer.h).
      if (overlap && micro_batch == grad_accum - 1) reducer->Arm();
      // kd_rand_neg: the random negatives join the candidates after the top-K (candidate 0, the
      // teacher's top-1, stays first for the hard top-1 loss).
      const bool rand = batch.rand_idx.defined();
      const at::Tensor idx = rand ? at::cat({batch.topk_idx, batch.rand_idx}, -1) : batch.topk_idx;
      const at::Tensor logits = rand ? at::cat({batch.topk_logits, batch.rand_logits}, -1) : batch.topk_logits;
      QATD_ASSIGN_OR_RETURN(at::Tensor row, micro.Run(batch.input_ids, idx, logits, share / static_cast<double>(grad_accum)));
      if (sharded) row = row * share;
      sums = sums.defined() ? sums + row : row;
    }
    if (sharded) {
      // Gradients summed over the ranks (each already weighted by its share), in buckets.
      QATD_RETURN_IF_ERROR(reducer->Finish());
      const at::TensorOptions on_group = at::TensorOptions().dtype(at::kFloat).device(dist->device());
      at::Tensor reduced = sums.defined() ? sums.to(on_group).contiguous() : at::zeros({4}, on_group);
      QATD_RETURN_IF_ERROR(dist->AllReduce(reduced));
      sums = reduced;
    }
    at::Tensor mean = (sums / static_cast<double>(grad_accum)).to(at::kDouble).cpu();
    values.total = mean[0].item<double>();
    values.kd = mean[1].item<double>();
    values.hard_top1 = mean[2].item<double>();
    values.hard_full = mean[3].item<double>();
    values.global = values.total;
    return absl::OkStatus();
  }));
  return values;
}

absl::Status ApplyStep(AdamW& adam, double lr, double clip_grad_norm, const LossValues& values, int64_t step_number,
                       DistGroup* dist) {
  if (!std::isfinite(values.total)) {
    adam.ZeroGrad();
    return absl::FailedPreconditionError(
        absl::StrCat("training diverged: the loss is ", values.total, " at step ", step_number,
                     "; the step was not applied and the last good checkpoints (best/, resume/) are kept. Try a lower lr"));
  }
  return CatchTorch("optimizer step", [&]() -> absl::Status {
    if (clip_grad_norm > 0) {
      const double norm = adam.ClipGradNorm(clip_grad_norm).item<double>();
      if (!std::isfinite(norm)) {
        adam.ZeroGrad();
        return absl::FailedPreconditionError(absl::StrCat(
            "training diverged: the gradient norm is ", norm, " at step ", step_number,
            "; the step was not applied and the last good checkpoints (best/, resume/) are kept. Try a lower lr"));
      }
    }
    adam.Step(lr);
    if (adam.sharded()) {
      if (dist == nullptr) return absl::InternalError("a sharded optimizer needs its process group");
      QATD_RETURN_IF_ERROR(adam.BroadcastOwned(*dist));
    }
    adam.ZeroGrad();
    return absl::OkStatus();
  });
}

}  // namespace qatd::train
