#include "client/queries.h"

#include <google/protobuf/text_format.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/curve.h"
#include "client/plot_png.h"
#include "client/render.h"
#include "core/common/file_util.h"

namespace qatd::client {
namespace {

void PrintJson(const google::protobuf::Message& message) { std::printf("%s\n", ToJson(message, true).c_str()); }

std::string Age(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0) return "-";
  return FormatDuration(NowSeconds() - ToSeconds(t));
}

// The spec's kind message in text format, for `qat status`.
std::string SpecText(const v1::JobSpec& spec) {
  std::string text;
  google::protobuf::TextFormat::Printer printer;
  printer.SetSingleLineMode(false);
  printer.PrintToString(spec, &text);
  return text;
}

std::string Indent(const std::string& text, const std::string& pad) {
  std::string out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    out += pad + text.substr(start, end - start) + "\n";
    start = end + 1;
  }
  return out;
}

}  // namespace

int ShowServer(Connection& connection, const OutputOptions& out) {
  v1::ServerInfo info;
  const grpc::Status status =
      connection.stub().GetServerInfo(connection.UnaryContext().get(), v1::GetServerInfoRequest(), &info);
  if (!status.ok()) return connection.Report(status);
  if (out.json) {
    PrintJson(info);
    return kExitOk;
  }
  std::printf("qatd %s at %s, up %s\n", info.version().c_str(), connection.options().address.c_str(),
              Age(info.start_time()).c_str());
  std::printf("data dir:  %s\n", info.data_dir().c_str());
  std::printf("queue:     %d queued, %d running (up to %d jobs per device)\n", info.queued_jobs(), info.running_jobs(),
              info.max_concurrent_jobs_per_device());
  std::vector<std::string> kinds;
  for (int k : info.available_kinds()) kinds.push_back(KindName(static_cast<v1::JobKind>(k)));
  std::printf("job kinds: %s\n", kinds.empty() ? "(none)" : absl::StrJoin(kinds, ", ").c_str());
  if (info.data_dir_free_bytes() >= 0) std::printf("disk:      %s free in the data dir\n", FormatBytes(info.data_dir_free_bytes()).c_str());
  if (!info.dispatch_paused().empty()) {
    std::printf("%s\n", Paint("paused:    " + info.dispatch_paused(), Color::kRed, out.color).c_str());
  }
  std::printf("\n");
  Table table({"DEVICE", "KIND", "MEMORY FREE", "MEMORY TOTAL", "JOBS"});
  for (const v1::DeviceInfo& d : info.devices()) {
    const bool known = d.memory_total_bytes() > 0;
    table.AddRow({d.id(), d.kind(), known ? FormatBytes(d.memory_free_bytes()) : "-",
                  known ? FormatBytes(d.memory_total_bytes()) : "-",
                  absl::StrFormat("%d/%d", d.running_jobs(), d.max_jobs())});
  }
  table.Print(stdout, out.color);
  return kExitOk;
}

std::vector<std::string> JobRow(const v1::Job& job, bool color) {
  std::string name = job.spec().name();
  if (job.pipeline_id() != 0) {
    const std::string stage = absl::StrFormat("pipeline %d/%s", job.pipeline_id(), job.stage());
    name = name.empty() ? stage : name + " (" + stage + ")";
  }
  const std::optional<double> duration = JobDuration(job);
  return {std::to_string(job.id()),
          KindName(job.kind()),
          Paint(StateName(job.state()), StateColor(job.state()), color),
          FormatProgress(job.progress()),
          Age(job.create_time()),
          duration ? FormatDuration(*duration) : "-",
          job.disk_bytes() > 0 ? FormatBytes(job.disk_bytes()) : "-",
          name};
}

