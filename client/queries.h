#pragma once
// The read-only and control commands: `qat server`, `qat jobs`, `qat status`, `qat cancel`,
// `qat artifacts`, `qat curve`. Each makes its RPC(s), prints to stdout (text, or protobuf
// JSON with `json`) and returns the exit code.

#include <cstdint>
#include <string>
#include <vector>

#include "client/connection.h"

namespace qatd::client {

struct OutputOptions {
  bool json = false;
  bool color = false;  // ANSI colors (stdout is a TTY and NO_COLOR is unset)
  bool utf8 = false;
};

int ShowServer(Connection& connection, const OutputOptions& out);

struct JobsQuery {
  std::vector<std::string> states;  // names, e.g. "running" (comma lists are split by CLI11)
  std::vector<std::string> kinds;   // e.g. "kd_cache"
  int64_t pipeline_id = 0;
  int limit = 50;  // page size
  std::string page_token;
  bool all = false;  // follow next_page_token to the end
};
int ListJobs(Connection& connection, const JobsQuery& query, const OutputOptions& out);

int ShowJob(Connection& connection, int64_t job_id, const OutputOptions& out);
int CancelJob(Connection& connection, int64_t job_id, const std::string& reason, const OutputOptions& out);

struct ArtifactsQuery {
  int64_t job_id = 0;
  int64_t pipeline_id = 0;
  std::string kind;
};
int ListArtifacts(Connection& connection, const ArtifactsQuery& query, const OutputOptions& out);

struct CurveOptions {
  std::vector<std::string> metrics;  // default: loss/* and eval/kd
  bool csv = false;
  std::string png;  // write a PNG plot here
  bool log_y = false;     // one chart, log y axis
  bool one_axis = false;  // one chart, linear y axis (default: a chart per magnitude group)
  int width = 0;          // terminal chart columns; 0 = ChartColumns (the terminal, $COLUMNS, 100)
  int height = 16;
};
int ShowCurve(Connection& connection, int64_t job_id, const CurveOptions& options, const OutputOptions& out);

// The job table rows used by `qat jobs` and `qat pipeline status`.
std::vector<std::string> JobRow(const v1::Job& job, bool color);
// "eval/kd=0.12 loss/kd=0.3" from the job's result (at most `max` entries), or its error.
std::string JobOutcome(const v1::Job& job, size_t max);

}  // namespace qatd::client
