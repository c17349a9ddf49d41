#include "core/kd/dataset.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <optional>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/common/input_file.h"
#include "core/common/status_macros.h"
#include "core/common/sha256.h"

namespace qatd::kd {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

enum class FileKind { kText, kJsonArray, kJsonLines };

bool IsDataFileName(const fs::path& p) {
  const std::string ext = p.extension().string();
  return ext == ".txt" || ext == ".json" || ext == ".jsonl";
}

// "dataset " before a reader's message that names the path only ("/dev/zero is a character
// device, ..."), so the user sees which input it is.
absl::Status AsDatasetError(const absl::Status& status) {
  return absl::Status(status.code(), absl::StrCat("dataset ", status.message()));
}

absl::Status TooLarge(const std::string& what, int64_t bytes, int64_t limit, const std::string& hint) {
  return absl::InvalidArgumentError(
      absl::StrCat(what, " holds ", FormatBytes(bytes), ", more than the ", FormatBytes(limit), " ", hint));
}

// The data files of `options.path`: the file itself, or a directory's regular *.txt, *.json and
// *.jsonl files sorted by name (possibly none).
absl::StatusOr<std::vector<std::string>> DataFiles(const DatasetOptions& options) {
  std::error_code ec;
  if (!fs::is_directory(options.path, ec)) return std::vector<std::string>{options.path};
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(options.path, ec)) {
    if (entry.is_regular_file() && IsDataFileName(entry.path())) files.push_back(entry.path().string());
  }
  if (ec) return absl::InternalError(absl::StrCat(options.path, ": cannot list: ", ec.message()));
  std::sort(files.begin(), files.end());
  return files;
}

// 1-based line of byte `offset` in `text`.
int64_t LineOfOffset(std::string_view text, size_t offset) {
  offset = std::min(offset, text.size());
  return 1 + std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(offset), '\n');
}

// Length of the UTF-8 whitespace character at s[i] per Python's str.isspace(), or 0.
size_t WhitespaceAt(std::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f)) return 1;
  auto byte = [&](size_t k) { return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0; };
  if (c == 0xc2 && (byte(1) == 0x85 || byte(1) == 0xa0)) return 2;
  if (c == 0xe1 && byte(1) == 0x9a && byte(2) == 0x80) return 3;  // U+1680
  if (c == 0xe2 && byte(1) == 0x80) {
    const unsigned char b = byte(2);
    if ((b >= 0x80 && b <= 0x8a) || b == 0xa8 || b == 0xa9 || b == 0xaf) return 3;
  }
  if (c == 0xe2 && byte(1) == 0x81 && byte(2) == 0x9f) return 3;  // U+205F
  if (c == 0xe3 && byte(1) == 0x80 && byte(2) == 0x80) return 3;  // U+3000
  return 0;
}

// Start of the whitespace character that ends at s[end - 1], or `end` if none does.
size_t WhitespaceEndingAt(std::string_view s, size_t end) {
  for (size_t len = 1; len <= 3 && len <= end; ++len) {
    if (WhitespaceAt(s, end - len) == len) return end - len;
  }
  return end;
}

struct Collector {
  Dataset* dataset;
  const DatasetOptions* options;

  void Bad(RecordLocation loc, std::string reason) {
    dataset->bad_records.push_back({std::move(loc), std::move(reason)});
  }

  void AddPlain(RecordLocation loc, std::string_view raw) {
    std::string text = PyStrip(raw);
    if (text.empty()) {
      ++dataset->skipped_empty;
      return;
    }
    dataset->records.push_back({std::move(loc), std::move(text), {}});
  }

  // A string field: absent -> error unless optional; null -> "" when optional.
  static bool StringField(const json& obj, const char* key, bool optional, std::string* out,
                          std::string* why) {
    auto it = obj.find(key);
    if (it == obj.end() || (optional && it->is_null())) {
      if (optional) {
        out->clear();
        return true;
      }
      *why = absl::StrCat("missing string field '", key, "'");
      return false;
    }
    if (!it->is_string()) {
      *why = absl::StrCat("field '", key, "' is ", it->type_name(), ", expected a string");
      return false;
    }
    *out = it->get<std::string>();
    return true;
  }

