// Tests of the byte-level BPE tokenizer against the Hugging Face golden cases
// (tests/data/golden/tokenizer_cases.jsonl, see tests/data/golden/README.md).

#include "core/model/tokenizer.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/model/unicode.h"
#include "gtest/gtest.h"
#include "core/common/file_util.h"
#include "nlohmann/json.hpp"

namespace qatd::model {
namespace {

using Json = nlohmann::json;

const std::string kGoldenDir = std::string(QATD_TEST_DATA) + "/golden";
const std::string kTokenizerDir = kGoldenDir + "/qwen3-tokenizer";

std::vector<Json> ReadJsonl(const std::string& path) {
  std::ifstream in(path);
  std::vector<Json> rows;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) rows.push_back(Json::parse(line));
  }
  return rows;
}

class TokenizerGoldenTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<Tokenizer> t = Tokenizer::FromFile(kTokenizerDir);
    ASSERT_TRUE(t.ok()) << t.status();
    tokenizer_ = new Tokenizer(*std::move(t));
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
  }
  static const Tokenizer& tok() { return *tokenizer_; }

  static Tokenizer* tokenizer_;
};

Tokenizer* TokenizerGoldenTest::tokenizer_ = nullptr;

TEST_F(TokenizerGoldenTest, EveryGoldenCaseEncodesAndDecodesExactly) {
  const std::vector<Json> cases = ReadJsonl(kGoldenDir + "/tokenizer_cases.jsonl");
  ASSERT_EQ(cases.size(), 162u);
  int checked = 0;
  for (const Json& c : cases) {
    SCOPED_TRACE(c["id"].get<std::string>() + " (" + c["category"].get<std::string>() + ")");
    const std::string text = c["text"];
    const std::vector<int32_t> want = c["ids"].get<std::vector<int32_t>>();
    const std::vector<int32_t> got = tok().Encode(text);
    EXPECT_EQ(got, want);
    const std::vector<std::string> tokens = c["tokens"].get<std::vector<std::string>>();
    ASSERT_EQ(tokens.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(tok().IdToToken(want[i]), tokens[i]);
      EXPECT_EQ(tok().TokenToId(tokens[i]), want[i]);
    }
    EXPECT_EQ(tok().Decode(want), c["decoded"].get<std::string>());
    EXPECT_EQ(tok().Decode(want, /*skip_special_tokens=*/true),
              c["decoded_skip_special"].get<std::string>());
    ++checked;
  }
  EXPECT_EQ(checked, 162);
}

TEST_F(TokenizerGoldenTest, VocabularyAndConfigTokens) {
  EXPECT_EQ(tok().vocab_size(), 151669);
  EXPECT_EQ(tok().eos_token_id(), 151645);  // <|im_end|>
  EXPECT_EQ(tok().pad_token_id(), 151643);  // <|endoftext|>
  EXPECT_EQ(tok().TokenToId("<|im_start|>"), 151644);
  EXPECT_EQ(tok().TokenToId("<think>"), 151667);
  EXPECT_EQ(tok().TokenToId("Ġworld"), 1879);
  EXPECT_EQ(tok().TokenToId("no such token"), std::nullopt);
  EXPECT_EQ(tok().IdToToken(151645), "<|im_end|>");
  EXPECT_EQ(tok().IdToToken(151669), std::nullopt);
  EXPECT_EQ(tok().IdToToken(-1), std::nullopt);
  EXPECT_TRUE(tok().IsSpecial(151645));
  EXPECT_FALSE(tok().IsSpecial(151667));  // <think> is added but not special
  EXPECT_FALSE(tok().IsSpecial(1879));
}

TEST_F(TokenizerGoldenTest, NearMissAddedTokensAreText) {
  for (const std::string text :
       {"<|im_start", "<|IM_START|>", "< |im_start| >", "im_start|>", "<think", "<|im_end|"}) {
    SCOPED_TRACE(text);
    const std::vector<int32_t> ids = tok().Encode(text);
    EXPECT_GT(ids.size(), 1u);
    for (int32_t id : ids) EXPECT_LT(id, 151643) << "added token matched in a near miss";
    EXPECT_EQ(tok().Decode(ids), text);
  }
  // Longest match wins and matching happens on the raw text, even inside words.
  EXPECT_EQ(tok().Encode("x<|im_end|>y<|im_start|>"),
            (std::vector<int32_t>{tok().Encode("x")[0], 151645, tok().Encode("y")[0], 151644}));
}

