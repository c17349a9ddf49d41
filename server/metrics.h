#pragma once
// The daemon's Prometheus metrics (DESIGN.md §5; the full table with label values and
// cardinality is in server/README.md). One prometheus::Registry plus a scrape-time collector
// (process_* metrics, expiry of finished jobs' series), both served by the process's single
// Exposer at /metrics (register every element of Collectables()).
//
// Per-job series carry `job_id` (never `job`: Prometheus's target label). A job's series are
// created when it starts; when it ends they keep their final values (qatd_job_running = 0) for
// `finished_job_retention_ms`, so a job shorter than the scrape interval is still scraped, and
// at most `max_retained_jobs` ended jobs are kept (oldest dropped first). Thread-safe.

#include <grpcpp/support/server_interceptor.h>
#include <prometheus/collectable.h>
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
#include <vector>

#include "qatd/v1/job.pb.h"
#include "server/clock.h"

namespace qatd::server {

// Which per-job gauge a worker metric name feeds (DESIGN.md §5); nullopt for names the daemon
// does not export (they stay in the job's events and result).
struct JobGaugeTarget {
  enum Family {
    kLoss,
    kEvalKd,
    kEvalTop1,
    kEvalPerplexity,
    kSnapRelativeError,
    kLearningRate,
    kTokensPerSecond,
    kLutUsage,
    kRankStepSeconds
  };
  Family family;
  // kLoss: kd, hard_top1, hard_full, local, global, total; kLutUsage: mlp, attn;
  // kRankStepSeconds: the rank, "0" .. "4095"
  std::string term;
  std::string entry;  // kLutUsage only: the LUT entry, "0" .. "255"
};
// "loss/kd" -> {kLoss, "kd"}, "eval/kd" and "eval/kd_final" -> kEvalKd, "eval/ppl" ->
// kEvalPerplexity, "snap/relative_error" -> kSnapRelativeError, "train/lr" -> kLearningRate,
// "*/tokens_per_second" -> kTokensPerSecond, "lut_usage/<mlp|attn>/<0-255>" -> kLutUsage
// (group, entry: at most 2 x 256 series per job), "rank/<r>/step_seconds" -> kRankStepSeconds
// (r in [0, 4096), canonical decimal: one series per rank of a data-parallel job). eval/*_initial, *_best and *_before are not
// mapped (the latest value is what a gauge can hold; the others stay in the job result).
std::optional<JobGaugeTarget> JobGaugeTargetOf(const std::string& metric_name);

struct DaemonMetricsOptions {
  int64_t finished_job_retention_ms = 10 * 60 * 1000;  // qatd --metrics-retention
  int max_retained_jobs = 256;
  const Clock* clock = nullptr;  // nullptr = the system clock; not owned
};

// One device's sample for qatd_device_*; utilization < 0 = unknown (not exported).
struct DeviceSample {
  std::string device;  // "0", "1", ... for GPUs, "cpu" on a CPU-only host
  int64_t memory_used_bytes = 0;
  int64_t memory_total_bytes = 0;
  double utilization = -1;  // [0, 1]
};

class DaemonMetrics {
 public:
  explicit DaemonMetrics(DaemonMetricsOptions options = {});
  ~DaemonMetrics();
  DaemonMetrics(const DaemonMetrics&) = delete;
  DaemonMetrics& operator=(const DaemonMetrics&) = delete;

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }
  // What an Exposer must register: the scrape-time collector first, then the registry.
  std::vector<std::shared_ptr<prometheus::Collectable>> Collectables() const;

  void SetJobCount(v1::JobState state, int64_t count);
  void SetQueueDepth(int64_t depth);
  // A worker attempt of job `job_id` began (RUNNING).
  void JobStarted(int64_t job_id, v1::JobKind kind);
  void JobProgress(int64_t job_id, v1::JobKind kind, const v1::Progress& progress);
  // Routes a worker metric point to its per-job gauge (JobGaugeTargetOf); tokens/s points
  // also advance qatd_job_tokens_total by rate x the wall time since the previous point (or
  // since the attempt's first progress report: model loading is not counted).
  void JobMetric(int64_t job_id, const std::string& name, double value);
  // The job left RUNNING (`to`: QUEUED for a retry, or a terminal state): its series keep their
  // final values for the retention time. Terminal states count in qatd_jobs_finished_total.
  void JobEnded(int64_t job_id, v1::JobKind kind, v1::JobState to);
  // Drops series of ended jobs older than the retention (also done at every scrape).
  void ExpireEndedJobs();
  void Devices(const std::vector<DeviceSample>& devices);
  void RpcDone(const std::string& method, const std::string& code, double seconds);

 private:
  struct JobSeries {
    std::string kind;
    int64_t ended_ms = -1;  // -1 = running
    int64_t last_tokens_ms = -1;
    prometheus::Gauge* running = nullptr;
    prometheus::Gauge* step = nullptr;
    prometheus::Gauge* step_target = nullptr;
    prometheus::Gauge* eta = nullptr;
    prometheus::Gauge* last_progress = nullptr;
    prometheus::Counter* tokens = nullptr;
    std::map<std::string, prometheus::Gauge*> loss;  // by term
    std::map<std::pair<std::string, std::string>, prometheus::Gauge*> lut_usage;  // by (group, entry)
    std::map<std::string, prometheus::Gauge*> rank_step;  // by rank
    std::map<int, prometheus::Gauge*> gauges;        // by JobGaugeTarget::Family
  };
  JobSeries& SeriesLocked(int64_t job_id, const std::string& kind);
  void RemoveLocked(std::map<int64_t, JobSeries>::iterator it);
  prometheus::Family<prometheus::Gauge>& JobFamily(int family);
  int64_t NowMs() const;

  DaemonMetricsOptions options_;
  std::unique_ptr<Clock> own_clock_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<prometheus::Collectable> scrape_collector_;
  prometheus::Family<prometheus::Gauge>& jobs_;
  prometheus::Family<prometheus::Gauge>& queue_depth_;
  prometheus::Family<prometheus::Counter>& jobs_finished_;
  prometheus::Family<prometheus::Counter>& job_attempts_;
  prometheus::Family<prometheus::Gauge>& job_running_;
  prometheus::Family<prometheus::Gauge>& job_step_;
  prometheus::Family<prometheus::Gauge>& job_step_target_;
  prometheus::Family<prometheus::Gauge>& job_eta_;
  prometheus::Family<prometheus::Gauge>& job_last_progress_;
  prometheus::Family<prometheus::Counter>& job_tokens_;
  prometheus::Family<prometheus::Gauge>& job_loss_;
  prometheus::Family<prometheus::Gauge>& job_eval_kd_;
  prometheus::Family<prometheus::Gauge>& job_eval_top1_;
  prometheus::Family<prometheus::Gauge>& job_eval_perplexity_;
  prometheus::Family<prometheus::Gauge>& job_snap_error_;
  prometheus::Family<prometheus::Gauge>& job_lut_usage_;
  prometheus::Family<prometheus::Gauge>& job_rank_step_;
  prometheus::Family<prometheus::Gauge>& job_learning_rate_;
  prometheus::Family<prometheus::Gauge>& job_tokens_per_second_;
  prometheus::Family<prometheus::Gauge>& device_memory_used_;
  prometheus::Family<prometheus::Gauge>& device_memory_total_;
  prometheus::Family<prometheus::Gauge>& device_utilization_;
  prometheus::Family<prometheus::Gauge>& build_info_;
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
