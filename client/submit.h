#pragma once
// Submitting work: one job (`qat cache|lbl|train|convert|snap|eval|probe`), a generation
// stream (`qat infer`), and pipelines (`qat pipeline run|status|list|cancel`).

#include <cstdint>
#include <istream>
#include <string>

#include "absl/status/statusor.h"
#include "client/connection.h"
#include "client/queries.h"
#include "qatd/v1/job.pb.h"

namespace qatd::client {

struct SubmitOptions {
  bool wait = false;  // then follow the job(s) like `qat watch`
  bool tty = false;   // stdout is a terminal (progress bars)
  OutputOptions out;
};

// SubmitJob, then (with wait) WatchJob. Exit code: the RPC's, else with wait the job's.
int SubmitJob(Connection& connection, const v1::JobSpec& spec, const SubmitOptions& options);

// One Generate stream for `spec.generate()` (priority/resources from `spec`): the text pieces
// go to stdout as they arrive, the job id to stderr.
int Generate(Connection& connection, const v1::JobSpec& spec, const OutputOptions& out);
// A chat (`qat infer --interactive`, client/generate_command.cc): one GenerateSession stream,
// so one job and one model load; reads messages from `in` line by line, with the commands
// /reset, /system TEXT, /help and /exit (also quit, exit, q or EOF).
int GenerateInteractive(Connection& connection, const v1::JobSpec& spec, std::istream& in, const OutputOptions& out);

// A PipelineSpec in protobuf text format; INVALID_ARGUMENT with the file's line and column.
absl::StatusOr<v1::PipelineSpec> ReadPipelineFile(const std::string& path);
std::string PipelineText(const v1::PipelineSpec& spec);

// SubmitPipeline; with wait, each stage is followed in order and a per-stage table (state,
// final metrics or error) ends the output. Exit code 0 when every stage succeeded.
int SubmitPipeline(Connection& connection, const v1::PipelineSpec& spec, const SubmitOptions& options);
// GetPipeline and its jobs as a table.
int ShowPipeline(Connection& connection, int64_t pipeline_id, const OutputOptions& out);
// The newest `limit` pipelines (found through their jobs: ListJobs, newest first), one row
// each: id, name, state, stages done, created.
int ListPipelines(Connection& connection, int limit, const OutputOptions& out);
// Cancels every job of the pipeline that has not finished (queued ones at once, running ones
// like `qat cancel`); finished stages are left as they are.
int CancelPipeline(Connection& connection, int64_t pipeline_id, const std::string& reason, const OutputOptions& out);

}  // namespace qatd::client
