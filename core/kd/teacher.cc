#include "core/kd/teacher.h"

#include <c10/core/Event.h>
#include <c10/core/Stream.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/common/torch_status.h"
#include "core/cuda/fused_ops.h"
#include "core/kd/packing.h"

#ifdef QATD_CUDA_KERNELS
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace qatd::kd {

at::Tensor DrawNegativeOffsets(int64_t n, int64_t positions, int64_t rand_neg, int64_t range, uint64_t seed,
                               int64_t first_sequence) {
  TORCH_CHECK(range > 0, "DrawNegativeOffsets: empty range");
  at::Tensor out = at::empty({n, positions, rand_neg}, at::TensorOptions().dtype(at::kLong));
  int64_t* p = out.data_ptr<int64_t>();
  const int64_t per_sequence = positions * rand_neg;
  for (int64_t i = 0; i < n; ++i) {
    // One generator per sequence: the draws of sequence s depend only on (seed, s).
    std::mt19937_64 rng(MixSeed(seed, static_cast<uint64_t>(first_sequence + i)));
    for (int64_t j = 0; j < per_sequence; ++j) {
      p[i * per_sequence + j] = static_cast<int64_t>(UniformBelow(rng, static_cast<uint64_t>(range)));
    }
  }
  return out;
}

at::Tensor ExcludeTopK(const at::Tensor& offsets, const at::Tensor& topk_ids) {
  // With s_0 < s_1 < ... the excluded ids, the u-th id not among them is
  // u + #{j : s_j - j <= u}; s_j - j is non-decreasing, so a right-sided searchsorted counts.
  const int64_t k = topk_ids.size(1);
  at::Tensor sorted = std::get<0>(topk_ids.to(at::kLong).sort(1));
  at::Tensor shifted = (sorted - at::arange(k, sorted.options()).unsqueeze(0)).contiguous();
  at::Tensor u = offsets.to(at::kLong).contiguous();
  at::Tensor count = at::searchsorted(shifted, u, /*out_int32=*/false, /*right=*/true);
  return u + count;
}

int64_t ResolveTopKBlock(int64_t requested, int64_t vocab, int64_t top_k) {
  const int64_t b = requested == 0 ? 64 : requested;
  if (b <= 1 || vocab % b != 0 || vocab / b < top_k) return 1;
  return b;
}

std::tuple<at::Tensor, at::Tensor> BlockTopK(const at::Tensor& logits, int64_t k, int64_t block) {
  if (block <= 1) return at::topk(logits, k, /*dim=*/1, /*largest=*/true, /*sorted=*/true);
  // Exact: fewer than K blocks can hold a value above the K-th largest v, so they are all
  // kept, and the kept blocks with maximum == v hold enough copies of v (or all of them).
  const int64_t rows = logits.size(0), nblocks = logits.size(1) / block;
  const at::Tensor blocks = logits.view({rows, nblocks, block});
  at::Tensor block_max;  // [rows, nblocks]
  // ATen's reduction over the last 64 columns read the logits at ~0.3 TB/s (4.2 of a 20 ms
  // teacher batch on an H100); the kernel reads them coalesced.
  if (!cuda::TryRowBlockMax(logits, block, &block_max)) block_max = std::get<0>(blocks.max(2));
  const at::Tensor keep = std::get<1>(at::topk(block_max, k, 1, true, /*sorted=*/false));  // [rows, K]
  const at::Tensor candidates = blocks.gather(1, keep.unsqueeze(2).expand({rows, k, block})).view({rows, k * block});
  auto [val, pos] = at::topk(candidates, k, 1, true, /*sorted=*/true);
  const at::Tensor ids = keep.gather(1, at::floor_divide(pos, block)).mul_(block).add_(pos.remainder(block));
  return {val, ids};
}

TeacherTopK TopKFromHidden(const at::Tensor& hidden, const LogitsFn& logits_fn, const TeacherOptions& options,
                           int64_t first_sequence, const at::Tensor& given_offsets) {
  TORCH_CHECK(hidden.dim() == 3 && hidden.size(1) >= 2, "TopKFromHidden: hidden must be [B, L>=2, H], got ",
              hidden.sizes());
  const int64_t b = hidden.size(0), s = hidden.size(1) - 1, h = hidden.size(2);
  const int64_t rows = b * s;
  const int64_t k = options.top_k, r = options.rand_neg;
  TORCH_CHECK(k >= 1 && r >= 0, "TopKFromHidden: bad K=", k, " R=", r);
  const at::Tensor flat = hidden.narrow(1, 0, s).reshape({rows, h});
  const auto dev = hidden.device();
  TeacherTopK out;
  at::Tensor idx = at::empty({rows, k}, at::TensorOptions().dtype(at::kInt).device(dev));
  at::Tensor val = at::empty({rows, k}, at::TensorOptions().dtype(at::kHalf).device(dev));
  at::Tensor ridx, rval, offsets = given_offsets;
  if (r > 0) {
    ridx = at::empty({rows, r}, at::TensorOptions().dtype(at::kInt).device(dev));
    rval = at::empty({rows, r}, at::TensorOptions().dtype(at::kHalf).device(dev));
  }
  const int64_t chunk = options.chunk_rows <= 0 ? rows : std::min(options.chunk_rows, rows);
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t c = std::min(chunk, rows - r0);
    at::Tensor logits = logits_fn(flat.narrow(0, r0, c));  // [c, V]
    const int64_t vocab = logits.size(1);
    TORCH_CHECK(k + (r > 0 ? 1 : 0) <= vocab, "TopKFromHidden: K=", k, " (+ negatives) exceeds the vocabulary ",
                vocab);
    auto [top_val, top_idx] = BlockTopK(logits, k, ResolveTopKBlock(options.topk_block, vocab, k));
    val.narrow(0, r0, c).copy_(top_val);
    idx.narrow(0, r0, c).copy_(top_idx);
    if (r > 0) {
      if (!offsets.defined()) {
        at::Tensor host = DrawNegativeOffsets(b, s, r, vocab - k, options.seed, first_sequence).view({rows, r});
        if (dev.is_cuda()) host = host.pin_memory();
        offsets = host.to(dev, /*non_blocking=*/true);
      }
      at::Tensor neg = ExcludeTopK(offsets.narrow(0, r0, c), top_idx);
      rval.narrow(0, r0, c).copy_(logits.gather(1, neg));
      ridx.narrow(0, r0, c).copy_(neg);
    }
  }
  out.topk_idx = idx.view({b, s, k});
  out.topk_logits = val.view({b, s, k});
  if (r > 0) {
    out.rand_idx = ridx.view({b, s, r});
    out.rand_logits = rval.view({b, s, r});
  }
  return out;
}

