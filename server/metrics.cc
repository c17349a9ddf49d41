#include "server/metrics.h"

#include <google/protobuf/descriptor.h>

#include <algorithm>
#include <chrono>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/jobs/job_kind.h"
#include "qatd/v1/service.pb.h"
#include "qatd/v1/worker.pb.h"
#include "server/process_metrics.h"
#include "server/version.h"
#include "storage/job_codec.h"

namespace qatd::server {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

class RpcMetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  RpcMetricsInterceptor(DaemonMetrics* metrics, std::string method)
      : metrics_(metrics), method_(std::move(method)), start_(std::chrono::steady_clock::now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
      metrics_->RpcDone(method_, GrpcCodeName(methods->GetSendStatus().error_code()), seconds);
    }
    methods->Proceed();
  }

 private:
  DaemonMetrics* metrics_;
  std::string method_;
  std::chrono::steady_clock::time_point start_;
};

// Runs at every scrape before the registry is collected: drops expired job series and reports
// the process_* metrics (prometheus-cpp has no process collector).
class ScrapeCollector : public prometheus::Collectable {
 public:
  explicit ScrapeCollector(DaemonMetrics* metrics) : metrics_(metrics) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    metrics_->ExpireEndedJobs();
    return CollectProcessMetrics();
  }

 private:
  DaemonMetrics* metrics_;
};

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string KindLabel(v1::JobKind kind) { return Lower(jobs::JobKindName(kind)); }

}  // namespace

