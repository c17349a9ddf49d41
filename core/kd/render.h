#pragma once
// Turning dataset records into the texts that are tokenized and packed (spec §6.2).
//
// plain        the record's stripped text, unchanged.
// alpaca,      the record's messages through the Qwen3 chat template (core/model/chat_template.h)
// alpaca_chat, with add_generation_prompt=false, as the reference does. `alpaca` and
// sharegpt     `alpaca_chat` are the same thing in the reference (both call apply_chat_template)
//              and here.
//
// Thinking modes (chat formats; plain ignores them):
//   none  the template's text verbatim. This is what the reference cache holds for any of its
//         --enable_thinking values: with add_generation_prompt=false the Qwen3 template
//         ignores enable_thinking and gives the final assistant turn an (empty)
//         "<think>\n\n</think>\n\n" block.
//   on    the same text: the assistant answer carries its think block (empty when the data
//         has no reasoning), as a thinking-mode completion looks.
//   off   every <think>...</think> block (and the blank lines after it) is removed from
//         assistant turns: "<|im_start|>assistant\n{answer}<|im_end|>". This is the HEAD
//         reference's fix (spec §6.2.3, commit f82d287).
//   both  two texts per record: `off` first, then `on`. They really differ — the reference
//         at 505b9fe emitted the same text twice (spec §17.8); we deliberately do not.
// The seed's spellings are accepted too: "false" = off, "true" = on.

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "core/kd/dataset.h"

namespace qatd::kd {

enum class ThinkingMode { kNone, kOn, kOff, kBoth };

absl::StatusOr<ThinkingMode> ParseThinkingMode(std::string_view name);
std::string ThinkingModeName(ThinkingMode mode);  // "none", "on", "off", "both"

struct RenderOptions {
  DatasetFormat format = DatasetFormat::kPlain;
  ThinkingMode thinking = ThinkingMode::kNone;
};

// The texts of one record (1, or 2 for `both` in a chat format), in stream order. Empty
// renderings are dropped (the reference skips them). Errors come from the chat template
// (INVALID_ARGUMENT, naming the message).
absl::StatusOr<std::vector<std::string>> RenderRecord(const DatasetRecord& record, const RenderOptions& options);

// Removes "<think>" ... "</think>" blocks and the whitespace that follows each closing tag
// from `text`. An unterminated "<think>" is kept as is.
std::string StripThinkBlocks(std::string_view text);

}  // namespace qatd::kd
