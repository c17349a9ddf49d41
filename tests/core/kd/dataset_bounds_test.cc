// Readers that bound what they read (issue #14, item 9), split from kd_data_test.cc: a
// device, a FIFO, a huge file, an overlong line or a number out of range ends in an error
// naming the file and the bound, without being read to its end. LibTorch-free.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/common/input_file.h"
#include "core/kd/dataset.h"
#include "tests/core/kd/kd_test_dirs.h"

namespace qatd::kd {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;
using testdirs::FreshDir;

const std::string kKd = std::string(QATD_TEST_DATA) + "/kd";
// Found by the kd_cache fuzzer's sibling: a number beyond double's range escaped as an
// exception ("job threw: ...") instead of a bad-input error naming the file.
TEST(DatasetTest, ANumberOutOfRangeIsInvalidJsonNamingTheLine) {
  const fs::path dir = FreshDir("huge_number");
  std::ofstream(dir / "d.jsonl") << "{\"text\": \"a\"}\n{\"text\": \"b\", \"n\": 1e999}\n";
  std::ofstream(dir / "d.json") << "[{\"text\": \"a\", \"n\": 1e999}]";
  auto lines = ReadDataset({(dir / "d.jsonl").string(), DatasetFormat::kPlain});
  ASSERT_EQ(lines.status().code(), absl::StatusCode::kInvalidArgument) << lines.status();
  EXPECT_NE(std::string(lines.status().message()).find("d.jsonl:2: not valid JSON"), std::string::npos) << lines.status();
  auto array = ReadDataset({(dir / "d.json").string(), DatasetFormat::kPlain});
  ASSERT_EQ(array.status().code(), absl::StatusCode::kInvalidArgument) << array.status();
  EXPECT_NE(std::string(array.status().message()).find("d.json: not valid JSON"), std::string::npos) << array.status();
}


// Bounded reading (issue #14, item 9): a device, a FIFO, a huge file or an overlong line ends
// in an error naming the file and the bound, without being read to its end.

// A sparse file of `bytes` zero bytes (no newline): nothing is written to disk.
fs::path SparseFile(const std::string& dir, const std::string& name, uintmax_t bytes) {
  const fs::path path = FreshDir(dir) / name;
  std::ofstream(path).close();
  fs::resize_file(path, bytes);
  return path;
}

TEST(DatasetBoundsTest, DevZeroIsRefusedNotReadUntilMemoryRunsOut) {
  const fs::path link = FreshDir("devzero") / "data.txt";
  fs::create_symlink("/dev/zero", link);
  for (const std::string path : {std::string("/dev/zero"), link.string()}) {
    SCOPED_TRACE(path);
    auto d = ReadDataset({path, DatasetFormat::kPlain});
    ASSERT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << d.status();
    EXPECT_NE(std::string(d.status().message()).find("dataset " + path + " is a character device, not a regular file"),
              std::string::npos)
        << d.status();
  }
  EXPECT_EQ(DatasetSha256({link.string()}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(DatasetBoundsTest, AFifoIsRefusedWithoutBlocking) {
  const fs::path fifo = FreshDir("fifo") / "data.jsonl";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto d = ReadDataset({fifo.string(), DatasetFormat::kPlain});
  ASSERT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << d.status();
  EXPECT_NE(std::string(d.status().message()).find(fifo.string() + " is a FIFO, not a regular file"),
            std::string::npos)
      << d.status();
}

TEST(DatasetBoundsTest, AHugeFileIsRefusedBeforeAnyReading) {
  const fs::path huge = SparseFile("huge", "huge.txt", uintmax_t{100} << 30);
  auto d = ReadDataset({huge.string(), DatasetFormat::kPlain});
  ASSERT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << d.status();
  EXPECT_NE(std::string(d.status().message()).find("dataset " + huge.string() + " holds 100 GiB, more than the 64 GiB"),
            std::string::npos)
      << d.status();
}

TEST(DatasetBoundsTest, AGigabyteLineIsNamedAfterReadingAtMostTheBound) {
  const fs::path big = SparseFile("bigline", "big.txt", uintmax_t{1} << 30);
  auto d = ReadDataset({big.string(), DatasetFormat::kPlain});
  ASSERT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << d.status();
  EXPECT_NE(std::string(d.status().message()).find(big.string() + ":1: line is longer than 64 MiB"),
            std::string::npos)
      << d.status();
}

TEST(DatasetBoundsTest, EveryRecordShapeIsBounded) {
  const fs::path dir = FreshDir("record_bounds");
  DatasetOptions o;
  o.max_record_bytes = 1024;
  const std::string long_text(2000, 'x');
  std::ofstream(dir / "lines.jsonl") << "{\"text\": \"a\"}\n{\"text\": \"b\"}\n{\"text\": \"" << long_text << "\"}\n";
  o.path = (dir / "lines.jsonl").string();
  auto d = ReadDataset(o);
  EXPECT_NE(std::string(d.status().message()).find("lines.jsonl:3: line is longer than 1 KiB"), std::string::npos)
      << d.status();
  // JSON lines in a .json file (read whole, then split).
  fs::copy_file(dir / "lines.jsonl", dir / "lines.json");
  o.path = (dir / "lines.json").string();
  d = ReadDataset(o);
  EXPECT_NE(std::string(d.status().message()).find("lines.json:3: line is longer than 1 KiB"), std::string::npos)
      << d.status();
  // A paragraph of short lines, named by its first line.
  {
    std::ofstream out(dir / "para.txt");
    out << "short\n\n";
    for (int i = 0; i < 40; ++i) out << std::string(40, 'p') << "\n";
  }
  o.path = (dir / "para.txt").string();
  o.text_unit = TextUnit::kParagraph;
  d = ReadDataset(o);
  EXPECT_NE(std::string(d.status().message()).find("para.txt:3: paragraph is longer than 1 KiB"), std::string::npos)
      << d.status();
  o.text_unit = TextUnit::kFile;
  d = ReadDataset(o);
  EXPECT_NE(std::string(d.status().message()).find("para.txt holds 1.6 KiB, more than the 1 KiB one record may hold"),
            std::string::npos)
      << d.status();
  // A .json array is parsed whole: bounded by max_json_file_bytes.
  std::ofstream(dir / "array.json") << "[{\"text\": \"" << long_text << "\"}]";
  o = DatasetOptions();
  o.path = (dir / "array.json").string();
  EXPECT_TRUE(ReadDataset(o).ok());
  o.max_json_file_bytes = 1024;
  d = ReadDataset(o);
  EXPECT_NE(std::string(d.status().message()).find("array.json holds 2.0 KiB, more than the 1 KiB a .json file may"),
            std::string::npos)
      << d.status();
  // Within the bounds, the same files read as before.
  o = DatasetOptions();
  o.path = (dir / "lines.jsonl").string();
  d = ReadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->records.size(), 3u);
  EXPECT_EQ(d->records[2].text, long_text);
  EXPECT_EQ(d->records[2].location.line, 3);
}

TEST(DatasetBoundsTest, TheSubmitTimeCheckReadsNothing) {
  const fs::path dir = FreshDir("check_path");
  DatasetOptions o;
  o.path = "/dev/zero";
  absl::Status s = CheckDatasetPath(o);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "/dev/zero is a character device, not a regular file (a dataset is a .txt, .json or .jsonl "
                         "file or a directory of them)");
  o.path = (dir / "missing.txt").string();
  EXPECT_EQ(CheckDatasetPath(o).code(), absl::StatusCode::kNotFound);
  // A directory: its regular data files count, a FIFO among them is skipped (as ReadDataset
  // skips it), and an empty directory passes (ReadDataset reports it).
  o.path = dir.string();
  EXPECT_TRUE(CheckDatasetPath(o).ok());
  ASSERT_EQ(::mkfifo((dir / "pipe.txt").c_str(), 0600), 0);
  std::ofstream(dir / "a.txt") << "one\ntwo\n";
  EXPECT_TRUE(CheckDatasetPath(o).ok());
  auto d = ReadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->records.size(), 2u);
  std::ofstream(dir / "b.txt").close();
  fs::resize_file(dir / "b.txt", uintmax_t{65} << 30);  // sparse
  s = CheckDatasetPath(o);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find(dir.string() + " (2 data files) holds 65.0 GiB, more than the 64 GiB a "
                                          "dataset may hold"),
            std::string::npos)
      << s;
}