KdRows TeacherHostBatch::rows() const {
  KdRows rows;
  rows.n = n;
  rows.input_ids = input_ids.data_ptr<int32_t>();
  rows.topk_idx = topk_idx.data_ptr<int32_t>();
  rows.topk_logits = reinterpret_cast<const uint16_t*>(topk_logits.data_ptr<at::Half>());
  if (rand_idx.defined()) {
    rows.rand_idx = rand_idx.data_ptr<int32_t>();
    rows.rand_logits = reinterpret_cast<const uint16_t*>(rand_logits.data_ptr<at::Half>());
  }
  return rows;
}

namespace {

// Pinned host staging for one batch in flight (CUDA only).
struct Slot {
  int64_t capacity = 0;
  at::Tensor ids, idx, val, ridx, rval;  // [capacity, ...] pinned
  int64_t n = 0;
  int64_t first_sequence = 0;
};

}  // namespace

struct TeacherPipeline::Impl {
  model::Qwen3Model model{nullptr};
  TeacherOptions options;
  int64_t max_length = 0;
  at::Device device{at::kCPU};
  std::optional<c10::Stream> compute_stream;  // CUDA: all teacher work (a capture needs a non-default stream)
  std::optional<c10::Stream> copy_stream;
  std::unique_ptr<c10::Event> copied;  // the last batch's device->host copies
  Slot slots[2];
  int next_slot = 0;
  int pending_slot = -1;

