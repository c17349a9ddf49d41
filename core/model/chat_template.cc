#include "core/model/chat_template.h"

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace qatd::model {
namespace {

constexpr absl::string_view kThinkOpen = "<think>";
constexpr absl::string_view kThinkClose = "</think>";

// Python's str.lstrip('\n') / rstrip('\n') / strip('\n').
absl::string_view LStripNewlines(absl::string_view s) {
  while (!s.empty() && s.front() == '\n') s.remove_prefix(1);
  return s;
}
absl::string_view RStripNewlines(absl::string_view s) {
  while (!s.empty() && s.back() == '\n') s.remove_suffix(1);
  return s;
}
absl::string_view StripNewlines(absl::string_view s) { return RStripNewlines(LStripNewlines(s)); }

// Python's s.split(sep)[0] and s.split(sep)[-1].
absl::string_view BeforeFirst(absl::string_view s, absl::string_view sep) {
  const size_t i = s.find(sep);
  return i == absl::string_view::npos ? s : s.substr(0, i);
}
absl::string_view AfterLast(absl::string_view s, absl::string_view sep) {
  const size_t i = s.rfind(sep);
  return i == absl::string_view::npos ? s : s.substr(i + sep.size());
}

// The template's "last_query_index": the last user turn that is not a wrapped tool response
// (messages.size() - 1 when there is none).
size_t LastQueryIndex(const std::vector<ChatMessage>& messages) {
  for (size_t i = messages.size(); i-- > 0;) {
    const ChatMessage& m = messages[i];
    const bool tool_response = absl::StartsWith(m.content, "<tool_response>") &&
                               absl::EndsWith(m.content, "</tool_response>");
    if (m.role == "user" && !tool_response) return i;
  }
  return messages.size() - 1;
}

void AppendAssistant(const ChatMessage& m, bool after_last_query, bool is_last, std::string* out) {
  absl::string_view content = m.content;
  absl::string_view reasoning;
  if (m.reasoning_content.has_value()) {
    reasoning = *m.reasoning_content;
  } else if (absl::StrContains(content, kThinkClose)) {
    reasoning = LStripNewlines(AfterLast(RStripNewlines(BeforeFirst(content, kThinkClose)),
                                         kThinkOpen));
    content = LStripNewlines(AfterLast(content, kThinkClose));
  }
  absl::StrAppend(out, "<|im_start|>", m.role, "\n");
  if (after_last_query && (is_last || !reasoning.empty())) {
    absl::StrAppend(out, "<think>\n", StripNewlines(reasoning), "\n</think>\n\n",
                    LStripNewlines(content));
  } else {
    absl::StrAppend(out, content);
  }
  absl::StrAppend(out, "<|im_end|>\n");
}

}  // namespace

absl::StatusOr<std::string> RenderChat(const std::vector<ChatMessage>& messages,
                                       const ChatOptions& options) {
  if (messages.empty()) return absl::InvalidArgumentError("chat: messages is empty");
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    if (role == "tool") {
      return absl::UnimplementedError(absl::StrCat(
          "chat: messages[", i, "]: role 'tool' (tool calling) is not implemented"));
    }
    if (role != "system" && role != "user" && role != "assistant") {
      return absl::InvalidArgumentError(absl::StrCat(
          "chat: messages[", i, "].role: '", role, "' is not system, user or assistant"));
    }
  }
  std::string out;
  if (messages[0].role == "system") {
    absl::StrAppend(&out, "<|im_start|>system\n", messages[0].content, "<|im_end|>\n");
  }
  const size_t last_query = LastQueryIndex(messages);
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "user" || (m.role == "system" && i != 0)) {
      absl::StrAppend(&out, "<|im_start|>", m.role, "\n", m.content, "<|im_end|>\n");
    } else if (m.role == "assistant") {
      AppendAssistant(m, i > last_query, i + 1 == messages.size(), &out);
    }
  }
  if (options.add_generation_prompt) {
    out += "<|im_start|>assistant\n";
    if (!options.enable_thinking) out += "<think>\n\n</think>\n\n";
  }
  return out;
}

absl::StatusOr<std::vector<ChatMessage>> ParseChatMessagesJson(std::string_view json) {
  using Json = nlohmann::json;
  const Json root = Json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return absl::InvalidArgumentError("messages: not valid JSON");
  if (!root.is_array()) return absl::InvalidArgumentError("messages: expected a JSON array");
  std::vector<ChatMessage> messages;
  messages.reserve(root.size());
  for (size_t i = 0; i < root.size(); ++i) {
    const Json& m = root[i];
    const std::string where = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": expected an object"));
    }
    if (m.contains("tool_calls")) {
      return absl::UnimplementedError(
          absl::StrCat(where, ".tool_calls: tool calling is not implemented"));
    }
    ChatMessage message;
    const std::pair<const char*, std::string*> fields[] = {{"role", &message.role},
                                                           {"content", &message.content}};
    for (const auto& [key, target] : fields) {
      auto it = m.find(key);
      if (it == m.end()) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": missing field '", key, "'"));
      }
      if (!it->is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(where, ".", key, ": expected a string"));
      }
      *target = it->get<std::string>();
    }
    if (auto it = m.find("reasoning_content"); it != m.end() && !it->is_null()) {
      if (!it->is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ".reasoning_content: expected a string"));
      }
      message.reasoning_content = it->get<std::string>();
    }
    messages.push_back(std::move(message));
  }
  return messages;
}

}  // namespace qatd::model
