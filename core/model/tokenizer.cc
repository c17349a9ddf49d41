#include "core/model/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <unordered_map>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "core/common/status_macros.h"
#include "core/model/unicode.h"
#include "nlohmann/json.hpp"
#include "pcre2.h"

namespace qatd::model {
namespace {

using Json = nlohmann::json;

// The GPT-2 split regex, used when the pre-tokenizer is a lone ByteLevel with use_regex=true.
constexpr std::string_view kGpt2SplitRegex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Pieces longer than this are not cached (they are rare, and would bloat the cache).
constexpr size_t kMaxCachedPieceBytes = 128;
// Upper bound on cached pieces per Encode call.
constexpr size_t kMaxCacheEntries = 1 << 18;

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

struct PcreCodeDeleter {
  void operator()(pcre2_code* code) const { pcre2_code_free(code); }
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

}  // namespace

struct Tokenizer::Impl {
  std::unordered_map<std::string, int32_t> vocab;  // model vocabulary, byte-level strings
  std::unordered_map<std::string, int32_t> added_by_content;
  std::vector<std::string> id_to_token;  // indexed by id; "" where kind is kNone
  std::vector<std::string> id_to_bytes;  // decoded bytes of each id
  std::vector<TokenKind> id_kind;
  MergeTable merges;
  std::array<int32_t, 256> byte_ids{};  // id of each byte's one-char token, -1 if absent
  bool ignore_merges = false;
  bool nfc = false;

  // Added tokens grouped by first byte, longest content first.
  std::array<std::vector<AddedToken>, 256> added_by_first_byte;
  std::array<bool, 256> added_first_byte{};

  std::shared_ptr<pcre2_code> split_regex;  // null: no split (whole piece is one pre-token)
  bool split_jit = false;

  std::optional<int32_t> eos_id;
  std::optional<int32_t> pad_id;

  // Per-Encode-call scratch state; never shared between calls, so Encode stays const and
  // thread-safe.
  struct EncodeState {
    std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache;
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
    std::unique_ptr<pcre2_match_data, PcreMatchDataDeleter> match_data;
  };

