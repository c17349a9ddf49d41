// Dataset format detection and the submit-time sample check (issue #17, item 1): an Alpaca
// file needs no --dataset-format, and a format that does not fit the records fails naming the
// record and the format they look like. LibTorch-free.
#include <filesystem>
#include <fstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/kd/dataset.h"
#include "tests/core/kd/kd_test_dirs.h"

namespace qatd::kd {
namespace {
namespace fs = std::filesystem;
using testdirs::FreshDir;
using ::testing::HasSubstr;

std::string Write(const fs::path& dir, const std::string& name, const std::string& content) {
  std::ofstream(dir / name) << content;
  return (dir / name).string();
}

DatasetOptions Opts(const std::string& path, DatasetFormat format = DatasetFormat::kPlain) {
  DatasetOptions o;
  o.path = path;
  o.format = format;
  return o;
}

TEST(DatasetDetectTest, DetectsEachFormatFromTheFirstRecord) {
  const fs::path dir = FreshDir("detect");
  const std::string alpaca = Write(dir, "alpaca.json",
                                   "[\n  {\"instruction\": \"Say hi, {\\\"x\\\"]\", \"input\": \"\", \"output\": \"hi\"},\n"
                                   "  {\"instruction\": \"b\", \"output\": \"c\"}\n]\n");
  const std::string alpaca_lines = Write(dir, "alpaca.jsonl", "{\"instruction\": \"a\", \"output\": \"b\"}\n");
  const std::string share = Write(dir, "share.json", "[{\"conversations\": [{\"from\": \"human\", \"value\": \"a\"}]}]");
  const std::string messages = Write(dir, "m.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}\n");
  const std::string text = Write(dir, "t.jsonl", "{\"text\": \"hello\"}\n{\"text\": \"world\"}\n");
  const std::string plain = Write(dir, "p.txt", "a line\n");
  EXPECT_EQ(*DetectDatasetFormat(Opts(alpaca)), DatasetFormat::kAlpacaChat);
  EXPECT_EQ(*DetectDatasetFormat(Opts(alpaca_lines)), DatasetFormat::kAlpacaChat);
  EXPECT_EQ(*DetectDatasetFormat(Opts(share)), DatasetFormat::kShareGpt);
  EXPECT_EQ(*DetectDatasetFormat(Opts(messages)), DatasetFormat::kShareGpt);
  EXPECT_EQ(*DetectDatasetFormat(Opts(text)), DatasetFormat::kPlain);
  EXPECT_EQ(*DetectDatasetFormat(Opts(plain)), DatasetFormat::kPlain);
  // A directory: its first data file by name (alpaca.json).
  EXPECT_EQ(*DetectDatasetFormat(Opts(dir.string())), DatasetFormat::kAlpacaChat);
  DatasetOptions body = Opts(Write(dir, "body.jsonl", "{\"body\": \"x\"}\n"));
  body.text_field = "body";
  EXPECT_EQ(*DetectDatasetFormat(body), DatasetFormat::kPlain);
}

TEST(DatasetDetectTest, ReadsOnlyASampleOfALargeArray) {
  const fs::path dir = FreshDir("detect_large");
  std::string content = "[";
  for (int i = 0; i < 20000; ++i) {
    content += (i ? ",\n" : "\n");
    content += "{\"instruction\": \"question " + std::to_string(i) + "\", \"output\": \"answer\"}";
  }
  content += "\n]\n";
  const std::string file = Write(dir, "big.json", content);
  ASSERT_GT(content.size(), 4096u);
  // A 4 KiB sample cuts the array mid-record: the complete records before it are enough.
  EXPECT_EQ(*DetectDatasetFormat(Opts(file), 4096), DatasetFormat::kAlpacaChat);
  EXPECT_TRUE(CheckDatasetSample(Opts(file, DatasetFormat::kAlpacaChat), 4096).ok());
  // A first record longer than the sample cannot be detected: said so, with the bound.
  auto cut = DetectDatasetFormat(Opts(file), 20);
  ASSERT_EQ(cut.status().code(), absl::StatusCode::kInvalidArgument) << cut.status();
  EXPECT_THAT(std::string(cut.status().message()), HasSubstr("first record is longer than the 20 bytes"));
}

TEST(DatasetDetectTest, AnUnknownRecordShapeNamesItsFields) {
  const fs::path dir = FreshDir("detect_unknown");
  auto d = DetectDatasetFormat(Opts(Write(dir, "q.jsonl", "{\"question\": \"a\", \"answer\": \"b\"}\n")));
  ASSERT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << d.status();
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("q.jsonl:1: a record with the fields (answer, question)"));
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("alpaca_chat has instruction and output"));
  auto missing = DetectDatasetFormat(Opts((dir / "none.json").string()));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
}

// The issue's reproduction: an Alpaca file read as plain had every record bad ("missing
// string field 'text'") and failed in the worker; the sample check says so at once, with the
// format the records look like.
TEST(DatasetDetectTest, AWrongFormatFailsTheSampleCheckNamingTheLikelyFormat) {
  const fs::path dir = FreshDir("sample_wrong");
  const std::string alpaca = Write(dir, "alpaca.json", "[{\"instruction\": \"a\", \"output\": \"b\"}]");
  absl::Status plain = CheckDatasetSample(Opts(alpaca, DatasetFormat::kPlain));
  ASSERT_EQ(plain.code(), absl::StatusCode::kInvalidArgument) << plain;
  EXPECT_EQ(plain.message(), alpaca + "[0]: missing string field 'text' (the records look like alpaca_chat)");
  EXPECT_TRUE(CheckDatasetSample(Opts(alpaca, DatasetFormat::kAlpacaChat)).ok());
  EXPECT_TRUE(CheckDatasetSample(Opts(alpaca, DatasetFormat::kAlpaca)).ok());

  absl::Status share = CheckDatasetSample(Opts(alpaca, DatasetFormat::kShareGpt));
  EXPECT_THAT(std::string(share.message()), HasSubstr("missing field 'conversations' or 'messages' (the records look like alpaca_chat)"));

  const std::string text = Write(dir, "t.txt", "hello\n");
  absl::Status chat_on_text = CheckDatasetSample(Opts(text, DatasetFormat::kAlpacaChat));
  EXPECT_THAT(std::string(chat_on_text.message()), HasSubstr("needs JSON or JSONL records, got a text file"));
  EXPECT_TRUE(CheckDatasetSample(Opts(text)).ok());

  // One good record in the sample is enough (bad records are the reader's to count and list).
  const std::string mixed = Write(dir, "mixed.jsonl", "{\"x\": 1}\n{\"text\": \"ok\"}\n");
  EXPECT_TRUE(CheckDatasetSample(Opts(mixed)).ok());
  // A malformed file fails the check, named with its line.
  const std::string broken = Write(dir, "broken.jsonl", "{\"text\": \"a\"}\n{not json\n");
  absl::Status bad_json = CheckDatasetSample(Opts(broken));
  EXPECT_THAT(std::string(bad_json.message()), HasSubstr("broken.jsonl:2: not valid JSON"));
}

}  // namespace
}  // namespace qatd::kd
