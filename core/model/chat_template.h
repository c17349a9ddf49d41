#pragma once
// Qwen3 chat formatting: the text the Hugging Face hub chat template of Qwen/Qwen3-*
// (tokenizer_config.json "chat_template") renders, reproduced in C++ (no jinja engine).
//
// Rendered form (ChatML):
//   <|im_start|>{role}\n{content}<|im_end|>\n      for every turn, a leading system turn first
//   assistant turns before the last user query lose their <think>...</think> reasoning;
//   assistant turns after it render "<think>\n{reasoning}\n</think>\n\n{answer}" (the final
//   assistant turn always does, even with empty reasoning);
//   add_generation_prompt appends "<|im_start|>assistant\n", plus "<think>\n\n</think>\n\n"
//   when enable_thinking is false.
//
// Not implemented (UNIMPLEMENTED errors): the template's tool paths — "tool" role messages,
// assistant tool_calls and the tools system block.
// Deliberate difference: the template silently drops messages whose role is not system, user,
// assistant or tool; RenderChat rejects them (INVALID_ARGUMENT) so nothing is lost unnoticed.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace qatd::model {

struct ChatMessage {
  std::string role;     // "system", "user" or "assistant"
  std::string content;  // UTF-8 text; for assistant turns may hold a <think>...</think> block
  // The template's `reasoning_content`: when set, used as the reasoning of an assistant turn
  // instead of parsing <think> out of `content` (content is then used unchanged).
  std::optional<std::string> reasoning_content = std::nullopt;
};

struct ChatOptions {
  bool add_generation_prompt = false;  // append the assistant header for the model's answer
  bool enable_thinking = true;  // false: pre-fill an empty <think> block (generation prompt)
};

// Renders `messages` as the Qwen3 hub template does. Errors: INVALID_ARGUMENT for an empty
// message list or an unknown role (naming the message index), UNIMPLEMENTED for "tool" turns.
absl::StatusOr<std::string> RenderChat(const std::vector<ChatMessage>& messages,
                                       const ChatOptions& options);

// Parses a JSON array of {"role": string, "content": string[, "reasoning_content": string]}.
// Other fields are ignored, except "tool_calls" (UNIMPLEMENTED). Errors name the element and
// field: "messages[1].content: expected a string".
absl::StatusOr<std::vector<ChatMessage>> ParseChatMessagesJson(std::string_view json);

}  // namespace qatd::model
