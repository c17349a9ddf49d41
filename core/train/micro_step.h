#pragma once
// One micro-batch of the end-to-end QAT step: forward through the student, the global KD loss
// (losses.h ComputeKdLoss), backward into the parameters' .grad (accumulating). Used by the
// trainer (train_step.h RunMicroBatches) and by bench/qat_bench, so the bench measures the
// product's step.
//
// CUDA graphs. On a CUDA device, with LibTorch's CUDA graphs available (GPU builds with the
// fused kernels) and QATD_CUDA_GRAPHS not "0" in the environment: the first micro-batch of a
// given input shape runs eagerly on a side stream (warm-up: cuBLAS/cuDNN plans, gradient
// buffers), the second is captured into a CUDA graph, and every later one of that shape
// replays it — one launch instead of ~3,000 kernel launches and their autograd bookkeeping,
// which made a Qwen3-0.6B step CPU-bound on an H100 (GPU busy 51 of 73 ms). Inputs are copied
// into static buffers; gradients accumulate into the parameters' existing .grad tensors, so the
// optimizer must zero them in place (AdamW::set_zero_grads_in_place, which the trainer sets
// from may_use_graphs()). Once a graph exists, a micro-batch of another shape (an epoch's last
// partial batch) runs eagerly and the graph is kept. A capture that fails logs a warning and leaves the step eager for good.
//
// Contract: parameters' storage must stay put while a graph exists (in-place copy_ into them is
// fine, e.g. a checkpoint load); call Reset() after anything that swaps parameter tensors or
// changes the model's forward path (snapping, set_fake_quant, caching).

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/qwen3_model.h"
#include "core/common/reporter.h"
#include "core/train/losses.h"

namespace qatd::train {

class MicroStep {
 public:
  // `reporter` (may be null: stderr) hears of a failed graph capture.
  MicroStep(model::Qwen3ModelImpl& model, KdLossWeights weights, int64_t chunk_rows, bool allow_graphs = true,
            jobs::Reporter* reporter = nullptr);
  ~MicroStep();
  MicroStep(const MicroStep&) = delete;
  MicroStep& operator=(const MicroStep&) = delete;

  // ids [B, L] int, topk_idx [B, L-1, K] int, topk_logits [B, L-1, K] floating (any device).
  // Backpropagates total * loss_scale. Returns [4] float32 on the model's device: total, kd,
  // hard_top1, hard_full of this micro-batch (0 for a term whose weight is 0). Errors: the
  // loss's INVALID_ARGUMENT for bad shapes, INTERNAL when LibTorch throws.
  absl::StatusOr<at::Tensor> Run(const at::Tensor& ids, const at::Tensor& topk_idx, const at::Tensor& topk_logits,
                                 double loss_scale);

  // True when this step may capture graphs (CUDA model, graphs built and not switched off).
  bool may_use_graphs() const { return may_graph_; }
  // True once a graph has been captured (and not reset).
  bool graphed() const;
  int64_t replays() const { return replays_; }
  void Reset();

 private:
  struct Graph;
  absl::StatusOr<at::Tensor> Eager(const at::Tensor& ids, const at::Tensor& topk_idx, const at::Tensor& topk_logits,
                                   double loss_scale);
  absl::StatusOr<at::Tensor> RunGraphed(const at::Tensor& ids, const at::Tensor& topk_idx,
                                        const at::Tensor& topk_logits, double loss_scale);

  model::Qwen3ModelImpl& model_;
  KdLossWeights weights_;
  int64_t chunk_rows_;
  jobs::Reporter* reporter_;
  bool may_graph_ = false;
  bool capture_failed_ = false;
  int64_t replays_ = 0;
  std::vector<int64_t> warm_key_;  // shape key of the last eager warm-up
  std::unique_ptr<Graph> graph_;
};

}  // namespace qatd::train