std::string JobOutcome(const v1::Job& job, size_t max) {
  if (job.has_error() && (job.error().code() != 0 || !job.error().message().empty())) {
    return StatusCodeName(static_cast<grpc::StatusCode>(job.error().code())) + ": " + job.error().message();
  }
  std::vector<std::pair<std::string, double>> metrics(job.result().metrics().begin(), job.result().metrics().end());
  std::sort(metrics.begin(), metrics.end());
  // Evaluations first: they are what a stage is judged by.
  std::stable_partition(metrics.begin(), metrics.end(), [](const auto& m) { return m.first.rfind("eval/", 0) == 0; });
  std::vector<std::string> parts;
  for (const auto& [name, value] : metrics) {
    if (parts.size() >= max) break;
    parts.push_back(name + "=" + FormatNumber(value));
  }
  if (parts.empty()) return job.result().summary().empty() ? "-" : job.result().summary();
  return absl::StrJoin(parts, " ");
}

int ListJobs(Connection& connection, const JobsQuery& query, const OutputOptions& out) {
  v1::ListJobsRequest request;
  for (const std::string& s : query.states) {
    const auto state = ParseState(s);
    if (!state) {
      std::fprintf(stderr, "qat: --state: unknown state '%s'; expected queued, running, succeeded, failed, cancelled\n",
                   s.c_str());
      return kExitUsage;
    }
    request.add_states(*state);
  }
  for (const std::string& k : query.kinds) {
    const auto kind = ParseKind(k);
    if (!kind) {
      std::fprintf(stderr,
                   "qat: --kind: unknown kind '%s'; expected kd_cache, layerwise, qat, convert, snap, eval, generate, export, lora, "
                   "probe\n",
                   k.c_str());
      return kExitUsage;
    }
    request.add_kinds(*kind);
  }
  request.set_pipeline_id(query.pipeline_id);
  request.set_page_size(query.limit);
  request.set_page_token(query.page_token);
  request.set_include_spec(true);  // for the NAME column
  v1::ListJobsResponse all;
  while (true) {
    v1::ListJobsResponse page;
    const grpc::Status status = connection.stub().ListJobs(connection.UnaryContext().get(), request, &page);
    if (!status.ok()) return connection.Report(status);
    for (auto& job : *page.mutable_jobs()) *all.add_jobs() = std::move(job);
    all.set_next_page_token(page.next_page_token());
    if (!query.all || page.next_page_token().empty()) break;
    request.set_page_token(page.next_page_token());
  }
  if (out.json) {
    PrintJson(all);
    return kExitOk;
  }
  if (all.jobs_size() == 0) {
    std::printf("no jobs\n");
    return kExitOk;
  }
  Table table({"ID", "KIND", "STATE", "PROGRESS", "AGE", "DURATION", "DISK", "NAME"});
  for (const v1::Job& job : all.jobs()) table.AddRow(JobRow(job, out.color));
  table.Print(stdout, out.color);
  if (!all.next_page_token().empty()) {
    std::fprintf(stderr, "(more: qat jobs --page-token %s, or --all)\n", all.next_page_token().c_str());
  }
  return kExitOk;
}