  // How the pipeline runs, to the job's reporter (or stderr without one).
  void Say(jobs::LogLevel level, const std::string& message) const {
    if (options.reporter != nullptr) {
      options.reporter->Log(level, message);
    } else {
      std::fprintf(stderr, "%s\n", message.c_str());
    }
  }

  // CUDA graph of the teacher pass for batches of graph_n blocks (see TeacherPipeline).
  bool graphs_allowed = false;
  int64_t warm_n = 0;   // the batch size whose eager warm-up has run
  int64_t graph_n = 0;  // the batch size captured (0: none)
  int64_t replays = 0;
#ifdef QATD_CUDA_KERNELS
  std::unique_ptr<at::cuda::CUDAGraph> graph;
#endif
  at::Tensor graph_ids;      // [graph_n, L] int32: the captured pass's input
  at::Tensor graph_offsets;  // [graph_n * (L-1), R] int64 (R > 0)
  TeacherTopK graph_out;     // the captured pass's outputs, overwritten by every replay

  TeacherTopK Eager(const at::Tensor& dev_ids, int64_t first_sequence, const at::Tensor& offsets = {}) {
    model::Qwen3Model& m = model;
    return TopKFromHidden(m->Forward(dev_ids), [&m](const at::Tensor& x) { return m->Logits(x); }, options,
                          first_sequence, offsets);
  }

  // The teacher pass of `n` blocks already staged in pinned `host_ids`, on the compute stream.
  TeacherTopK Compute(const at::Tensor& host_ids, int64_t n, int64_t first_sequence);

  void EnsureCapacity(Slot& slot, int64_t n, const TeacherOptions& o) const {
    if (slot.capacity >= n) return;
    const auto pinned = [](at::ScalarType t) { return at::TensorOptions().dtype(t).pinned_memory(true); };
    const int64_t s = max_length - 1;
    slot.ids = at::empty({n, max_length}, pinned(at::kInt));
    slot.idx = at::empty({n, s, o.top_k}, pinned(at::kInt));
    slot.val = at::empty({n, s, o.top_k}, pinned(at::kHalf));
    if (o.rand_neg > 0) {
      slot.ridx = at::empty({n, s, o.rand_neg}, pinned(at::kInt));
      slot.rval = at::empty({n, s, o.rand_neg}, pinned(at::kHalf));
    }
    slot.capacity = n;
  }

  TeacherHostBatch HostView(const Slot& slot) const {
    TeacherHostBatch out;
    out.first_sequence = slot.first_sequence;
    out.n = slot.n;
    out.input_ids = slot.ids.narrow(0, 0, slot.n);
    out.topk_idx = slot.idx.narrow(0, 0, slot.n);
    out.topk_logits = slot.val.narrow(0, 0, slot.n);
    if (slot.ridx.defined()) {
      out.rand_idx = slot.ridx.narrow(0, 0, slot.n);
      out.rand_logits = slot.rval.narrow(0, 0, slot.n);
    }
    return out;
  }
};

