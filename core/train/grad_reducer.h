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
// Overlap (Arm()). Armed before the last micro-batch of a step, a hook on each parameter (a
// tensor hook on a leaf runs with the incoming gradient right before AccumulateGrad adds it to
// .grad) writes .grad-so-far + incoming into the parameter's slot of its bucket's flat buffer;
// when the slots of the next bucket in order are all written, its async all-reduce starts
// right there, inside the backward, while autograd goes on with the earlier layers. Finish()
// then starts the buckets still missing a gradient (a parameter this backward did not reach,
// or a rank whose last micro-batch was empty), waits for every bucket and copies the sums over
// the .grad that AccumulateGrad wrote. Without Arm() (overlap off, or a CUDA-graphed micro-step,
// whose replays run no hooks, so the collectives stay outside the captured region), Finish()
// copies .grad into the buckets and starts them all after the last backward: the bucketed
// all-reduce as before. Either way every rank ends with the same sums, and the two ways give
// the same sums (each slot holds the value AccumulateGrad produces).
//
// Hooks are registered once per parameter at the first Arm() and stay, disarmed, until the
// reducer is destroyed (LibTorch never compacts a tensor's hook list, so registering per step
// would grow it without bound). Hooks keep no reference to the parameters while disarmed.
// Memory: the buckets hold one more copy of the gradients during the step (as DDP's do).
// Owned by its DistGroup (DistGroup::grad_reducer()); not thread-safe (the hooks run on
// autograd's thread while the caller waits in backward()).

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
  // `params`: leaf tensors that require grad (AdamW::params()), in the trainer's order.
  GradReducer(DistGroup& dist, const std::vector<std::pair<std::string, at::Tensor>>& params, int64_t bucket_bytes);
  ~GradReducer();
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;

  // True when built for exactly these parameter tensors (same order) and bucket size.
  bool Matches(const std::vector<std::pair<std::string, at::Tensor>>& params, int64_t bucket_bytes) const;
  // Arms the hooks for the coming backward (the step's last micro-batch).
  void Arm();
  // Disarms; a no-op when not armed (error paths).
  void Disarm();
  // Disarms, starts every bucket not started yet, waits for all and writes the sums into the
  // parameters' .grad (a parameter without one gets it). ABORTED from the DistGroup when a
  // collective fails, INTERNAL when a hook failed.
  absl::Status Finish();

  int64_t num_buckets() const;

 private:
  struct State;
  DistGroup& dist_;
  int64_t bucket_bytes_;
  std::vector<at::Tensor> params_;
  std::vector<unsigned> hooks_;  // one per parameter once registered
  std::shared_ptr<State> state_;
};

}  // namespace qatd::train
