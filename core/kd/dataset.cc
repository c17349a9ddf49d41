#include "core/kd/dataset.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"
#include "core/common/sha256.h"

namespace qatd::kd {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

enum class FileKind { kText, kJsonArray, kJsonLines };

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return absl::InternalError(absl::StrCat(path, ": read error"));
  return std::move(buffer).str();
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

  absl::Status ReadText(const std::string& file, const std::string& content) {
    if (options->format != DatasetFormat::kPlain) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": dataset_format ", DatasetFormatName(options->format),
                                                     " needs JSON or JSONL records, got a text file"));
    }
    if (options->text_unit == TextUnit::kFile) {
      AddPlain({file, 1, -1}, content);
      return absl::OkStatus();
    }
    size_t start = 0;
    int64_t line_no = 1;
    std::string paragraph;
    int64_t paragraph_line = -1;
    while (start <= content.size()) {
      size_t end = content.find('\n', start);
      if (end == std::string::npos) end = content.size();
      std::string_view line(content.data() + start, end - start);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (options->text_unit == TextUnit::kLine) {
        if (!(end == content.size() && line.empty())) AddPlain({file, line_no, -1}, line);
      } else if (PyStrip(line).empty()) {
        if (paragraph_line > 0) AddPlain({file, paragraph_line, -1}, paragraph);
        paragraph.clear();
        paragraph_line = -1;
      } else {
        if (paragraph_line < 0) paragraph_line = line_no;
        else paragraph += '\n';
        paragraph.append(line);
      }
      if (end == content.size()) break;
      start = end + 1;
      ++line_no;
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
    }
    if (!doc.is_array()) {
      return absl::InvalidArgumentError(absl::StrCat(file, ":1: top-level JSON value is ", doc.type_name(),
                                                     ", expected an array of records (use .jsonl for one "
                                                     "object per line)"));
    }
    for (size_t i = 0; i < doc.size(); ++i) AddJsonRecord({file, -1, static_cast<int64_t>(i)}, doc[i]);
    return absl::OkStatus();
  }

  absl::Status ReadJsonLines(const std::string& file, const std::string& content) {
    size_t start = 0;
    int64_t line_no = 1;
    while (start < content.size()) {
      size_t end = content.find('\n', start);
      if (end == std::string::npos) end = content.size();
      std::string_view line(content.data() + start, end - start);
      if (!PyStrip(line).empty()) {
        json value;
        try {
          value = json::parse(line);
        } catch (const json::parse_error& e) {
          return absl::InvalidArgumentError(absl::StrCat(file, ":", line_no, ": not valid JSON: ", e.what()));
        }
        AddJsonRecord({file, line_no, -1}, value);
      }
      start = end + 1;
      ++line_no;
    }
    return absl::OkStatus();
  }
};

absl::StatusOr<FileKind> KindOf(const fs::path& p, const std::string& content) {
  const std::string ext = p.extension().string();
  if (ext == ".txt") return FileKind::kText;
  if (ext == ".jsonl") return FileKind::kJsonLines;
  if (ext == ".json") {
    // A .json file may also hold JSON lines (the Hugging Face json loader accepts both):
    // an object first and more than one non-blank line means JSONL.
    const size_t first = content.find_first_not_of(" \t\r\n");
    if (first != std::string::npos && content[first] == '{') {
      const size_t nl = content.find('\n', first);
      if (nl != std::string::npos && content.find_first_not_of(" \t\r\n", nl) != std::string::npos) {
        try {
          const json first_line = json::parse(std::string_view(content).substr(first, nl - first));
          if (first_line.is_object()) return FileKind::kJsonLines;
        } catch (const json::parse_error&) {
          // A pretty-printed object: fall through and report the top-level type.
        }
      }
    }
    return FileKind::kJsonArray;
  }
  return absl::InvalidArgumentError(absl::StrCat(p.string(), ": unsupported file type '", ext,
                                                 "' (expected .txt, .json or .jsonl)"));
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
    std::ifstream in(file, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat(file, ": cannot open"));
    const std::string name = fs::path(file).filename().string();
    h.Update(name.data(), name.size() + 1);  // with the terminating NUL
    while (in) {
      in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
      h.Update(buffer.data(), static_cast<size_t>(in.gcount()));
    }
    if (in.bad()) return absl::InternalError(absl::StrCat(file, ": read error"));
    h.Update("", 1);
  }
  return h.FinishHex();
}

absl::StatusOr<Dataset> ReadDataset(const DatasetOptions& options) {
  std::error_code ec;
  const fs::path root(options.path);
  if (options.path.empty()) return absl::InvalidArgumentError("dataset path is empty");
  if (!fs::exists(root, ec)) return absl::NotFoundError(absl::StrCat(options.path, ": no such file or directory"));
  Dataset dataset;
  if (fs::is_directory(root, ec)) {
    for (const auto& entry : fs::directory_iterator(root, ec)) {
      const std::string ext = entry.path().extension().string();
      if (entry.is_regular_file() && (ext == ".txt" || ext == ".json" || ext == ".jsonl")) {
        dataset.files.push_back(entry.path().string());
      }
    }
    if (ec) return absl::InternalError(absl::StrCat(options.path, ": cannot list: ", ec.message()));
    std::sort(dataset.files.begin(), dataset.files.end());
    if (dataset.files.empty()) {
      return absl::NotFoundError(absl::StrCat(options.path, ": directory holds no .txt, .json or .jsonl files"));
    }
  } else {
    dataset.files.push_back(options.path);
  }
  Collector collector{&dataset, &options};
  for (const std::string& file : dataset.files) {
    QATD_ASSIGN_OR_RETURN(std::string content, ReadWholeFile(file));
    QATD_ASSIGN_OR_RETURN(FileKind kind, KindOf(fs::path(file), content));
    switch (kind) {
      case FileKind::kText: QATD_RETURN_IF_ERROR(collector.ReadText(file, content)); break;
      case FileKind::kJsonArray: QATD_RETURN_IF_ERROR(collector.ReadJsonArray(file, content)); break;
      case FileKind::kJsonLines: QATD_RETURN_IF_ERROR(collector.ReadJsonLines(file, content)); break;
    }
  }
  return dataset;
}

}  // namespace qatd::kd
