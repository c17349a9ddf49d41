#include "core/model/tokenizer.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/tokenizer_impl.h"
#include "core/model/unicode.h"

namespace qatd::model {

using tokenizer_internal::AddedToken;
using tokenizer_internal::MergeTable;
using tokenizer_internal::TokenKind;

namespace {

// Pieces longer than this are not cached (they are rare, and would bloat the cache).
constexpr size_t kMaxCachedPieceBytes = 128;
// Upper bound on cached pieces per Encode call.
constexpr size_t kMaxCacheEntries = 1 << 18;

// Longest added token starting at text[pos], or null.
const AddedToken* MatchAddedAt(const Tokenizer::Impl& impl, std::string_view text, size_t pos) {
  for (const AddedToken& t : impl.added_by_first_byte[static_cast<uint8_t>(text[pos])]) {
    if (text.compare(pos, t.content.size(), t.content) == 0) return &t;
  }
  return nullptr;
}

// Length of the run of Unicode whitespace ending at `end` (for lstrip).
size_t WhitespaceBefore(std::string_view text, size_t begin, size_t end) {
  size_t pos = end;
  while (pos > begin) {
    size_t start = pos - 1;
    while (start > begin && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) --start;
    char32_t cp = 0;
    if (DecodeUtf8(text, start, &cp) == 0 || !IsUnicodeWhitespace(cp)) break;
    pos = start;
  }
  return end - pos;
}

// Length of the run of Unicode whitespace starting at `pos` (for rstrip).
size_t WhitespaceAfter(std::string_view text, size_t pos) {
  const size_t begin = pos;
  while (pos < text.size()) {
    char32_t cp = 0;
    const int len = DecodeUtf8(text, pos, &cp);
    if (len == 0 || !IsUnicodeWhitespace(cp)) break;
    pos += len;
  }
  return pos - begin;
}

}  // namespace

// Byte-level BPE of one pre-token; leaves the ids in st.word_ids. Same algorithm as
// `tokenizers` (Word::merge_all): repeatedly apply the lowest-ranked adjacent pair, leftmost
// first, using a heap of candidate merges that are re-validated when popped.
void Tokenizer::Impl::Bpe(std::string_view piece, EncodeState& st) const {
  auto& syms = st.symbols;
  auto& heap = st.heap;
  syms.clear();
  heap.clear();
  st.word_ids.clear();
  for (char c : piece) {
    const int32_t id = byte_ids[static_cast<uint8_t>(c)];
    if (id < 0) continue;  // no unk token: `tokenizers` drops chars missing from the vocab
    const auto idx = static_cast<int32_t>(syms.size());
    syms.push_back({id, idx - 1, -1, true});
    if (idx > 0) syms[idx - 1].next = idx;
  }
  if (ignore_merges && syms.size() > 1) {
    std::string mapped;
    for (char c : piece) mapped += ByteToUnicodeUtf8(static_cast<uint8_t>(c));
    if (auto it = vocab.find(mapped); it != vocab.end()) {
      st.word_ids.push_back(it->second);
      return;
    }
  }
  const auto push_candidate = [&](int32_t left) {
    const int32_t right = syms[left].next;
    if (right < 0) return;
    if (const MergeTable::Merge* m = merges.Find(syms[left].id, syms[right].id)) {
      heap.push_back({m->rank, left, m->new_id});
      std::push_heap(heap.begin(), heap.end());
    }
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(syms.size()); ++i) push_candidate(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    const EncodeState::Candidate top = heap.back();
    heap.pop_back();
    EncodeState::Symbol& left = syms[top.pos];
    if (!left.alive || left.next < 0) continue;
    const MergeTable::Merge* m = merges.Find(left.id, syms[left.next].id);
    if (m == nullptr || m->new_id != top.new_id) continue;  // stale candidate
    EncodeState::Symbol& right = syms[left.next];
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) syms[right.next].prev = top.pos;
    if (left.prev >= 0) push_candidate(left.prev);
    push_candidate(top.pos);
  }
  for (int32_t i = syms.empty() ? -1 : 0; i >= 0; i = syms[i].next) {
    st.word_ids.push_back(syms[i].id);
  }
}

