#pragma once
// Text output for humans: aligned tables, colors (only on a TTY, and never with NO_COLOR),
// durations, sizes, progress, and the short names of job states and kinds.

#include <google/protobuf/message.h>
#include <google/protobuf/timestamp.pb.h>

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "qatd/v1/job.pb.h"

namespace qatd::client {

enum class Color { kNone, kRed, kGreen, kYellow, kBlue, kMagenta, kCyan, kDim, kBold };

// Whether stdout is a terminal; whether colors are wanted there (TTY, NO_COLOR unset, TERM
// not "dumb").
bool StdoutIsTty();
bool ColorsWanted();
// Whether the locale says UTF-8 (block characters in bars and charts).
bool Utf8Wanted();

// `text` wrapped in the ANSI sequence for `color` when `enabled`.
std::string Paint(const std::string& text, Color color, bool enabled);
// Display width of `text`: UTF-8 code points, ANSI escape sequences skipped.
size_t VisibleWidth(const std::string& text);

// "RUNNING", "KD_CACHE": the enum names without their prefix.
std::string StateName(v1::JobState state);
std::string KindName(v1::JobKind kind);
// "running" / "RUNNING" / "job_state_running" -> the state; nullopt when unknown.
std::optional<v1::JobState> ParseState(const std::string& name);
std::optional<v1::JobKind> ParseKind(const std::string& name);
Color StateColor(v1::JobState state);
bool IsTerminal(v1::JobState state);

// "42s", "3m05s", "2h03m", "4d02h"; "-" for a negative value.
std::string FormatDuration(double seconds);
// "512 B", "1.5 KiB", "3.2 GiB".
std::string FormatBytes(int64_t bytes);
// "45/100 steps (45%)", "45 steps" when the total is unknown, "-" when nothing is done.
std::string FormatProgress(const v1::Progress& progress);
// "%g" of a metric value.
std::string FormatNumber(double value);
// Local time "2026-11-26 19:26:02", or "-" for an unset timestamp.
std::string FormatTime(const google::protobuf::Timestamp& time);

double ToSeconds(const google::protobuf::Timestamp& time);
double NowSeconds();
// Seconds the job has been (or was) running; nullopt when it never started.
std::optional<double> JobDuration(const v1::Job& job);

// Protobuf JSON of `message` (proto field names in lowerCamelCase, as the JSON mapping
// says); `pretty`: indented, else one line.
std::string ToJson(const google::protobuf::Message& message, bool pretty);

// A text bar of `width` cells for done/total ("[#####-----]" or block characters).
std::string ProgressBar(int64_t done, int64_t total, int width, bool utf8);

// Rows of cells printed with aligned columns (two spaces apart; the last column unpadded).
class Table {
 public:
  explicit Table(std::vector<std::string> header) : header_(std::move(header)) {}
  void AddRow(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  bool empty() const { return rows_.empty(); }
  // `bold_header`: paint the header (only when colors are on).
  void Print(std::FILE* out, bool bold_header) const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace qatd::client
