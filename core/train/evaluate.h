#pragma once
// Held-out evaluation of a student against the KD cache (issue #5 item 4; spec §7.3 and the
// §17.12 fix: the reference evaluates on its first *training* sequences, qatd on a held-out
// split the trainers never read).
//
// Per sequence of the split (the first max_sequences of it, in order):
//   kd      the reference's evaluation loss (EvalKdLossPerSequence, T as trained), averaged
//           over sequences;
//   top1    the fraction of the L-1 positions where the student's full-vocabulary argmax equals
//           the teacher's top-1 (topk_idx[..., 0]);
//   ce/ppl  the student's next-token cross-entropy on the cached tokens (input_ids[1:]), full
//           vocabulary, and exp(ce).
// Full-vocabulary logits exist chunk_rows positions at a time. Runs under no-grad on the
// model's device; deterministic.

#include <cstdint>

#include "absl/status/statusor.h"
#include "core/kd/cache_reader.h"
#include "core/model/qwen3_model.h"
#include "core/train/dist_group.h"

namespace qatd::train {

struct EvalOptions {
  int64_t max_sequences = 40;  // 0 = the whole split
  int64_t batch_size = 8;
  double temperature = 2.0;
  int64_t chunk_rows = 1024;
};

struct EvalResult {
  double kd = 0;
  double top1 = 0;
  double ce = 0;
  double ppl = 0;
  int64_t sequences = 0;
  int64_t positions = 0;
};

absl::StatusOr<EvalResult> Evaluate(model::Qwen3ModelImpl& model, const kd::KdCacheReader& reader, kd::KdSplit split,
                                    const EvalOptions& options = {});

// Data parallel: rank r of `dist` evaluates the r-th contiguous part of the split's first
// max_sequences; the sums are all-reduced, so every rank returns the whole split's result (equal
// to Evaluate's up to the order of floating-point sums). Evaluate itself without `dist`.
absl::StatusOr<EvalResult> EvaluateSharded(model::Qwen3ModelImpl& model, const kd::KdCacheReader& reader,
                                           kd::KdSplit split, const EvalOptions& options, DistGroup* dist);

// The matrix the student's logits come from: lm_head's effective weight (quantized when
// lm_head is), or the embedding matrix of a tied model. [V, H], differentiable.
at::Tensor LmHeadWeight(model::Qwen3ModelImpl& model);

}  // namespace qatd::train
