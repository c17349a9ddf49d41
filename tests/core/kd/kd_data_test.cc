// LibTorch-free parts of the KD cache: SHA-256, dataset readers, rendering, packing,
// shuffling, the sample stream, the cache json files and the shard writer.

#include <sys/stat.h>
#include <unistd.h>
#include "tests/core/kd/kd_test_dirs.h"

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/kd/cache_format.h"
#include "core/kd/cache_writer.h"
#include "core/kd/dataset.h"
#include "core/kd/packing.h"
#include "core/kd/render.h"
#include "core/kd/sample_stream.h"
#include "core/common/sha256.h"
#include "core/model/chat_template.h"
#include "core/model/safetensors.h"
#include "core/model/tokenizer.h"

namespace qatd::kd {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

const std::string kData = QATD_TEST_DATA;
const std::string kKd = kData + "/kd";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

using testdirs::FreshDir;

// ---------------------------------------------------------------------------------------
// SHA-256

TEST(Sha256Test, KnownVectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  // One million 'a', fed in uneven pieces to exercise the buffering.
  Sha256 h;
  const std::string chunk(997, 'a');
  size_t left = 1000000;
  while (left > 0) {
    const size_t n = std::min(left, chunk.size());
    h.Update(chunk.data(), n);
    left -= n;
  }
  EXPECT_EQ(h.FinishHex(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256Test, QwenTokenizerFile) {
  // shared/golden/README.md: sha256 aeb13307...dae4.
  auto hex = Sha256File(kData + "/golden/qwen3-tokenizer/tokenizer.json");
  ASSERT_TRUE(hex.ok()) << hex.status();
  EXPECT_EQ(hex->substr(0, 8), "aeb13307");
  EXPECT_EQ(hex->substr(60), "dae4");
  EXPECT_EQ(Sha256File(kKd + "/no_such_file").status().code(), absl::StatusCode::kNotFound);
}

// ---------------------------------------------------------------------------------------
// Dataset readers

TEST(DatasetTest, PyStripMatchesPython) {
  EXPECT_EQ(PyStrip("  a b \t\n"), "a b");
  EXPECT_EQ(PyStrip("\xc2\xa0x\xe3\x80\x80"), "x");        // NBSP, ideographic space
  EXPECT_EQ(PyStrip("\x1cx\x1f"), "x");                    // str.isspace() separators
  EXPECT_EQ(PyStrip("\xe2\x80\x8bx"), "\xe2\x80\x8bx");    // U+200B is not whitespace
  EXPECT_EQ(PyStrip(" \n "), "");
}

TEST(DatasetTest, AlpacaMessagesAsTheReference) {
  auto m = AlpacaMessages("  Translate to French.  ", "  Good morning  ", "  Bonjour  ");
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0].role, "user");
  EXPECT_EQ(m[0].content, "Translate to French.\n\nGood morning");
  EXPECT_EQ(m[1].role, "assistant");
  EXPECT_EQ(m[1].content, "Bonjour");
  EXPECT_EQ(AlpacaMessages("Q", "   ", "A")[0].content, "Q");  // blank input: no separator
}

TEST(DatasetTest, AlpacaJsonArrayCountsBadRecordsByIndex) {
  auto d = ReadDataset({kKd + "/alpaca.json", DatasetFormat::kAlpaca});
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->records.size(), 4u);
  EXPECT_EQ(d->records[1].messages[0].content, "Translate to French.\n\nGood morning");
  EXPECT_EQ(d->records[2].messages[0].content, "What is 2+2?");  // no "input" key at all
  EXPECT_EQ(d->records[3].messages[1].content, "Yes.");           // "input": null
  ASSERT_EQ(d->bad_records.size(), 2u);
  EXPECT_EQ(d->bad_records[0].location.index, 3);
  EXPECT_NE(d->bad_records[0].reason.find("'output'"), std::string::npos);
  EXPECT_EQ(d->bad_records[1].location.index, 5);
  EXPECT_NE(d->bad_records[1].location.ToString().find("alpaca.json[5]"), std::string::npos);
}