  void AddAlpaca(RecordLocation loc, const json& obj) {
    std::string instruction, input, output, why;
    if (!StringField(obj, "instruction", false, &instruction, &why) ||
        !StringField(obj, "input", true, &input, &why) ||
        !StringField(obj, "output", false, &output, &why)) {
      Bad(std::move(loc), why);
      return;
    }
    dataset->records.push_back({std::move(loc), {}, AlpacaMessages(instruction, input, output)});
  }

  void AddConversation(RecordLocation loc, const json& obj) {
    const bool sharegpt = obj.contains("conversations");
    const char* list_key = sharegpt ? "conversations" : "messages";
    const char* role_key = sharegpt ? "from" : "role";
    const char* text_key = sharegpt ? "value" : "content";
    auto it = obj.find(list_key);
    if (it == obj.end()) {
      Bad(std::move(loc), "missing field 'conversations' or 'messages'");
      return;
    }
    if (!it->is_array()) {
      Bad(std::move(loc), absl::StrCat("field '", list_key, "' is ", it->type_name(), ", expected an array"));
      return;
    }
    std::vector<model::ChatMessage> messages;
    for (size_t i = 0; i < it->size(); ++i) {
      const json& m = (*it)[i];
      const std::string where = absl::StrCat(list_key, "[", i, "]");
      if (!m.is_object()) {
        Bad(std::move(loc), absl::StrCat(where, " is ", m.type_name(), ", expected an object"));
        return;
      }
      std::string role, content, why;
      if (!StringField(m, role_key, false, &role, &why) || !StringField(m, text_key, false, &content, &why)) {
        Bad(std::move(loc), absl::StrCat(where, ": ", why));
        return;
      }
      if (role == "human" || role == "user") {
        role = "user";
      } else if (role == "gpt" || role == "assistant") {
        role = "assistant";
      } else if (role != "system") {
        Bad(std::move(loc), absl::StrCat(where, ": unsupported role '", role, "'"));
        return;
      }
      messages.push_back({std::move(role), std::move(content), std::nullopt});
    }
    // The reference skips conversations of fewer than two turns.
    if (messages.size() < 2) {
      Bad(std::move(loc), absl::StrCat("conversation has ", messages.size(), " message(s), needs at least 2"));
      return;
    }
    dataset->records.push_back({std::move(loc), {}, std::move(messages)});
  }

  void AddJsonRecord(RecordLocation loc, const json& value) {
    if (!value.is_object()) {
      Bad(std::move(loc), absl::StrCat("record is ", value.type_name(), ", expected an object"));
      return;
    }
    switch (options->format) {
      case DatasetFormat::kPlain: {
        std::string text, why;
        if (!StringField(value, options->text_field.c_str(), false, &text, &why)) {
          Bad(std::move(loc), why);
          return;
        }
        AddPlain(std::move(loc), text);
        return;
      }
      case DatasetFormat::kAlpaca:
      case DatasetFormat::kAlpacaChat:
        AddAlpaca(std::move(loc), value);
        return;
      case DatasetFormat::kShareGpt:
        AddConversation(std::move(loc), value);
        return;
    }
  }

