#pragma once
// Dataset readers for the KD cache: local files only (no hub downloads).
//
// Inputs (`DatasetOptions::path` is a file or a directory):
//   *.txt          plain text; records are lines (the Hugging Face "text" loader's unit),
//                  paragraphs (blank-line separated) or whole files (`text_unit`).
//   *.json         one JSON array of objects (records are addressed by array index).
//   *.jsonl        one JSON object per line (records addressed by 1-based line number).
//   a directory    its *.txt, *.json and *.jsonl files (not recursive), sorted by name.
// Record shapes by format:
//   plain          {"<text_field>": string} (JSON) or text units (.txt);
//   alpaca(_chat)  {"instruction": string, "input": string|null (optional), "output": string};
//   sharegpt       {"conversations": [{"from": "system"|"human"|"gpt"|"user"|"assistant",
//                   "value": string}, ...]} or {"messages": [{"role", "content"}, ...]}.
//
// Errors vs bad records: a file that cannot be parsed (not JSON, a JSONL line that is not
// JSON, a top-level value that is not an array / object per line, a .txt file for a chat
// format) fails the whole read with INVALID_ARGUMENT naming the file and line. A well-formed
// record with missing or mistyped fields is a *bad record*: skipped, counted, and listed
// with its location, so the caller can report it before any model work starts. Blank plain
// texts are skipped silently (as the reference does), not counted as bad.
//
// Thread safety: plain functions over values; no shared state.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/chat_template.h"

namespace qatd::kd {

enum class DatasetFormat { kPlain, kAlpaca, kAlpacaChat, kShareGpt };

// "plain", "alpaca", "alpaca_chat", "sharegpt" (also "conversations").
absl::StatusOr<DatasetFormat> ParseDatasetFormat(std::string_view name);
std::string DatasetFormatName(DatasetFormat format);
// True for the formats rendered through the chat template.
inline bool IsChatFormat(DatasetFormat f) { return f != DatasetFormat::kPlain; }

enum class TextUnit { kLine, kParagraph, kFile };
absl::StatusOr<TextUnit> ParseTextUnit(std::string_view name);  // "line", "paragraph", "file"
std::string TextUnitName(TextUnit unit);

struct DatasetOptions {
  std::string path;                    // file or directory
  DatasetFormat format = DatasetFormat::kPlain;
  std::string text_field = "text";     // plain format, JSON inputs
  TextUnit text_unit = TextUnit::kLine;  // plain format, .txt inputs
  // Bounds (issue #14): .txt and .jsonl files are streamed, and one record (a line, a
  // paragraph, a whole .txt file with text_unit file, a JSONL line) holds at most
  // max_record_bytes; a .json file is parsed whole and holds at most max_json_file_bytes; all
  // data files together hold at most max_total_bytes (their sizes, checked before reading).
  int64_t max_record_bytes = int64_t{64} << 20;
  int64_t max_json_file_bytes = int64_t{2} << 30;
  int64_t max_total_bytes = int64_t{64} << 30;
};

// Where a record came from: `file` and either a 1-based `line` (.txt, .jsonl) or a 0-based
// array `index` (.json). The unused one is -1.
struct RecordLocation {
  std::string file;
  int64_t line = -1;
  int64_t index = -1;
  std::string ToString() const;  // "data.jsonl:12" or "data.json[3]"
};

struct DatasetRecord {
  RecordLocation location;
  std::string text;                         // plain format
  std::vector<model::ChatMessage> messages;  // chat formats (alpaca becomes user+assistant)
};

struct BadRecord {
  RecordLocation location;
  std::string reason;  // "missing string field 'output'"
};

struct Dataset {
  std::vector<std::string> files;     // the files read, in order
  std::vector<DatasetRecord> records;  // good records, in file order
  std::vector<BadRecord> bad_records;
  int64_t skipped_empty = 0;           // blank plain texts dropped
};

// The checks that need no reading (the daemon runs them at submit time, ReadDataset again):
// `options.path` is a directory or a regular file, symlinks followed (/dev/zero, a FIFO or a
// socket is refused), and its data files hold at most max_total_bytes together. A directory's
// entries that are not regular files are skipped, as ReadDataset skips them.
// Errors: NOT_FOUND (missing path), INVALID_ARGUMENT naming the path and the bound (messages
// start with the path: "/dev/zero is a character device, not a regular file ...").
absl::Status CheckDatasetPath(const DatasetOptions& options);

// Reads every record. Only regular files are read, each to the size it had when opened, within
// the bounds of DatasetOptions. Errors: NOT_FOUND (path missing, or a directory without data
// files), INVALID_ARGUMENT (not a regular file, over a bound, or a malformed file, named with
// its line), INTERNAL (I/O).
absl::StatusOr<Dataset> ReadDataset(const DatasetOptions& options);

// Format detection and the submit-time sample check (issue #17). Both read only the first
// `max_bytes` of the first data file (a directory's first by name) and look at its first
// `max_records` records, so the daemon can run them on any dataset without reading it whole.
inline constexpr int64_t kDatasetSampleBytes = int64_t{1} << 20;
inline constexpr int kDatasetSampleRecords = 16;

// The format of the dataset's first record:
//   a .txt file                                          -> plain
//   an object with "instruction" and "output"            -> alpaca_chat
//   an object with "conversations" or "messages"         -> sharegpt
//   an object with `options.text_field` ("text")         -> plain
// (`options.format` is not read.) INVALID_ARGUMENT naming the file, the record and its
// fields when none fits, for a malformed file, or a first record longer than the sample;
// NOT_FOUND for a missing path or a directory without data files.
absl::StatusOr<DatasetFormat> DetectDatasetFormat(const DatasetOptions& options,
                                                  int64_t max_bytes = kDatasetSampleBytes);

// Reads the sample's records with `options.format`. OK when at least one is usable (or the
// sample holds no complete record); INVALID_ARGUMENT when the file cannot be read as that
// format or none of the sampled records fits it, naming the first bad record and, when the
// records look like another format, that format:
//   "/d/alpaca.json[0]: missing string field 'text' (the records look like alpaca_chat)".
// NOT_FOUND as DetectDatasetFormat.
absl::Status CheckDatasetSample(const DatasetOptions& options, int64_t max_bytes = kDatasetSampleBytes,
                                int max_records = kDatasetSampleRecords);

// sha256 over the data files in read order: for each file, its base name, a NUL byte, its
// contents and a NUL byte. Identifies the input of a cache (resume refuses a changed one).
// Regular files only, each read to the size it had when opened.
absl::StatusOr<std::string> DatasetSha256(const std::vector<std::string>& files);

// Python's str.strip(): removes leading/trailing whitespace (ASCII whitespace, U+0085,
// U+00A0, U+1680, U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000 and the
// \x1c-\x1f separators, as str.isspace() defines them).
std::string PyStrip(std::string_view s);

// The reference's alpaca messages (spec §6.2): user = instruction.strip(), followed by
// "\n\n" + input.strip() when the stripped input is non-empty; assistant = output.strip().
// No system message.
std::vector<model::ChatMessage> AlpacaMessages(std::string_view instruction, std::string_view input,
                                               std::string_view output);

}  // namespace qatd::kd
