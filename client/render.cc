#include "client/render.h"

#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <ctime>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"

namespace qatd::client {
namespace {

std::string Upper(const std::string& text) {
  std::string out;
  for (char c : text) out.push_back(c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  return out;
}

}  // namespace

bool StdoutIsTty() { return ::isatty(STDOUT_FILENO) == 1; }

bool ColorsWanted() {
  const char* no_color = std::getenv("NO_COLOR");
  if (no_color != nullptr && *no_color != '\0') return false;
  const char* term = std::getenv("TERM");
  if (term != nullptr && std::string(term) == "dumb") return false;
  return StdoutIsTty();
}

bool Utf8Wanted() {
  for (const char* name : {"LC_ALL", "LC_CTYPE", "LANG"}) {
    const char* value = std::getenv(name);
    if (value != nullptr && *value != '\0') {
      const std::string v = absl::AsciiStrToUpper(value);
      return v.find("UTF-8") != std::string::npos || v.find("UTF8") != std::string::npos;
    }
  }
  return false;
}

std::string Paint(const std::string& text, Color color, bool enabled) {
  if (!enabled || color == Color::kNone) return text;
  const char* code = "";
  switch (color) {
    case Color::kRed:
      code = "31";
      break;
    case Color::kGreen:
      code = "32";
      break;
    case Color::kYellow:
      code = "33";
      break;
    case Color::kBlue:
      code = "34";
      break;
    case Color::kMagenta:
      code = "35";
      break;
    case Color::kCyan:
      code = "36";
      break;
    case Color::kDim:
      code = "2";
      break;
    case Color::kBold:
      code = "1";
      break;
    case Color::kNone:
      break;
  }
  return absl::StrFormat("\033[%sm%s\033[0m", code, text);
}

size_t VisibleWidth(const std::string& text) {
  size_t width = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == 0x1b) {  // CSI ... final byte in [@-~]
      ++i;
      if (i < text.size() && text[i] == '[') {
        while (i + 1 < text.size() && !(text[i + 1] >= '@' && text[i + 1] <= '~')) ++i;
        ++i;
      }
      continue;
    }
    if ((c & 0xC0) != 0x80) ++width;  // count lead bytes only
  }
  return width;
}

std::string StateName(v1::JobState state) {
  const std::string& name = v1::JobState_Name(state);
  return name.rfind("JOB_STATE_", 0) == 0 ? name.substr(10) : name;
}

std::string KindName(v1::JobKind kind) {
  const std::string& name = v1::JobKind_Name(kind);
  return name.rfind("JOB_KIND_", 0) == 0 ? name.substr(9) : name;
}

std::optional<v1::JobState> ParseState(const std::string& name) {
  std::string key = Upper(name);
  if (key.rfind("JOB_STATE_", 0) != 0) key = "JOB_STATE_" + key;
  v1::JobState state;
  if (!v1::JobState_Parse(key, &state) || state == v1::JOB_STATE_UNSPECIFIED) return std::nullopt;
  return state;
}

std::optional<v1::JobKind> ParseKind(const std::string& name) {
  std::string key = Upper(name);
  if (key.rfind("JOB_KIND_", 0) != 0) key = "JOB_KIND_" + key;
  v1::JobKind kind;
  if (!v1::JobKind_Parse(key, &kind) || kind == v1::JOB_KIND_UNSPECIFIED) return std::nullopt;
  return kind;
}

Color StateColor(v1::JobState state) {
  switch (state) {
    case v1::JOB_STATE_QUEUED:
      return Color::kDim;
    case v1::JOB_STATE_RUNNING:
      return Color::kCyan;
    case v1::JOB_STATE_SUCCEEDED:
      return Color::kGreen;
    case v1::JOB_STATE_FAILED:
      return Color::kRed;
    case v1::JOB_STATE_CANCELLED:
      return Color::kYellow;
    default:
      return Color::kNone;
  }
}