  // A .txt file, streamed: at most one record (max_record_bytes) and one read buffer in memory.
  absl::Status ReadText(InputFile& in) {
    const std::string& file = in.path();
    const int64_t max_record = options->max_record_bytes;
    if (options->format != DatasetFormat::kPlain) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": dataset_format ", DatasetFormatName(options->format),
                                                     " needs JSON or JSONL records, got a text file"));
    }
    if (options->text_unit == TextUnit::kFile) {
      if (in.size() > max_record) {
        return AsDatasetError(
            TooLarge(file, in.size(), max_record, "one record may hold (text_unit file makes the file one record)"));
      }
      QATD_ASSIGN_OR_RETURN(std::string content, in.ReadAll(max_record));
      AddPlain({file, 1, -1}, content);
      return absl::OkStatus();
    }
    LineReader lines(&in, max_record);
    std::string paragraph;
    int64_t paragraph_line = -1;
    std::string_view line;
    while (true) {
      absl::StatusOr<bool> more = lines.Next(&line);
      if (!more.ok()) return AsDatasetError(more.status());
      if (!*more) break;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (options->text_unit == TextUnit::kLine) {
        AddPlain({file, lines.line_number(), -1}, line);
      } else if (PyStrip(line).empty()) {
        if (paragraph_line > 0) AddPlain({file, paragraph_line, -1}, paragraph);
        paragraph.clear();
        paragraph_line = -1;
      } else {
        if (paragraph_line < 0) paragraph_line = lines.line_number();
        else paragraph += '\n';
        if (static_cast<int64_t>(paragraph.size() + line.size()) > max_record) {
          return absl::InvalidArgumentError(absl::StrCat("dataset ", file, ":", paragraph_line,
                                                         ": paragraph is longer than ", FormatBytes(max_record)));
        }
        paragraph.append(line);
      }
    }
    if (paragraph_line > 0) AddPlain({file, paragraph_line, -1}, paragraph);
    return absl::OkStatus();
  }

  absl::Status ReadJsonArray(const std::string& file, const std::string& content) {
    json doc;
    try {
      doc = json::parse(content);
    } catch (const json::parse_error& e) {
      return absl::InvalidArgumentError(absl::StrCat(file, ":", LineOfOffset(content, e.byte > 0 ? e.byte - 1 : 0),
                                                     ": not valid JSON: ", e.what()));
    } catch (const json::exception& e) {  // e.g. a number out of range (1e999)
      return absl::InvalidArgumentError(absl::StrCat(file, ": not valid JSON: ", e.what()));
    }
    if (!doc.is_array()) {
      return absl::InvalidArgumentError(absl::StrCat(file, ":1: top-level JSON value is ", doc.type_name(),
                                                     ", expected an array of records (use .jsonl for one "
                                                     "object per line)"));
    }
    for (size_t i = 0; i < doc.size(); ++i) AddJsonRecord({file, -1, static_cast<int64_t>(i)}, doc[i]);
    return absl::OkStatus();
  }

  absl::Status JsonLine(const std::string& file, int64_t line_no, std::string_view line) {
    if (PyStrip(line).empty()) return absl::OkStatus();
    json value;
    try {
      value = json::parse(line);
    } catch (const json::exception& e) {  // parse errors, and numbers out of range (1e999)
      return absl::InvalidArgumentError(absl::StrCat(file, ":", line_no, ": not valid JSON: ", e.what()));
    }
    AddJsonRecord({file, line_no, -1}, value);
    return absl::OkStatus();
  }

  // A .jsonl file, streamed (one line of at most max_record_bytes in memory).
  absl::Status ReadJsonLines(InputFile& in) {
    LineReader lines(&in, options->max_record_bytes);
    std::string_view line;
    while (true) {
      absl::StatusOr<bool> more = lines.Next(&line);
      if (!more.ok()) return AsDatasetError(more.status());
      if (!*more) return absl::OkStatus();
      QATD_RETURN_IF_ERROR(JsonLine(in.path(), lines.line_number(), line));
    }
  }

  // JSON lines in a .json file already read whole.
  absl::Status ReadJsonLines(const std::string& file, const std::string& content) {
    size_t start = 0;
    int64_t line_no = 1;
    while (start < content.size()) {
      size_t end = content.find('\n', start);
      if (end == std::string::npos) end = content.size();
      if (static_cast<int64_t>(end - start) > options->max_record_bytes) {
        return absl::InvalidArgumentError(absl::StrCat("dataset ", file, ":", line_no, ": line is longer than ",
                                                       FormatBytes(options->max_record_bytes)));
      }
      QATD_RETURN_IF_ERROR(JsonLine(file, line_no, std::string_view(content.data() + start, end - start)));
      start = end + 1;
      ++line_no;
    }
    return absl::OkStatus();
  }
};

