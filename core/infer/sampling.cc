#include "core/infer/sampling.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace qatd::infer {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

}  // namespace

absl::Status SamplingOptions::Validate() const {
  if (!(temperature >= 0.0) || !std::isfinite(temperature)) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be >= 0 (0 = greedy), got ", temperature));
  }
  if (!(top_p > 0.0 && top_p <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", top_p));
  }
  if (top_k < 0) return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0 (0 = off), got ", top_k));
  if (!(repetition_penalty > 0.0) || !std::isfinite(repetition_penalty)) {
    return absl::InvalidArgumentError(
        absl::StrCat("repetition_penalty must be > 0 (1 = off), got ", repetition_penalty));
  }
  return absl::OkStatus();
}

void ApplyRepetitionPenalty(at::Tensor& logits, const std::vector<int32_t>& seen, double penalty) {
  if (penalty == 1.0 || seen.empty()) return;
  at::Tensor idx = at::tensor(at::IntArrayRef(std::vector<int64_t>(seen.begin(), seen.end())),
                              at::TensorOptions().dtype(at::kLong))
                       .to(logits.device());
  if (logits.dim() == 2) idx = idx.unsqueeze(0).expand({logits.size(0), idx.size(0)});
  at::Tensor score = logits.gather(-1, idx);
  score = at::where(score < 0, score * penalty, score / penalty);
  // Duplicate indices write the same value, so scatter order does not matter.
  logits.scatter_(-1, idx, score);
}

at::Tensor TopKFilter(const at::Tensor& logits, int64_t k) {
  const int64_t vocab = logits.size(-1);
  if (k <= 0 || k >= vocab) return logits;
  at::Tensor kth = std::get<0>(logits.topk(k, -1)).narrow(-1, k - 1, 1);  // [..., 1]
  return logits.masked_fill(logits < kth, kNegInf);
}

at::Tensor TopPFilter(const at::Tensor& logits, double top_p) {
  if (top_p >= 1.0) return logits;
  auto [sorted, order] = logits.sort(-1, /*descending=*/true);
  at::Tensor probs = sorted.to(at::kFloat).softmax(-1);
  // Mass of the strictly more likely tokens; a token is dropped once that reaches top_p.
  // (HF, ascending: drop where cumsum <= 1 - top_p; the same set up to rounding.)
  at::Tensor mass_before = probs.cumsum(-1) - probs;
  at::Tensor drop_sorted = mass_before >= top_p;
  drop_sorted.narrow(-1, 0, 1).fill_(false);  // always keep the most likely token
  at::Tensor drop = at::zeros_like(drop_sorted).scatter_(-1, order, drop_sorted);
  return logits.masked_fill(drop, kNegInf);
}

TokenSampler::TokenSampler(const SamplingOptions& options, uint64_t seed)
    : options_(options), generator_(at::make_generator<at::CPUGeneratorImpl>(seed)) {}

int32_t TokenSampler::Next(const at::Tensor& logits, const std::vector<int32_t>& seen) {
  TORCH_CHECK(logits.dim() == 1, "TokenSampler::Next: logits must be [V], got ", logits.sizes());
  // Always a fresh fp32 CPU tensor: the penalty below writes in place.
  at::Tensor scores = logits.to(at::kCPU, at::kFloat, /*non_blocking=*/false, /*copy=*/true);
  ApplyRepetitionPenalty(scores, seen, options_.repetition_penalty);
  if (options_.temperature == 0.0) return static_cast<int32_t>(scores.argmax().item<int64_t>());
  scores.div_(options_.temperature);
  scores = TopKFilter(scores, options_.top_k);
  scores = TopPFilter(scores, options_.top_p);
  at::Tensor probs = scores.softmax(-1);
  return static_cast<int32_t>(at::multinomial(probs, 1, /*replacement=*/false, generator_).item<int64_t>());
}

}  // namespace qatd::infer