TeacherTopK TeacherPipeline::Impl::Compute(const at::Tensor& host_ids, int64_t n, int64_t first_sequence) {
  const int64_t s = max_length - 1, r = options.rand_neg;
#ifdef QATD_CUDA_KERNELS
  // The negatives' draws for a graph: drawn on the host, uploaded into the captured buffer.
  auto upload_offsets = [&] {
    if (r == 0) return;
    const int64_t vocab = model->config().vocab_size;
    at::Tensor host = DrawNegativeOffsets(n, s, r, vocab - options.top_k, options.seed, first_sequence);
    graph_offsets.copy_(host.view({n * s, r}).pin_memory(), /*non_blocking=*/true);
  };
  if (graphs_allowed && graph != nullptr && n == graph_n) {
    // The graph's outputs are reused: the previous batch's copies must have read them.
    if (copied != nullptr) copied->block(*compute_stream);
    graph_ids.copy_(host_ids, /*non_blocking=*/true);
    upload_offsets();
    graph->replay();
    ++replays;
    return graph_out;
  }
  if (graphs_allowed && graph == nullptr && n == warm_n) {
    // Capture. The warm-up's cached blocks go back first, so the graph's private pool does
    // not sit beside them.
    c10::cuda::CUDACachingAllocator::emptyCache();
    graph_ids = at::empty({n, max_length}, at::TensorOptions().dtype(at::kInt).device(device));
    if (r > 0) graph_offsets = at::empty({n * s, r}, at::TensorOptions().dtype(at::kLong).device(device));
    auto g = std::make_unique<at::cuda::CUDAGraph>();
    std::string error;
    try {
      g->capture_begin();
      try {
        graph_out = Eager(graph_ids, first_sequence, r > 0 ? graph_offsets : at::Tensor());
      } catch (const std::exception& e) {
        error = e.what();
      }
      g->capture_end();
    } catch (const std::exception& e) {
      if (error.empty()) error = e.what();
    }
    if (error.empty()) {
      graph = std::move(g);
      graph_n = n;
      Say(jobs::LogLevel::kInfo,
          absl::StrCat("KD teacher: CUDA graph captured for batches of ", n, " x ", max_length, " tokens"));
      return Compute(host_ids, n, first_sequence);  // replays it
    }
    graphs_allowed = false;
    graph_out = TeacherTopK();
    graph_ids = graph_offsets = at::Tensor();
    Say(jobs::LogLevel::kWarning,
        absl::StrCat("KD teacher: CUDA graph capture failed, continuing without graphs: ", error.substr(0, 300)));
  } else if (graphs_allowed && graph == nullptr) {
    warm_n = n;  // this batch is the warm-up of its size
  }
#endif
  (void)s;
  (void)r;
  return Eager(host_ids.to(device, /*non_blocking=*/true), first_sequence);
}

TeacherPipeline::TeacherPipeline(model::Qwen3Model model, TeacherOptions options, int64_t max_length)
    : impl_(std::make_unique<Impl>()), options_(options) {
  impl_->model = std::move(model);
  impl_->options = options;
  impl_->max_length = max_length;
  impl_->device = impl_->model->device();
  if (impl_->device.is_cuda()) {
    c10::impl::VirtualGuardImpl guard(impl_->device.type());
    impl_->copy_stream = guard.getStreamFromGlobalPool(impl_->device, /*isHighPriority=*/false);
    impl_->compute_stream = guard.getStreamFromGlobalPool(impl_->device, /*isHighPriority=*/false);
    // The weights were written on the caller's stream.
    c10::Event loaded(impl_->device.type());
    loaded.record(guard.getStream(impl_->device));
    loaded.block(*impl_->compute_stream);
#ifdef QATD_CUDA_KERNELS
    impl_->graphs_allowed = cuda::CudaGraphsAllowedByEnvironment();
#endif
  }
}

int64_t TeacherPipeline::graph_replays() const { return impl_->replays; }

TeacherPipeline::~TeacherPipeline() {
  // Never leave copies (or a replay) running into buffers that are about to be freed.
  if (impl_ && impl_->copy_stream.has_value()) {
    try {
      impl_->compute_stream->synchronize();
      impl_->copy_stream->synchronize();
    } catch (...) {
    }
  }
}

at::Device TeacherPipeline::device() const { return impl_->device; }

