#pragma once
// The daemon's Prometheus metrics (DESIGN.md §5), registered on one prometheus::Registry that
// the process's single Exposer serves at /metrics:
//
//   qatd_jobs{state}                       gauge   jobs per state
//   qatd_queue_depth                       gauge   queued jobs
//   qatd_job_step{job,kind}                gauge   latest progress of a running job
//   qatd_job_loss{job,kind=kd|hard|local|eval}  gauge   latest loss points
//   qatd_tokens_per_second{job}            gauge
//   qatd_gpu_memory_bytes{device,type=used|total}  gauge
//   qatd_rpc_requests_total{method,code}   counter
//   qatd_rpc_latency_seconds{method}       histogram (whole call, streams included)
//
// Per-job series are removed when the job leaves RUNNING. Thread-safe.

#include <grpcpp/support/server_interceptor.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "qatd/v1/job.pb.h"

namespace qatd::server {

// "loss/kd" -> "kd", "loss/hard_top1" -> "hard", "eval/kd" -> "eval", "loss/local" -> "local";
// nullopt for metrics that are not losses.
std::optional<std::string> LossKindOf(const std::string& metric_name);

class DaemonMetrics {
 public:
  DaemonMetrics();
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  void SetJobCount(v1::JobState state, int64_t count);
  void SetQueueDepth(int64_t depth);
  void JobProgress(int64_t job_id, v1::JobKind kind, int64_t step);
  // Routes a metric point to qatd_job_loss / qatd_tokens_per_second when it is one of those.
  void JobMetric(int64_t job_id, const std::string& name, double value);
  void ForgetJob(int64_t job_id);
  void GpuMemory(const std::string& device, int64_t used_bytes, int64_t total_bytes);
  void RpcDone(const std::string& method, const std::string& code, double seconds);

 private:
  struct JobSeries {
    prometheus::Gauge* step = nullptr;
    std::map<std::string, prometheus::Gauge*> loss;  // by kind
    prometheus::Gauge* tokens_per_second = nullptr;
  };

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Gauge>& jobs_;
  prometheus::Family<prometheus::Gauge>& queue_depth_;
  prometheus::Family<prometheus::Gauge>& job_step_;
  prometheus::Family<prometheus::Gauge>& job_loss_;
  prometheus::Family<prometheus::Gauge>& tokens_per_second_;
  prometheus::Family<prometheus::Gauge>& gpu_memory_;
  prometheus::Family<prometheus::Counter>& rpc_requests_;
  prometheus::Family<prometheus::Histogram>& rpc_latency_;
  prometheus::Gauge& queue_depth_gauge_;

  std::mutex mu_;
  std::map<int64_t, JobSeries> jobs_series_;  // guarded by mu_
};

// Counts every RPC (qatd.v1, health, reflection) by method and final status code, and
// observes its latency.
// Labels are the methods the daemon serves (qatd.v1.Qatd, qatd.v1.WorkerChannel, health,
// reflection); any other name a client sends is counted as method="other", so made-up method
// names cannot grow /metrics.
class RpcMetricsInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RpcMetricsInterceptorFactory(DaemonMetrics* metrics);
  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override;

 private:
  DaemonMetrics* metrics_;
  std::set<std::string> known_methods_;  // "qatd.v1.Qatd/SubmitJob", ...; read-only
};

// "OK", "INVALID_ARGUMENT", ... for a gRPC status code.
std::string GrpcCodeName(int code);

}  // namespace qatd::server