TEST(DatasetTest, AlpacaJsonlCountsBadRecordsByLine) {
  auto d = ReadDataset({kKd + "/alpaca.jsonl", DatasetFormat::kAlpacaChat});
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->records.size(), 3u);
  EXPECT_EQ(d->records[0].location.line, 1);
  EXPECT_EQ(d->records[1].location.line, 3);
  EXPECT_EQ(d->records[2].location.line, 5);
  ASSERT_EQ(d->bad_records.size(), 1u);
  EXPECT_EQ(d->bad_records[0].location.line, 4);
  EXPECT_NE(d->bad_records[0].reason.find("'output' is number"), std::string::npos);
}

TEST(DatasetTest, ShareGptAndMessages) {
  auto d = ReadDataset({kKd + "/sharegpt.jsonl", DatasetFormat::kShareGpt});
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->records.size(), 2u);
  const auto& c = d->records[0].messages;
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[0].role, "system");
  EXPECT_EQ(c[1].role, "user");
  EXPECT_EQ(c[2].role, "assistant");
  EXPECT_EQ(c[2].content, "Hello!");
  EXPECT_EQ(d->records[1].messages[1].content, "Paris.");
  ASSERT_EQ(d->bad_records.size(), 3u);
  EXPECT_EQ(d->bad_records[0].location.line, 3);  // a single turn
  EXPECT_EQ(d->bad_records[1].location.line, 4);  // role "tool"
  EXPECT_NE(d->bad_records[1].reason.find("unsupported role 'tool'"), std::string::npos);
  EXPECT_EQ(d->bad_records[2].location.line, 5);  // "messages" not a list
}

TEST(DatasetTest, PlainDirectoryReadsTxtFilesSortedByLine) {
  auto d = ReadDataset({kKd + "/plain_dir", DatasetFormat::kPlain});
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->files.size(), 2u);  // notes.md is not a data file
  EXPECT_NE(d->files[0].find("a.txt"), std::string::npos);
  std::vector<std::string> texts;
  for (const auto& r : d->records) texts.push_back(r.text);
  EXPECT_EQ(texts, (std::vector<std::string>{"First file, line one.", "First file, line two.",
                                             "Second file, first line.", "Second file, third line."}));
  EXPECT_EQ(d->records[3].location.line, 3);
  EXPECT_EQ(d->skipped_empty, 2);  // a.txt line 3, b.txt line 2
  EXPECT_TRUE(d->bad_records.empty());

  auto para = ReadDataset({kKd + "/plain_dir/b.txt", DatasetFormat::kPlain, "text", TextUnit::kParagraph});
  ASSERT_TRUE(para.ok());
  EXPECT_EQ(para->records.size(), 2u);
  auto whole = ReadDataset({kKd + "/plain_dir", DatasetFormat::kPlain, "text", TextUnit::kFile});
  ASSERT_TRUE(whole.ok());
  ASSERT_EQ(whole->records.size(), 2u);
  EXPECT_EQ(whole->records[1].text, "Second file, first line.\n\nSecond file, third line.");
}

TEST(DatasetTest, PlainJsonlUsesTheTextField) {
  auto d = ReadDataset({kKd + "/plain.jsonl", DatasetFormat::kPlain});
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->records.size(), 2u);
  EXPECT_EQ(d->records[0].text, "A plain record.");
  EXPECT_EQ(d->skipped_empty, 1);
  ASSERT_EQ(d->bad_records.size(), 1u);
  EXPECT_EQ(d->bad_records[0].location.line, 3);
}

