#include "core/kd/render.h"

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"

namespace qatd::kd {

absl::StatusOr<ThinkingMode> ParseThinkingMode(std::string_view name) {
  if (name == "none") return ThinkingMode::kNone;
  if (name == "on" || name == "true") return ThinkingMode::kOn;
  if (name == "off" || name == "false") return ThinkingMode::kOff;
  if (name == "both") return ThinkingMode::kBoth;
  return absl::InvalidArgumentError(absl::StrCat(
      "enable_thinking must be one of none, on, off, both (or true/false); got '", std::string(name), "'"));
}

std::string ThinkingModeName(ThinkingMode mode) {
  switch (mode) {
    case ThinkingMode::kNone: return "none";
    case ThinkingMode::kOn: return "on";
    case ThinkingMode::kOff: return "off";
    case ThinkingMode::kBoth: return "both";
  }
  return "?";
}

std::string StripThinkBlocks(std::string_view text) {
  static constexpr std::string_view kOpen = "<think>";
  static constexpr std::string_view kClose = "</think>";
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t open = text.find(kOpen, pos);
    if (open == std::string_view::npos) break;
    const size_t close = text.find(kClose, open + kOpen.size());
    if (close == std::string_view::npos) break;
    out.append(text.substr(pos, open - pos));
    pos = close + kClose.size();
    while (pos < text.size() && (text[pos] == '\n' || text[pos] == ' ' || text[pos] == '\t' || text[pos] == '\r')) {
      ++pos;
    }
  }
  out.append(text.substr(pos));
  return out;
}

namespace {

// The template's rendering with the think blocks of assistant turns removed. Works per
// message (system/user text is never touched, even if it mentions <think>).
absl::StatusOr<std::string> RenderWithoutThinking(const std::vector<model::ChatMessage>& messages) {
  std::vector<model::ChatMessage> stripped = messages;
  for (model::ChatMessage& m : stripped) {
    if (m.role != "assistant") continue;
    m.content = StripThinkBlocks(m.content);
    m.reasoning_content.reset();
  }
  QATD_ASSIGN_OR_RETURN(std::string text, model::RenderChat(stripped, {false, true}));
  // The template re-inserts an empty block on the last assistant turn after the final
  // query; remove what it put back, only inside assistant turns.
  static constexpr std::string_view kHeader = "<|im_start|>assistant\n";
  static constexpr std::string_view kEnd = "<|im_end|>";
  std::string out;
  size_t pos = 0;
  while (true) {
    const size_t h = text.find(kHeader, pos);
    if (h == std::string::npos) break;
    const size_t body = h + kHeader.size();
    size_t end = text.find(kEnd, body);
    if (end == std::string::npos) end = text.size();
    out.append(text, pos, body - pos);
    out.append(StripThinkBlocks(std::string_view(text).substr(body, end - body)));
    pos = end;
  }
  out.append(text, pos, std::string::npos);
  return out;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> RenderRecord(const DatasetRecord& record, const RenderOptions& options) {
  std::vector<std::string> texts;
  if (!IsChatFormat(options.format)) {
    if (!record.text.empty()) texts.push_back(record.text);
    return texts;
  }
  auto verbatim = [&]() { return model::RenderChat(record.messages, {false, true}); };
  switch (options.thinking) {
    case ThinkingMode::kNone:
    case ThinkingMode::kOn: {
      QATD_ASSIGN_OR_RETURN(std::string t, verbatim());
      texts.push_back(std::move(t));
      break;
    }
    case ThinkingMode::kOff: {
      QATD_ASSIGN_OR_RETURN(std::string t, RenderWithoutThinking(record.messages));
      texts.push_back(std::move(t));
      break;
    }
    case ThinkingMode::kBoth: {
      QATD_ASSIGN_OR_RETURN(std::string off, RenderWithoutThinking(record.messages));
      QATD_ASSIGN_OR_RETURN(std::string on, verbatim());
      texts.push_back(std::move(off));
      texts.push_back(std::move(on));
      break;
    }
  }
  std::erase_if(texts, [](const std::string& t) { return t.empty(); });
  return texts;
}

}  // namespace qatd::kd
