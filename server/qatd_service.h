#pragma once
// The qatd.v1.Qatd gRPC service (callback API). Every method first checks the bearer token,
// then validates its request (INVALID_ARGUMENT naming the field) before touching the queue.
// Statuses reach the wire through ToGrpcStatus only.

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <string>

#include "qatd/v1/service.grpc.pb.h"
#include "server/auth.h"
#include "server/device_pool.h"
#include "server/event_hub.h"
#include "core/jobs/job_spec.h"
#include "server/retention.h"
#include "server/scheduler.h"
#include "storage/job_store.h"

namespace qatd::server {

struct ServiceContext {
  Scheduler* scheduler = nullptr;
  Retention* retention = nullptr;
  storage::JobStore* store = nullptr;
  EventHub* hub = nullptr;
  DevicePool* devices = nullptr;
  const BearerTokenAuth* auth = nullptr;
  std::string data_dir;
  int64_t start_time_ms = 0;
  // How specs are checked: input paths must exist on this host; path confinement (allowed
  // roots, the job folders) when confine_paths.
  jobs::SpecCheckContext spec_checks;
};

class QatdService final : public v1::Qatd::CallbackService {
 public:
  explicit QatdService(ServiceContext context) : ctx_(std::move(context)) {}

  grpc::ServerUnaryReactor* SubmitJob(grpc::CallbackServerContext* context, const v1::SubmitJobRequest* request,
                                      v1::Job* response) override;
  grpc::ServerUnaryReactor* SubmitPipeline(grpc::CallbackServerContext* context,
                                           const v1::SubmitPipelineRequest* request, v1::Pipeline* response) override;
  grpc::ServerUnaryReactor* GetPipeline(grpc::CallbackServerContext* context, const v1::GetPipelineRequest* request,
                                        v1::Pipeline* response) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* context, const v1::GetJobRequest* request,
                                   v1::Job* response) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* context, const v1::ListJobsRequest* request,
                                     v1::ListJobsResponse* response) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* context, const v1::CancelJobRequest* request,
                                      v1::Job* response) override;
  grpc::ServerWriteReactor<v1::JobEvent>* WatchJob(grpc::CallbackServerContext* context,
                                                   const v1::WatchJobRequest* request) override;
  grpc::ServerUnaryReactor* GetMetricSeries(grpc::CallbackServerContext* context,
                                            const v1::GetMetricSeriesRequest* request,
                                            v1::GetMetricSeriesResponse* response) override;
  grpc::ServerUnaryReactor* ListArtifacts(grpc::CallbackServerContext* context,
                                          const v1::ListArtifactsRequest* request,
                                          v1::ListArtifactsResponse* response) override;
  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(grpc::CallbackServerContext* context,
                                                           const v1::GenerateRequest* request) override;
  grpc::ServerBidiReactor<v1::GenerateSessionRequest, v1::GenerateSessionResponse>* GenerateSession(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* context,
                                          const v1::GetServerInfoRequest* request, v1::ServerInfo* response) override;
  grpc::ServerUnaryReactor* DeleteJobs(grpc::CallbackServerContext* context, const v1::DeleteJobsRequest* request,
                                       v1::DeleteJobsResponse* response) override;
  grpc::ServerUnaryReactor* PruneJobs(grpc::CallbackServerContext* context, const v1::PruneJobsRequest* request,
                                      v1::DeleteJobsResponse* response) override;

 private:
  // Proto-level validation, the job function's own validation and the device check.
  absl::Status CheckSubmittable(const v1::JobSpec& spec) const;
  // Validates and queues a GENERATE job; errors name fields under `field_prefix` ("spec.").
  absl::StatusOr<v1::Job> SubmitGenerate(const v1::GenerateRequest& request, const std::string& field_prefix);

  ServiceContext ctx_;
};

}  // namespace qatd::server
