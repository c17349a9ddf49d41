#include "core/infer/generate.h"

#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"
#include "core/common/torch_status.h"

namespace qatd::infer {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

absl::Status GenerationOptions::Validate() const {
  if (max_new_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_new_tokens must be >= 1, got ", max_new_tokens));
  }
  return sampling().Validate();
}

std::string_view StopReasonName(StopReason reason) {
  switch (reason) {
    case StopReason::kMaxNewTokens: return "max_new_tokens";
    case StopReason::kStopToken: return "stop_token";
    case StopReason::kCallback: return "callback";
  }
  return "unknown";
}

absl::StatusOr<GenerationResult> Generate(model::Qwen3Model& model, const std::vector<int32_t>& prompt_ids,
                                          const GenerationOptions& options,
                                          const std::function<bool(int32_t token)>& on_token) {
  QATD_RETURN_IF_ERROR(options.Validate());
  if (prompt_ids.empty()) return absl::InvalidArgumentError("prompt_ids must not be empty");
  const int64_t vocab = model->config().vocab_size;
  for (size_t i = 0; i < prompt_ids.size(); ++i) {
    if (prompt_ids[i] < 0 || prompt_ids[i] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("prompt_ids[", i, "] = ", prompt_ids[i],
                                                     " is outside the vocabulary [0, ", vocab, ")"));
    }
  }

  GenerationResult result;
  QATD_RETURN_IF_ERROR(CatchTorch("generate", [&]() -> absl::Status {
    at::NoGradGuard no_grad;
    const int64_t prompt_len = static_cast<int64_t>(prompt_ids.size());
    const at::Device device = model->device();
    model::KvCache cache = model->NewKvCache(1, prompt_len + options.max_new_tokens);
    TokenSampler sampler(options.sampling(), options.seed);
    std::vector<int32_t> seen = prompt_ids;
    seen.reserve(prompt_ids.size() + options.max_new_tokens);
    result.ids.reserve(options.max_new_tokens);
    result.timings.prompt_tokens = prompt_len;

    const auto start = Clock::now();
    auto decode_start = start;
    at::Tensor input = at::tensor(at::IntArrayRef(std::vector<int64_t>(prompt_ids.begin(), prompt_ids.end())),
                                  at::TensorOptions().dtype(at::kLong))
                           .view({1, prompt_len})
                           .to(device);
    // Only the last position's logits are needed: [1, S, H] -> [1, H] -> [V].
    at::Tensor hidden = model->Forward(input, &cache);
    at::Tensor logits = model->Logits(hidden.select(1, prompt_len - 1)).squeeze(0);
    // Host-side holder of the next input id, reused every step.
    at::Tensor next_cpu = at::empty({1, 1}, at::TensorOptions().dtype(at::kLong));
    while (true) {
      const int32_t token = sampler.Next(logits, seen);
      if (result.ids.empty()) {
        result.timings.prefill_seconds = SecondsSince(start);
        decode_start = Clock::now();
      }
      result.ids.push_back(token);
      seen.push_back(token);
      if (on_token && !on_token(token)) {
        result.stop_reason = StopReason::kCallback;
        break;
      }
      if (std::find(options.stop_token_ids.begin(), options.stop_token_ids.end(), token) !=
          options.stop_token_ids.end()) {
        result.stop_reason = StopReason::kStopToken;
        break;
      }
      if (static_cast<int64_t>(result.ids.size()) >= options.max_new_tokens) {
        result.stop_reason = StopReason::kMaxNewTokens;
        break;
      }
      next_cpu.fill_(static_cast<int64_t>(token));
      hidden = model->Forward(device.is_cpu() ? next_cpu : next_cpu.to(device), &cache);
      logits = model->Logits(hidden).view({-1});  // [1, 1, V] -> [V]
    }
    const int64_t n = static_cast<int64_t>(result.ids.size());
    result.timings.generated_tokens = n;
    if (n > 1) {
      result.timings.decode_seconds = SecondsSince(decode_start);
      if (result.timings.decode_seconds > 0) {
        result.timings.decode_tokens_per_second = (n - 1) / result.timings.decode_seconds;
      }
    }
    return absl::OkStatus();
  }));
  return result;
}

}  // namespace qatd::infer