TEST(DatasetTest, MalformedFilesFailNamingFileAndLine) {
  auto a = ReadDataset({kKd + "/malformed.json", DatasetFormat::kAlpaca});
  ASSERT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(a.status().message()).find("malformed.json:3:"), std::string::npos) << a.status();
  auto b = ReadDataset({kKd + "/malformed.jsonl", DatasetFormat::kAlpaca});
  ASSERT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(b.status().message()).find("malformed.jsonl:2:"), std::string::npos) << b.status();
  auto c = ReadDataset({kKd + "/object.json", DatasetFormat::kAlpaca});
  ASSERT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(c.status().message()).find("object.json:1: top-level JSON value is object"),
            std::string::npos)
      << c.status();
  auto t = ReadDataset({kKd + "/plain_dir/a.txt", DatasetFormat::kAlpaca});
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadDataset({kKd + "/missing.json", DatasetFormat::kAlpaca}).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(DatasetTest, DatasetSha256DependsOnContent) {
  auto a = DatasetSha256({kKd + "/alpaca.json"});
  auto b = DatasetSha256({kKd + "/alpaca.jsonl"});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(*a, *b);
  EXPECT_EQ(*a, *DatasetSha256({kKd + "/alpaca.json"}));
}

// ---------------------------------------------------------------------------------------
// Rendering

DatasetRecord AlpacaRecord() {
  DatasetRecord r;
  r.messages = AlpacaMessages("Give three tips for staying healthy.", "",
                              "1. Eat a balanced diet.\n2. Exercise regularly.\n3. Sleep well.");
  return r;
}

constexpr char kUserTurn[] = "<|im_start|>user\nGive three tips for staying healthy.<|im_end|>\n";
constexpr char kAnswer[] = "1. Eat a balanced diet.\n2. Exercise regularly.\n3. Sleep well.<|im_end|>\n";

TEST(RenderTest, NoneIsTheTemplateVerbatimAsTheReference) {
  auto t = RenderRecord(AlpacaRecord(), {DatasetFormat::kAlpacaChat, ThinkingMode::kNone});
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->size(), 1u);
  EXPECT_EQ((*t)[0], std::string(kUserTurn) + "<|im_start|>assistant\n<think>\n\n</think>\n\n" + kAnswer);
  // `alpaca` is the same rendering as `alpaca_chat` (spec §6.2).
  EXPECT_EQ(*RenderRecord(AlpacaRecord(), {DatasetFormat::kAlpaca, ThinkingMode::kNone}), *t);
}

TEST(RenderTest, OffRemovesTheThinkBlock) {
  auto t = RenderRecord(AlpacaRecord(), {DatasetFormat::kAlpacaChat, ThinkingMode::kOff});
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->size(), 1u);
  EXPECT_EQ((*t)[0], std::string(kUserTurn) + "<|im_start|>assistant\n" + kAnswer);
}

TEST(RenderTest, BothYieldsTwoDifferentRenderings) {
  // spec §17.8: the reference's "both" emitted the same text twice.
  auto t = RenderRecord(AlpacaRecord(), {DatasetFormat::kAlpacaChat, ThinkingMode::kBoth});
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->size(), 2u);
  EXPECT_NE((*t)[0], (*t)[1]);
  EXPECT_EQ((*t)[0], (*RenderRecord(AlpacaRecord(), {DatasetFormat::kAlpacaChat, ThinkingMode::kOff}))[0]);
  EXPECT_EQ((*t)[1], (*RenderRecord(AlpacaRecord(), {DatasetFormat::kAlpacaChat, ThinkingMode::kOn}))[0]);
  EXPECT_EQ((*t)[1].find("<think>") != std::string::npos, true);
  EXPECT_EQ((*t)[0].find("<think>"), std::string::npos);
}

TEST(RenderTest, OffKeepsUserTextAndStripsReasoning) {
  DatasetRecord r;
  r.messages = {{"user", "Explain <think> tags.", std::nullopt},
                {"assistant", "<think>\nsome reasoning\n</think>\n\nThey mark reasoning.", std::nullopt}};
  auto t = RenderRecord(r, {DatasetFormat::kShareGpt, ThinkingMode::kOff});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)[0],
            "<|im_start|>user\nExplain <think> tags.<|im_end|>\n<|im_start|>assistant\nThey mark reasoning.<|im_end|>\n");
  auto on = RenderRecord(r, {DatasetFormat::kShareGpt, ThinkingMode::kOn});
  EXPECT_NE((*on)[0].find("some reasoning"), std::string::npos);
}