bool IsTerminal(v1::JobState state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED || state == v1::JOB_STATE_CANCELLED;
}

std::string FormatDuration(double seconds) {
  if (!(seconds >= 0) || !std::isfinite(seconds)) return "-";
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s < 60) return absl::StrFormat("%ds", s);
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  if (s < 86400) return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
  return absl::StrFormat("%dd%02dh", s / 86400, (s % 86400) / 3600);
}

std::string FormatBytes(int64_t bytes) {
  if (bytes < 1024) return absl::StrFormat("%d B", bytes);
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = -1;
  while (value >= 1024 && unit < 3) {
    value /= 1024;
    ++unit;
  }
  return absl::StrFormat("%.1f %s", value, units[unit]);
}

std::string FormatProgress(const v1::Progress& p) {
  if (p.done() == 0 && p.total() == 0) return "-";
  const std::string unit = p.unit().empty() ? "" : " " + p.unit();
  if (p.total() <= 0) return absl::StrFormat("%d%s", p.done(), unit);
  const int percent = static_cast<int>(100.0 * static_cast<double>(p.done()) / static_cast<double>(p.total()));
  return absl::StrFormat("%d/%d%s (%d%%)", p.done(), p.total(), unit, percent);
}

std::string FormatNumber(double value) { return absl::StrFormat("%.6g", value); }

double ToSeconds(const google::protobuf::Timestamp& t) { return static_cast<double>(t.seconds()) + t.nanos() * 1e-9; }

std::string FormatTime(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return "-";
  const std::time_t seconds = static_cast<std::time_t>(t.seconds());
  std::tm local{};
  localtime_r(&seconds, &local);
  char buffer[32];
  std::strftime(buffer, sizeof(buffer), "%Y-%m-%d %H:%M:%S", &local);
  return buffer;
}

double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::optional<double> JobDuration(const v1::Job& job) {
  if (!job.has_start_time() || job.start_time().seconds() == 0) return std::nullopt;
  const double start = ToSeconds(job.start_time());
  if (IsTerminal(job.state()) && job.has_end_time() && job.end_time().seconds() != 0) {
    return std::max(0.0, ToSeconds(job.end_time()) - start);
  }
  if (job.state() != v1::JOB_STATE_RUNNING) return std::nullopt;
  return std::max(0.0, NowSeconds() - start);
}

std::string ToJson(const google::protobuf::Message& message, bool pretty) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = pretty;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

std::string ProgressBar(int64_t done, int64_t total, int width, bool utf8) {
  const double fraction = total > 0 ? std::clamp(static_cast<double>(done) / static_cast<double>(total), 0.0, 1.0) : 0;
  const int filled = static_cast<int>(fraction * width + 1e-9);
  std::string bar = utf8 ? "" : "[";
  for (int i = 0; i < width; ++i) {
    if (utf8) {
      bar += i < filled ? "\u2588" : "\u2591";
    } else {
      bar += i < filled ? '#' : '-';
    }
  }
  if (!utf8) bar += "]";
  return bar;
}

void Table::Print(std::FILE* out, bool bold_header) const {
  std::vector<size_t> widths(header_.size(), 0);
  auto measure = [&](const std::vector<std::string>& row) {
    for (size_t i = 0; i < row.size() && i < widths.size(); ++i) widths[i] = std::max(widths[i], VisibleWidth(row[i]));
  };
  measure(header_);
  for (const auto& row : rows_) measure(row);
  auto print = [&](const std::vector<std::string>& row, bool header) {
    std::string line;
    for (size_t i = 0; i < row.size() && i < widths.size(); ++i) {
      const bool last = i + 1 == row.size();
      line += header ? Paint(row[i], Color::kBold, bold_header) : row[i];
      if (!last) line += std::string(widths[i] - VisibleWidth(row[i]) + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    std::fprintf(out, "%s\n", line.c_str());
  };
  print(header_, true);
  for (const auto& row : rows_) print(row, false);
}

}  // namespace qatd::client