TEST_F(TokenizerGoldenTest, SkipSpecialKeepsNonSpecialAddedTokens) {
  const std::vector<int32_t> ids = tok().Encode("<|im_start|>a<think>b</think><|endoftext|>");
  EXPECT_EQ(tok().Decode(ids, true), "a<think>b</think>");
  EXPECT_EQ(tok().Decode(ids, false), "<|im_start|>a<think>b</think><|endoftext|>");
}

TEST_F(TokenizerGoldenTest, DecodeSkipsUnknownIdsAndRepairsPartialCharacters) {
  const std::vector<int32_t> euro = tok().Encode("€");  // 3 bytes, several byte tokens
  std::vector<int32_t> ids = {-5, 999999};
  ids.insert(ids.end(), euro.begin(), euro.end());
  EXPECT_EQ(tok().Decode(ids), "€");
  const std::string gothic = "\xF0\x90\x8D\x88";  // U+10348, two tokens (golden t116)
  const std::vector<int32_t> split = tok().Encode(gothic);
  ASSERT_EQ(split, (std::vector<int32_t>{126190, 230}));
  const std::vector<int32_t> head = {split[0]};
  EXPECT_EQ(tok().Decode(head), std::string(kUtf8ReplacementChar));
  EXPECT_EQ(tok().DecodeBytes(head), gothic.substr(0, 3));
  EXPECT_EQ(tok().DecodeBytes(split), gothic);
}

TEST_F(TokenizerGoldenTest, InvalidUtf8IsEncodedAsReplacementCharacters) {
  EXPECT_EQ(tok().Encode("a\xFF" "b"), tok().Encode("a\xEF\xBF\xBD" "b"));
  EXPECT_EQ(tok().Decode(tok().Encode("x\xC3")), "x\xEF\xBF\xBD");
}

TEST_F(TokenizerGoldenTest, RoundTripsLongAndAwkwardInputs) {
  const std::vector<std::string> texts = {
      std::string(100000, ' '),                     // one huge whitespace pre-token
      std::string(50000, ' ') + "x",                // \s+(?!\S) backtracking
      std::string(20000, '\n') + std::string(3000, '\t') + "end",
      std::string(30000, 'a'),                      // one huge letter pre-token
      std::string("nul\0byte", 8),
      "e\xCC\x81 and A\xCC\x8A",                    // decomposed: NFC composes them
  };
  for (const std::string& text : texts) {
    SCOPED_TRACE(text.substr(0, 16));
    const std::vector<int32_t> ids = tok().Encode(text);
    absl::StatusOr<std::string> nfc = NfcNormalize(text);
    ASSERT_TRUE(nfc.ok());
    EXPECT_EQ(tok().Decode(ids), *nfc);
  }
  EXPECT_EQ(tok().Encode("e\xCC\x81"), tok().Encode("\xC3\xA9"));
}

TEST(TokenizerFileTest, AcceptsFileOrDirectoryAndReportsMissingFiles) {
  absl::StatusOr<Tokenizer> from_file = Tokenizer::FromFile(kTokenizerDir + "/tokenizer.json");
  ASSERT_TRUE(from_file.ok()) << from_file.status();
  EXPECT_EQ(from_file->eos_token_id(), 151645);
  absl::StatusOr<Tokenizer> missing = Tokenizer::FromFile(kGoldenDir + "/no-such-dir");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("no-such-dir"), std::string::npos);
}

using MergeList = std::vector<std::pair<std::string, std::string>>;

const MergeList kTinyMerges = {{"h", "e"},  {"l", "l"}, {"he", "ll"},   {"hell", "o"},
                               {"Ġ", "w"},  {"o", "r"}, {"Ġw", "or"},  {"l", "d"},
                               {"Ġwor", "ld"}, {"Ġ", "Ġ"}};

