#include "client/submit.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "client/job_watch.h"
#include "client/render.h"

namespace qatd::client {
namespace {

WatchOptions WatchOptionsFor(const SubmitOptions& o, const std::string& prefix = "") {
  WatchOptions w;
  w.json = o.out.json;
  w.tty = o.tty && !o.out.json;
  w.color = o.out.color;
  w.utf8 = o.out.utf8;
  w.prefix = prefix;
  return w;
}

class CollectFirstError : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, google::protobuf::io::ColumnNumber column, const std::string& message) override {
    if (first_.empty()) first_ = absl::StrFormat("line %d, column %d: %s", line + 1, column + 1, message);
  }
  const std::string& first() const { return first_; }

 private:
  std::string first_;
};

// The jobs of a pipeline by id (one ListJobs call).
absl::StatusOr<std::map<int64_t, v1::Job>> PipelineJobs(Connection& connection, int64_t pipeline_id,
                                                        grpc::Status* rpc_status) {
  v1::ListJobsRequest request;
  request.set_pipeline_id(pipeline_id);
  request.set_page_size(1000);
  std::map<int64_t, v1::Job> jobs;
  while (true) {
    v1::ListJobsResponse response;
    *rpc_status = connection.stub().ListJobs(connection.UnaryContext().get(), request, &response);
    if (!rpc_status->ok()) return absl::UnknownError("ListJobs failed");
    for (const v1::Job& job : response.jobs()) jobs[job.id()] = job;
    if (response.next_page_token().empty()) break;
    request.set_page_token(response.next_page_token());
  }
  return jobs;
}

void PrintStageTable(const v1::Pipeline& pipeline, const std::map<int64_t, v1::Job>& jobs, bool color) {
  Table table({"STAGE", "JOB", "KIND", "STATE", "PROGRESS", "DURATION", "RESULT"});
  for (int64_t id : pipeline.job_ids()) {
    auto it = jobs.find(id);
    if (it == jobs.end()) {
      table.AddRow({"?", std::to_string(id), "-", "-", "-", "-", "-"});
      continue;
    }
    const v1::Job& job = it->second;
    const auto duration = JobDuration(job);
    table.AddRow({job.stage(), std::to_string(id), KindName(job.kind()),
                  Paint(StateName(job.state()), StateColor(job.state()), color), FormatProgress(job.progress()),
                  duration ? FormatDuration(*duration) : "-", JobOutcome(job, 3)});
  }
  table.Print(stdout, color);
}

}  // namespace

int SubmitJob(Connection& connection, const v1::JobSpec& spec, const SubmitOptions& options) {
  v1::SubmitJobRequest request;
  *request.mutable_spec() = spec;
  v1::Job job;
  const grpc::Status status = connection.stub().SubmitJob(connection.UnaryContext().get(), request, &job);
  if (!status.ok()) return connection.Report(status);
  if (options.out.json) {
    std::printf("%s\n", ToJson(job, !options.wait).c_str());
  } else {
    std::printf("submitted job %lld (%s, %s)%s\n", static_cast<long long>(job.id()), KindName(job.kind()).c_str(),
                StateName(job.state()).c_str(),
                options.wait ? "" : absl::StrFormat("; follow it with: qat watch %d", job.id()).c_str());
  }
  std::fflush(stdout);
  if (!options.wait) return kExitOk;
  return WatchJob(connection, job.id(), WatchOptionsFor(options)).exit_code;
}

int Generate(Connection& connection, const v1::JobSpec& spec, const OutputOptions& out) {
  v1::GenerateRequest request;
  *request.mutable_spec() = spec.generate();
  request.set_priority(spec.priority());
  if (spec.has_resources()) *request.mutable_resources() = spec.resources();
  auto context = connection.StreamContext();
  auto reader = connection.stub().Generate(context.get(), request);
  v1::GenerateResponse response;
  bool wrote_text = false;
  while (reader->Read(&response)) {
    if (out.json) {
      std::printf("%s\n", ToJson(response, false).c_str());
    } else {
      if (response.job_id() != 0 && ::isatty(STDERR_FILENO) == 1) {
        std::fprintf(stderr, "%s\n", Paint(absl::StrFormat("[job %d]", response.job_id()), Color::kDim, true).c_str());
      }
      if (!response.text().text().empty()) {
        std::fwrite(response.text().text().data(), 1, response.text().text().size(), stdout);
        wrote_text = true;
      }
    }
    std::fflush(stdout);
  }
  if (wrote_text) std::printf("\n");
  std::fflush(stdout);
  return connection.Report(reader->Finish());
}