TEST(RenderTest, PlainIgnoresThinking) {
  DatasetRecord r;
  r.text = "Just text.";
  auto t = RenderRecord(r, {DatasetFormat::kPlain, ThinkingMode::kBoth});
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*t, std::vector<std::string>{"Just text."});
}

TEST(RenderTest, ThinkingModeNames) {
  EXPECT_EQ(*ParseThinkingMode("false"), ThinkingMode::kOff);
  EXPECT_EQ(*ParseThinkingMode("true"), ThinkingMode::kOn);
  EXPECT_EQ(*ParseThinkingMode("both"), ThinkingMode::kBoth);
  auto bad = ParseThinkingMode("all");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("enable_thinking"), std::string::npos);
}

const model::Tokenizer& QwenTokenizer() {
  static const model::Tokenizer* tok = [] {
    auto t = model::Tokenizer::FromFile(kData + "/golden/qwen3-tokenizer");
    if (!t.ok()) {
      ADD_FAILURE() << t.status();
      std::abort();
    }
    return new model::Tokenizer(*std::move(t));
  }();
  return *tok;
}

// The training rendering (add_generation_prompt=false) of the golden conversations equals
// transformers' apply_chat_template text and ids.
TEST(RenderTest, MatchesGoldenChatTemplateCases) {
  std::ifstream in(kData + "/golden/chat_template_cases.jsonl");
  ASSERT_TRUE(in) << "missing chat_template_cases.jsonl";
  std::string line;
  int checked = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const json c = json::parse(line);
    if (c["add_generation_prompt"].get<bool>()) continue;  // not a training rendering
    auto messages = model::ParseChatMessagesJson(c["messages"].dump());
    ASSERT_TRUE(messages.ok()) << messages.status();
    DatasetRecord r;
    r.messages = *messages;
    auto t = RenderRecord(r, {DatasetFormat::kShareGpt, ThinkingMode::kNone});
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ((*t)[0], c["text"].get<std::string>()) << c["id"];
    EXPECT_EQ(QwenTokenizer().Encode((*t)[0]), c["ids"].get<std::vector<int32_t>>()) << c["id"];
    ++checked;
  }
  EXPECT_GE(checked, 1);
}

// An alpaca record renders as the template renders the equivalent conversation.
TEST(RenderTest, AlpacaChatEqualsTemplateOfItsMessages) {
  auto d = ReadDataset({kKd + "/alpaca.json", DatasetFormat::kAlpacaChat});
  ASSERT_TRUE(d.ok());
  for (const auto& r : d->records) {
    auto t = RenderRecord(r, {DatasetFormat::kAlpacaChat, ThinkingMode::kNone});
    ASSERT_TRUE(t.ok());
    auto direct = model::RenderChat(r.messages, {false, false});
    ASSERT_TRUE(direct.ok());
    EXPECT_EQ((*t)[0], *direct);  // enable_thinking has no effect without a generation prompt
  }
}

// ---------------------------------------------------------------------------------------
// Packing and shuffling

TEST(PackingTest, HandComputedBlocks) {
  SequencePacker p(4, 99);
  p.Add(std::vector<int32_t>{1, 2, 3});
  EXPECT_EQ(p.blocks_ready(), 1);  // 1 2 3 99
  p.Add(std::vector<int32_t>{4, 5});
  p.Add(std::vector<int32_t>{});  // skipped entirely: no lone eos
  p.Add(std::vector<int32_t>{6, 7, 8, 9, 10});
  // buffer: 1 2 3 99 | 4 5 99 6 | 7 8 9 10 | 99
  ASSERT_EQ(p.blocks_ready(), 3);
  EXPECT_EQ(p.PopBlock(), (std::vector<int32_t>{1, 2, 3, 99}));
  EXPECT_EQ(p.PopBlock(), (std::vector<int32_t>{4, 5, 99, 6}));
  EXPECT_EQ(p.PopBlock(), (std::vector<int32_t>{7, 8, 9, 10}));
  EXPECT_EQ(p.blocks_ready(), 0);
  EXPECT_EQ(p.buffered_tokens(), 1);  // the remainder carries over
  p.Add(std::vector<int32_t>{11, 12});
  EXPECT_EQ(p.PopBlock(), (std::vector<int32_t>{99, 11, 12, 99}));
}