absl::StatusOr<FileKind> KindOf(const fs::path& p) {
  const std::string ext = p.extension().string();
  if (ext == ".txt") return FileKind::kText;
  if (ext == ".jsonl") return FileKind::kJsonLines;
  if (ext == ".json") return FileKind::kJsonArray;
  return absl::InvalidArgumentError(absl::StrCat(p.string(), ": unsupported file type '", ext,
                                                 "' (expected .txt, .json or .jsonl)"));
}

// The kind of a .json file's `content`: an array, or JSON lines.
FileKind KindOfJson(const std::string& content) {
  // A .json file may also hold JSON lines (the Hugging Face json loader accepts both):
  // an object first and more than one non-blank line means JSONL.
  const size_t first = content.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && content[first] == '{') {
    const size_t nl = content.find('\n', first);
    if (nl != std::string::npos && content.find_first_not_of(" \t\r\n", nl) != std::string::npos) {
      try {
        const json first_line = json::parse(std::string_view(content).substr(first, nl - first));
        if (first_line.is_object()) return FileKind::kJsonLines;
      } catch (const json::exception&) {
        // A pretty-printed object: fall through and report the top-level type.
      }
    }
  }
  return FileKind::kJsonArray;
}

// ---- samples: format detection and the submit-time check (issue #17) ----------------------

// The first records of a dataset's first data file, parsed from its first bytes.
struct Sample {
  std::string file;
  FileKind kind = FileKind::kText;
  std::vector<std::pair<RecordLocation, json>> records;  // JSON files only
  bool truncated = false;                                 // the file is longer than the sample
};

bool IsJsonSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

// One past the end of the JSON value that starts at text[begin], or npos when it does not end
// within `text` (a sample cut the file there).
size_t JsonValueEnd(std::string_view text, size_t begin) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = begin; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
        if (depth == 0) return i + 1;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (depth == 0 && i > begin && (c == ',' || c == ']' || c == '}' || IsJsonSpace(c))) {
      return i;  // the end of a scalar record
    } else if (c == '{' || c == '[') {
      ++depth;
    } else if (c == '}' || c == ']') {
      if (--depth <= 0) return i + 1;
    }
  }
  return std::string_view::npos;
}

absl::StatusOr<json> ParseSampleValue(std::string_view text, const std::string& where) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": not valid JSON: ", e.what()));
  }
}