absl::StatusOr<v1::PipelineSpec> ReadPipelineFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError("cannot read pipeline file " + path);
  std::stringstream text;
  text << in.rdbuf();
  google::protobuf::TextFormat::Parser parser;
  CollectFirstError errors;
  parser.RecordErrorsTo(&errors);
  v1::PipelineSpec spec;
  if (!parser.ParseFromString(text.str(), &spec)) {
    return absl::InvalidArgumentError(path + ": " + (errors.first().empty() ? "not a PipelineSpec" : errors.first()));
  }
  return spec;
}

std::string PipelineText(const v1::PipelineSpec& spec) {
  std::string text;
  google::protobuf::TextFormat::PrintToString(spec, &text);
  return text;
}

int SubmitPipeline(Connection& connection, const v1::PipelineSpec& spec, const SubmitOptions& options) {
  v1::SubmitPipelineRequest request;
  *request.mutable_spec() = spec;
  v1::Pipeline pipeline;
  const grpc::Status status = connection.stub().SubmitPipeline(connection.UnaryContext().get(), request, &pipeline);
  if (!status.ok()) return connection.Report(status);
  if (options.out.json) {
    std::printf("%s\n", ToJson(pipeline, !options.wait).c_str());
  } else {
    std::printf("submitted pipeline %lld (%s): %d stages\n", static_cast<long long>(pipeline.id()), spec.name().c_str(),
                pipeline.job_ids_size());
    Table table({"STAGE", "JOB", "DEPENDS ON"});
    // job_ids are in stage order; the stages' names come from the spec's DAG order, so ask.
    grpc::Status list_status;
    auto jobs = PipelineJobs(connection, pipeline.id(), &list_status);
    if (!jobs.ok()) return connection.Report(list_status);
    for (int64_t id : pipeline.job_ids()) {
      const v1::Job& job = (*jobs)[id];
      std::string deps;
      for (int64_t d : job.depends_on()) deps += (deps.empty() ? "" : ", ") + std::to_string(d);
      table.AddRow({job.stage(), std::to_string(id), deps.empty() ? "-" : deps});
    }
    table.Print(stdout, options.out.color);
    if (!options.wait) std::printf("follow it with: qat pipeline status %lld\n", static_cast<long long>(pipeline.id()));
  }
  std::fflush(stdout);
  if (!options.wait) return kExitOk;

  grpc::Status list_status;
  auto jobs = PipelineJobs(connection, pipeline.id(), &list_status);
  if (!jobs.ok()) return connection.Report(list_status);
  bool all_ok = true;
  for (int64_t id : pipeline.job_ids()) {
    const std::string stage = (*jobs)[id].stage();
    if (!options.out.json) std::printf("== stage %s (job %lld)\n", stage.c_str(), static_cast<long long>(id));
    const WatchResult result = WatchJob(connection, id, WatchOptionsFor(options, "[" + stage + "] "));
    if (result.exit_code == kExitUnreachable) return result.exit_code;
    if (result.state != v1::JOB_STATE_SUCCEEDED) all_ok = false;
  }
  jobs = PipelineJobs(connection, pipeline.id(), &list_status);
  if (!jobs.ok()) return connection.Report(list_status);
  if (!options.out.json) {
    std::printf("\npipeline %lld (%s):\n", static_cast<long long>(pipeline.id()), spec.name().c_str());
    PrintStageTable(pipeline, *jobs, options.out.color);
  }
  return all_ok ? kExitOk : kExitFailed;
}

int ShowPipeline(Connection& connection, int64_t pipeline_id, const OutputOptions& out) {
  v1::GetPipelineRequest request;
  request.set_pipeline_id(pipeline_id);
  v1::Pipeline pipeline;
  const grpc::Status status = connection.stub().GetPipeline(connection.UnaryContext().get(), request, &pipeline);
  if (!status.ok()) return connection.Report(status);
  grpc::Status list_status;
  auto jobs = PipelineJobs(connection, pipeline_id, &list_status);
  if (!jobs.ok()) return connection.Report(list_status);
  if (out.json) {
    std::string list;
    for (int64_t id : pipeline.job_ids()) list += (list.empty() ? "" : ",") + ToJson((*jobs)[id], false);
    std::printf("{\"pipeline\":%s,\"jobs\":[%s]}\n", ToJson(pipeline, false).c_str(), list.c_str());
    return kExitOk;
  }
  std::printf("pipeline %lld (%s): %s, created %s\n", static_cast<long long>(pipeline.id()),
              pipeline.spec().name().c_str(),
              Paint(StateName(pipeline.state()), StateColor(pipeline.state()), out.color).c_str(),
              FormatTime(pipeline.create_time()).c_str());
  PrintStageTable(pipeline, *jobs, out.color);
  return kExitOk;
}