TEST(PackingTest, LongSampleSpansSeveralBlocks) {
  SequencePacker p(3, 0);
  std::vector<int32_t> ids(10);
  for (int i = 0; i < 10; ++i) ids[static_cast<size_t>(i)] = i + 1;
  p.Add(ids);  // 11 tokens -> 3 blocks + 2 left
  EXPECT_EQ(p.blocks_ready(), 3);
  p.PopBlock();
  p.PopBlock();
  EXPECT_EQ(p.PopBlock(), (std::vector<int32_t>{7, 8, 9}));
  EXPECT_EQ(p.buffered_tokens(), 2);
}

TEST(ShuffleTest, DocumentedAlgorithmIsReproducible) {
  // std::mt19937_64's required 10000th output (C++ [rand.predef]).
  std::mt19937_64 rng;
  rng.discard(9999);
  EXPECT_EQ(rng(), 9981545732273789042ull);
  // Values from an independent Python implementation of the file comment's algorithm.
  EXPECT_EQ(SeededPermutation(10, 42), (std::vector<int64_t>{1, 7, 9, 0, 3, 8, 4, 2, 5, 6}));
  EXPECT_EQ(SeededPermutation(7, 0), (std::vector<int64_t>{4, 0, 1, 2, 6, 5, 3}));
  EXPECT_EQ(SplitMix64(0), 16294208416658607535ull);
  EXPECT_NE(SeededPermutation(50, 1), SeededPermutation(50, 2));
}

TEST(ShuffleTest, UniformBelowStaysInRange) {
  std::mt19937_64 rng(3);
  for (uint64_t m : {1ull, 2ull, 3ull, 151936ull, (1ull << 63) + 5}) {
    for (int i = 0; i < 100; ++i) EXPECT_LT(UniformBelow(rng, m), m);
  }
}

// ---------------------------------------------------------------------------------------
// The sample stream

// A fake tokenizer: one id per byte.
std::vector<int32_t> ByteIds(const std::string& s) {
  std::vector<int32_t> out;
  for (unsigned char c : s) out.push_back(c);
  return out;
}

Dataset PlainDataset(int n) {
  Dataset d;
  for (int i = 0; i < n; ++i) {
    DatasetRecord r;
    r.text = "record " + std::to_string(i);
    d.records.push_back(r);
  }
  return d;
}

std::vector<std::vector<int32_t>> Drain(PackedSequenceStream& s, int64_t l) {
  std::vector<std::vector<int32_t>> out;
  std::vector<int32_t> block(static_cast<size_t>(l));
  while (*s.Next(block.data())) out.push_back(block);
  return out;
}

TEST(SampleStreamTest, PacksRenderedRecordsInOrder) {
  Dataset d = PlainDataset(3);  // "record 0" ... 8 bytes each + eos
  SampleStreamOptions o;
  o.block_length = 6;
  o.eos_id = 0;
  o.shuffle = false;
  PackedSequenceStream s(d, ByteIds, o);
  auto blocks = Drain(s, 6);
  ASSERT_EQ(blocks.size(), 4u);  // 27 tokens -> 4 blocks, 3 dropped
  std::vector<int32_t> all;
  for (const auto& b : blocks) all.insert(all.end(), b.begin(), b.end());
  std::vector<int32_t> want;
  for (int i = 0; i < 3; ++i) {
    auto ids = ByteIds("record " + std::to_string(i));
    want.insert(want.end(), ids.begin(), ids.end());
    want.push_back(0);
  }
  want.resize(24);
  EXPECT_EQ(all, want);
  EXPECT_EQ(s.stats().records_consumed, 3);
  EXPECT_EQ(s.stats().tokens, 27);
}

