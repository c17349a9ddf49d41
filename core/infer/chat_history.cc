#include "core/infer/chat_history.h"

#include <vector>

#include "core/model/chat_template.h"

namespace qatd::infer {

void ChatHistory::SetSystemPrompt(std::string system_prompt) {
  options_.system_prompt = std::move(system_prompt);
  Reset();
}

void ChatHistory::AddExchange(std::string user, std::string assistant) {
  exchanges_.emplace_back(std::move(user), std::move(assistant));
}

bool ChatHistory::DropOldest() {
  if (exchanges_.empty()) return false;
  exchanges_.pop_front();
  return true;
}

absl::StatusOr<std::string> ChatHistory::PromptFor(const std::string& user) const {
  if (!options_.chat_template) {
    std::string text;
    for (const auto& [u, a] : exchanges_) text += u + a;
    return text + user;
  }
  std::vector<model::ChatMessage> messages;
  if (!options_.system_prompt.empty()) messages.push_back({"system", options_.system_prompt, std::nullopt});
  for (const auto& [u, a] : exchanges_) {
    messages.push_back({"user", u, std::nullopt});
    messages.push_back({"assistant", a, std::nullopt});
  }
  messages.push_back({"user", user, std::nullopt});
  model::ChatOptions co;
  co.add_generation_prompt = true;
  co.enable_thinking = options_.enable_thinking;
  return model::RenderChat(messages, co);
}

}  // namespace qatd::infer
