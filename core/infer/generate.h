#pragma once
// Autoregressive generation for one sequence with a KV cache: the prompt is prefilled once,
// then one token per step. Streams each token to a callback.

#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/infer/sampling.h"
#include "core/model/qwen3_model.h"

namespace qatd::infer {

struct GenerationOptions {
  int64_t max_new_tokens = 128;     // >= 1
  double temperature = 0.0;         // 0: greedy
  double top_p = 1.0;               // (0, 1]
  int64_t top_k = 0;                // 0: off
  double repetition_penalty = 1.0;  // HF semantics, over prompt + generated tokens; 1: off
  std::vector<int32_t> stop_token_ids;  // generation ends after emitting one of these
  uint64_t seed = 0;                // seeds the sampler's generator (reproducible sampling)

  SamplingOptions sampling() const { return {temperature, top_p, top_k, repetition_penalty}; }
  // INVALID_ARGUMENT naming the field and its allowed range.
  absl::Status Validate() const;
};

enum class StopReason {
  kMaxNewTokens,  // produced max_new_tokens
  kStopToken,     // produced one of stop_token_ids (it is the last entry of ids)
  kCallback,      // on_token returned false
};
std::string_view StopReasonName(StopReason reason);  // "max_new_tokens", "stop_token", "callback"

struct GenerationTimings {
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  double prefill_seconds = 0;  // prompt forward + first token
  double decode_seconds = 0;   // every later token
  // generated_tokens - 1 over decode_seconds (0 when fewer than 2 tokens).
  double decode_tokens_per_second = 0;
};

struct GenerationResult {
  std::vector<int32_t> ids;  // generated tokens only (not the prompt), stop token included
  StopReason stop_reason = StopReason::kMaxNewTokens;
  GenerationTimings timings;
};

// Generates up to options.max_new_tokens tokens after `prompt_ids` (non-empty; ids in
// [0, vocab)). `on_token`, if set, is called with every generated token in order (the stop
// token too) and returns false to stop. Runs without autograd, on the model's device, with
// a cache sized prompt + max_new_tokens. Errors: INVALID_ARGUMENT (options, empty prompt,
// out-of-vocab id), RESOURCE_EXHAUSTED/INTERNAL from LibTorch. Not thread-safe per model
// with concurrent ReplaceLinear/to().
absl::StatusOr<GenerationResult> Generate(model::Qwen3Model& model, const std::vector<int32_t>& prompt_ids,
                                          const GenerationOptions& options,
                                          const std::function<bool(int32_t token)>& on_token = nullptr);

}  // namespace qatd::infer