TEST(SampleStreamTest, ShuffledStreamIsDeterministicAndSkippable) {
  Dataset d = PlainDataset(40);
  SampleStreamOptions o;
  o.block_length = 5;
  o.eos_id = 1;
  o.seed = 7;
  o.chunk_records = 3;
  o.num_threads = 3;
  PackedSequenceStream a(d, ByteIds, o);
  auto all = Drain(a, 5);
  ASSERT_GT(all.size(), 20u);
  PackedSequenceStream b(d, ByteIds, o);
  EXPECT_EQ(Drain(b, 5), all);
  PackedSequenceStream c(d, ByteIds, o);
  ASSERT_EQ(*c.Skip(11), 11);
  auto rest = Drain(c, 5);
  EXPECT_EQ(rest, std::vector<std::vector<int32_t>>(all.begin() + 11, all.end()));
  o.shuffle = false;
  PackedSequenceStream unshuffled(d, ByteIds, o);
  EXPECT_NE(Drain(unshuffled, 5), all);
}

TEST(SampleStreamTest, BothDoublesTheTexts) {
  auto d = ReadDataset({kKd + "/alpaca.json", DatasetFormat::kAlpacaChat});
  ASSERT_TRUE(d.ok());
  SampleStreamOptions o;
  o.block_length = 8;
  o.render = {DatasetFormat::kAlpacaChat, ThinkingMode::kBoth};
  PackedSequenceStream s(*d, ByteIds, o);
  Drain(s, 8);
  EXPECT_EQ(s.stats().texts, 2 * static_cast<int64_t>(d->records.size()));
}

// ---------------------------------------------------------------------------------------
// meta.json / progress.json

TEST(CacheFormatTest, MetaRoundTripAndFieldErrors) {
  KdCacheMeta m;
  m.teacher_model = "/models/qwen";
  m.tokenizer_sha256 = "ab";
  m.dataset_path = "/data/a.json";
  m.dataset_format = "alpaca_chat";
  m.thinking = "both";
  m.max_length = 128;
  m.top_k = 32;
  m.rand_neg = 4;
  m.vocab_size = 151936;
  m.num_sequences = 100;
  m.shard_size = 10;
  m.seed = 1234567890123ull;
  m.extra["note"] = "kept";
  auto back = KdCacheMeta::FromJson(m.ToJson());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ToJson(), m.ToJson());
  EXPECT_EQ(back->extra["note"], "kept");

  json j = m.ToJson();
  j.erase("top_k");
  auto missing = KdCacheMeta::FromJson(j);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(std::string(missing.status().message()).find("'top_k'"), std::string::npos);
  j = m.ToJson();
  j["max_length"] = "128";
  EXPECT_NE(std::string(KdCacheMeta::FromJson(j).status().message()).find("'max_length'"), std::string::npos);
  j = m.ToJson();
  j["format"] = "qwen_kd_topk_cache_v1";
  EXPECT_FALSE(KdCacheMeta::FromJson(j).ok());

  KdProgress p{42, 5, true};
  auto pb = KdProgress::FromJson(p.ToJson());
  ASSERT_TRUE(pb.ok());
  EXPECT_EQ(pb->n_written, 42);
  EXPECT_EQ(pb->next_shard_id, 5);
  EXPECT_TRUE(pb->done);
}

TEST(CacheFormatTest, AtomicJsonWriteLeavesNoTempFile) {
  fs::path dir = FreshDir("json");
  const std::string path = (dir / "x.json").string();
  ASSERT_TRUE(WriteJsonFileAtomic(path, {{"a", 1}}).ok());
  ASSERT_TRUE(WriteJsonFileAtomic(path, {{"a", 2}}).ok());
  EXPECT_EQ((*ReadJsonFile(path))["a"], 2);
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1);
  std::ofstream(dir / "bad.json") << "{\n \"a\": 1,\n oops\n}";
  auto bad = ReadJsonFile((dir / "bad.json").string());
  ASSERT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(bad.status().message()).find("bad.json:3"), std::string::npos) << bad.status();
}

