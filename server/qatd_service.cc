#include "server/qatd_service.h"

#include <algorithm>
#include <atomic>
#include <functional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"
#include "server/job_files.h"
#include "server/job_stream_reactor.h"
#include "server/pipeline_plan.h"
#include "core/jobs/job_spec.h"
#include "server/status_mapping.h"
#include "server/version.h"
#include "storage/job_codec.h"
#include "core/jobs/job_kind.h"

namespace qatd::server {
namespace {

constexpr int kDefaultPageSize = 50;
constexpr int kMaxPageSize = 1000;

absl::Status SessionOnlyThroughGenerateSession(const std::string& field) {
  return absl::InvalidArgumentError(absl::StrCat(
      field, ".session: only the GenerateSession RPC (qat infer --interactive) starts a chat session"));
}

grpc::ServerUnaryReactor* Reply(grpc::CallbackServerContext* context, const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// Ends a streaming call at once (rejected before any message).
template <typename Msg>
class RejectedStream : public grpc::ServerWriteReactor<Msg> {
 public:
  explicit RejectedStream(const absl::Status& status) { this->Finish(ToGrpcStatus(status)); }
  void OnDone() override { delete this; }
};

class WatchReactor : public JobStreamReactor<v1::JobEvent> {
 public:
  using JobStreamReactor::JobStreamReactor;
  using JobStreamReactor::EndAfterQueued;
  using JobStreamReactor::EndWhenHistoryDrained;
  using JobStreamReactor::Push;

 protected:
  std::optional<v1::JobEvent> Translate(const v1::JobEvent& event) override { return event; }
  std::pair<std::optional<v1::JobEvent>, grpc::Status> OnEnd(const v1::JobEvent& event) override {
    return {event, grpc::Status::OK};
  }
};

class GenerateReactor : public JobStreamReactor<v1::GenerateResponse> {
 public:
  GenerateReactor(std::shared_ptr<JobEventFeed> feed, Scheduler* scheduler, int64_t job_id)
      : JobStreamReactor(std::move(feed)), scheduler_(scheduler), job_id_(job_id) {
    v1::GenerateResponse first;
    first.set_job_id(job_id);
    Push(std::move(first));
  }

 protected:
  std::optional<v1::GenerateResponse> Translate(const v1::JobEvent& event) override {
    if (!event.has_text()) return std::nullopt;
    v1::GenerateResponse response;
    *response.mutable_text() = event.text();
    return response;
  }
  std::pair<std::optional<v1::GenerateResponse>, grpc::Status> OnEnd(const v1::JobEvent& event) override {
    if (event.state().to() == v1::JOB_STATE_SUCCEEDED) {
      v1::GenerateResponse done;
      done.set_done(true);
      return {done, grpc::Status::OK};
    }
    absl::Status error = jobs::FromJobError(event.state().error());
    if (error.ok()) error = absl::AbortedError(absl::StrCat("job ", job_id_, " ended ", storage::JobStateName(event.state().to())));
    return {std::nullopt, ToGrpcStatus(error)};
  }
  void OnClientGone() override { (void)scheduler_->Cancel(job_id_, "the Generate client went away"); }

 private:
  Scheduler* scheduler_;
  int64_t job_id_;
};

// GenerateSession: the first request starts the session's GENERATE job, later ones are passed
// to its worker in order (Scheduler::SendControl); the job's text events and turn ends
// (the generate/tokens metric its worker reports last in a turn) go back to the client. The
// client's half-close ends the session (the job SUCCEEDS); its disappearance cancels the job.
using SessionStream = grpc::ServerBidiReactor<v1::GenerateSessionRequest, v1::GenerateSessionResponse>;
class GenerateSessionReactor : public JobStreamReactor<v1::GenerateSessionResponse, SessionStream> {
 public:
  using Submit = std::function<absl::StatusOr<int64_t>(const v1::GenerateRequest&)>;
  GenerateSessionReactor(grpc::CallbackServerContext* context, const ServiceContext* ctx, Submit submit)
      : JobStreamReactor(nullptr), context_(context), ctx_(ctx), submit_(std::move(submit)) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    const int64_t job_id = job_id_.load();
    if (!ok) {
      // A half-close ends the session; a vanished client is OnCancel's (the job is cancelled).
      if (job_id == 0) {
        EndNow(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the session ended before its start request"));
      } else if (!context_->IsCancelled()) {
        v1::WorkerControl control;
        control.mutable_session()->set_end(true);
        if (absl::Status sent = ctx_->scheduler->SendControl(job_id, control); !sent.ok()) EndNow(ToGrpcStatus(sent));
      }
      return;
    }
    if (job_id == 0) {
      if (!request_.has_start()) {
        EndNow(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the first GenerateSessionRequest must set start"));
        return;
      }
      absl::StatusOr<int64_t> id = submit_(request_.start());
      if (!id.ok()) {
        EndNow(ToGrpcStatus(id.status()));
        return;
      }
      job_id_.store(*id);
      v1::GenerateSessionResponse first;
      first.set_job_id(*id);
      BeginWith(std::make_shared<JobEventFeed>(ctx_->hub, ctx_->store, *id, 0, /*with_history=*/true),
                std::move(first));
      if (gone_.load()) (void)ctx_->scheduler->Cancel(*id, "the GenerateSession client went away");
    } else {
      if (!request_.has_input()) {
        (void)ctx_->scheduler->Cancel(job_id, "the GenerateSession client broke the protocol");
        EndNow(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "after the first request, every GenerateSessionRequest sets input"));
        return;
      }
      v1::WorkerControl control;
      *control.mutable_session() = request_.input();
      if (absl::Status sent = ctx_->scheduler->SendControl(job_id, control); !sent.ok()) {
        EndNow(ToGrpcStatus(sent));
        return;
      }
    }
    request_.Clear();
    StartRead(&request_);
  }

 protected:
  std::optional<v1::GenerateSessionResponse> Translate(const v1::JobEvent& event) override {
    v1::GenerateSessionResponse response;
    if (event.has_text()) {
      *response.mutable_text() = event.text();
      return response;
    }
    if (!event.has_metric()) return std::nullopt;
    const v1::MetricPoint& m = event.metric();
    const auto value = static_cast<int64_t>(m.value());
    if (m.name() == "generate/prompt_tokens") turn_.set_prompt_tokens(value);
    if (m.name() == "generate/dropped_turns") turn_.set_dropped_turns(value);
    if (m.name() != "generate/tokens") return std::nullopt;
    turn_.set_turn(m.step());
    turn_.set_generated_tokens(value);
    *response.mutable_turn_done() = turn_;
    turn_.Clear();
    return response;
  }
  std::pair<std::optional<v1::GenerateSessionResponse>, grpc::Status> OnEnd(const v1::JobEvent& event) override {
    if (event.state().to() == v1::JOB_STATE_SUCCEEDED) return {std::nullopt, grpc::Status::OK};
    absl::Status error = jobs::FromJobError(event.state().error());
    if (error.ok()) {
      error = absl::AbortedError(absl::StrCat("job ", job_id_.load(), " ended ", storage::JobStateName(event.state().to())));
    }
    return {std::nullopt, ToGrpcStatus(error)};
  }
  void OnClientGone() override {
    gone_.store(true);
    if (const int64_t id = job_id_.load(); id > 0) (void)ctx_->scheduler->Cancel(id, "the GenerateSession client went away");
  }

 private:
  grpc::CallbackServerContext* context_;
  const ServiceContext* ctx_;
  Submit submit_;
  v1::GenerateSessionRequest request_;  // one read at a time
  std::atomic<int64_t> job_id_{0};
  std::atomic<bool> gone_{false};
  v1::TurnDone turn_;                   // the current turn's numbers so far (writer side)
};

}  // namespace

absl::Status QatdService::CheckSubmittable(const v1::JobSpec& spec) const {
  QATD_RETURN_IF_ERROR(jobs::ValidateJobSpec(spec, ctx_.spec_checks));
  return ctx_.devices->CheckFits(storage::DeviceCountOf(spec));
}

grpc::ServerUnaryReactor* QatdService::SubmitJob(grpc::CallbackServerContext* context,
                                                 const v1::SubmitJobRequest* request, v1::Job* response) {
  if (absl::Status auth = ctx_.auth->Check(*context); !auth.ok()) return Reply(context, auth);
  if (request->spec().generate().session()) return Reply(context, SessionOnlyThroughGenerateSession("spec.generate"));
  if (absl::Status valid = CheckSubmittable(request->spec()); !valid.ok()) return Reply(context, valid);
  absl::StatusOr<v1::Job> job = ctx_.scheduler->Submit(request->spec());
  if (job.ok()) *response = *std::move(job);
  return Reply(context, job.status());
}

grpc::ServerUnaryReactor* QatdService::SubmitPipeline(grpc::CallbackServerContext* context,
                                                      const v1::SubmitPipelineRequest* request,
                                                      v1::Pipeline* response) {
  if (absl::Status auth = ctx_.auth->Check(*context); !auth.ok()) return Reply(context, auth);
  absl::StatusOr<std::vector<storage::NewJob>> jobs = PlanPipeline(request->spec(), ctx_.spec_checks);
  if (!jobs.ok()) return Reply(context, jobs.status());
  // PlanPipeline validated every stage (core/jobs/job_spec.h); stages fed by upstream
  // artifacts are complete only at run time.
  for (int i = 0; i < request->spec().stages_size(); ++i) {
    const v1::PipelineStage& stage = request->spec().stages(i);
    if (stage.spec().generate().session()) {
      return Reply(context, SessionOnlyThroughGenerateSession(absl::StrCat("spec.stages[", i, "].spec.generate")));
    }
    if (absl::Status fits = ctx_.devices->CheckFits(storage::DeviceCountOf(stage.spec())); !fits.ok()) {
      return Reply(context, fits);
    }
  }
  absl::StatusOr<v1::Pipeline> pipeline = ctx_.scheduler->SubmitPipeline(request->spec(), *std::move(jobs));
  if (pipeline.ok()) *response = *std::move(pipeline);
  return Reply(context, pipeline.status());
}

grpc::ServerUnaryReactor* QatdService::GetPipeline(grpc::CallbackServerContext* context,
                                                   const v1::GetPipelineRequest* request, v1::Pipeline* response) {
  if (absl::Status auth = ctx_.auth->Check(*context); !auth.ok()) return Reply(context, auth);
  absl::StatusOr<v1::Pipeline> pipeline = ctx_.store->GetPipeline(request->pipeline_id());
  if (pipeline.ok()) *response = *std::move(pipeline);
  return Reply(context, pipeline.status());
}

grpc::ServerUnaryReactor* QatdService::GetJob(grpc::CallbackServerContext* context, const v1::GetJobRequest* request,
                                              v1::Job* response) {
  if (absl::Status auth = ctx_.auth->Check(*context); !auth.ok()) return Reply(context, auth);
  absl::StatusOr<v1::Job> job = ctx_.store->GetJob(request->job_id());
  if (job.ok()) *response = *std::move(job);
  // A running job's files grow: measure them now (a finished job's size is stored).
  if (job.ok() && response->state() == v1::JOB_STATE_RUNNING) {
    response->set_disk_bytes(DiskUsage(PathsOf(*response, ctx_.spec_checks.jobs_dir)));
  }
  return Reply(context, job.status());
}

grpc::ServerUnaryReactor* QatdService::ListJobs(grpc::CallbackServerContext* context,
                                                const v1::ListJobsRequest* request, v1::ListJobsResponse* response) {
  if (absl::Status auth = ctx_.auth->Check(*context); !auth.ok()) return Reply(context, auth);
  storage::JobFilter filter;
  // Each filter list names at most every value of its enum (a huge one would only build a huge
  // query).
  if (request->states_size() > 16 || request->kinds_size() > 16) {
    return Reply(context, absl::InvalidArgumentError(absl::StrCat(
                              "states and kinds take at most 16 values each, got ", request->states_size(), " and ",
                              request->kinds_size())));
  }
  for (int s : request->states()) {
    if (!v1::JobState_IsValid(s)) return Reply(context, absl::InvalidArgumentError(absl::StrCat("states: unknown state ", s)));
    filter.states.push_back(static_cast<v1::JobState>(s));
  }
  for (int k : request->kinds()) {
    if (!v1::JobKind_IsValid(k)) return Reply(context, absl::InvalidArgumentError(absl::StrCat("kinds: unknown kind ", k)));
    filter.kinds.push_back(static_cast<v1::JobKind>(k));
  }
  filter.pipeline_id = request->pipeline_id();
  if (request->page_size() < 0) {
    return Reply(context, absl::InvalidArgumentError(absl::StrCat("page_size must be >= 0, got ", request->page_size())));
  }
  const int page_size = request->page_size() == 0 ? kDefaultPageSize : std::min(request->page_size(), kMaxPageSize);
  if (!request->page_token().empty() &&
      (!absl::SimpleAtoi(request->page_token(), &filter.before_id) || filter.before_id <= 0)) {
    return Reply(context, absl::InvalidArgumentError("page_token is not a token from a previous ListJobs response"));
  }
  filter.limit = page_size + 1;  // one more tells whether another page exists
  filter.include_spec = request->include_spec();
  absl::StatusOr<std::vector<v1::Job>> jobs = ctx_.store->ListJobs(filter);
  if (!jobs.ok()) return Reply(context, jobs.status());
  const bool more = static_cast<int>(jobs->size()) > page_size;
  if (more) jobs->resize(page_size);
  for (v1::Job& job : *jobs) *response->add_jobs() = std::move(job);
  if (more) response->set_next_page_token(std::to_string(response->jobs(page_size - 1).id()));
  return Reply(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* QatdService::CancelJob(grpc::CallbackServerContext* context,
                                                 const v1::CancelJobRequest* request, v1::Job* response) {
  if (absl::Status auth = ctx_.auth->Check(*context); !auth.ok()) return Reply(context, auth);
  absl::StatusOr<v1::Job> job = ctx_.scheduler->Cancel(request->job_id(), request->reason());
  if (job.ok()) *response = *std::move(job);
  return Reply(context, job.status());
}

grpc::ServerWriteReactor<v1::JobEvent>* QatdService::WatchJob(grpc::CallbackServerContext* context,
                                                              const v1::WatchJobRequest* request) {
  if (absl::Status auth = ctx_.auth->Check(*context); !auth.ok()) return new RejectedStream<v1::JobEvent>(auth);
  if (request->after_seq() < 0) {
    return new RejectedStream<v1::JobEvent>(absl::InvalidArgumentError("after_seq must be >= 0"));
  }
  // Read the newest seq before the job: anything that happens after the job read has a larger
  // seq, so the feed cannot miss the job's end.
  absl::StatusOr<int64_t> latest = ctx_.store->LatestEventSeq(request->job_id());
  absl::StatusOr<v1::Job> job = ctx_.store->GetJob(request->job_id());
  if (!job.ok()) return new RejectedStream<v1::JobEvent>(job.status());
  if (!latest.ok()) return new RejectedStream<v1::JobEvent>(latest.status());
  const int64_t after = request->skip_history() ? std::max(*latest, request->after_seq()) : request->after_seq();
  auto feed = std::make_shared<JobEventFeed>(ctx_.hub, ctx_.store, job->id(), after, /*with_history=*/true);
  auto* reactor = new WatchReactor(feed);
  if (request->skip_history() && storage::IsTerminal(job->state())) {
    // Nothing more will happen: report how it ended and close.
    v1::JobEvent end;
    end.set_job_id(job->id());
    *end.mutable_time() = job->end_time();
    end.mutable_state()->set_from(job->state());
    end.mutable_state()->set_to(job->state());
    end.mutable_state()->set_reason("already ended");
    if (job->has_error()) *end.mutable_state()->mutable_error() = job->error();
    reactor->Push(std::move(end));
    reactor->EndAfterQueued(grpc::Status::OK);
  } else if (storage::IsTerminal(job->state())) {
    // Its whole history is stored; after it nothing can come (even if `after_seq` skips the end).
    reactor->EndWhenHistoryDrained(grpc::Status::OK);
  }
  reactor->Begin();
  return reactor;
}

grpc::ServerUnaryReactor* QatdService::GetMetricSeries(grpc::CallbackServerContext* context,
                                                       const v1::GetMetricSeriesRequest* request,
                                                       v1::GetMetricSeriesResponse* response) {
  if (absl::Status auth = ctx_.auth->Check(*context); !auth.ok()) return Reply(context, auth);
  if (absl::StatusOr<v1::Job> job = ctx_.store->GetJob(request->job_id()); !job.ok()) return Reply(context, job.status());
  std::vector<std::string> names(request->names().begin(), request->names().end());
  std::optional<int64_t> after;
  if (request->has_after_step()) after = request->after_step();
  absl::StatusOr<std::vector<v1::MetricSeries>> series = ctx_.store->GetMetricSeries(request->job_id(), names, after);
  if (!series.ok()) return Reply(context, series.status());
  for (v1::MetricSeries& s : *series) *response->add_series() = std::move(s);
  return Reply(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* QatdService::ListArtifacts(grpc::CallbackServerContext* context,
                                                     const v1::ListArtifactsRequest* request,
                                                     v1::ListArtifactsResponse* response) {
  if (absl::Status auth = ctx_.auth->Check(*context); !auth.ok()) return Reply(context, auth);
  storage::ArtifactFilter filter;
  filter.job_id = request->job_id();
  filter.pipeline_id = request->pipeline_id();
  filter.kind = request->kind();
  absl::StatusOr<std::vector<v1::Artifact>> artifacts = ctx_.store->ListArtifacts(filter);
  if (!artifacts.ok()) return Reply(context, artifacts.status());
  for (v1::Artifact& a : *artifacts) *response->add_artifacts() = std::move(a);
  return Reply(context, absl::OkStatus());
}

absl::StatusOr<v1::Job> QatdService::SubmitGenerate(const v1::GenerateRequest& request,
                                                    const std::string& field_prefix) {
  v1::JobSpec spec;
  *spec.mutable_generate() = request.spec();
  spec.set_priority(request.priority());
  if (request.has_resources()) *spec.mutable_resources() = request.resources();
  if (absl::Status valid = CheckSubmittable(spec); !valid.ok()) {
    // Name fields as the client wrote them (GenerateRequest.spec.*, GenerateSessionRequest.start.spec.*).
    std::string message(valid.message());
    const std::string internal = "spec.generate.";
    if (message.rfind(internal, 0) == 0) message = field_prefix + message.substr(internal.size());
    return absl::Status(valid.code(), message);
  }
  return ctx_.scheduler->Submit(spec);
}

grpc::ServerBidiReactor<v1::GenerateSessionRequest, v1::GenerateSessionResponse>* QatdService::GenerateSession(
    grpc::CallbackServerContext* context) {
  if (absl::Status auth = ctx_.auth->Check(*context); !auth.ok()) {
    class Rejected : public SessionStream {
     public:
      explicit Rejected(const absl::Status& status) { Finish(ToGrpcStatus(status)); }
      void OnDone() override { delete this; }
    };
    return new Rejected(auth);
  }
  return new GenerateSessionReactor(context, &ctx_, [this](const v1::GenerateRequest& start) -> absl::StatusOr<int64_t> {
    v1::GenerateRequest request = start;
    request.mutable_spec()->set_session(true);
    absl::StatusOr<v1::Job> job = SubmitGenerate(request, "start.spec.");
    if (!job.ok()) return job.status();
    return job->id();
  });
}

grpc::ServerWriteReactor<v1::GenerateResponse>* QatdService::Generate(grpc::CallbackServerContext* context,
                                                                      const v1::GenerateRequest* request) {
  if (absl::Status auth = ctx_.auth->Check(*context); !auth.ok()) return new RejectedStream<v1::GenerateResponse>(auth);
  if (request->spec().session()) {
    return new RejectedStream<v1::GenerateResponse>(SessionOnlyThroughGenerateSession("spec"));
  }
  absl::StatusOr<v1::Job> job = SubmitGenerate(*request, "spec.");
  if (!job.ok()) return new RejectedStream<v1::GenerateResponse>(job.status());
  auto feed = std::make_shared<JobEventFeed>(ctx_.hub, ctx_.store, job->id(), 0, /*with_history=*/true);
  auto* reactor = new GenerateReactor(feed, ctx_.scheduler, job->id());
  reactor->Begin();
  return reactor;
}

grpc::ServerUnaryReactor* QatdService::GetServerInfo(grpc::CallbackServerContext* context,
                                                     const v1::GetServerInfoRequest* request,
                                                     v1::ServerInfo* response) {
  (void)request;
  if (absl::Status auth = ctx_.auth->Check(*context); !auth.ok()) return Reply(context, auth);
  response->set_version(kQatdVersion);
  for (v1::DeviceInfo& device : ctx_.devices->Snapshot()) *response->add_devices() = std::move(device);
  response->set_queued_jobs(static_cast<int32_t>(ctx_.scheduler->queued()));
  response->set_running_jobs(static_cast<int32_t>(ctx_.scheduler->running()));
  for (v1::JobKind kind : jobs::AvailableJobKinds()) response->add_available_kinds(kind);
  *response->mutable_start_time() = storage::ToTimestamp(ctx_.start_time_ms);
  response->set_data_dir(ctx_.data_dir);
  response->set_max_concurrent_jobs_per_device(ctx_.devices->max_jobs_per_device());
  response->set_data_dir_free_bytes(FreeBytes(ctx_.data_dir));
  response->set_dispatch_paused(ctx_.scheduler->dispatch_paused());
  return Reply(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* QatdService::DeleteJobs(grpc::CallbackServerContext* context,
                                                  const v1::DeleteJobsRequest* request,
                                                  v1::DeleteJobsResponse* response) {
  if (absl::Status auth = ctx_.auth->Check(*context); !auth.ok()) return Reply(context, auth);
  std::vector<int64_t> ids(request->job_ids().begin(), request->job_ids().end());
  absl::StatusOr<v1::DeleteJobsResponse> deleted =
      ctx_.retention->Delete(ids, request->delete_outputs(), request->dry_run());
  if (deleted.ok()) *response = *std::move(deleted);
  return Reply(context, deleted.status());
}

grpc::ServerUnaryReactor* QatdService::PruneJobs(grpc::CallbackServerContext* context,
                                                 const v1::PruneJobsRequest* request,
                                                 v1::DeleteJobsResponse* response) {
  if (absl::Status auth = ctx_.auth->Check(*context); !auth.ok()) return Reply(context, auth);
  if (request->older_than_seconds() <= 0 || request->older_than_seconds() > int64_t{1} << 40) {
    return Reply(context, absl::InvalidArgumentError(absl::StrCat("older_than_seconds must be in [1, 2^40], got ",
                                                                  request->older_than_seconds())));
  }
  if (request->states_size() > 16) {
    return Reply(context, absl::InvalidArgumentError(absl::StrCat("states takes at most 16 values, got ",
                                                                  request->states_size())));
  }
  std::vector<v1::JobState> states;
  for (int s : request->states()) {
    if (!v1::JobState_IsValid(s)) return Reply(context, absl::InvalidArgumentError(absl::StrCat("states: unknown state ", s)));
    states.push_back(static_cast<v1::JobState>(s));
  }
  absl::StatusOr<v1::DeleteJobsResponse> pruned = ctx_.retention->Prune(
      request->older_than_seconds() * 1000, std::move(states), request->delete_outputs(), request->dry_run());
  if (pruned.ok()) *response = *std::move(pruned);
  return Reply(context, pruned.status());
}

}  // namespace qatd::server