std::string GrpcCodeName(int code) {
  static const char* const kNames[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                                       "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
                                       "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  if (code < 0 || code > 16) return "UNKNOWN";
  return kNames[code];
}

std::optional<JobGaugeTarget> JobGaugeTargetOf(const std::string& name) {
  using T = JobGaugeTarget;
  if (absl::StartsWith(name, "loss/")) {
    const std::string term = name.substr(5);
    for (const char* known : {"kd", "hard_top1", "hard_full", "local", "global", "total"}) {
      if (term == known) return T{T::kLoss, term};
    }
    return std::nullopt;  // a new term must be added here and to server/README.md
  }
  if (name == "eval/kd" || name == "eval/kd_final") return T{T::kEvalKd, ""};
  if (name == "eval/top1" || name == "eval/top1_final") return T{T::kEvalTop1, ""};
  if (name == "eval/ppl" || name == "eval/ppl_final") return T{T::kEvalPerplexity, ""};
  if (name == "snap/relative_error") return T{T::kSnapRelativeError, ""};
  if (absl::StartsWith(name, "lut_usage/")) {
    std::vector<std::string> parts = absl::StrSplit(name, '/');
    int entry = -1;
    if (parts.size() == 3 && (parts[1] == "mlp" || parts[1] == "attn") && absl::SimpleAtoi(parts[2], &entry) &&
        entry >= 0 && entry < 256 && std::to_string(entry) == parts[2]) {
      return T{T::kLutUsage, parts[1], parts[2]};
    }
    return std::nullopt;
  }
  if (absl::StartsWith(name, "rank/")) {
    std::vector<std::string> parts = absl::StrSplit(name, '/');
    int rank = -1;
    if (parts.size() == 3 && parts[2] == "step_seconds" && absl::SimpleAtoi(parts[1], &rank) && rank >= 0 &&
        rank < 4096 && std::to_string(rank) == parts[1]) {
      return T{T::kRankStepSeconds, parts[1]};
    }
    return std::nullopt;
  }
  if (name == "train/lr") return T{T::kLearningRate, ""};
  if (name == "tokens_per_second" || absl::EndsWith(name, "/tokens_per_second")) return T{T::kTokensPerSecond, ""};
  return std::nullopt;
}

DaemonMetrics::DaemonMetrics(DaemonMetricsOptions options)
    : options_(options),
      own_clock_(options.clock == nullptr ? std::make_unique<SystemClock>() : nullptr),
      registry_(std::make_shared<prometheus::Registry>()),
      scrape_collector_(std::make_shared<ScrapeCollector>(this)),
      jobs_(BuildGauge().Name("qatd_jobs").Help("Jobs by state").Register(*registry_)),
      queue_depth_(BuildGauge().Name("qatd_queue_depth").Help("Jobs waiting to run").Register(*registry_)),
      jobs_finished_(BuildCounter()
                         .Name("qatd_jobs_finished_total")
                         .Help("Jobs that reached a terminal state, by kind and state")
                         .Register(*registry_)),
      job_attempts_(BuildCounter()
                        .Name("qatd_job_attempts_total")
                        .Help("Worker attempts started (a retried job counts once per attempt), by kind")
                        .Register(*registry_)),
      job_running_(BuildGauge()
                       .Name("qatd_job_running")
                       .Help("1 while the job runs, 0 for an ended job whose final values are kept")
                       .Register(*registry_)),
      job_step_(BuildGauge()
                    .Name("qatd_job_step")
                    .Help("Progress of the job in its unit (steps, sequences, tensors)")
                    .Register(*registry_)),
      job_step_target_(BuildGauge()
                           .Name("qatd_job_step_target")
                           .Help("Progress at which the job is done (same unit as qatd_job_step)")
                           .Register(*registry_)),
      job_eta_(BuildGauge().Name("qatd_job_eta_seconds").Help("Estimated seconds to the job's end").Register(*registry_)),
      job_last_progress_(BuildGauge()
                             .Name("qatd_job_last_progress_timestamp_seconds")
                             .Help("Unix time of the job's latest progress report (or of its start)")
                             .Register(*registry_)),
      job_tokens_(BuildCounter()
                      .Name("qatd_job_tokens_total")
                      .Help("Tokens processed: the worker's tokens/s integrated over wall time")
                      .Register(*registry_)),
      job_loss_(BuildGauge().Name("qatd_job_loss").Help("Latest training loss of the job by term").Register(*registry_)),
      job_eval_kd_(BuildGauge()
                       .Name("qatd_job_eval_kd")
                       .Help("Latest evaluation KD loss (nats/token) of the job")
                       .Register(*registry_)),
      job_eval_top1_(BuildGauge()
                         .Name("qatd_job_eval_top1")
                         .Help("Latest evaluation top-1 agreement with the teacher (ratio)")
                         .Register(*registry_)),
      job_eval_perplexity_(BuildGauge()
                               .Name("qatd_job_eval_perplexity")
                               .Help("Latest evaluation perplexity of the job")
                               .Register(*registry_)),
      job_snap_error_(BuildGauge()
                          .Name("qatd_job_snap_relative_error")
                          .Help("Mean relative error of the weights snapped to their LUTs")
                          .Register(*registry_)),
      job_lut_usage_(BuildGauge()
                         .Name("qatd_job_lut_entry_usage_ratio")
                         .Help("Share of a layer group's quantized weights mapped to each LUT entry after the snap")
                         .Register(*registry_)),
      job_rank_step_(BuildGauge()
                         .Name("qatd_job_rank_step_seconds")
                         .Help("Mean seconds per training step one rank of a data-parallel job spends outside its collectives (its step wall time minus its waits for the other ranks) over its latest log window: the straggler is the largest")
                         .Register(*registry_)),
      job_learning_rate_(
          BuildGauge().Name("qatd_job_learning_rate").Help("Latest learning rate of the job").Register(*registry_)),
      job_tokens_per_second_(BuildGauge()
                                 .Name("qatd_job_reported_tokens_per_second")
                                 .Help("Throughput as the worker last reported it (prefer rate(qatd_job_tokens_total))")
                                 .Register(*registry_)),
      device_memory_used_(
          BuildGauge().Name("qatd_device_memory_used_bytes").Help("Device memory in use").Register(*registry_)),
      device_memory_total_(
          BuildGauge().Name("qatd_device_memory_total_bytes").Help("Device memory in all").Register(*registry_)),
      device_utilization_(BuildGauge()
                              .Name("qatd_device_utilization_ratio")
                              .Help("Device busy fraction over the last sample period [0, 1]")
                              .Register(*registry_)),
      build_info_(BuildGauge().Name("qatd_build_info").Help("Build of this qatd; always 1").Register(*registry_)),
      rpc_requests_(BuildCounter()
                        .Name("qatd_rpc_requests_total")
                        .Help("gRPC requests by method and status code")
                        .Register(*registry_)),
      rpc_latency_(BuildHistogram()
                       .Name("qatd_rpc_latency_seconds")
                       .Help("gRPC call duration in seconds (streams: until their end)")
                       .Register(*registry_)),
      queue_depth_gauge_(queue_depth_.Add({})) {
  if (own_clock_ != nullptr) options_.clock = own_clock_.get();
  for (v1::JobState state : {v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING, v1::JOB_STATE_SUCCEEDED,
                             v1::JOB_STATE_FAILED, v1::JOB_STATE_CANCELLED}) {
    SetJobCount(state, 0);
  }
  // Every (kind, terminal state) exists from the start at 0, so increase() sees the first one.
  for (int k = v1::JobKind_MIN; k <= v1::JobKind_MAX; ++k) {
    if (!v1::JobKind_IsValid(k) || k == v1::JOB_KIND_UNSPECIFIED) continue;
    const std::string kind = KindLabel(static_cast<v1::JobKind>(k));
    for (const char* state : {"succeeded", "failed", "cancelled"}) jobs_finished_.Add({{"kind", kind}, {"state", state}});
    job_attempts_.Add({{"kind", kind}});
  }
  build_info_
      .Add({{"version", kQatdVersion}, {"git_sha", kQatdGitSha}, {"torch", kQatdTorch}, {"cuda", kQatdCuda}})
      .Set(1);
}

DaemonMetrics::~DaemonMetrics() = default;

std::vector<std::shared_ptr<prometheus::Collectable>> DaemonMetrics::Collectables() const {
  return {scrape_collector_, registry_};
}

int64_t DaemonMetrics::NowMs() const { return options_.clock->NowMs(); }

void DaemonMetrics::SetJobCount(v1::JobState state, int64_t count) {
  jobs_.Add({{"state", Lower(storage::JobStateName(state))}}).Set(static_cast<double>(count));
}

void DaemonMetrics::SetQueueDepth(int64_t depth) { queue_depth_gauge_.Set(static_cast<double>(depth)); }

DaemonMetrics::JobSeries& DaemonMetrics::SeriesLocked(int64_t job_id, const std::string& kind) {
  JobSeries& series = jobs_series_[job_id];
  if (series.running == nullptr) {
    series.kind = kind;
    const std::string id = std::to_string(job_id);
    series.running = &job_running_.Add({{"job_id", id}, {"kind", kind}});
    series.last_progress = &job_last_progress_.Add({{"job_id", id}});
    series.tokens = &job_tokens_.Add({{"job_id", id}});
  }
  return series;
}

void DaemonMetrics::JobStarted(int64_t job_id, v1::JobKind kind) {
  const std::string kind_label = KindLabel(kind);
  job_attempts_.Add({{"kind", kind_label}}).Increment();
  std::lock_guard<std::mutex> lock(mu_);
  JobSeries& series = SeriesLocked(job_id, kind_label);
  series.ended_ms = -1;
  series.last_tokens_ms = -1;  // tokens count from the first progress (after loading the model)
  series.running->Set(1);
  series.last_progress->Set(static_cast<double>(NowMs()) / 1000.0);
}

void DaemonMetrics::JobProgress(int64_t job_id, v1::JobKind kind, const v1::Progress& progress) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_series_.find(job_id);
  if (it == jobs_series_.end()) return;  // not started, or its series expired: nothing to update
  JobSeries& series = it->second;
  const std::string id = std::to_string(job_id);
  if (series.step == nullptr) {
    series.step = &job_step_.Add({{"job_id", id}, {"kind", series.kind}});
    series.step_target = &job_step_target_.Add({{"job_id", id}, {"kind", series.kind}});
  }
  if (series.last_tokens_ms < 0) series.last_tokens_ms = NowMs();
  series.step->Set(static_cast<double>(progress.done()));
  series.step_target->Set(static_cast<double>(progress.total()));
  const bool done = progress.total() > 0 && progress.done() >= progress.total();
  if (progress.eta_s() >= 0 || done) {  // no series while the ETA is unknown (never a fake 0)
    if (series.eta == nullptr) series.eta = &job_eta_.Add({{"job_id", id}, {"kind", series.kind}});
    series.eta->Set(done ? 0.0 : progress.eta_s());
  }
  series.last_progress->Set(static_cast<double>(NowMs()) / 1000.0);
}