// core/common/input_file.h, the reader under the dataset readers.
TEST(InputFileTest, LinesAreSplitAcrossReadsAndBounded) {
  const fs::path dir = FreshDir("input_file");
  const std::string big(3 << 20, 'b');  // spans several 1 MiB reads
  std::ofstream(dir / "lines.txt") << "a\n\nc\r\n" << big << "\nlast";
  auto file = InputFile::Open((dir / "lines.txt").string());
  ASSERT_TRUE(file.ok()) << file.status();
  LineReader lines(&*file, 3 << 20);
  std::vector<std::string> got;
  std::string_view line;
  while (true) {
    absl::StatusOr<bool> more = lines.Next(&line);
    ASSERT_TRUE(more.ok()) << more.status();
    if (!*more) break;
    got.emplace_back(line);
    EXPECT_EQ(lines.line_number(), static_cast<int64_t>(got.size()));
  }
  EXPECT_EQ(got, (std::vector<std::string>{"a", "", "c\r", big, "last"}));

  auto again = InputFile::Open((dir / "lines.txt").string());
  ASSERT_TRUE(again.ok());
  LineReader tight(&*again, (3 << 20) - 1);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(*tight.Next(&line));
  absl::StatusOr<bool> over = tight.Next(&line);
  EXPECT_EQ(over.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(over.status().message(), (dir / "lines.txt").string() + ":4: line is longer than 3.0 MiB");

  auto whole = InputFile::Open((dir / "lines.txt").string());
  ASSERT_TRUE(whole.ok());
  EXPECT_NE(std::string(whole->ReadAll(1 << 20).status().message()).find("holds 3.0 MiB, more than the 1 MiB limit"),
            std::string::npos);
  EXPECT_EQ(InputFile::Open((dir / "none").string()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(InputFile::Open(dir.string()).status().message(), dir.string() + " is a directory, not a regular file");
}

TEST(InputFileTest, FormatBytesNamesBounds) {
  EXPECT_EQ(FormatBytes(int64_t{64} << 20), "64 MiB");
  EXPECT_EQ(FormatBytes(int64_t{100} << 30), "100 GiB");
  EXPECT_EQ(FormatBytes(int64_t{3} << 29), "1.5 GiB");
  EXPECT_EQ(FormatBytes(1024), "1 KiB");
  EXPECT_EQ(FormatBytes(512), "512 bytes");
}

}  // namespace
}  // namespace qatd::kd
