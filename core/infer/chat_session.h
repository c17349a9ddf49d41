#pragma once
// A chat with a loaded model (GenerateSpec.session, `qat infer --interactive`): each Turn()
// renders the history plus the new user message (ChatHistory), generates the answer with a
// fresh KV cache (core/infer/generate.h), streams it as UTF-8 text and records the exchange.
// The model is loaded once by the caller and kept for the whole session. When the prompt and
// max_new_tokens do not fit the model's positions, the oldest exchanges are left out (and
// forgotten), as many as needed. Not thread-safe.

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "core/infer/chat_history.h"
#include "core/infer/generate.h"
#include "core/model/qwen3_model.h"
#include "core/model/tokenizer.h"

namespace qatd::infer {

struct TurnResult {
  std::string text;               // the answer (special tokens skipped)
  int64_t prompt_tokens = 0;      // the rendered conversation the answer was generated from
  int64_t generated_tokens = 0;   // stop token included
  int64_t dropped_exchanges = 0;  // oldest exchanges forgotten to fit the model's positions
  double tokens_per_second = 0;   // decode rate
  StopReason stop_reason = StopReason::kMaxNewTokens;
};

class ChatSession {
 public:
  // `tokenizer` must outlive the session. `generation.stop_token_ids` gains <|im_end|>,
  // <|endoftext|> and the model's eos token.
  ChatSession(model::Qwen3Model model, const model::Tokenizer* tokenizer, ChatHistory history,
              GenerationOptions generation);

  // Answers `user`. `on_text(piece, token_id)` receives the answer as it is produced (whole
  // UTF-8 characters) and returns false to stop early. The exchange is recorded only when the
  // answer ended on its own (stop token or max_new_tokens). Errors: INVALID_ARGUMENT for a
  // message that does not fit the model even without history, or one with no tokens;
  // LibTorch's as generate.h says.
  absl::StatusOr<TurnResult> Turn(const std::string& user,
                                  const std::function<bool(const std::string& piece, int32_t token_id)>& on_text);

  ChatHistory& history() { return history_; }
  int64_t turns() const { return turns_; }

 private:
  model::Qwen3Model model_;
  const model::Tokenizer* tokenizer_;
  ChatHistory history_;
  GenerationOptions generation_;
  int64_t turns_ = 0;
};

}  // namespace qatd::infer
