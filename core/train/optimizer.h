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
// (lr 5e-6 on weights of magnitude ~0.02) are rounded away. A parameter marked
// AdamStateDtype::kParameterDtype (below; bf16 LoRA adapters) is stepped as the reference
// does instead: moments in its own dtype, no master.
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

// Where AdamW keeps one parameter's state (a per-parameter option, issue #19):
//   kFp32Master (the default): fp32 moments, plus an fp32 master copy of a bf16/fp16
//     parameter: 12 bytes of state per bf16 element.
//   kParameterDtype: moments in the parameter's dtype and no master; the update is applied to
//     the parameter itself, op for op as for an fp32 one (torch.optim.AdamW on bf16
//     parameters, the seed's --dtype bf16): 4 bytes per bf16 element. Updates below half an
//     ulp of the parameter are rounded away (the reason kFp32Master is the default). Same as
//     kFp32Master for an fp32 parameter.
// The parameter's owner marks it before an AdamW is built over it (LoraLinear marks bf16
// adapters, lora.h); AdamW reads the mark in its constructor, so trainers need no option. The
// mark belongs to the tensor (its TensorImpl: copies of the handle share it, clones do not)
// and ends with it. Thread-safe.
enum class AdamStateDtype { kFp32Master, kParameterDtype };
void SetAdamStateDtype(const at::Tensor& param, AdamStateDtype dtype);
AdamStateDtype GetAdamStateDtype(const at::Tensor& param);

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
  // Bytes of the tensors this rank keeps (moments and masters: numel x element size).
  int64_t state_bytes() const;
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

  // "<name>.exp_avg", "<name>.exp_avg_sq" (fp32, or the parameter's dtype under
  // kParameterDtype), "<name>.master" (non-fp32 kFp32Master params only), "step".
  quant::TensorMap State() const;
  // INVALID_ARGUMENT naming the key when a tensor is missing or mis-shaped.
  absl::Status LoadState(const quant::TensorMap& state);

 private:
  // The update of optimizer.h on w (in place) with moments m, v; `g` in w's dtype.
  void ForeachUpdate(std::vector<at::Tensor>& w, const std::vector<at::Tensor>& g, std::vector<at::Tensor>& m,
                     std::vector<at::Tensor>& v, double lr, double step_size, double bc2_sqrt) const;

  bool zero_in_place_ = false;
  struct Slot {
    at::Tensor exp_avg, exp_avg_sq, master;  // fp32 (or the parameter's dtype), on its device
    bool in_param_dtype = false;  // kParameterDtype on a non-fp32 parameter (every rank knows)
  };
  std::vector<std::pair<std::string, at::Tensor>> params_;
  std::vector<Slot> slots_;           // undefined tensors for parameters another rank owns
  std::vector<int> owners_;           // empty unless sharded
  AdamWOptions options_;
  int64_t step_ = 0;
};


}  // namespace qatd::train