// Found by tests/fuzz/kd_cache_fuzz.cc: nlohmann throws a number too large for a double
// (1e999) as out_of_range, not parse_error, so it escaped ReadJsonFile (a job then failed with
// "job threw: ..." naming no file; any other caller would have ended in std::terminate).
TEST(CacheFormatTest, ANumberOutOfRangeIsInvalidJsonNotAnException) {
  fs::path dir = FreshDir("json_range");
  std::ofstream(dir / "meta.json") << "{\n  \"format\": 1e999\"qwen_kd_topk_cache_v1\"\n}";
  std::ofstream(dir / "progress.json") << R"({"n_written": 1e999, "next_shard_id": 0})";
  for (const char* name : {"meta.json", "progress.json"}) {
    const std::string path = (dir / name).string();
    auto j = ReadJsonFile(path);
    ASSERT_EQ(j.status().code(), absl::StatusCode::kInvalidArgument) << j.status();
    EXPECT_NE(std::string(j.status().message()).find(path + ": not valid JSON: "), std::string::npos) << j.status();
    EXPECT_NE(std::string(j.status().message()).find("number overflow parsing '1e999'"), std::string::npos)
        << j.status();
  }
}

// ---------------------------------------------------------------------------------------
// KdCacheWriter

struct Rows {
  int64_t n, l, k, r;
  std::vector<int32_t> ids, idx, ridx;
  std::vector<uint16_t> val, rval;
  Rows(int64_t n_, int64_t l_, int64_t k_, int64_t r_, uint32_t seed) : n(n_), l(l_), k(k_), r(r_) {
    std::mt19937 g(seed);
    ids.resize(static_cast<size_t>(n * l));
    idx.resize(static_cast<size_t>(n * (l - 1) * k));
    val.resize(idx.size());
    ridx.resize(static_cast<size_t>(n * (l - 1) * r));
    rval.resize(ridx.size());
    for (auto& v : ids) v = static_cast<int32_t>(g() % 1000);
    for (auto& v : idx) v = static_cast<int32_t>(g() % 1000);
    for (auto& v : val) v = static_cast<uint16_t>(g());
    for (auto& v : ridx) v = static_cast<int32_t>(g() % 1000);
    for (auto& v : rval) v = static_cast<uint16_t>(g());
  }
  KdRows View(int64_t begin, int64_t count) const {
    const int64_t s = l - 1;
    return {count, ids.data() + begin * l, idx.data() + begin * s * k, val.data() + begin * s * k,
            ridx.data() + begin * s * r, rval.data() + begin * s * r};
  }
};

template <typename T>
std::vector<T> TensorData(const model::SafetensorsFile& f, const char* name) {
  const model::TensorInfo* info = f.Find(name);
  EXPECT_NE(info, nullptr) << name;
  if (info == nullptr) return {};
  const T* p = reinterpret_cast<const T*>(f.DataOf(*info));
  return std::vector<T>(p, p + info->nbytes() / sizeof(T));
}