void Tokenizer::Impl::EncodePiece(std::string_view piece, EncodeState& st,
                                  std::vector<int32_t>& out) const {
  if (piece.size() == 1) {
    const int32_t id = byte_ids[static_cast<uint8_t>(piece[0])];
    if (id >= 0) out.push_back(id);
    return;
  }
  const bool cacheable = piece.size() <= kMaxCachedPieceBytes;
  if (cacheable) {
    if (auto it = st.cache.find(piece); it != st.cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  Bpe(piece, st);
  out.insert(out.end(), st.word_ids.begin(), st.word_ids.end());
  if (cacheable && st.cache.size() < kMaxCacheEntries) {
    st.cache.emplace(std::string(piece), st.word_ids);
  }
}

// Normalizes, pre-tokenizes and BPE-encodes text that holds no added token.
void Tokenizer::Impl::EncodeSegment(std::string_view raw, EncodeState& st,
                                    std::vector<int32_t>& out) const {
  if (raw.empty()) return;
  std::string normalized;
  std::string_view text = raw;
  if (nfc) {
    // `raw` is valid UTF-8 (Encode repairs its input), so NFC cannot fail.
    absl::StatusOr<std::string> n = NfcNormalize(raw);
    if (n.ok()) {
      normalized = *std::move(n);
      text = normalized;
    }
  }
  if (split_regex == nullptr) {
    EncodePiece(text, st, out);
    return;
  }
  if (st.match_data == nullptr) {
    st.match_data.reset(pcre2_match_data_create_from_pattern(split_regex.get(), nullptr));
  }
  const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;  // end of the last emitted piece
  size_t search = 0;
  while (search < text.size()) {
    int rc =
        split_jit ? pcre2_jit_match(split_regex.get(), subject, text.size(), search, 0,
                                    st.match_data.get(), nullptr)
                  : pcre2_match(split_regex.get(), subject, text.size(), search,
                                PCRE2_NO_UTF_CHECK, st.match_data.get(), nullptr);
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH && split_jit) {
      // JIT stack exhausted (e.g. a huge whitespace run): the interpreter keeps its
      // backtracking state on the heap.
      rc = pcre2_match(split_regex.get(), subject, text.size(), search,
                       PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, st.match_data.get(), nullptr);
    }
    if (rc < 0) break;  // no further match (or a matcher limit): the rest is one piece
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(st.match_data.get());
    const size_t begin = ovector[0];
    const size_t end = ovector[1];
    if (end == begin) {
      // Empty match: skip one character; it stays part of the surrounding gap.
      char32_t cp;
      const int len = DecodeUtf8(text, begin, &cp);
      search = begin + (len > 0 ? len : 1);
      continue;
    }
    if (begin > pos) EncodePiece(text.substr(pos, begin - pos), st, out);  // Isolated gap
    EncodePiece(text.substr(begin, end - begin), st, out);
    pos = search = end;
  }
  if (pos < text.size()) EncodePiece(text.substr(pos), st, out);
}

std::optional<int32_t> Tokenizer::Impl::Lookup(std::string_view token) const {
  const std::string key(token);
  if (auto it = added_by_content.find(key); it != added_by_content.end()) return it->second;
  if (auto it = vocab.find(key); it != vocab.end()) return it->second;
  return std::nullopt;
}

std::vector<int32_t> Tokenizer::Encode(std::string_view input) const {
  std::string repaired;
  std::string_view text = input;
  if (!IsValidUtf8(input)) {
    repaired = ToValidUtf8Lossy(input);
    text = repaired;
  }
  const Impl& impl = *impl_;
  Impl::EncodeState st;
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  size_t segment_begin = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    if (!impl.added_first_byte[static_cast<uint8_t>(text[pos])]) {
      ++pos;
      continue;
    }
    const AddedToken* token = MatchAddedAt(impl, text, pos);
    if (token == nullptr) {
      ++pos;
      continue;
    }
    size_t match_begin = pos;
    size_t match_end = pos + token->content.size();
    if (token->lstrip) match_begin -= WhitespaceBefore(text, segment_begin, match_begin);
    if (token->rstrip) match_end += WhitespaceAfter(text, match_end);
    impl.EncodeSegment(text.substr(segment_begin, match_begin - segment_begin), st, out);
    out.push_back(token->id);
    segment_begin = pos = match_end;
  }
  impl.EncodeSegment(text.substr(segment_begin), st, out);
  return out;
}

std::string Tokenizer::DecodeBytes(std::span<const int32_t> ids, bool skip_special_tokens) const {
  const Impl& impl = *impl_;
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= impl.id_kind.size()) continue;
    const TokenKind kind = impl.id_kind[id];
    if (kind == TokenKind::kNone) continue;
    if (skip_special_tokens && kind == TokenKind::kAddedSpecial) continue;
    out += impl.id_to_bytes[id];
  }
  return out;
}

std::string Tokenizer::Decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  return ToValidUtf8Lossy(DecodeBytes(ids, skip_special_tokens));
}

std::optional<int32_t> Tokenizer::TokenToId(std::string_view token) const {
  return impl_->Lookup(token);
}

std::optional<std::string> Tokenizer::IdToToken(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->id_kind.size() ||
      impl_->id_kind[id] == TokenKind::kNone) {
    return std::nullopt;
  }
  return impl_->id_to_token[id];
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(impl_->id_kind.size()); }

bool Tokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->id_kind.size() &&
         impl_->id_kind[id] == TokenKind::kAddedSpecial;
}

std::optional<int32_t> Tokenizer::eos_token_id() const { return impl_->eos_id; }

std::optional<int32_t> Tokenizer::pad_token_id() const { return impl_->pad_id; }

}  // namespace qatd::model