// A tiny byte-level tokenizer.json: the 256 byte tokens plus one token per merge, with the
// merges written either as "a b" strings or as ["a", "b"] pairs.
std::string TinyTokenizerJson(bool pair_merges, const MergeList& merges = kTinyMerges) {
  Json vocab = Json::object();
  int id = 0;
  for (int b = 0; b < 256; ++b) vocab[ByteToUnicodeUtf8(static_cast<uint8_t>(b))] = id++;
  Json merge_list = Json::array();
  for (const auto& [a, b] : merges) {
    if (!vocab.contains(a + b)) vocab[a + b] = id++;
    merge_list.push_back(pair_merges ? Json::array({a, b}) : Json(a + " " + b));
  }
  const std::string split_regex = R"( ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
  const Json byte_level = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}};
  Json root = {
      {"version", "1.0"},
      {"added_tokens",
       Json::array({{{"id", id}, {"content", "<|end|>"}, {"special", true}},
                    {{"id", id + 1}, {"content", "<tag>"}, {"special", false}}})},
      {"normalizer", {{"type", "NFC"}}},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         Json::array({{{"type", "Split"},
                       {"pattern", {{"Regex", split_regex}}},
                       {"behavior", "Isolated"},
                       {"invert", false}},
                      byte_level})}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
        {"continuing_subword_prefix", ""}, {"end_of_word_suffix", ""}, {"fuse_unk", false},
        {"byte_fallback", false}, {"ignore_merges", false}, {"vocab", vocab},
        {"merges", merge_list}}}};
  return root.dump();
}

TEST(TokenizerMergesTest, StringAndPairMergeFormsEncodeIdentically) {
  absl::StatusOr<Tokenizer> strings = Tokenizer::FromJson(TinyTokenizerJson(false));
  absl::StatusOr<Tokenizer> pairs = Tokenizer::FromJson(TinyTokenizerJson(true));
  ASSERT_TRUE(strings.ok()) << strings.status();
  ASSERT_TRUE(pairs.ok()) << pairs.status();
  for (const std::string text :
       {"hello world", "hello<|end|>  world<tag>!", "héllo wörld 123", "", "  \n\n x"}) {
    SCOPED_TRACE(text);
    EXPECT_EQ(strings->Encode(text), pairs->Encode(text));
    EXPECT_EQ(pairs->Decode(pairs->Encode(text)), text);
  }
  const std::vector<int32_t> ids = pairs->Encode("hello world");
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(pairs->IdToToken(ids[0]), "hello");
  EXPECT_EQ(pairs->IdToToken(ids[1]), "Ġworld");
  EXPECT_EQ(pairs->vocab_size(), 256 + 10 + 2);
  EXPECT_EQ(pairs->Decode(pairs->Encode("a<|end|>b<tag>"), true), "ab<tag>");
}

TEST(TokenizerMergesTest, LowestRankMergeWinsOverLeftmost) {
  const auto encode_tokens = [](const MergeList& merges, const std::string& text) {
    absl::StatusOr<Tokenizer> t = Tokenizer::FromJson(TinyTokenizerJson(true, merges));
    EXPECT_TRUE(t.ok()) << t.status();
    std::vector<std::string> tokens;
    if (!t.ok()) return tokens;
    for (int32_t id : t->Encode(text)) tokens.push_back(t->IdToToken(id).value_or("?"));
    return tokens;
  };
  EXPECT_EQ(encode_tokens({{"e", "l"}, {"l", "l"}}, "ell"),
            (std::vector<std::string>{"el", "l"}));
  EXPECT_EQ(encode_tokens({{"l", "l"}, {"e", "l"}}, "ell"),
            (std::vector<std::string>{"e", "ll"}));
  // Equal ranks: leftmost first, and overlapping occurrences do not both merge.
  EXPECT_EQ(encode_tokens({{"l", "l"}}, "lll"), (std::vector<std::string>{"ll", "l"}));
  EXPECT_EQ(encode_tokens({{"l", "l"}, {"ll", "ll"}}, "lllll"),
            (std::vector<std::string>{"llll", "l"}));
}

// Found while seeding tests/fuzz/tokenizer_fuzz.cc: a {"String": ...} Split pattern was compiled
// with PCRE2_LITERAL | PCRE2_UCP, which PCRE2 refuses, so no such tokenizer.json loaded.
TEST(TokenizerPreTokenizerTest, ALiteralStringSplitPatternSplitsOnTheLiteral) {
  Json j = Json::parse(TinyTokenizerJson(true));
  Json& split = j["pre_tokenizer"]["pretokenizers"][0];
  split["pattern"] = {{"String", " "}};
  absl::StatusOr<Tokenizer> t = Tokenizer::FromJson(j.dump());
  ASSERT_TRUE(t.ok()) << t.status();
  const auto tokens = [&](const Tokenizer& tok, const std::string& text) {
    std::vector<std::string> out;
    for (int32_t id : tok.Encode(text)) out.push_back(tok.IdToToken(id).value_or("?"));
    return out;
  };
  // Isolated: "hello", " ", "world" are pieces of their own, so no "Ġw" merge.
  EXPECT_EQ(tokens(*t, "hello world"), (std::vector<std::string>{"hello", "Ġ", "w", "or", "ld"}));
  split["pattern"] = {{"String", "."}};  // a literal dot, not "any character"
  t = Tokenizer::FromJson(j.dump());
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(tokens(*t, "he.ll"), (std::vector<std::string>{"he", ".", "ll"}));
}