absl::StatusOr<std::optional<TeacherHostBatch>> TeacherPipeline::Submit(const int32_t* ids, int64_t n,
                                                                        int64_t first_sequence) {
  if (n <= 0) return absl::InvalidArgumentError(absl::StrCat("TeacherPipeline::Submit: n must be > 0, got ", n));
  return CatchTorchOr<std::optional<TeacherHostBatch>>(
      "teacher", [&]() -> absl::StatusOr<std::optional<TeacherHostBatch>> {
        torch::NoGradGuard no_grad;
        Impl& im = *impl_;
        const int64_t l = im.max_length;
        model::Qwen3Model& m = im.model;
        const LogitsFn logits = [&m](const at::Tensor& x) { return m->Logits(x); };
        const auto host_ids = at::from_blob(const_cast<int32_t*>(ids), {n, l}, at::TensorOptions().dtype(at::kInt));

        if (!im.device.is_cuda()) {
          // CPU: synchronous; the result tensors are fresh and owned by the caller.
          TeacherHostBatch out;
          out.first_sequence = first_sequence;
          out.n = n;
          out.input_ids = host_ids.clone();
          TeacherTopK t = TopKFromHidden(m->Forward(out.input_ids.to(im.device)), logits, options_, first_sequence);
          out.topk_idx = t.topk_idx.to(at::kCPU).contiguous();
          out.topk_logits = t.topk_logits.to(at::kCPU).contiguous();
          if (t.rand_idx.defined()) {
            out.rand_idx = t.rand_idx.to(at::kCPU).contiguous();
            out.rand_logits = t.rand_logits.to(at::kCPU).contiguous();
          }
          return std::optional<TeacherHostBatch>(std::move(out));
        }

        // CUDA: this slot's previous user (two batches ago) was fully copied back when it
        // was returned, so its pinned buffers are free.
        Slot& slot = im.slots[im.next_slot];
        im.EnsureCapacity(slot, n, options_);
        slot.n = n;
        slot.first_sequence = first_sequence;
        std::memcpy(slot.ids.data_ptr<int32_t>(), ids, static_cast<size_t>(n * l) * sizeof(int32_t));
        const c10::Stream compute_stream = *im.compute_stream;
        c10::StreamGuard on_compute_stream(compute_stream);
        TeacherTopK t = im.Compute(slot.ids.narrow(0, 0, n), n, first_sequence);

        c10::Event computed(im.device.type());
        computed.record(compute_stream);

        // The previous batch's copies are the only work on the copy stream: wait for them
        // while this batch computes.
        std::optional<TeacherHostBatch> ready;
        if (im.pending_slot >= 0) {
          im.copy_stream->synchronize();
          ready = im.HostView(im.slots[im.pending_slot]);
        }
        computed.block(*im.copy_stream);
        {
          c10::StreamGuard on_copy_stream(*im.copy_stream);
          auto down = [&](at::Tensor& dst, const at::Tensor& src) {
            dst.narrow(0, 0, n).copy_(src, /*non_blocking=*/true);
            // The caching allocator must not recycle `src` before the copy stream read it.
            src.record_stream(*im.copy_stream);
          };
          down(slot.idx, t.topk_idx);
          down(slot.val, t.topk_logits);
          if (options_.rand_neg > 0) {
            down(slot.ridx, t.rand_idx);
            down(slot.rval, t.rand_logits);
          }
          im.copied = std::make_unique<c10::Event>(im.device.type());
          im.copied->record(*im.copy_stream);
        }
        im.pending_slot = im.next_slot;
        im.next_slot ^= 1;
        return ready;
      });
}

absl::StatusOr<std::optional<TeacherHostBatch>> TeacherPipeline::Drain() {
  return CatchTorchOr<std::optional<TeacherHostBatch>>(
      "teacher", [&]() -> absl::StatusOr<std::optional<TeacherHostBatch>> {
        Impl& im = *impl_;
        if (im.pending_slot < 0) return std::optional<TeacherHostBatch>();
        im.copy_stream->synchronize();
        std::optional<TeacherHostBatch> out = im.HostView(im.slots[im.pending_slot]);
        im.pending_slot = -1;
        return out;
      });
}

}  // namespace qatd::kd