TEST(CacheWriterTest, WritesShardsAndProgress) {
  fs::path dir = FreshDir("writer");
  const Rows rows(7, 5, 3, 2, 1);
  KdCacheWriter::Options o;
  o.dir = dir.string();
  o.layout = {5, 3, 2, 3};
  auto w = KdCacheWriter::Open(o, {});
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_TRUE((*w)->Append(rows.View(0, 2)).ok());
  ASSERT_TRUE((*w)->Append(rows.View(2, 4)).ok());
  ASSERT_TRUE((*w)->Append(rows.View(6, 1)).ok());
  ASSERT_TRUE((*w)->Finish().ok());
  EXPECT_EQ((*w)->n_durable(), 7);
  auto progress = KdProgress::FromJson(*ReadJsonFile((dir / "progress.json").string()));
  EXPECT_EQ(progress->n_written, 7);
  EXPECT_EQ(progress->next_shard_id, 3);
  EXPECT_TRUE(progress->done);

  std::vector<int32_t> ids, ridx;
  std::vector<uint16_t> val;
  for (int s = 0; s < 3; ++s) {
    auto f = model::SafetensorsFile::Open((dir / ShardFileName(s)).string());
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_EQ((*f)->Find("topk_idx")->shape, (std::vector<int64_t>{s < 2 ? 3 : 1, 4, 3}));
    EXPECT_EQ((*f)->Find("rand_logits")->dtype, model::DType::kF16);
    for (int32_t v : TensorData<int32_t>(**f, "input_ids")) ids.push_back(v);
    for (uint16_t v : TensorData<uint16_t>(**f, "topk_logits")) val.push_back(v);
    for (int32_t v : TensorData<int32_t>(**f, "rand_idx")) ridx.push_back(v);
  }
  EXPECT_EQ(ids, rows.ids);
  EXPECT_EQ(val, rows.val);
  EXPECT_EQ(ridx, rows.ridx);
}

TEST(CacheWriterTest, ResumeCompletesAPartialShardInPlace) {
  const Rows rows(8, 4, 2, 0, 2);
  auto write_all = [&](const fs::path& dir) {
    KdCacheWriter::Options o;
    o.dir = dir.string();
    o.layout = {4, 2, 0, 3};
    auto w = KdCacheWriter::Open(o, {});
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->Append(rows.View(0, 8)).ok());
    ASSERT_TRUE((*w)->Finish().ok());
  };
  fs::path full = FreshDir("uninterrupted");
  write_all(full);

  fs::path dir = FreshDir("interrupted");
  KdCacheWriter::Options o;
  o.dir = dir.string();
  o.layout = {4, 2, 0, 3};
  {
    auto w = KdCacheWriter::Open(o, {});
    ASSERT_TRUE((*w)->Append(rows.View(0, 4)).ok());
    ASSERT_TRUE((*w)->Flush().ok());  // shard 1 holds 1 row
    EXPECT_EQ((*w)->n_durable(), 4);
  }
  auto progress = KdProgress::FromJson(*ReadJsonFile((dir / "progress.json").string()));
  ASSERT_TRUE(progress.ok());
  EXPECT_EQ(progress->n_written, 4);
  EXPECT_EQ(progress->next_shard_id, 2);
  EXPECT_FALSE(progress->done);
  auto w = KdCacheWriter::Open(o, *progress);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_TRUE((*w)->Append(rows.View(4, 4)).ok());
  ASSERT_TRUE((*w)->Finish().ok());
  for (const char* name : {"shard_00000.safetensors", "shard_00001.safetensors", "shard_00002.safetensors",
                           "progress.json"}) {
    EXPECT_EQ(ReadFile((dir / name).string()), ReadFile((full / name).string())) << name;
  }
  // Inconsistent progress is refused.
  EXPECT_EQ(KdCacheWriter::Open(o, KdProgress{4, 1, false}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CacheWriterTest, WriteErrorsAreSticky) {
  KdCacheWriter::Options o;
  o.dir = "/nonexistent/qatd/kd";
  o.layout = {3, 1, 0, 1};
  auto w = KdCacheWriter::Open(o, {});
  ASSERT_TRUE(w.ok());
  const Rows rows(2, 3, 1, 0, 3);
  absl::Status s = (*w)->Append(rows.View(0, 1));
  if (s.ok()) s = (*w)->Flush();
  EXPECT_FALSE(s.ok());
  EXPECT_FALSE((*w)->Append(rows.View(1, 1)).ok());
  EXPECT_FALSE((*w)->Finish().ok());
}

}  // namespace
}  // namespace qatd::kd