absl::StatusOr<Sample> ReadSample(const DatasetOptions& options, int64_t max_bytes, int max_records) {
  if (absl::Status path = CheckDatasetPath(options); !path.ok()) return AsDatasetError(path);
  QATD_ASSIGN_OR_RETURN(const std::vector<std::string> files, DataFiles(options));
  if (files.empty()) {
    return absl::NotFoundError(absl::StrCat(options.path, ": directory holds no .txt, .json or .jsonl files"));
  }
  Sample sample;
  sample.file = files[0];
  QATD_ASSIGN_OR_RETURN(sample.kind, KindOf(fs::path(sample.file)));
  if (sample.kind == FileKind::kText) return sample;
  absl::StatusOr<InputFile> in = InputFile::Open(sample.file);
  if (!in.ok()) return AsDatasetError(in.status());
  std::string head(static_cast<size_t>(std::min(in->size(), max_bytes)), '\0');
  size_t filled = 0;
  while (filled < head.size()) {
    QATD_ASSIGN_OR_RETURN(const size_t n, in->Read(head.data() + filled, head.size() - filled));
    if (n == 0) break;
    filled += n;
  }
  head.resize(filled);
  sample.truncated = in->size() > static_cast<int64_t>(filled);
  const std::string& file = sample.file;
  if (sample.kind == FileKind::kJsonLines || KindOfJson(head) == FileKind::kJsonLines) {
    sample.kind = FileKind::kJsonLines;
    size_t start = 0;
    for (int64_t line_no = 1; start < head.size() && static_cast<int>(sample.records.size()) < max_records;
         ++line_no) {
      size_t end = head.find('\n', start);
      if (end == std::string::npos) {
        if (sample.truncated) break;  // a line the sample cut
        end = head.size();
      }
      const std::string_view line(head.data() + start, end - start);
      start = end + 1;
      if (PyStrip(line).empty()) continue;
      QATD_ASSIGN_OR_RETURN(json value, ParseSampleValue(line, absl::StrCat(file, ":", line_no)));
      sample.records.push_back({{file, line_no, -1}, std::move(value)});
    }
    return sample;
  }
  size_t pos = head.find_first_not_of(" \t\r\n");
  if (pos == std::string::npos) return sample;  // an empty file: no records
  if (head[pos] != '[') {
    return absl::InvalidArgumentError(absl::StrCat(
        file, ":1: the top-level JSON value is not an array of records (use .jsonl for one object per line)"));
  }
  ++pos;
  while (static_cast<int>(sample.records.size()) < max_records) {
    pos = head.find_first_not_of(" \t\r\n", pos);
    if (pos == std::string::npos || head[pos] == ']') break;
    if (head[pos] == ',' && !sample.records.empty()) {
      pos = head.find_first_not_of(" \t\r\n", pos + 1);
      if (pos == std::string::npos) break;
    }
    const size_t end = JsonValueEnd(head, pos);
    if (end == std::string_view::npos) break;  // the sample cut this record
    const auto index = static_cast<int64_t>(sample.records.size());
    QATD_ASSIGN_OR_RETURN(
        json value, ParseSampleValue(std::string_view(head).substr(pos, end - pos),
                                     absl::StrCat(file, ":", LineOfOffset(head, pos))));
    sample.records.push_back({{file, -1, index}, std::move(value)});
    pos = end;
  }
  return sample;
}

// The format a record's fields suggest, if any (see DetectDatasetFormat).
std::optional<DatasetFormat> FormatOfRecord(const json& record, const std::string& text_field) {
  if (!record.is_object()) return std::nullopt;
  if (record.contains("instruction") && record.contains("output")) return DatasetFormat::kAlpacaChat;
  if (record.contains("conversations") || record.contains("messages")) return DatasetFormat::kShareGpt;
  if (record.contains(text_field)) return DatasetFormat::kPlain;
  return std::nullopt;
}

std::string FieldNames(const json& record) {
  std::string names;
  for (auto it = record.begin(); it != record.end() && names.size() < 200; ++it) {
    absl::StrAppend(&names, names.empty() ? "" : ", ", it.key());
  }
  return names;
}

}  // namespace

std::string RecordLocation::ToString() const {
  if (index >= 0) return absl::StrCat(file, "[", index, "]");
  if (line >= 0) return absl::StrCat(file, ":", line);
  return file;
}

absl::StatusOr<DatasetFormat> ParseDatasetFormat(std::string_view name) {
  if (name == "plain") return DatasetFormat::kPlain;
  if (name == "alpaca") return DatasetFormat::kAlpaca;
  if (name == "alpaca_chat") return DatasetFormat::kAlpacaChat;
  if (name == "sharegpt" || name == "conversations") return DatasetFormat::kShareGpt;
  return absl::InvalidArgumentError(absl::StrCat("dataset_format must be one of plain, alpaca, alpaca_chat, "
                                                 "sharegpt; got '", std::string(name), "'"));
}

std::string DatasetFormatName(DatasetFormat format) {
  switch (format) {
    case DatasetFormat::kPlain: return "plain";
    case DatasetFormat::kAlpaca: return "alpaca";
    case DatasetFormat::kAlpacaChat: return "alpaca_chat";
    case DatasetFormat::kShareGpt: return "sharegpt";
  }
  return "?";
}

