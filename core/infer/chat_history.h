#pragma once
// The conversation of a chat session (GenerateSpec.session, `qat infer --interactive`): the
// system prompt and the user/assistant exchanges so far, rendered as the next prompt. With
// the chat template the prompt is the Qwen3 hub template over every exchange plus the new
// user message (core/model/chat_template.h); without it, the plain concatenation of the
// texts. LibTorch-free; not thread-safe.

#include <cstddef>
#include <deque>
#include <string>
#include <utility>

#include "absl/status/statusor.h"

namespace qatd::infer {

struct ChatHistoryOptions {
  std::string system_prompt;  // "" = none
  bool chat_template = true;  // false: raw text, no roles
  bool enable_thinking = true;
};

class ChatHistory {
 public:
  explicit ChatHistory(ChatHistoryOptions options) : options_(std::move(options)) {}

  // Forgets every exchange; the system prompt stays.
  void Reset() { exchanges_.clear(); }
  // Sets the system prompt ("" = none) and forgets every exchange.
  void SetSystemPrompt(std::string system_prompt);
  // Records a finished turn.
  void AddExchange(std::string user, std::string assistant);
  // Forgets the oldest exchange (to fit the model's positions); false when there is none.
  bool DropOldest();

  // The prompt for the next turn: the history, then `user`, then the assistant header.
  // Errors: those of model::RenderChat.
  absl::StatusOr<std::string> PromptFor(const std::string& user) const;

  size_t exchanges() const { return exchanges_.size(); }
  const std::string& system_prompt() const { return options_.system_prompt; }

 private:
  ChatHistoryOptions options_;
  std::deque<std::pair<std::string, std::string>> exchanges_;  // (user, assistant), oldest first
};

}  // namespace qatd::infer
