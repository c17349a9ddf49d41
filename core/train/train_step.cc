#include "core/train/train_step.h"

#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"
#include "core/common/torch_status.h"

namespace qatd::train {

absl::StatusOr<LossValues> RunMicroBatches(MicroStep& micro, kd::KdBatchStream& stream, int64_t grad_accum,
                                           AdamW& adam, DistGroup* dist) {
  LossValues values;
  const bool sharded = dist != nullptr && dist->distributed();
  QATD_RETURN_IF_ERROR(CatchTorch("training step", [&]() -> absl::Status {
    adam.ZeroGrad();
    at::Tensor sums;  // [4] float: total, kd, top1, full
    for (int64_t micro_batch = 0; micro_batch < grad_accum; ++micro_batch) {
      QATD_ASSIGN_OR_RETURN(kd::KdBatch batch, stream.Next());
      // Each term is a mean over the global batch's positions (every sequence has L - 1), so a
      // shard's mean weighs rows / global_rows and the ranks' sum is the global mean.
      const double share = sharded ? static_cast<double>(batch.rows()) / static_cast<double>(batch.global_rows) : 1.0;
      if (batch.rows() == 0) continue;  // an empty shard of a last partial batch
      QATD_ASSIGN_OR_RETURN(at::Tensor row, micro.Run(batch.input_ids, batch.topk_idx, batch.topk_logits,
                                                      share / static_cast<double>(grad_accum)));
      if (sharded) row = row * share;
      sums = sums.defined() ? sums + row : row;
    }
    if (sharded) {
      // Gradients summed over the ranks (each already weighted by its share), in buckets.
      std::vector<at::Tensor> grads;
      for (const auto& [name, p] : adam.params()) {
        if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
        grads.push_back(p.grad());
      }
      QATD_RETURN_IF_ERROR(dist->AllReduceSum(grads));
      at::Tensor reduced = sums.defined() ? sums.to(at::kFloat).cpu().contiguous() : at::zeros({4}, at::kFloat);
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