absl::StatusOr<TextUnit> ParseTextUnit(std::string_view name) {
  if (name == "line") return TextUnit::kLine;
  if (name == "paragraph") return TextUnit::kParagraph;
  if (name == "file") return TextUnit::kFile;
  return absl::InvalidArgumentError(
      absl::StrCat("text_unit must be one of line, paragraph, file; got '", std::string(name), "'"));
}

std::string TextUnitName(TextUnit unit) {
  switch (unit) {
    case TextUnit::kLine: return "line";
    case TextUnit::kParagraph: return "paragraph";
    case TextUnit::kFile: return "file";
  }
  return "?";
}

std::string PyStrip(std::string_view s) {
  size_t begin = 0;
  while (begin < s.size()) {
    const size_t len = WhitespaceAt(s, begin);
    if (len == 0) break;
    begin += len;
  }
  size_t end = s.size();
  while (end > begin) {
    const size_t prev = WhitespaceEndingAt(s, end);
    if (prev == end || prev < begin) break;
    end = prev;
  }
  return std::string(s.substr(begin, end - begin));
}

std::vector<model::ChatMessage> AlpacaMessages(std::string_view instruction, std::string_view input,
                                               std::string_view output) {
  std::string user = PyStrip(instruction);
  const std::string stripped_input = PyStrip(input);
  if (!stripped_input.empty()) absl::StrAppend(&user, "\n\n", stripped_input);
  return {{"user", std::move(user), std::nullopt}, {"assistant", PyStrip(output), std::nullopt}};
}

absl::StatusOr<std::string> DatasetSha256(const std::vector<std::string>& files) {
  Sha256 h;
  std::vector<char> buffer(1 << 20);
  for (const std::string& file : files) {
    absl::StatusOr<InputFile> in = InputFile::Open(file);
    if (!in.ok()) return AsDatasetError(in.status());
    const std::string name = fs::path(file).filename().string();
    h.Update(name.data(), name.size() + 1);  // with the terminating NUL
    while (true) {
      QATD_ASSIGN_OR_RETURN(const size_t n, in->Read(buffer.data(), buffer.size()));
      if (n == 0) break;
      h.Update(buffer.data(), n);
    }
    h.Update("", 1);
  }
  return h.FinishHex();
}

absl::Status CheckDatasetPath(const DatasetOptions& options) {
  if (options.path.empty()) return absl::InvalidArgumentError("path is empty");
  struct stat st {};
  if (::stat(options.path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat(options.path, ": no such file or directory"));
  }
  if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) {
    // InputFile names what it is ("a character device", "a FIFO", ...).
    const absl::Status not_regular = InputFile::Open(options.path).status();
    return absl::Status(not_regular.code(), absl::StrCat(not_regular.message(),
                                                         " (a dataset is a .txt, .json or .jsonl file or a "
                                                         "directory of them)"));
  }
  QATD_ASSIGN_OR_RETURN(const std::vector<std::string> files, DataFiles(options));
  int64_t total = 0;
  for (const std::string& file : files) {
    if (::stat(file.c_str(), &st) == 0) total += static_cast<int64_t>(st.st_size);
  }
  if (total > options.max_total_bytes) {
    return TooLarge(files.size() == 1 && files[0] == options.path
                        ? options.path
                        : absl::StrCat(options.path, " (", files.size(), " data files)"),
                    total, options.max_total_bytes, "a dataset may hold");
  }
  return absl::OkStatus();
}