prometheus::Family<prometheus::Gauge>& DaemonMetrics::JobFamily(int family) {
  switch (family) {
    case JobGaugeTarget::kEvalKd: return job_eval_kd_;
    case JobGaugeTarget::kEvalTop1: return job_eval_top1_;
    case JobGaugeTarget::kEvalPerplexity: return job_eval_perplexity_;
    case JobGaugeTarget::kSnapRelativeError: return job_snap_error_;
    case JobGaugeTarget::kLearningRate: return job_learning_rate_;
    default: return job_tokens_per_second_;
  }
}

void DaemonMetrics::JobMetric(int64_t job_id, const std::string& name, double value) {
  std::optional<JobGaugeTarget> target = JobGaugeTargetOf(name);
  if (!target.has_value()) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_series_.find(job_id);
  if (it == jobs_series_.end()) return;  // not started, or its series expired
  JobSeries& series = it->second;
  const std::string id = std::to_string(job_id);
  if (target->family == JobGaugeTarget::kLutUsage) {
    prometheus::Gauge*& gauge = series.lut_usage[{target->term, target->entry}];
    if (gauge == nullptr) {
      gauge = &job_lut_usage_.Add({{"job_id", id}, {"group", target->term}, {"entry", target->entry}});
    }
    gauge->Set(value);
    return;
  }
  if (target->family == JobGaugeTarget::kRankStepSeconds) {
    prometheus::Gauge*& gauge = series.rank_step[target->term];
    if (gauge == nullptr) gauge = &job_rank_step_.Add({{"job_id", id}, {"rank", target->term}});
    gauge->Set(value);
    return;
  }
  if (target->family == JobGaugeTarget::kLoss) {
    prometheus::Gauge*& gauge = series.loss[target->term];
    if (gauge == nullptr) gauge = &job_loss_.Add({{"job_id", id}, {"term", target->term}});
    gauge->Set(value);
    return;
  }
  prometheus::Gauge*& gauge = series.gauges[target->family];
  if (gauge == nullptr) gauge = &JobFamily(target->family).Add({{"job_id", id}});
  gauge->Set(value);
  if (target->family == JobGaugeTarget::kTokensPerSecond) {
    const int64_t now = NowMs();
    if (series.last_tokens_ms >= 0 && now > series.last_tokens_ms && value > 0) {
      series.tokens->Increment(value * static_cast<double>(now - series.last_tokens_ms) / 1000.0);
    }
    series.last_tokens_ms = now;
  }
}