int ListPipelines(Connection& connection, int limit, const OutputOptions& out) {
  // Pipelines have no listing RPC: their ids come from the jobs (newest first), then
  // GetPipeline for each, until `limit` are found.
  std::vector<int64_t> ids;
  v1::ListJobsRequest request;
  request.set_page_size(1000);
  while (static_cast<int>(ids.size()) < limit) {
    v1::ListJobsResponse response;
    const grpc::Status status = connection.stub().ListJobs(connection.UnaryContext().get(), request, &response);
    if (!status.ok()) return connection.Report(status);
    for (const v1::Job& job : response.jobs()) {
      const int64_t id = job.pipeline_id();
      if (id != 0 && std::find(ids.begin(), ids.end(), id) == ids.end() && static_cast<int>(ids.size()) < limit) {
        ids.push_back(id);
      }
    }
    if (response.next_page_token().empty()) break;
    request.set_page_token(response.next_page_token());
  }
  std::sort(ids.rbegin(), ids.rend());
  Table table({"ID", "NAME", "STATE", "STAGES", "CREATED"});
  std::string json;
  for (int64_t id : ids) {
    v1::GetPipelineRequest get;
    get.set_pipeline_id(id);
    v1::Pipeline pipeline;
    const grpc::Status status = connection.stub().GetPipeline(connection.UnaryContext().get(), get, &pipeline);
    if (status.error_code() == grpc::StatusCode::NOT_FOUND) continue;  // deleted meanwhile
    if (!status.ok()) return connection.Report(status);
    if (out.json) {
      std::printf("%s\n", ToJson(pipeline, false).c_str());
      continue;
    }
    grpc::Status list_status;
    auto jobs = PipelineJobs(connection, id, &list_status);
    if (!jobs.ok()) return connection.Report(list_status);
    int done = 0;
    for (const auto& [job_id, job] : *jobs) done += job.state() == v1::JOB_STATE_SUCCEEDED ? 1 : 0;
    table.AddRow({std::to_string(id), pipeline.spec().name(),
                  Paint(StateName(pipeline.state()), StateColor(pipeline.state()), out.color),
                  absl::StrFormat("%d/%d", done, pipeline.job_ids_size()), FormatTime(pipeline.create_time())});
  }
  if (out.json) return kExitOk;
  if (ids.empty()) {
    std::printf("no pipelines (start one with: qat pipeline run q4 --model DIR --dataset FILE)\n");
    return kExitOk;
  }
  table.Print(stdout, out.color);
  return kExitOk;
}

int CancelPipeline(Connection& connection, int64_t pipeline_id, const std::string& reason, const OutputOptions& out) {
  v1::GetPipelineRequest get;
  get.set_pipeline_id(pipeline_id);
  v1::Pipeline pipeline;
  grpc::Status status = connection.stub().GetPipeline(connection.UnaryContext().get(), get, &pipeline);
  if (!status.ok()) return connection.Report(status);
  grpc::Status list_status;
  auto jobs = PipelineJobs(connection, pipeline_id, &list_status);
  if (!jobs.ok()) return connection.Report(list_status);
  std::vector<int64_t> cancelled;
  int finished = 0;
  // Later stages first: a queued stage never starts while its dependency is being stopped.
  for (auto it = pipeline.job_ids().rbegin(); it != pipeline.job_ids().rend(); ++it) {
    const auto job = jobs->find(*it);
    if (job != jobs->end() && IsTerminal(job->second.state())) {
      ++finished;
      continue;
    }
    v1::CancelJobRequest request;
    request.set_job_id(*it);
    request.set_reason(reason.empty() ? absl::StrFormat("pipeline %d cancelled with qat pipeline cancel", pipeline_id)
                                      : reason);
    v1::Job result;
    status = connection.stub().CancelJob(connection.UnaryContext().get(), request, &result);
    if (status.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {  // it finished meanwhile
      ++finished;
      continue;
    }
    if (!status.ok()) return connection.Report(status);
    cancelled.push_back(*it);
  }
  std::sort(cancelled.begin(), cancelled.end());
  if (out.json) {
    std::string list;
    for (int64_t id : cancelled) list += (list.empty() ? "" : ",") + std::to_string(id);
    std::printf("{\"pipelineId\":\"%lld\",\"cancelledJobIds\":[%s]}\n", static_cast<long long>(pipeline_id),
                list.c_str());
    return kExitOk;
  }
  std::string list;
  for (int64_t id : cancelled) list += (list.empty() ? "" : ", ") + std::to_string(id);
  std::printf("pipeline %lld: cancel requested for %zu job(s)%s; %d already finished (qat pipeline status %lld)\n",
              static_cast<long long>(pipeline_id), cancelled.size(), list.empty() ? "" : (" (" + list + ")").c_str(),
              finished, static_cast<long long>(pipeline_id));
  return kExitOk;
}

}  // namespace qatd::client