absl::StatusOr<Dataset> ReadDataset(const DatasetOptions& options) {
  if (absl::Status path = CheckDatasetPath(options); !path.ok()) return AsDatasetError(path);
  Dataset dataset;
  QATD_ASSIGN_OR_RETURN(dataset.files, DataFiles(options));
  if (dataset.files.empty()) {
    return absl::NotFoundError(absl::StrCat(options.path, ": directory holds no .txt, .json or .jsonl files"));
  }
  Collector collector{&dataset, &options};
  int64_t total = 0;  // sizes when opened: a file may have grown since CheckDatasetPath
  for (const std::string& file : dataset.files) {
    QATD_ASSIGN_OR_RETURN(FileKind kind, KindOf(fs::path(file)));
    absl::StatusOr<InputFile> in = InputFile::Open(file);
    if (!in.ok()) return AsDatasetError(in.status());
    total += in->size();
    if (total > options.max_total_bytes) {
      return AsDatasetError(TooLarge(options.path, total, options.max_total_bytes, "a dataset may hold"));
    }
    switch (kind) {
      case FileKind::kText: QATD_RETURN_IF_ERROR(collector.ReadText(*in)); break;
      case FileKind::kJsonLines: QATD_RETURN_IF_ERROR(collector.ReadJsonLines(*in)); break;
      case FileKind::kJsonArray: {
        if (in->size() > options.max_json_file_bytes) {
          return AsDatasetError(TooLarge(file, in->size(), options.max_json_file_bytes,
                                         "a .json file may hold (it is parsed whole; write one record per line as "
                                         ".jsonl for more)"));
        }
        QATD_ASSIGN_OR_RETURN(const std::string content, in->ReadAll(options.max_json_file_bytes));
        if (KindOfJson(content) == FileKind::kJsonLines) {
          QATD_RETURN_IF_ERROR(collector.ReadJsonLines(file, content));
        } else {
          QATD_RETURN_IF_ERROR(collector.ReadJsonArray(file, content));
        }
        break;
      }
    }
  }
  return dataset;
}

absl::StatusOr<DatasetFormat> DetectDatasetFormat(const DatasetOptions& options, int64_t max_bytes) {
  QATD_ASSIGN_OR_RETURN(const Sample sample, ReadSample(options, max_bytes, 1));
  if (sample.kind == FileKind::kText) return DatasetFormat::kPlain;
  if (sample.records.empty()) {
    return absl::InvalidArgumentError(
        sample.truncated ? absl::StrCat(sample.file, ": its first record is longer than the ", FormatBytes(max_bytes),
                                        " read to detect the format")
                         : absl::StrCat(sample.file, ": holds no records"));
  }
  const auto& [location, record] = sample.records[0];
  if (!record.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(location.ToString(), ": record is ", record.type_name(), ", expected an object"));
  }
  if (std::optional<DatasetFormat> format = FormatOfRecord(record, options.text_field)) return *format;
  return absl::InvalidArgumentError(absl::StrCat(
      location.ToString(), ": a record with the fields (", FieldNames(record),
      ") fits no format: alpaca_chat has instruction and output, sharegpt conversations or messages, plain '",
      options.text_field, "'"));
}

absl::Status CheckDatasetSample(const DatasetOptions& options, int64_t max_bytes, int max_records) {
  QATD_ASSIGN_OR_RETURN(const Sample sample, ReadSample(options, max_bytes, max_records));
  if (sample.kind == FileKind::kText) {
    if (options.format == DatasetFormat::kPlain) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(sample.file, ": ", DatasetFormatName(options.format),
                                                   " needs JSON or JSONL records, got a text file (the records "
                                                   "look like plain)"));
  }
  Dataset dataset;
  Collector collector{&dataset, &options};
  for (const auto& [location, record] : sample.records) collector.AddJsonRecord(location, record);
  if (!dataset.records.empty() || dataset.bad_records.empty()) return absl::OkStatus();
  const BadRecord& bad = dataset.bad_records[0];
  std::string message = absl::StrCat(bad.location.ToString(), ": ", bad.reason);
  const std::optional<DatasetFormat> looks = FormatOfRecord(sample.records[0].second, options.text_field);
  // alpaca and alpaca_chat read the same records.
  auto alpaca = [](DatasetFormat f) { return f == DatasetFormat::kAlpaca || f == DatasetFormat::kAlpacaChat; };
  if (looks.has_value() && *looks != options.format && !(alpaca(*looks) && alpaca(options.format))) {
    absl::StrAppend(&message, " (the records look like ", DatasetFormatName(*looks), ")");
  }
  return absl::InvalidArgumentError(message);
}

}  // namespace qatd::kd