  static absl::StatusOr<std::shared_ptr<Impl>> Parse(std::string_view json);
  std::optional<int32_t> Lookup(std::string_view token) const;
  void EncodePiece(std::string_view piece, EncodeState& st, std::vector<int32_t>& out) const;
  void Bpe(std::string_view piece, EncodeState& st) const;
  void EncodeSegment(std::string_view raw, EncodeState& st, std::vector<int32_t>& out) const;
};

namespace {

absl::Status Invalid(absl::string_view where, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", where, ": ", what));
}

absl::Status Unsupported(absl::string_view where, absl::string_view what) {
  return absl::UnimplementedError(absl::StrCat("tokenizer.json: ", where, ": ", what));
}

// Reads an optional bool field (absent or null -> `dflt`).
absl::StatusOr<bool> OptBool(const Json& obj, const char* key, bool dflt, absl::string_view where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return dflt;
  if (!it->is_boolean()) return Invalid(absl::StrCat(where, ".", key), "expected a boolean");
  return it->get<bool>();
}

absl::StatusOr<std::string> OptString(const Json& obj, const char* key, absl::string_view where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::string();
  if (!it->is_string()) return Invalid(absl::StrCat(where, ".", key), "expected a string");
  return it->get<std::string>();
}

absl::StatusOr<int32_t> ToId(const Json& v, absl::string_view where) {
  if (!v.is_number_integer()) return Invalid(where, "expected an integer id");
  const int64_t id = v.get<int64_t>();
  if (id < 0 || id > (int64_t{1} << 30)) {
    return Invalid(where, absl::StrFormat("id %d out of range [0, 2^30]", id));
  }
  return static_cast<int32_t>(id);
}

absl::Status CheckByteLevel(const Json& pt, absl::string_view where, bool* use_regex) {
  QATD_ASSIGN_OR_RETURN(bool prefix, OptBool(pt, "add_prefix_space", true, where));
  if (prefix) return Unsupported(where, "ByteLevel add_prefix_space=true is not supported");
  QATD_ASSIGN_OR_RETURN(*use_regex, OptBool(pt, "use_regex", true, where));
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<pcre2_code>> CompileRegex(std::string_view pattern, bool literal,
                                                         absl::string_view where, bool* jit) {
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  uint32_t options = PCRE2_UTF | PCRE2_UCP;
  if (literal) options |= PCRE2_LITERAL;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options, &err,
                    &err_offset, nullptr);
  if (code == nullptr) {
    std::array<PCRE2_UCHAR, 256> msg{};
    pcre2_get_error_message(err, msg.data(), msg.size());
    return Invalid(where, absl::StrFormat("regex does not compile at offset %d: %s",
                                          err_offset, reinterpret_cast<const char*>(msg.data())));
  }
  // JIT is an optimisation only: without it pcre2_match interprets the same pattern.
  *jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return std::shared_ptr<pcre2_code>(code, PcreCodeDeleter());
}

absl::Status ParseNormalizer(const Json& root, Tokenizer::Impl& impl) {
  auto it = root.find("normalizer");
  if (it == root.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_object()) return Invalid("normalizer", "expected an object or null");
  QATD_ASSIGN_OR_RETURN(std::string type, OptString(*it, "type", "normalizer"));
  if (type != "NFC") {
    return Unsupported("normalizer.type", absl::StrCat("'", type, "' (only NFC is supported)"));
  }
  impl.nfc = true;
  return absl::OkStatus();
}

absl::Status ParsePreTokenizer(const Json& root, Tokenizer::Impl& impl) {
  auto it = root.find("pre_tokenizer");
  if (it == root.end() || it->is_null() || !it->is_object()) {
    return Unsupported("pre_tokenizer", "a ByteLevel pre-tokenizer is required");
  }
  QATD_ASSIGN_OR_RETURN(std::string type, OptString(*it, "type", "pre_tokenizer"));
  if (type == "ByteLevel") {
    bool use_regex = true;
    QATD_RETURN_IF_ERROR(CheckByteLevel(*it, "pre_tokenizer", &use_regex));
    if (use_regex) {
      QATD_ASSIGN_OR_RETURN(impl.split_regex,
                            CompileRegex(kGpt2SplitRegex, false, "pre_tokenizer", &impl.split_jit));
    }
    return absl::OkStatus();
  }
  if (type != "Sequence") {
    return Unsupported("pre_tokenizer.type",
                       absl::StrCat("'", type, "' (expected Sequence or ByteLevel)"));
  }
  auto seq = it->find("pretokenizers");
  if (seq == it->end() || !seq->is_array() || seq->size() != 2 || !(*seq)[0].is_object() ||
      !(*seq)[1].is_object()) {
    return Unsupported("pre_tokenizer.pretokenizers", "expected [Split, ByteLevel]");
  }
  const Json& split = (*seq)[0];
  const Json& byte_level = (*seq)[1];
  QATD_ASSIGN_OR_RETURN(std::string split_type,
                        OptString(split, "type", "pre_tokenizer.pretokenizers[0]"));
  QATD_ASSIGN_OR_RETURN(std::string bl_type,
                        OptString(byte_level, "type", "pre_tokenizer.pretokenizers[1]"));
  if (split_type != "Split" || bl_type != "ByteLevel") {
    return Unsupported("pre_tokenizer.pretokenizers",
                       absl::StrCat("expected [Split, ByteLevel], got [", split_type, ", ",
                                    bl_type, "]"));
  }
  bool use_regex = true;
  QATD_RETURN_IF_ERROR(CheckByteLevel(byte_level, "pre_tokenizer.pretokenizers[1]", &use_regex));
  if (use_regex) {
    return Unsupported("pre_tokenizer.pretokenizers[1]",
                       "ByteLevel use_regex=true after a Split is not supported");
  }
  constexpr absl::string_view kSplitWhere = "pre_tokenizer.pretokenizers[0]";
  QATD_ASSIGN_OR_RETURN(std::string behavior, OptString(split, "behavior", kSplitWhere));
  QATD_ASSIGN_OR_RETURN(bool invert, OptBool(split, "invert", false, kSplitWhere));
  if (behavior != "Isolated" || invert) {
    return Unsupported(kSplitWhere, absl::StrCat("only behavior Isolated without invert is "
                                                 "supported, got behavior '", behavior, "'"));
  }
  auto pattern = split.find("pattern");
  if (pattern == split.end() || !pattern->is_object()) {
    return Invalid(absl::StrCat(kSplitWhere, ".pattern"), "expected {\"Regex\": ...}");
  }
  bool literal = false;
  auto text = pattern->find("Regex");
  if (text == pattern->end()) {
    text = pattern->find("String");
    literal = true;
  }
  if (text == pattern->end() || !text->is_string()) {
    return Invalid(absl::StrCat(kSplitWhere, ".pattern"),
                   "expected {\"Regex\": string} or {\"String\": string}");
  }
  QATD_ASSIGN_OR_RETURN(impl.split_regex,
                        CompileRegex(text->get<std::string>(), literal,
                                     absl::StrCat(kSplitWhere, ".pattern"), &impl.split_jit));
  return absl::OkStatus();
}

absl::Status ParseDecoder(const Json& root) {
  auto it = root.find("decoder");
  if (it == root.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_object()) return Invalid("decoder", "expected an object or null");
  QATD_ASSIGN_OR_RETURN(std::string type, OptString(*it, "type", "decoder"));
  if (type != "ByteLevel") {
    return Unsupported("decoder.type", absl::StrCat("'", type, "' (only ByteLevel)"));
  }
  return absl::OkStatus();
}

// Parses one merges entry ("a b" or ["a", "b"]).
absl::StatusOr<std::pair<std::string, std::string>> ParseMerge(const Json& m, size_t index) {
  const auto where = [&] { return absl::StrCat("model.merges[", index, "]"); };
  if (m.is_string()) {
    const std::string& s = m.get_ref<const std::string&>();
    std::vector<std::string> parts = absl::StrSplit(s, ' ');
    if (parts.size() != 2) {
      return Invalid(where(), absl::StrCat("expected \"a b\" (one space), got \"", s, "\""));
    }
    return std::make_pair(std::move(parts[0]), std::move(parts[1]));
  }
  if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
    return std::make_pair(m[0].get<std::string>(), m[1].get<std::string>());
  }
  return Invalid(where(), "expected \"a b\" or [\"a\", \"b\"]");
}

absl::Status ParseModel(const Json& root, Tokenizer::Impl& impl) {
  auto mit = root.find("model");
  if (mit == root.end() || !mit->is_object()) return Invalid("model", "missing or not an object");
  const Json& model = *mit;
  QATD_ASSIGN_OR_RETURN(std::string type, OptString(model, "type", "model"));
  if (type != "BPE") {
    return Unsupported("model.type", absl::StrCat("'", type, "' (only BPE is supported)"));
  }
  auto dropout = model.find("dropout");
  if (dropout != model.end() && !dropout->is_null() &&
      !(dropout->is_number() && dropout->get<double>() == 0.0)) {
    return Unsupported("model.dropout", "BPE dropout is not supported");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    QATD_ASSIGN_OR_RETURN(std::string v, OptString(model, key, "model"));
    if (!v.empty()) return Unsupported(absl::StrCat("model.", key), "must be empty");
  }
  QATD_ASSIGN_OR_RETURN(bool byte_fallback, OptBool(model, "byte_fallback", false, "model"));
  if (byte_fallback) return Unsupported("model.byte_fallback", "must be false");
  QATD_ASSIGN_OR_RETURN(impl.ignore_merges, OptBool(model, "ignore_merges", false, "model"));

  auto vit = model.find("vocab");
  if (vit == model.end() || !vit->is_object()) {
    return Invalid("model.vocab", "missing or not an object");
  }
  impl.vocab.reserve(vit->size());
  for (const auto& [token, id_json] : vit->items()) {
    QATD_ASSIGN_OR_RETURN(int32_t id, ToId(id_json, absl::StrCat("model.vocab[\"", token, "\"]")));
    impl.vocab.emplace(token, id);
  }

  auto merges = model.find("merges");
  if (merges == model.end() || !merges->is_array()) {
    return Invalid("model.merges", "missing or not an array");
  }
  impl.merges.Reserve(merges->size());
  for (size_t i = 0; i < merges->size(); ++i) {
    QATD_ASSIGN_OR_RETURN(auto pair, ParseMerge((*merges)[i], i));
    auto a = impl.vocab.find(pair.first);
    auto b = impl.vocab.find(pair.second);
    auto merged = impl.vocab.find(pair.first + pair.second);
    if (a == impl.vocab.end() || b == impl.vocab.end() || merged == impl.vocab.end()) {
      return Invalid(absl::StrCat("model.merges[", i, "]"),
                     absl::StrCat("merge \"", pair.first, " ", pair.second,
                                  "\" uses or makes a token that is not in model.vocab"));
    }
    impl.merges.Put(a->second, b->second,
                    MergeTable::Merge{static_cast<int32_t>(i), merged->second});
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<AddedToken>> ParseAddedTokens(const Json& root) {
  std::vector<AddedToken> added;
  auto it = root.find("added_tokens");
  if (it == root.end() || it->is_null()) return added;
  if (!it->is_array()) return Invalid("added_tokens", "expected an array");
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& t = (*it)[i];
    const std::string where = absl::StrCat("added_tokens[", i, "]");
    if (!t.is_object()) return Invalid(where, "expected an object");
    AddedToken token;
    auto id = t.find("id");
    if (id == t.end()) return Invalid(where, "missing field 'id'");
    QATD_ASSIGN_OR_RETURN(token.id, ToId(*id, absl::StrCat(where, ".id")));
    QATD_ASSIGN_OR_RETURN(token.content, OptString(t, "content", where));
    if (token.content.empty()) return Invalid(absl::StrCat(where, ".content"), "empty or missing");
    if (!IsValidUtf8(token.content)) {
      return Invalid(absl::StrCat(where, ".content"), "not valid UTF-8");
    }
    QATD_ASSIGN_OR_RETURN(token.special, OptBool(t, "special", false, where));
    QATD_ASSIGN_OR_RETURN(token.lstrip, OptBool(t, "lstrip", false, where));
    QATD_ASSIGN_OR_RETURN(token.rstrip, OptBool(t, "rstrip", false, where));
    QATD_ASSIGN_OR_RETURN(bool single_word, OptBool(t, "single_word", false, where));
    if (single_word) return Unsupported(absl::StrCat(where, ".single_word"), "must be false");
    added.push_back(std::move(token));
  }
  return added;
}

// The bytes a model token decodes to: each char mapped back through the byte alphabet, or
// the token's own UTF-8 bytes when some char is outside the alphabet (as `tokenizers`' ByteLevel
// decoder does).
std::string TokenBytes(std::string_view token) {
  std::string bytes;
  size_t pos = 0;
  while (pos < token.size()) {
    char32_t cp = 0;
    const int len = DecodeUtf8(token, pos, &cp);
    const int b = len > 0 ? UnicodeToByte(cp) : -1;
    if (b < 0) return std::string(token);
    bytes.push_back(static_cast<char>(b));
    pos += len;
  }
  return bytes;
}

absl::Status BuildTables(std::vector<AddedToken> added, Tokenizer::Impl& impl) {
  int32_t max_id = -1;
  for (const auto& [token, id] : impl.vocab) max_id = std::max(max_id, id);
  for (const AddedToken& t : added) max_id = std::max(max_id, t.id);
  const size_t n = static_cast<size_t>(max_id + 1);
  impl.id_to_token.assign(n, std::string());
  impl.id_to_bytes.assign(n, std::string());
  impl.id_kind.assign(n, TokenKind::kNone);
  for (const auto& [token, id] : impl.vocab) {
    if (impl.id_kind[id] != TokenKind::kNone) {
      return Invalid("model.vocab",
                     absl::StrCat("id ", id, " is used by \"", impl.id_to_token[id],
                                  "\" and \"", token, "\""));
    }
    impl.id_to_token[id] = token;
    impl.id_to_bytes[id] = TokenBytes(token);
    impl.id_kind[id] = TokenKind::kModel;
  }
  for (AddedToken& t : added) {
    // An added token may repeat a vocabulary entry (same id); it then decodes verbatim.
    impl.id_to_token[t.id] = t.content;
    impl.id_to_bytes[t.id] = t.content;
    impl.id_kind[t.id] = t.special ? TokenKind::kAddedSpecial : TokenKind::kAdded;
    impl.added_by_content[t.content] = t.id;
    const auto first = static_cast<uint8_t>(t.content[0]);
    impl.added_first_byte[first] = true;
    impl.added_by_first_byte[first].push_back(std::move(t));
  }
  for (auto& group : impl.added_by_first_byte) {
    std::stable_sort(group.begin(), group.end(), [](const AddedToken& a, const AddedToken& b) {
      return a.content.size() > b.content.size();
    });
  }
  for (int b = 0; b < 256; ++b) {
    auto it = impl.vocab.find(ByteToUnicodeUtf8(static_cast<uint8_t>(b)));
    impl.byte_ids[b] = it == impl.vocab.end() ? -1 : it->second;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path.string()));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("error reading ", path.string()));
  return ss.str();
}

// Reads eos_token / pad_token of tokenizer_config.json ("" when absent or null).
absl::StatusOr<std::string> ConfigTokenName(const Json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::string();
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto content = it->find("content");
    if (content != it->end() && content->is_string()) return content->get<std::string>();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "tokenizer_config.json: ", key, ": expected a string or {\"content\": string}"));
}

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

