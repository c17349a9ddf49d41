#pragma once
// Internal to the tokenizer (not part of its API): the tables behind `Tokenizer::Impl`,
// shared by tokenizer_json.cc (which builds them from tokenizer.json) and tokenizer.cc
// (which encodes and decodes with them).

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/tokenizer.h"
#include "pcre2.h"

namespace qatd::model {
namespace tokenizer_internal {

// Open-addressing map (linear probing) from a pair of token ids to the merge's rank and the
// merged token's id. BPE looks pairs up many times per word, so this is the hot table.
class MergeTable {
 public:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };

  void Reserve(size_t n) {
    size_t cap = 16;
    while (cap < 2 * n) cap <<= 1;
    slots_.assign(cap, Slot{kEmpty, {0, 0}});
    mask_ = cap - 1;
  }

  // Inserts or overwrites (a later duplicate wins, as in `tokenizers`' HashMap collect).
  void Put(int32_t a, int32_t b, Merge merge) {
    const uint64_t key = Key(a, b);
    for (size_t i = Hash(key) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].key == kEmpty || slots_[i].key == key) {
        slots_[i] = Slot{key, merge};
        return;
      }
    }
  }

  const Merge* Find(int32_t a, int32_t b) const {
    const uint64_t key = Key(a, b);
    for (size_t i = Hash(key) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].key == key) return &slots_[i].merge;
      if (slots_[i].key == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};  // ids are non-negative int32
  struct Slot {
    uint64_t key;
    Merge merge;
  };
  static uint64_t Key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  static size_t Hash(uint64_t key) {
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return static_cast<size_t>(key);
  }

  std::vector<Slot> slots_;
  size_t mask_ = 0;
};

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
};

struct PcreMatchDataDeleter {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};

// Transparent hashing so the per-call cache can be probed with string_views.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
};

enum class TokenKind : uint8_t { kNone, kModel, kAdded, kAddedSpecial };

}  // namespace tokenizer_internal

struct Tokenizer::Impl {
  std::unordered_map<std::string, int32_t> vocab;  // model vocabulary, byte-level strings
  std::unordered_map<std::string, int32_t> added_by_content;
  std::vector<std::string> id_to_token;  // indexed by id; "" where kind is kNone
  std::vector<std::string> id_to_bytes;  // decoded bytes of each id
  std::vector<tokenizer_internal::TokenKind> id_kind;
  tokenizer_internal::MergeTable merges;
  std::array<int32_t, 256> byte_ids{};  // id of each byte's one-char token, -1 if absent
  bool ignore_merges = false;
  bool nfc = false;

  // Added tokens grouped by first byte, longest content first.
  std::array<std::vector<tokenizer_internal::AddedToken>, 256> added_by_first_byte;
  std::array<bool, 256> added_first_byte{};

  std::shared_ptr<pcre2_code> split_regex;  // null: no split (whole piece is one pre-token)
  bool split_jit = false;

  std::optional<int32_t> eos_id;
  std::optional<int32_t> pad_id;

  // Per-Encode-call scratch state; never shared between calls, so Encode stays const and
  // thread-safe.
  struct EncodeState {
    std::unordered_map<std::string, std::vector<int32_t>, tokenizer_internal::StringHash,
                       std::equal_to<>> cache;
    struct Symbol {
      int32_t id;
      int32_t prev;
      int32_t next;
      bool alive;
    };
    struct Candidate {
      int32_t rank;
      int32_t pos;
      int32_t new_id;
      // std heap is a max-heap: "greater" = lower rank, then leftmost position.
      bool operator<(const Candidate& o) const {
        return rank != o.rank ? rank > o.rank : pos > o.pos;
      }
    };
    std::vector<Symbol> symbols;
    std::vector<Candidate> heap;
    std::vector<int32_t> word_ids;
    std::unique_ptr<pcre2_match_data, tokenizer_internal::PcreMatchDataDeleter> match_data;
  };

  static absl::StatusOr<std::shared_ptr<Impl>> Parse(std::string_view json);
  std::optional<int32_t> Lookup(std::string_view token) const;
  void EncodePiece(std::string_view piece, EncodeState& st, std::vector<int32_t>& out) const;
  void Bpe(std::string_view piece, EncodeState& st) const;
  void EncodeSegment(std::string_view raw, EncodeState& st, std::vector<int32_t>& out) const;
};

}  // namespace qatd::model
