#pragma once
// Byte-level BPE tokenizer read from a Hugging Face `tokenizer.json` (the Qwen2/Qwen3 kind).
//
// Encoding reproduces `tokenizers` (0.23) `encode(text, add_special_tokens=False)`:
//   1. added tokens ("added_tokens", special or not) are split out of the raw text first,
//      leftmost match, longest content on ties; near misses are ordinary text;
//   2. each remaining piece is NFC-normalized (when the normalizer is NFC), split with the
//      pre-tokenizer's Split regex (PCRE2, UTF + UCP, JIT), mapped to the GPT-2 byte alphabet
//      and merged with the BPE ranks of "model.merges".
// No BOS/EOS is added (Qwen3's post-processor adds none).
// Known divergence: `tokenizers` runs the regex with Oniguruma, we run it with PCRE2 10.42.
// Their \s differs only in U+180E (PCRE2 still counts it as space), and \p{L}/\p{N} follow
// each library's Unicode tables; all 162 golden cases agree.
//
// Supported tokenizer.json shapes (anything else is rejected by FromJson, never ignored):
//   model: BPE with empty continuing_subword_prefix/end_of_word_suffix, no dropout;
//          merges as "a b" strings or ["a", "b"] pairs.
//   normalizer: null or NFC.  pre_tokenizer: ByteLevel, or Sequence[Split(Regex, Isolated),
//          ByteLevel(use_regex=false)] (ByteLevel add_prefix_space must be false).
//   decoder: null or ByteLevel.  added_tokens: single_word must be false; lstrip/rstrip are
//          honoured; "normalized" tokens are matched in the raw text like the others (the
//          same thing for tokens whose content is NFC-stable, as every Qwen token is).
//
// A Tokenizer is an immutable value: copies share the tables, and all const methods are safe
// to call from several threads at once.

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace qatd::model {

class Tokenizer {
 public:
  // Reads a tokenizer. `path` is either a tokenizer.json file or a model directory holding
  // one. If a `tokenizer_config.json` sits next to the tokenizer.json, its "eos_token" and
  // "pad_token" (string or {"content": ...}) set eos_token_id()/pad_token_id().
  // Errors: NOT_FOUND (missing file), INVALID_ARGUMENT (malformed JSON or unknown tokens,
  // with the offending field named), UNIMPLEMENTED (unsupported tokenizer.json features).
  static absl::StatusOr<Tokenizer> FromFile(const std::string& path);

  // Parses tokenizer.json text (see the file comment for what is supported).
  static absl::StatusOr<Tokenizer> FromJson(std::string_view json_text);

  // Token ids of `text` (UTF-8). No special tokens are added. Ill-formed UTF-8 is first
  // repaired the way Python's decode(errors="replace") does (each maximal ill-formed
  // subsequence becomes U+FFFD).
  std::vector<int32_t> Encode(std::string_view text) const;

  // Text of `ids`. Added tokens contribute their content verbatim; other tokens are mapped
  // back through the byte alphabet. With `skip_special_tokens`, tokens flagged "special"
  // are dropped (non-special added tokens such as <think> stay). Ids that name no token are
  // skipped (as in `tokenizers`). Byte sequences that are not valid UTF-8 (e.g. a prefix of
  // a multi-byte character) become U+FFFD, like `tokenizers`' lossy decode.
  std::string Decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  // Like Decode but returns the raw bytes without UTF-8 repair (for streaming output, where
  // a character may be split across tokens).
  std::string DecodeBytes(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  // The id of a token given by its vocabulary string (byte-level form, e.g. "Ġworld") or
  // by an added token's content (e.g. "<|im_end|>"); added tokens win. nullopt if unknown.
  std::optional<int32_t> TokenToId(std::string_view token) const;

  // The vocabulary string of `id` (an added token's content for added ids); nullopt if no
  // token has this id.
  std::optional<std::string> IdToToken(int32_t id) const;

  // Largest id + 1 over the model vocabulary and the added tokens (151669 for Qwen3; the
  // model's embedding table may be larger, e.g. 151936).
  int32_t vocab_size() const;

  // True if `id` is an added token flagged "special": true.
  bool IsSpecial(int32_t id) const;

  // Ids named by tokenizer_config.json's eos_token / pad_token (nullopt if there was no
  // config next to the tokenizer.json, or it names none).
  std::optional<int32_t> eos_token_id() const;
  std::optional<int32_t> pad_token_id() const;

  struct Impl;  // defined in tokenizer_impl.h

 private:
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}

  std::shared_ptr<const Impl> impl_;  // never null
};

}  // namespace qatd::model