absl::StatusOr<std::shared_ptr<Tokenizer::Impl>> Tokenizer::Impl::Parse(std::string_view json) {
  Json root = Json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return absl::InvalidArgumentError("tokenizer.json: not valid JSON");
  if (!root.is_object()) return Invalid("(root)", "expected a JSON object");
  auto impl = std::make_shared<Impl>();
  QATD_RETURN_IF_ERROR(ParseModel(root, *impl));
  QATD_ASSIGN_OR_RETURN(std::vector<AddedToken> added, ParseAddedTokens(root));
  QATD_RETURN_IF_ERROR(ParseNormalizer(root, *impl));
  QATD_RETURN_IF_ERROR(ParsePreTokenizer(root, *impl));
  QATD_RETURN_IF_ERROR(ParseDecoder(root));
  QATD_RETURN_IF_ERROR(BuildTables(std::move(added), *impl));
  return impl;
}

absl::StatusOr<Tokenizer> Tokenizer::FromJson(std::string_view json_text) {
  QATD_ASSIGN_OR_RETURN(std::shared_ptr<Impl> impl, Impl::Parse(json_text));
  return Tokenizer(std::move(impl));
}

absl::StatusOr<Tokenizer> Tokenizer::FromFile(const std::string& path) {
  std::filesystem::path file(path);
  std::error_code ec;
  if (std::filesystem::is_directory(file, ec)) file /= "tokenizer.json";
  QATD_ASSIGN_OR_RETURN(std::string text, ReadFile(file));
  absl::StatusOr<std::shared_ptr<Impl>> parsed = Impl::Parse(text);
  if (!parsed.ok()) {
    return absl::Status(parsed.status().code(),
                        absl::StrCat(file.string(), ": ", parsed.status().message()));
  }
  std::shared_ptr<Impl> impl = *std::move(parsed);
  const std::filesystem::path config_path = file.parent_path() / "tokenizer_config.json";
  if (std::filesystem::exists(config_path, ec)) {
    QATD_ASSIGN_OR_RETURN(std::string config_text, ReadFile(config_path));
    Json config = Json::parse(config_text, nullptr, /*allow_exceptions=*/false);
    if (config.is_discarded() || !config.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(config_path.string(), ": not a valid JSON object"));
    }
    const std::pair<const char*, std::optional<int32_t>*> targets[] = {
        {"eos_token", &impl->eos_id}, {"pad_token", &impl->pad_id}};
    for (const auto& [key, target] : targets) {
      QATD_ASSIGN_OR_RETURN(std::string name, ConfigTokenName(config, key));
      if (name.empty()) continue;
      *target = impl->Lookup(name);
      if (!target->has_value()) {
        return absl::InvalidArgumentError(
            absl::StrCat(config_path.string(), ": ", key, " '", name, "' is not a token"));
      }
    }
  }
  return Tokenizer(std::move(impl));
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