int ShowJob(Connection& connection, int64_t job_id, const OutputOptions& out) {
  v1::GetJobRequest request;
  request.set_job_id(job_id);
  v1::Job job;
  const grpc::Status status = connection.stub().GetJob(connection.UnaryContext().get(), request, &job);
  if (!status.ok()) return connection.Report(status);
  if (out.json) {
    PrintJson(job);
    return kExitOk;
  }
  std::printf("job %lld  %s  %s\n", static_cast<long long>(job.id()), KindName(job.kind()).c_str(),
              Paint(StateName(job.state()), StateColor(job.state()), out.color).c_str());
  auto field = [](const char* name, const std::string& value) { std::printf("  %-11s %s\n", name, value.c_str()); };
  if (!job.spec().name().empty()) field("name:", job.spec().name());
  if (job.pipeline_id() != 0) field("pipeline:", absl::StrFormat("%d, stage %s", job.pipeline_id(), job.stage()));
  if (job.depends_on_size() > 0) field("depends on:", absl::StrJoin(job.depends_on(), ", "));
  field("priority:", std::to_string(job.spec().priority()));
  field("created:", FormatTime(job.create_time()) + " (" + Age(job.create_time()) + " ago)");
  if (job.start_time().seconds() != 0) field("started:", FormatTime(job.start_time()));
  if (job.end_time().seconds() != 0) field("ended:", FormatTime(job.end_time()));
  if (const auto d = JobDuration(job)) field("duration:", FormatDuration(*d));
  field("attempt:", std::to_string(job.attempt()));
  if (job.worker_pid() != 0) field("worker pid:", std::to_string(job.worker_pid()));
  if (job.devices_size() > 0) field("devices:", absl::StrJoin(job.devices(), ", "));
  if (job.cancel_requested()) field("cancel:", "requested");
  field("progress:", FormatProgress(job.progress()));
  if (job.disk_bytes() > 0) field("disk:", FormatBytes(job.disk_bytes()) + " (qat delete " + std::to_string(job.id()) + " frees it)");
  if (job.result().metrics_size() > 0 || !job.result().summary().empty()) {
    std::vector<std::pair<std::string, double>> metrics(job.result().metrics().begin(), job.result().metrics().end());
    std::sort(metrics.begin(), metrics.end());
    std::vector<std::string> parts;
    for (const auto& [name, value] : metrics) parts.push_back(name + "=" + FormatNumber(value));
    if (!job.result().summary().empty()) parts.push_back(job.result().summary());
    field("result:", absl::StrJoin(parts, "  "));
  }
  if (job.has_error() && (job.error().code() != 0 || !job.error().message().empty())) {
    field("error:", Paint(JobOutcome(job, 0), Color::kRed, out.color));
  }
  if (job.ranks_size() > 0) {
    // A data-parallel job: where each rank runs and its latest mean step time (the gauge
    // qatd_job_rank_step_seconds).
    std::printf("  ranks:\n");
    size_t host_width = 4, device_width = 6;
    for (const v1::RankInfo& r : job.ranks()) {
      host_width = std::max(host_width, r.host().size());
      device_width = std::max(device_width, r.device().size());
    }
    const int hw = static_cast<int>(host_width), dw = static_cast<int>(device_width);
    std::printf("    %-4s  %-*s  %-*s  %-8s  %s\n", "RANK", hw, "HOST", dw, "DEVICE", "PID", "STEP TIME");
    for (const v1::RankInfo& r : job.ranks()) {
      const std::string step_time =
          r.step_seconds() > 0 ? absl::StrFormat("%.3g s (step %d)", r.step_seconds(), r.step()) : "-";
      std::printf("    %-4d  %-*s  %-*s  %-8s  %s\n", r.rank(), hw, r.host().empty() ? "-" : r.host().c_str(), dw,
                  r.device().empty() ? "-" : r.device().c_str(), r.pid() > 0 ? std::to_string(r.pid()).c_str() : "-",
                  step_time.c_str());
    }
  }
  if (job.artifacts_size() > 0) {
    std::printf("  artifacts:\n");
    for (const v1::Artifact& a : job.artifacts()) {
      std::printf("    %lld  %s  %s  %s\n", static_cast<long long>(a.id()), a.kind().c_str(),
                  FormatBytes(a.size_bytes()).c_str(), a.path().c_str());
    }
  }
  std::printf("  spec:\n%s", Indent(SpecText(job.spec()), "    ").c_str());
  return kExitOk;
}

int CancelJob(Connection& connection, int64_t job_id, const std::string& reason, const OutputOptions& out) {
  v1::CancelJobRequest request;
  request.set_job_id(job_id);
  request.set_reason(reason.empty() ? "cancelled with qat cancel" : reason);
  v1::Job job;
  const grpc::Status status = connection.stub().CancelJob(connection.UnaryContext().get(), request, &job);
  if (!status.ok()) return connection.Report(status);
  if (out.json) {
    PrintJson(job);
  } else if (IsTerminal(job.state())) {
    std::printf("job %lld %s\n", static_cast<long long>(job_id),
                Paint(StateName(job.state()), StateColor(job.state()), out.color).c_str());
  } else {
    std::printf("job %lld: cancel requested; it is %s until its worker stops (qat watch %lld)\n",
                static_cast<long long>(job_id), StateName(job.state()).c_str(), static_cast<long long>(job_id));
  }
  return kExitOk;
}

