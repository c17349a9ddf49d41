#include "server/metrics.h"

#include <google/protobuf/descriptor.h>

#include <chrono>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/jobs/job_kind.h"
#include "qatd/v1/service.pb.h"
#include "qatd/v1/worker.pb.h"
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

}  // namespace

std::string GrpcCodeName(int code) {
  static const char* const kNames[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                                       "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
                                       "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  if (code < 0 || code > 16) return "UNKNOWN";
  return kNames[code];
}

std::optional<std::string> LossKindOf(const std::string& name) {
  if (absl::StartsWith(name, "eval/")) return std::string("eval");
  if (!absl::StartsWith(name, "loss/")) return std::nullopt;
  std::string rest = name.substr(5);
  if (absl::StartsWith(rest, "hard")) return std::string("hard");
  if (absl::StartsWith(rest, "local")) return std::string("local");
  if (absl::StartsWith(rest, "kd") || absl::StartsWith(rest, "global")) return std::string("kd");
  return rest;
}

DaemonMetrics::DaemonMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      jobs_(BuildGauge().Name("qatd_jobs").Help("Jobs by state").Register(*registry_)),
      queue_depth_(BuildGauge().Name("qatd_queue_depth").Help("Jobs waiting to run").Register(*registry_)),
      job_step_(BuildGauge().Name("qatd_job_step").Help("Latest progress step of a running job").Register(*registry_)),
      job_loss_(BuildGauge().Name("qatd_job_loss").Help("Latest loss of a running job by kind").Register(*registry_)),
      tokens_per_second_(BuildGauge()
                             .Name("qatd_tokens_per_second")
                             .Help("Throughput of a running job in tokens per second")
                             .Register(*registry_)),
      gpu_memory_(BuildGauge().Name("qatd_gpu_memory_bytes").Help("GPU memory in bytes").Register(*registry_)),
      rpc_requests_(BuildCounter()
                        .Name("qatd_rpc_requests_total")
                        .Help("gRPC requests by method and status code")
                        .Register(*registry_)),
      rpc_latency_(BuildHistogram()
                       .Name("qatd_rpc_latency_seconds")
                       .Help("gRPC call duration in seconds (streams: until their end)")
                       .Register(*registry_)),
      queue_depth_gauge_(queue_depth_.Add({})) {
  for (v1::JobState state : {v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING, v1::JOB_STATE_SUCCEEDED,
                             v1::JOB_STATE_FAILED, v1::JOB_STATE_CANCELLED}) {
    SetJobCount(state, 0);
  }
}

void DaemonMetrics::SetJobCount(v1::JobState state, int64_t count) {
  std::string name = storage::JobStateName(state);
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  jobs_.Add({{"state", name}}).Set(static_cast<double>(count));
}

void DaemonMetrics::SetQueueDepth(int64_t depth) { queue_depth_gauge_.Set(static_cast<double>(depth)); }

void DaemonMetrics::JobProgress(int64_t job_id, v1::JobKind kind, int64_t step) {
  std::lock_guard<std::mutex> lock(mu_);
  JobSeries& series = jobs_series_[job_id];
  if (series.step == nullptr) {
    std::string kind_name = jobs::JobKindName(kind);
    series.step = &job_step_.Add({{"job", std::to_string(job_id)}, {"kind", kind_name}});
  }
  series.step->Set(static_cast<double>(step));
}

void DaemonMetrics::JobMetric(int64_t job_id, const std::string& name, double value) {
  std::lock_guard<std::mutex> lock(mu_);
  if (name == "tokens_per_second" || absl::EndsWith(name, "/tokens_per_second")) {
    JobSeries& series = jobs_series_[job_id];
    if (series.tokens_per_second == nullptr) {
      series.tokens_per_second = &tokens_per_second_.Add({{"job", std::to_string(job_id)}});
    }
    series.tokens_per_second->Set(value);
    return;
  }
  std::optional<std::string> kind = LossKindOf(name);
  if (!kind.has_value()) return;
  JobSeries& series = jobs_series_[job_id];
  prometheus::Gauge*& gauge = series.loss[*kind];
  if (gauge == nullptr) gauge = &job_loss_.Add({{"job", std::to_string(job_id)}, {"kind", *kind}});
  gauge->Set(value);
}

void DaemonMetrics::ForgetJob(int64_t job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_series_.find(job_id);
  if (it == jobs_series_.end()) return;
  if (it->second.step != nullptr) job_step_.Remove(it->second.step);
  for (auto& [kind, gauge] : it->second.loss) job_loss_.Remove(gauge);
  if (it->second.tokens_per_second != nullptr) tokens_per_second_.Remove(it->second.tokens_per_second);
  jobs_series_.erase(it);
}

void DaemonMetrics::GpuMemory(const std::string& device, int64_t used_bytes, int64_t total_bytes) {
  gpu_memory_.Add({{"device", device}, {"type", "used"}}).Set(static_cast<double>(used_bytes));
  gpu_memory_.Add({{"device", device}, {"type", "total"}}).Set(static_cast<double>(total_bytes));
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
