#pragma once
// AdamW with fp32 master weights, and the learning-rate schedules of the reference trainers
// (spec §8.1, §9.1).
//
// AdamW follows torch.optim.AdamW (decoupled weight decay, bias-corrected moments):
//   p <- p - lr * wd * p;  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
//   p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
// with PyTorch's defaults b = (0.9, 0.999), eps = 1e-8, wd = 0.01 (what the reference uses).
// DELIBERATE DIFFERENCE: parameters that are not fp32 (a bf16 or fp16 model) are updated
// through an fp32 master copy that the optimizer owns, then rounded into the parameter. The
// reference steps bf16 parameters directly, where updates smaller than half a bf16 ulp
// (lr 5e-6 on weights of magnitude ~0.02) are rounded away.
//
// The whole state (moments, master copies, step) round-trips through a TensorMap so that a
// resumed job continues bit-exactly. Not thread-safe.

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/train/dist_group.h"
#include "core/train/train_options.h"
#include "core/quant/tensor_io.h"

namespace qatd::train {


class AdamW {
 public:
  // `params`: (name, parameter) pairs; names key the saved state. Every parameter must
  // require grad.
  AdamW(std::vector<std::pair<std::string, at::Tensor>> params, AdamWOptions options);

  // One update with learning rate `lr` (the schedule's value for this step). Parameters
  // without a gradient are skipped (their moments are not advanced), as in PyTorch.
  void Step(double lr);
  // Undefines every gradient, or (set_zero_grads_in_place(true)) zeroes them in place: a
  // captured CUDA graph accumulates into the existing buffers (micro_step.h).
  void ZeroGrad();
  void set_zero_grads_in_place(bool on) { zero_in_place_ = on; }
  // Scales every gradient so that their global L2 norm is at most max_norm; returns the norm
  // before clipping (a 0-dim float tensor on the parameters' device; non-finite stays so).
  at::Tensor ClipGradNorm(double max_norm);
  // The global L2 gradient norm (no clipping).
  at::Tensor GradNorm() const;

  // ZeRO-1 (options.shard_count > 1): the rank that owns parameter i (its state and update).
  int owner(size_t i) const { return owners_.empty() ? options_.shard_index : owners_[i]; }
  bool sharded() const { return !owners_.empty(); }
  // Elements whose state this rank keeps.
  int64_t owned_parameters() const;
  // After Step: every parameter sent from its owner to every rank (one broadcast per tensor).
  absl::Status BroadcastOwned(DistGroup& dist);
  // State() of the whole optimizer on every rank of a sharded one (each slot broadcast from its
  // owner): what resume/ stores, the same single file whatever the number of ranks. Every rank
  // must call it. LoadState reads such a file with any sharding.
  absl::StatusOr<quant::TensorMap> GatheredState(DistGroup& dist) const;

  int64_t step() const { return step_; }
  const AdamWOptions& options() const { return options_; }
  int64_t num_parameters() const;  // elements
  const std::vector<std::pair<std::string, at::Tensor>>& params() const { return params_; }

  // "<name>.exp_avg", "<name>.exp_avg_sq", "<name>.master" (non-fp32 params only), "step".
  quant::TensorMap State() const;
  // INVALID_ARGUMENT naming the key when a tensor is missing or mis-shaped.
  absl::Status LoadState(const quant::TensorMap& state);

 private:
  bool zero_in_place_ = false;
  struct Slot {
    at::Tensor exp_avg, exp_avg_sq, master;  // fp32, on the parameter's device
  };
  std::vector<std::pair<std::string, at::Tensor>> params_;
  std::vector<Slot> slots_;           // undefined tensors for parameters another rank owns
  std::vector<int> owners_;           // empty unless sharded
  AdamWOptions options_;
  int64_t step_ = 0;
};


}  // namespace qatd::train