int ListArtifacts(Connection& connection, const ArtifactsQuery& query, const OutputOptions& out) {
  v1::ListArtifactsRequest request;
  request.set_job_id(query.job_id);
  request.set_pipeline_id(query.pipeline_id);
  request.set_kind(query.kind);
  v1::ListArtifactsResponse response;
  const grpc::Status status = connection.stub().ListArtifacts(connection.UnaryContext().get(), request, &response);
  if (!status.ok()) return connection.Report(status);
  if (out.json) {
    PrintJson(response);
    return kExitOk;
  }
  if (response.artifacts_size() == 0) {
    std::printf("no artifacts\n");
    return kExitOk;
  }
  Table table({"ID", "JOB", "KIND", "SIZE", "SHA256", "PATH"});
  for (const v1::Artifact& a : response.artifacts()) {
    table.AddRow({std::to_string(a.id()), std::to_string(a.job_id()), a.kind(), FormatBytes(a.size_bytes()),
                  a.sha256().substr(0, 12), a.path()});
  }
  table.Print(stdout, out.color);
  return kExitOk;
}

int ShowCurve(Connection& connection, int64_t job_id, const CurveOptions& options, const OutputOptions& out) {
  v1::GetMetricSeriesRequest request;
  request.set_job_id(job_id);
  for (const std::string& name : options.metrics) request.add_names(name);
  v1::GetMetricSeriesResponse response;
  const grpc::Status status = connection.stub().GetMetricSeries(connection.UnaryContext().get(), request, &response);
  if (!status.ok()) return connection.Report(status);
  if (out.json) {
    PrintJson(response);
    return kExitOk;
  }
  const std::vector<v1::MetricSeries> all(response.series().begin(), response.series().end());
  // A name that does not exist fails and lists the ones that do (issue #17.6), --csv included.
  if (const std::vector<std::string> missing = MissingSeries(all, options.metrics); !missing.empty()) {
    v1::GetMetricSeriesRequest every;
    every.set_job_id(job_id);
    v1::GetMetricSeriesResponse known;
    std::vector<std::string> names;
    if (connection.stub().GetMetricSeries(connection.UnaryContext().get(), every, &known).ok()) {
      for (const v1::MetricSeries& s : known.series()) names.push_back(s.name());
    }
    std::fprintf(stderr, "qat: %s\n", UnknownSeriesMessage(job_id, missing, names).c_str());
    return kExitFailed;
  }
  const std::vector<CurveSeries> series = SelectSeries(all, options.metrics);
  if (options.csv) {
    std::printf("%s", CurveCsv(series).c_str());
    return kExitOk;
  }
  if (series.empty()) {
    std::fprintf(stderr, "qat: job %lld has no metric points\n", static_cast<long long>(job_id));
    return kExitFailed;
  }
  if (!options.png.empty()) {
    PlotOptions plot;
    plot.title = absl::StrFormat("job %d", job_id);
    plot.log_y = options.log_y;
    plot.one_axis = options.one_axis;
    const absl::StatusOr<std::string> png = EncodePng(PlotCurves(series, plot));
    if (!png.ok()) {
      std::fprintf(stderr, "qat: %s\n", std::string(png.status().message()).c_str());
      return kExitFailed;
    }
    if (absl::Status written = qatd::WriteFileAtomically(options.png, *png); !written.ok()) {
      std::fprintf(stderr, "qat: --png: %s\n", std::string(written.message()).c_str());
      return kExitFailed;
    }
    size_t points = 0;
    for (const auto& s : series) points += s.steps.size();
    std::printf("wrote %s (%zu series, %zu points)\n", options.png.c_str(), series.size(), points);
    return kExitOk;
  }
  winsize size{};
  const bool tty = ::isatty(STDOUT_FILENO) == 1 && ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0;
  ChartOptions chart;
  chart.columns = ChartColumns(options.width, tty, tty ? size.ws_col : 0, std::getenv("COLUMNS"));
  chart.height = options.height;
  chart.log_y = options.log_y;
  chart.one_axis = options.one_axis;
  chart.color = out.color;
  chart.utf8 = out.utf8;
  std::printf("%s", TerminalCharts(series, chart).c_str());
  return kExitOk;
}

}  // namespace qatd::client
