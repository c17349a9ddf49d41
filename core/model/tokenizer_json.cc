// Reading a Tokenizer: tokenizer.json (added tokens, the BPE model's vocab and merges, and the
// validation of normalizer, pre_tokenizer and decoder) and the optional tokenizer_config.json.
#include <algorithm>
#include <array>
#include <filesystem>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "core/common/input_file.h"
#include "core/common/status_macros.h"
#include "core/model/tokenizer.h"
#include "core/model/tokenizer_impl.h"
#include "core/model/unicode.h"
#include "nlohmann/json.hpp"

namespace qatd::model {

using tokenizer_internal::AddedToken;
using tokenizer_internal::MergeTable;
using tokenizer_internal::TokenKind;

namespace {

using Json = nlohmann::json;

// The GPT-2 split regex, used when the pre-tokenizer is a lone ByteLevel with use_regex=true.
constexpr std::string_view kGpt2SplitRegex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

struct PcreCodeDeleter {
  void operator()(pcre2_code* code) const { pcre2_code_free(code); }
};

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

// Ids index dense tables (two strings and a kind per id, BuildTables), so the largest id
// decides what they cost: below 2^24 that is at most ~1.1 GiB, for any tokenizer.json. The
// largest real vocabularies are near 2^18 (Qwen3: 151,669 ids).
constexpr int64_t kMaxTokenIds = int64_t{1} << 24;

absl::StatusOr<int32_t> ToId(const Json& v, absl::string_view where) {
  if (!v.is_number_integer()) return Invalid(where, "expected an integer id");
  const bool in_range = v.is_number_unsigned()
                            ? v.get<uint64_t>() < static_cast<uint64_t>(kMaxTokenIds)
                            : v.get<int64_t>() >= 0 && v.get<int64_t>() < kMaxTokenIds;
  if (!in_range) {
    return Invalid(where, absl::StrCat("id ", v.dump(), " is out of range: token ids must be below ", kMaxTokenIds,
                                       " (2^24)"));
  }
  return static_cast<int32_t>(v.get<int64_t>());
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
  // PCRE2 refuses UCP next to LITERAL (a literal has no classes for UCP to widen).
  const uint32_t options = literal ? PCRE2_UTF | PCRE2_LITERAL : PCRE2_UTF | PCRE2_UCP;
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
    QATD_ASSIGN_OR_RETURN(token.content, OptString(t, "content", where));
    if (token.content.empty()) return Invalid(absl::StrCat(where, ".content"), "empty or missing");
    if (!IsValidUtf8(token.content)) {
      return Invalid(absl::StrCat(where, ".content"), "not valid UTF-8");
    }
    // The content names the token in id errors (a prefix of it: contents can be long).
    QATD_ASSIGN_OR_RETURN(token.id, ToId(*id, absl::StrCat(where, " \"", token.content.substr(0, 64), "\"")));
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

// tokenizer.json of the largest vocabularies is ~35 MB; tokenizer_config.json ~100 KB.
constexpr int64_t kMaxTokenizerJsonBytes = int64_t{256} << 20;
constexpr int64_t kMaxTokenizerConfigBytes = int64_t{16} << 20;

// A regular file of at most `max_bytes` (a device, a FIFO or a huge file is refused unread).
absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path, int64_t max_bytes) {
  QATD_ASSIGN_OR_RETURN(InputFile in, InputFile::Open(path.string()));
  if (in.size() > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), " holds ", FormatBytes(in.size()), ", more than the ",
                                                   FormatBytes(max_bytes), " a ", path.filename().string(),
                                                   " may hold"));
  }
  return in.ReadAll(max_bytes);
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

}  // namespace

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
  QATD_ASSIGN_OR_RETURN(std::string text, ReadFile(file, kMaxTokenizerJsonBytes));
  absl::StatusOr<std::shared_ptr<Impl>> parsed = Impl::Parse(text);
  if (!parsed.ok()) {
    return absl::Status(parsed.status().code(),
                        absl::StrCat(file.string(), ": ", parsed.status().message()));
  }
  std::shared_ptr<Impl> impl = *std::move(parsed);
  const std::filesystem::path config_path = file.parent_path() / "tokenizer_config.json";
  if (std::filesystem::exists(config_path, ec)) {
    QATD_ASSIGN_OR_RETURN(std::string config_text, ReadFile(config_path, kMaxTokenizerConfigBytes));
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

}  // namespace qatd::model