void DaemonMetrics::JobEnded(int64_t job_id, v1::JobKind kind, v1::JobState to) {
  const std::string kind_label = KindLabel(kind);
  if (to == v1::JOB_STATE_SUCCEEDED || to == v1::JOB_STATE_FAILED || to == v1::JOB_STATE_CANCELLED) {
    jobs_finished_.Add({{"kind", kind_label}, {"state", Lower(storage::JobStateName(to))}}).Increment();
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = jobs_series_.find(job_id);
    if (it != jobs_series_.end()) {
      it->second.ended_ms = NowMs();
      it->second.running->Set(0);
      if (it->second.eta != nullptr && to == v1::JOB_STATE_SUCCEEDED) it->second.eta->Set(0);
    }
  }
  ExpireEndedJobs();
}

void DaemonMetrics::RemoveLocked(std::map<int64_t, JobSeries>::iterator it) {
  JobSeries& s = it->second;
  job_running_.Remove(s.running);
  job_last_progress_.Remove(s.last_progress);
  job_tokens_.Remove(s.tokens);
  if (s.step != nullptr) {
    job_step_.Remove(s.step);
    job_step_target_.Remove(s.step_target);
  }
  if (s.eta != nullptr) job_eta_.Remove(s.eta);
  for (auto& [term, gauge] : s.loss) job_loss_.Remove(gauge);
  for (auto& [key, gauge] : s.lut_usage) job_lut_usage_.Remove(gauge);
  for (auto& [rank, gauge] : s.rank_step) job_rank_step_.Remove(gauge);
  for (auto& [family, gauge] : s.gauges) JobFamily(family).Remove(gauge);
  jobs_series_.erase(it);
}

