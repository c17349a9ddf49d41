#pragma once
// Following one job's event stream (WatchJob): `qat watch`, `qat logs` and every `--wait`.

#include <cstdint>
#include <string>

#include "client/connection.h"
#include "qatd/v1/job.pb.h"

namespace qatd::client {

struct WatchOptions {
  bool json = false;  // one JobEvent per line (protobuf JSON) instead of text
  bool tty = false;   // redraw one progress bar line; otherwise plain lines
  bool color = false;
  bool utf8 = false;
  std::string prefix;  // put before every line (pipeline stage names)
};

struct WatchResult {
  int exit_code = kExitFailed;  // 0 when the job SUCCEEDED; RPC errors as Connection::Report
  v1::JobState state = v1::JOB_STATE_UNSPECIFIED;
  v1::JobError error;
};

// Streams the job's history and live events until its terminal state. On a TTY: a live line
// "bar done/total unit pct  loss  tokens/s  ETA" with log lines printed above it; otherwise
// state changes, logs, artifacts and throttled progress lines (at most one a second, plus the
// last). Ends with a summary line.
WatchResult WatchJob(Connection& connection, int64_t job_id, const WatchOptions& options);

struct LogsOptions {
  bool follow = false;  // -f: until the job ends
  bool json = false;
  bool color = false;
  // Without -f: how long a quiet stream counts as "the stored history has been replayed".
  int idle_ms = 500;
  int first_event_ms = 3000;
};

// Prints the job's log lines. With follow, until the job ends. Without it, the stored
// history only: WatchJob replays stored events first, so the replay is taken as caught up at
// the first of (a) the end of the stream (a finished job), (b) an event that was never
// stored (seq 0, live progress), (c) an event stamped after the call started, or (d) no event
// for `idle_ms` (`first_event_ms` before the first one). Returns the exit code.
int PrintLogs(Connection& connection, int64_t job_id, const LogsOptions& options);

// "INFO", "WARN", ... for a log level.
std::string LevelName(v1::LogLevel level);

}  // namespace qatd::client
