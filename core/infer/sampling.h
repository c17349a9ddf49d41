#pragma once
// Next-token selection from logits, with Hugging Face `generate` semantics: repetition
// penalty first, then temperature, top-k and top-p (the order of HF's logits processors),
// then a multinomial draw from an explicit, seeded generator; temperature 0 is greedy.

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "absl/status/status.h"

namespace qatd::infer {

struct SamplingOptions {
  double temperature = 0.0;         // 0: greedy (argmax); otherwise > 0
  double top_p = 1.0;               // (0, 1]; 1: off
  int64_t top_k = 0;                // 0: off
  double repetition_penalty = 1.0;  // > 0; 1: off

  // INVALID_ARGUMENT naming the field and its allowed range.
  absl::Status Validate() const;
};

// HF RepetitionPenaltyLogitsProcessor: for every token in `seen` (duplicates allowed), a
// positive logit is divided by `penalty`, a negative one multiplied. In place.
// logits: [V] or [B, V] float (for [B, V], `seen` applies to every row).
void ApplyRepetitionPenalty(at::Tensor& logits, const std::vector<int32_t>& seen, double penalty);

// HF TopKLogitsWarper: logits below the k-th largest become -inf (ties with it are kept).
// k <= 0 or k >= V: unchanged. Returns a new tensor. logits: [..., V].
at::Tensor TopKFilter(const at::Tensor& logits, int64_t k);

// HF TopPLogitsWarper: keeps the smallest set of most likely tokens whose probability mass
// reaches top_p (the token that crosses top_p is kept, and always at least one token);
// the others become -inf. top_p >= 1: unchanged. Returns a new tensor. logits: [..., V].
at::Tensor TopPFilter(const at::Tensor& logits, double top_p);

// Picks tokens. Not thread-safe (owns a generator).
class TokenSampler {
 public:
  // `options` must be valid (Validate()).
  TokenSampler(const SamplingOptions& options, uint64_t seed);

  // logits: [V] scores for the next position (any float dtype/device; computed in fp32 on
  // the CPU so the same seed gives the same tokens on any device). `seen`: the prompt and
  // the tokens generated so far (for the repetition penalty).
  int32_t Next(const at::Tensor& logits, const std::vector<int32_t>& seen);

 private:
  SamplingOptions options_;
  at::Generator generator_;
};

}  // namespace qatd::infer