void DaemonMetrics::ExpireEndedJobs() {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = NowMs();
  std::vector<std::pair<int64_t, int64_t>> ended;  // (ended_ms, job id)
  for (auto it = jobs_series_.begin(); it != jobs_series_.end();) {
    auto next = std::next(it);
    if (it->second.ended_ms >= 0) {
      if (now - it->second.ended_ms >= options_.finished_job_retention_ms) {
        RemoveLocked(it);
      } else {
        ended.emplace_back(it->second.ended_ms, it->first);
      }
    }
    it = next;
  }
  if (static_cast<int>(ended.size()) <= options_.max_retained_jobs) return;
  std::sort(ended.begin(), ended.end());
  const size_t excess = ended.size() - static_cast<size_t>(std::max(0, options_.max_retained_jobs));
  for (size_t i = 0; i < excess; ++i) RemoveLocked(jobs_series_.find(ended[i].second));
}

void DaemonMetrics::Devices(const std::vector<DeviceSample>& devices) {
  for (const DeviceSample& d : devices) {
    device_memory_used_.Add({{"device", d.device}}).Set(static_cast<double>(d.memory_used_bytes));
    device_memory_total_.Add({{"device", d.device}}).Set(static_cast<double>(d.memory_total_bytes));
    if (d.utilization >= 0) device_utilization_.Add({{"device", d.device}}).Set(d.utilization);
  }
}

void DaemonMetrics::RpcDone(const std::string& method, const std::string& code, double seconds) {
  rpc_requests_.Add({{"method", method}, {"code", code}}).Increment();
  static const prometheus::Histogram::BucketBoundaries kBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                                   0.1,    0.25,  0.5,    1,     2.5,  5,     10,
                                                                   30,     60,    300};
  rpc_latency_.Add({{"method", method}}, kBuckets).Observe(seconds);
}

RpcMetricsInterceptorFactory::RpcMetricsInterceptorFactory(DaemonMetrics* metrics) : metrics_(metrics) {
  for (const char* service : {"qatd.v1.Qatd", "qatd.v1.WorkerChannel"}) {
    const google::protobuf::ServiceDescriptor* descriptor =
        google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(service);
    if (descriptor == nullptr) continue;
    for (int i = 0; i < descriptor->method_count(); ++i) {
      known_methods_.insert(absl::StrCat(service, "/", descriptor->method(i)->name()));
    }
  }
  // Served by grpc++ itself.
  for (const char* method : {"grpc.health.v1.Health/Check", "grpc.health.v1.Health/Watch",
                             "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                             "grpc.reflection.v1.ServerReflection/ServerReflectionInfo"}) {
    known_methods_.insert(method);
  }
}

grpc::experimental::Interceptor* RpcMetricsInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  std::string method = info->method() != nullptr ? info->method() : "";
  if (!method.empty() && method[0] == '/') method.erase(0, 1);
  if (known_methods_.count(method) == 0) method = "other";
  return new RpcMetricsInterceptor(metrics_, std::move(method));
}

}  // namespace qatd::server
