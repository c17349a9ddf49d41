#include "core/train/micro_step.h"

#include <cstdio>

#include <ATen/ATen.h>

#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"
#include "core/cuda/fused_ops.h"
#include "core/common/torch_status.h"

#ifdef QATD_CUDA_KERNELS
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace qatd::train {
namespace {

// What a captured graph is valid for: the input shapes and dtypes and the loss scale.
std::vector<int64_t> ShapeKey(const at::Tensor& ids, const at::Tensor& idx, const at::Tensor& logits, double scale) {
  std::vector<int64_t> key(ids.sizes().begin(), ids.sizes().end());
  key.insert(key.end(), idx.sizes().begin(), idx.sizes().end());
  key.insert(key.end(), logits.sizes().begin(), logits.sizes().end());
  key.push_back(static_cast<int64_t>(logits.scalar_type()));
  int64_t bits = 0;
  static_assert(sizeof(bits) == sizeof(scale));
  std::memcpy(&bits, &scale, sizeof(bits));
  key.push_back(bits);
  return key;
}

}  // namespace

#ifdef QATD_CUDA_KERNELS
struct MicroStep::Graph {
  at::cuda::CUDAGraph graph;
  std::vector<int64_t> key;
  at::Tensor ids, idx, logits;  // static inputs
  at::Tensor row;               // static output [4]
};
#else
struct MicroStep::Graph {};
#endif

MicroStep::MicroStep(model::Qwen3ModelImpl& model, KdLossWeights weights, int64_t chunk_rows, bool allow_graphs,
                     jobs::Reporter* reporter)
    : model_(model), weights_(weights), chunk_rows_(chunk_rows), reporter_(reporter) {
#ifdef QATD_CUDA_KERNELS
  may_graph_ = allow_graphs && cuda::CudaGraphsAllowedByEnvironment() && model.device().is_cuda();
#else
  (void)allow_graphs;
#endif
}

MicroStep::~MicroStep() = default;

bool MicroStep::graphed() const { return graph_ != nullptr; }

void MicroStep::Reset() {
  graph_.reset();
  warm_key_.clear();
}

absl::StatusOr<at::Tensor> MicroStep::Eager(const at::Tensor& ids, const at::Tensor& topk_idx,
                                            const at::Tensor& topk_logits, double loss_scale) {
  at::Tensor hidden = model_.Forward(ids);
  at::Tensor w = model_.lm_head != nullptr ? model_.lm_head->EffectiveWeight() : model_.model->embed_tokens->weight;
  QATD_ASSIGN_OR_RETURN(KdLossTerms terms, ComputeKdLoss(hidden, w, topk_idx, topk_logits, weights_, chunk_rows_));
  (terms.total * loss_scale).backward();
  // Every term a 0-dim float32 on the device (no host tensor: a capture allows no copies).
  auto value = [&](const at::Tensor& t) { return t.defined() ? t.detach() : at::zeros({}, terms.total.options()); };
  return at::stack({value(terms.total), value(terms.kd), value(terms.hard_top1), value(terms.hard_full)});
}

absl::StatusOr<at::Tensor> MicroStep::Run(const at::Tensor& ids, const at::Tensor& topk_idx,
                                          const at::Tensor& topk_logits, double loss_scale) {
  absl::StatusOr<at::Tensor> out;
  QATD_RETURN_IF_ERROR(CatchTorch("training micro-step", [&]() -> absl::Status {
    if (may_graph_ && !capture_failed_) {
      out = RunGraphed(ids, topk_idx, topk_logits, loss_scale);
      if (out.ok() || !capture_failed_) return absl::OkStatus();
    }
    const at::Device device = model_.device();
    out = Eager(ids.to(device, at::kLong), topk_idx.to(device, at::kLong), topk_logits.to(device), loss_scale);
    return absl::OkStatus();
  }));
  return out;
}

#ifdef QATD_CUDA_KERNELS
absl::StatusOr<at::Tensor> MicroStep::RunGraphed(const at::Tensor& ids, const at::Tensor& topk_idx,
                                                 const at::Tensor& topk_logits, double loss_scale) {
  const at::Device device = model_.device();
  const std::vector<int64_t> key = ShapeKey(ids, topk_idx, topk_logits, loss_scale);
  if (graph_ != nullptr && graph_->key == key) {
    graph_->ids.copy_(ids);
    graph_->idx.copy_(topk_idx);
    graph_->logits.copy_(topk_logits);
    graph_->graph.replay();
    ++replays_;
    return graph_->row.clone();
  }
  const c10::cuda::CUDAGuard device_guard(device);
  const c10::cuda::CUDAStream main = c10::cuda::getCurrentCUDAStream();
  // One side stream per device for the process: each new stream would get its own cuBLAS
  // workspaces.
  static std::mutex side_mutex;
  static std::map<int, c10::cuda::CUDAStream> side_streams;
  c10::cuda::CUDAStream side = [&] {
    std::lock_guard<std::mutex> lock(side_mutex);
    auto it = side_streams.find(device.index());
    if (it == side_streams.end()) {
      it = side_streams.emplace(device.index(), c10::cuda::getStreamFromPool(false, device.index())).first;
    }
    return it->second;
  }();
  auto wait = [](const c10::cuda::CUDAStream& waiter, const c10::cuda::CUDAStream& on) {
    at::cuda::CUDAEvent event;
    event.record(on);
    event.block(waiter);
  };
  const at::Tensor d_ids = ids.to(device, at::kLong), d_idx = topk_idx.to(device, at::kLong);
  const at::Tensor d_logits = topk_logits.to(device);
  if (graph_ != nullptr) {
    // Another shape than the captured one (an epoch's last partial batch): eager, and the
    // graph is kept (recapturing would thrash between the two shapes every epoch).
    return Eager(d_ids, d_idx, d_logits, loss_scale);
  }
  if (warm_key_ != key) {
    // Warm-up of this shape: eager, on the stream the capture will use.
    warm_key_ = key;
    wait(side, main);
    absl::StatusOr<at::Tensor> row;
    {
      const c10::cuda::CUDAStreamGuard stream_guard(side);
      row = Eager(d_ids, d_idx, d_logits, loss_scale);
    }
    wait(main, side);
    return row;
  }
  // Release the warm-up's cached blocks before the capture builds the graph's own pool; held
  // side by side they doubled the reserved memory (20.6 GiB instead of ~13 on an H100).
  c10::cuda::CUDACachingAllocator::emptyCache();
  auto graph = std::make_unique<Graph>();
  graph->key = key;
  graph->ids = d_ids;
  graph->idx = d_idx;
  graph->logits = d_logits;
  wait(side, main);
  absl::Status captured = absl::OkStatus();
  {
    const c10::cuda::CUDAStreamGuard stream_guard(side);
    graph->graph.capture_begin();
    try {
      absl::StatusOr<at::Tensor> row = Eager(graph->ids, graph->idx, graph->logits, loss_scale);
      if (row.ok()) graph->row = *row;
      captured = row.status();
      graph->graph.capture_end();
    } catch (const std::exception& e) {
      captured = absl::InternalError(e.what());
      try {
        graph->graph.capture_end();
      } catch (const std::exception&) {  // the capture was already invalidated
      }
    }
  }
  wait(main, side);
  if (!captured.ok()) {
    capture_failed_ = true;
    graph.reset();
    const std::string message = absl::StrCat("CUDA graph capture of the training step failed, continuing without graphs: ",
                                             captured.message().substr(0, 300));
    if (reporter_ != nullptr) {
      reporter_->Log(jobs::LogLevel::kWarning, message);
    } else {
      std::fprintf(stderr, "%s\n", message.c_str());
    }
    // Nothing captured ran (gradients are untouched); the caller reruns the micro-batch eagerly.
    return absl::InternalError("capture failed");
  }
  graph_ = std::move(graph);
  graph_->graph.replay();
  ++replays_;
  return graph_->row.clone();
}
#else
absl::StatusOr<at::Tensor> MicroStep::RunGraphed(const at::Tensor&, const at::Tensor&, const at::Tensor&, double) {
  return absl::UnimplementedError("CUDA graphs are not built");
}
#endif

}  // namespace qatd::train
