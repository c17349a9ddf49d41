#pragma once
// The teacher pass of the KD cache (spec §6.3): run the teacher on packed blocks [B, L],
// keep for every position t in 0..L-2 the K largest logits (the prediction of token t+1)
// and optionally R random "negative" ids with their logits.
//
// Memory: full-vocabulary logits are never materialised for the whole batch. Rows of the
// final hidden states (B * (L-1) of them) are processed `chunk_rows` at a time:
// logits = Logits(hidden_chunk) ([chunk, V]), topk, gather, discard.
//
// Differences from the reference, on purpose:
//  * Random negatives are never top-K ids (the reference draws from [0, V) with no
//    exclusion): u ~ U[0, V-K) is mapped to the u-th id outside the top-K set (exact, no
//    rejection loop). Draws come from a CPU generator seeded with MixSeed(seed, sequence
//    index), so they do not depend on the batch size or the device.
//  * Top-K values are rounded to fp16 from the compute dtype as the reference does
//    (bf16 -> fp16 is exact for |x| in fp16's normal range).

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "core/common/reporter.h"
#include "core/kd/cache_writer.h"
#include "core/model/qwen3_model.h"

namespace qatd::kd {

struct TeacherOptions {
  int64_t top_k = 32;        // K
  int64_t rand_neg = 0;      // R
  int64_t chunk_rows = 2048;  // rows of [rows, V] logits at a time; <= 0: all rows at once
  uint64_t seed = 0;         // random negatives
  // Exact block-max prefilter for the top-K: the row is cut into blocks of B ids, the K
  // blocks with the largest maxima are kept (every top-K logit lies in one of them, ties
  // included) and top-K runs over their K*B candidates. One cheap reduction replaces a
  // radix select over the whole 151936-wide row. 0 = auto (64 when it divides V and
  // V/64 >= K), 1 = a single top-K over the whole row.
  int64_t topk_block = 0;
  // Where the pipeline says how it runs (CUDA graph captured or not); null = stderr.
  jobs::Reporter* reporter = nullptr;
};

// The B that TeacherOptions::topk_block resolves to for a vocabulary of `vocab`.
int64_t ResolveTopKBlock(int64_t requested, int64_t vocab, int64_t top_k);

// One batch of teacher outputs, on the compute device.
struct TeacherTopK {
  at::Tensor topk_idx;     // [B, L-1, K] int32, by logit descending (index 0 = argmax)
  at::Tensor topk_logits;  // [B, L-1, K] f16
  at::Tensor rand_idx;     // [B, L-1, R] int32 (undefined when R == 0)
  at::Tensor rand_logits;  // [B, L-1, R] f16
};

// Maps hidden rows [rows, H] to logits [rows, V] (the model's Logits()).
using LogitsFn = std::function<at::Tensor(const at::Tensor&)>;

// Top-K (and random negatives) from final hidden states `hidden` [B, L, H]; positions
// 0..L-2 are used. `first_sequence` is the global index of row 0 (seeds the negatives).
// `offsets`: the negatives' draws [B * (L-1), R] int64 on hidden's device, as
// DrawNegativeOffsets gives them for (B, L-1, R, V-K, seed, first_sequence); undefined: drawn
// here (a host draw and an upload, which a CUDA graph capture cannot contain).
// Throws c10::Error (callers convert with CatchTorch). Must run under NoGradGuard.
TeacherTopK TopKFromHidden(const at::Tensor& hidden, const LogitsFn& logits_fn, const TeacherOptions& options,
                           int64_t first_sequence, const at::Tensor& offsets = {});

// Top-K along dim 1 of `logits` [rows, V] with the block prefilter of `block` ids (see
// topk_block; 1 = plain at::topk): values descending and their ids (int64). Ties may come
// out in another order than a single at::topk gives them.
std::tuple<at::Tensor, at::Tensor> BlockTopK(const at::Tensor& logits, int64_t k, int64_t block);

// Random negative ids for `n` sequences starting at `first_sequence`: [n, S, R] int64 draws
// in [0, V - K) on the CPU (before mapping around the top-K ids).
at::Tensor DrawNegativeOffsets(int64_t n, int64_t positions, int64_t rand_neg, int64_t range, uint64_t seed,
                               int64_t first_sequence);

// Maps offsets u [rows, R] in [0, V-K) to the u-th id not in `topk_ids` [rows, K] (distinct
// ids): u + #{j : sorted_j - j <= u}. Same device as the inputs; int64 result.
at::Tensor ExcludeTopK(const at::Tensor& offsets, const at::Tensor& topk_ids);

// One finished batch on the host (CPU, contiguous). The tensors may be views of pinned
// staging buffers: they are valid until the next Submit()/Drain() of the pipeline.
struct TeacherHostBatch {
  int64_t first_sequence = 0;
  int64_t n = 0;
  at::Tensor input_ids;    // [n, L] int32
  at::Tensor topk_idx;     // [n, L-1, K] int32
  at::Tensor topk_logits;  // [n, L-1, K] f16
  at::Tensor rand_idx;     // [n, L-1, R] int32 or undefined
  at::Tensor rand_logits;  // [n, L-1, R] f16 or undefined
  // Raw pointers for KdCacheWriter::Append.
  KdRows rows() const;
};

// Runs the teacher over a stream of batches with compute and device->host copies
// overlapped. On CUDA: the ids go up from pinned memory, the forward and top-K run on the
// pipeline's own stream, and the results come down on a side stream into pinned double
// buffers while the next batch computes; Submit returns the previous batch. The teacher pass
// of the first batch size seen is captured as a CUDA graph (its first batch runs eagerly as
// the warm-up, the second is captured, later ones replay it; other sizes, like a shard's last
// partial batch, run eagerly): the pass is ~900 kernel launches, and the graph removes their
// host cost. QATD_CUDA_GRAPHS=0 turns graphs off; a failed capture logs a warning and the
// pipeline stays eager. On the CPU everything is synchronous and Submit returns the batch just
// submitted.
// Not thread-safe; use from one thread. The model must not be modified meanwhile.
class TeacherPipeline {
 public:
  // `model` in eval mode on its device, in the compute dtype.
  TeacherPipeline(model::Qwen3Model model, TeacherOptions options, int64_t max_length);
  ~TeacherPipeline();
  TeacherPipeline(const TeacherPipeline&) = delete;
  TeacherPipeline& operator=(const TeacherPipeline&) = delete;

  // Queues `n` blocks `ids` ([n, L] int32, row-major, host) whose first one is sequence
  // `first_sequence`. Returns the oldest finished batch, if any. Errors: INTERNAL or
  // RESOURCE_EXHAUSTED from LibTorch.
  absl::StatusOr<std::optional<TeacherHostBatch>> Submit(const int32_t* ids, int64_t n, int64_t first_sequence);
  // Returns the batch still in flight, if any.
  absl::StatusOr<std::optional<TeacherHostBatch>> Drain();

  const TeacherOptions& options() const { return options_; }
  at::Device device() const;
  // Batches computed by replaying the CUDA graph (0 on the CPU or with graphs off).
  int64_t graph_replays() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  TeacherOptions options_;
};

}  // namespace qatd::kd
