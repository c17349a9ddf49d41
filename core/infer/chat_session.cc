#include "core/infer/chat_session.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"

namespace qatd::infer {

ChatSession::ChatSession(model::Qwen3Model model, const model::Tokenizer* tokenizer, ChatHistory history,
                         GenerationOptions generation)
    : model_(std::move(model)), tokenizer_(tokenizer), history_(std::move(history)), generation_(std::move(generation)) {
  for (const char* stop : {"<|im_end|>", "<|endoftext|>"}) {
    if (auto id = tokenizer_->TokenToId(stop)) generation_.stop_token_ids.push_back(*id);
  }
  const int64_t eos = model_->config().eos_token_id;
  if (eos >= 0) generation_.stop_token_ids.push_back(static_cast<int32_t>(eos));
}

absl::StatusOr<TurnResult> ChatSession::Turn(
    const std::string& user, const std::function<bool(const std::string& piece, int32_t token_id)>& on_text) {
  QATD_RETURN_IF_ERROR(generation_.Validate());
  const int64_t positions = model_->config().max_position_embeddings;
  TurnResult out;
  std::vector<int32_t> ids;
  while (true) {
    absl::StatusOr<std::string> prompt = history_.PromptFor(user);
    if (!prompt.ok()) return prompt.status();
    ids = tokenizer_->Encode(*prompt);
    const int64_t needed = static_cast<int64_t>(ids.size()) + generation_.max_new_tokens;
    if (positions <= 0 || needed <= positions) break;
    if (!history_.DropOldest()) {
      return absl::InvalidArgumentError(absl::StrCat("the message takes ", ids.size(), " tokens; with max_new_tokens ",
                                                     generation_.max_new_tokens, " that exceeds the model's ",
                                                     positions, " positions"));
    }
    ++out.dropped_exchanges;
  }
  if (ids.empty()) return absl::InvalidArgumentError("the message has no tokens");

  GenerationOptions go = generation_;
  go.seed = generation_.seed + static_cast<uint64_t>(turns_);  // each turn samples afresh, reproducibly
  ++turns_;
  // Decode the whole answer after each token and hand on what is new, holding back an
  // incomplete trailing UTF-8 sequence (decoded as U+FFFD until its last byte arrives).
  std::vector<int32_t> answer;
  size_t sent = 0;
  bool keep_going = true;
  QATD_ASSIGN_OR_RETURN(GenerationResult result, Generate(model_, ids, go, [&](int32_t id) {
                          answer.push_back(id);
                          const std::string all = tokenizer_->Decode(answer, /*skip_special_tokens=*/true);
                          size_t end = all.size();
                          if (end >= 3 && all.compare(end - 3, 3, "\xEF\xBF\xBD") == 0) end -= 3;
                          if (end > sent) {
                            keep_going = !on_text || on_text(all.substr(sent, end - sent), id);
                            sent = end;
                          }
                          return keep_going;
                        }));
  out.text = tokenizer_->Decode(result.ids, /*skip_special_tokens=*/true);
  out.prompt_tokens = static_cast<int64_t>(ids.size());
  out.generated_tokens = static_cast<int64_t>(result.ids.size());
  out.tokens_per_second = result.timings.decode_tokens_per_second;
  out.stop_reason = result.stop_reason;
  if (result.stop_reason != StopReason::kCallback) history_.AddExchange(user, out.text);
  return out;
}

}  // namespace qatd::infer
