#pragma once
// The gradient all-reduce of a data-parallel step (train_step.h RunMicroBatches; issue #15):
// the trainable parameters' gradients, summed over the ranks of a DistGroup in buckets.
//
// Buckets: the parameters in reverse order (the order backward produces their gradients,
// roughly), one dtype per bucket, each at most `bucket_bytes` (a larger tensor alone), as
// PyTorch DDP's Reducer lays them out. Every rank builds the same buckets from the same
// parameter list and starts their all-reduces in bucket order, so the ranks' collectives
// always match.
//
// Gradients are views of the buckets (DDP's gradient_as_bucket_view): each bucket is one flat
// buffer that lives as long as the reducer, and every parameter's .grad is its slot in it
// (Bind(): the value .grad had is kept). AccumulateGrad adds into a defined .grad in place, so
// the backward writes the gradients straight into the buckets, a captured CUDA graph too (the
// reducer is bound before the first capture), and the all-reduce runs on the buckets in place:
// no copy in and no copy back. The optimizer therefore zeroes gradients in place
// (AdamW::set_zero_grads_in_place) while a reducer exists; a .grad that something replaced
// anyway is re-bound at the next step (Bind() copies its value into the slot).
//
// Overlap (Arm()). Armed before the last micro-batch of a step, a post hook on each
// parameter's gradient accumulator (the AccumulateGrad node; the reducer keeps the nodes alive
// so the hooks stay theirs) marks the parameter done once its gradient is in the bucket; when
// every parameter of the next bucket in order is done, its async all-reduce starts right
// there, inside the backward, while autograd goes on with the earlier layers. Finish() then
// starts the buckets still missing a gradient (a parameter this backward did not reach, or a
// rank whose last micro-batch was empty) and waits for every bucket. Without Arm() (overlap
// off, or a CUDA-graphed micro-step, whose replays run no hooks, so the collectives stay
// outside the captured region), Finish() starts them all after the last backward. Either way
// every rank ends with the same sums, which are the buckets' contents.
//
// Hooks are added once per parameter at the first Arm() and stay, disarmed, until the reducer
// is destroyed (they reach the reducer through a weak pointer and do nothing once it is gone).
// Memory: the gradients live in the buckets for the reducer's life, as persistent gradients
// do (no extra copy). Owned by its DistGroup (DistGroup::grad_reducer()); not thread-safe
// (the hooks run on autograd's thread while the caller waits in backward()).

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace qatd::train {

class DistGroup;

class GradReducer {
 public:
  // `params`: leaf tensors that require grad (AdamW::params()), in the trainer's order. Their
  // gradients are bound to the buckets by Bind(), before the first step.
  GradReducer(DistGroup& dist, const std::vector<std::pair<std::string, at::Tensor>>& params, int64_t bucket_bytes);
  ~GradReducer();
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;

  // True when built for exactly these parameter tensors (same order) and bucket size.
  bool Matches(const std::vector<std::pair<std::string, at::Tensor>>& params, int64_t bucket_bytes) const;
  // Makes every parameter's .grad its bucket slot again where something replaced or dropped
  // it (the value is kept; a missing one becomes zeros). Cheap when all are bound (a pointer
  // comparison per parameter); called at the start of every step. Returns how many it bound:
  // a CUDA graph captured before then writes the old gradients and must be captured again.
  int Bind();
  // Arms the hooks for the coming backward (the step's last micro-batch).
  void Arm();
  // Disarms; a no-op when not armed (error paths).
  void Disarm();
  // Disarms, starts every bucket not started yet and waits for all: the parameters' .grad
  // then hold the sums. ABORTED from the DistGroup when a collective fails, INTERNAL when a
  // hook failed.
  absl::Status Finish();

  int64_t num_buckets() const;

  struct State;  // grad_reducer.cc (the hooks reach it)

 private:
  DistGroup& dist_;
  int64_t bucket_bytes_;
  std::vector<at::Tensor> params_;
  std::shared_ptr<State> state_;
};

}  // namespace qatd::train