TEST(TokenizerMalformedTest, RejectsBadJsonWithClearErrors) {
  struct Case {
    std::string json;
    absl::StatusCode code;
    std::string message_part;
  };
  Json base = Json::parse(TinyTokenizerJson(false));
  const auto with = [&](const std::function<void(Json&)>& edit) {
    Json j = base;
    edit(j);
    return j.dump();
  };
  const std::vector<Case> cases = {
      {"{not json", absl::StatusCode::kInvalidArgument, "not valid JSON"},
      {"[1, 2]", absl::StatusCode::kInvalidArgument, "expected a JSON object"},
      {with([](Json& j) { j.erase("model"); }), absl::StatusCode::kInvalidArgument, "model"},
      {with([](Json& j) { j["model"].erase("vocab"); }), absl::StatusCode::kInvalidArgument,
       "model.vocab"},
      {with([](Json& j) { j["model"]["vocab"]["h"] = "seven"; }),
       absl::StatusCode::kInvalidArgument, "model.vocab[\"h\"]"},
      {with([](Json& j) { j["model"]["merges"][3] = "a b c"; }),
       absl::StatusCode::kInvalidArgument, "model.merges[3]"},
      {with([](Json& j) { j["model"]["merges"][2] = Json::array({"he"}); }),
       absl::StatusCode::kInvalidArgument, "model.merges[2]"},
      {with([](Json& j) { j["model"]["merges"][0] = "h zz"; }),
       absl::StatusCode::kInvalidArgument, "not in model.vocab"},
      {with([](Json& j) { j["model"]["type"] = "WordPiece"; }),
       absl::StatusCode::kUnimplemented, "model.type"},
      {with([](Json& j) { j["normalizer"] = {{"type", "NFKC"}}; }),
       absl::StatusCode::kUnimplemented, "normalizer"},
      {with([](Json& j) {
         j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
       }),
       absl::StatusCode::kInvalidArgument, "regex does not compile"},
      {with([](Json& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed"; }),
       absl::StatusCode::kUnimplemented, "Isolated"},
      {with([](Json& j) { j["added_tokens"][0].erase("id"); }),
       absl::StatusCode::kInvalidArgument, "added_tokens[0]"},
      {with([](Json& j) { j["added_tokens"][1]["single_word"] = true; }),
       absl::StatusCode::kUnimplemented, "added_tokens[1].single_word"},
      {with([](Json& j) { j["model"]["vocab"]["dup"] = 5; }),
       absl::StatusCode::kInvalidArgument, "id 5"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.message_part);
    absl::StatusOr<Tokenizer> t = Tokenizer::FromJson(c.json);
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.status().code(), c.code) << t.status();
    EXPECT_NE(t.status().message().find(c.message_part), std::string::npos) << t.status();
  }
}

// Issue #14, item 9: an id of 2^30 used to size the id tables (two strings per id: 64 GiB)
// and end in std::bad_alloc. Ids are bounded before anything is allocated from them.
TEST(TokenizerBoundsTest, AnIdOf2To30IsRefusedNamingTheTokenAndTheBound) {
  Json base = Json::parse(TinyTokenizerJson(false));
  Json vocab_case = base;
  vocab_case["model"]["vocab"]["Ġworld"] = 1 << 30;
  absl::StatusOr<Tokenizer> t = Tokenizer::FromJson(vocab_case.dump());
  ASSERT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << t.status();
  EXPECT_NE(t.status().message().find("model.vocab[\"Ġworld\"]: id 1073741824 is out of range: token ids must "
                                      "be below 16777216"),
            std::string::npos)
      << t.status();

  Json added_case = base;
  added_case["added_tokens"][0]["id"] = 1 << 30;
  t = Tokenizer::FromJson(added_case.dump());
  ASSERT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << t.status();
  EXPECT_NE(t.status().message().find("added_tokens[0] \"<|end|>\": id 1073741824 is out of range"),
            std::string::npos)
      << t.status();

  // The bound itself is the first id refused.
  Json at_bound = base;
  at_bound["added_tokens"][1]["id"] = 1 << 24;
  t = Tokenizer::FromJson(at_bound.dump());
  EXPECT_NE(t.status().message().find("id 16777216 is out of range"), std::string::npos) << t.status();
}

TEST(TokenizerBoundsTest, DevicesAndFifosAreRefusedNotReadForever) {
  const std::filesystem::path root =
      std::filesystem::temp_directory_path() / ("qatd_tokenizer_bounds." + std::to_string(::getpid()));
  (void)RemoveTree(root.string());
  std::filesystem::create_directories(root / "zero");
  const auto file = [&](const std::string& name) { return (root / name).string(); };
  std::filesystem::create_symlink("/dev/zero", file("zero/tokenizer.json"));
  absl::StatusOr<Tokenizer> t = Tokenizer::FromFile(file("zero"));
  ASSERT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << t.status();
  EXPECT_NE(t.status().message().find("tokenizer.json is a character device, not a regular file"), std::string::npos)
      << t.status();
  ASSERT_EQ(::mkfifo(file("fifo.json").c_str(), 0600), 0);
  t = Tokenizer::FromFile(file("fifo.json"));
  (void)RemoveTree(root.string());
  ASSERT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << t.status();
  EXPECT_NE(t.status().message().find("fifo.json is a FIFO, not a regular file"), std::string::npos) << t.status();
}

TEST(TokenizerAddedTokensTest, LstripAndRstripAbsorbWhitespace) {
  Json j = Json::parse(TinyTokenizerJson(false));
  j["added_tokens"][0]["lstrip"] = true;
  j["added_tokens"][0]["rstrip"] = true;
  absl::StatusOr<Tokenizer> t = Tokenizer::FromJson(j.dump());
  ASSERT_TRUE(t.ok()) << t.status();
  const int32_t end_id = *t->TokenToId("<|end|>");
  std::vector<int32_t> want = t->Encode("hello");
  want.push_back(end_id);
  for (int32_t id : t->Encode("world")) want.push_back(id);
  EXPECT_EQ(t->Encode("hello  <|end|> \n world"), want);
}

TEST(TokenizerUnicodeTest, ByteAlphabetIsABijection) {
  EXPECT_EQ(ByteToUnicode(' '), U'\u0120');
  EXPECT_EQ(ByteToUnicode('\n'), U'\u010A');
  EXPECT_EQ(ByteToUnicode('a'), U'a');
  EXPECT_EQ(ByteToUnicode(0xAD), U'\u0143');
  for (int b = 0; b < 256; ++b) EXPECT_EQ(UnicodeToByte(ByteToUnicode(b)), b);
  EXPECT_EQ(UnicodeToByte(U' '), -1);
  EXPECT_EQ(UnicodeToByte(U'\u4E00'), -1);
}

TEST(TokenizerUnicodeTest, LossyRepairReplacesMaximalSubparts) {
  EXPECT_EQ(ToValidUtf8Lossy("ok"), "ok");
  EXPECT_EQ(ToValidUtf8Lossy("\xC3"), "\xEF\xBF\xBD");
  EXPECT_EQ(ToValidUtf8Lossy("\xF0\x9F\x99"), "\xEF\xBF\xBD");             // truncated emoji
  EXPECT_EQ(ToValidUtf8Lossy("\xE0\x80" "a"), "\xEF\xBF\xBD\xEF\xBF\xBD" "a");  // overlong
  EXPECT_EQ(ToValidUtf8Lossy("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // > U+10FFFF
  EXPECT_TRUE(IsValidUtf8("\xF4\x8F\xBF\xBF"));
}

TEST(TokenizerUnicodeTest, NfcComposesAndRejectsInvalidUtf8) {
  EXPECT_EQ(*NfcNormalize("cafe\xCC\x81"), "caf\xC3\xA9");
  EXPECT_EQ(*NfcNormalize("\xE2\x84\xAB"), "\xC3\x85");  // Angstrom sign -> A with ring
  EXPECT_EQ(*NfcNormalize(std::string("a\0b\ne\xCC\x81", 7)), std::string("a\0b\n\xC3\xA9", 6));
  EXPECT_EQ(NfcNormalize("\xFF").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace qatd::model
