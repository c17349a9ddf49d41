// End-to-end tests: the real qatd binary on an ephemeral loopback port with a temporary data
// dir, driven through the generated gRPC client (the Prometheus, TLS and restart tests are in
// daemon_lifecycle_e2e_test.cc). Every wait polls with a deadline; nothing asserts on timing.
// The tests kill only processes they started (the daemons, Prometheus, and - on purpose - a
// worker of their daemon).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <set>
#include <fstream>
#include <thread>

#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "tests/e2e/e2e_support.h"
#include "tests/common/temp_dir.h"

namespace qatd::e2e {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

bool Terminal(v1::JobState s) {
  return s == v1::JOB_STATE_SUCCEEDED || s == v1::JOB_STATE_FAILED || s == v1::JOB_STATE_CANCELLED;
}

int64_t Ms(const google::protobuf::Timestamp& t) { return t.seconds() * 1000 + t.nanos() / 1000000; }

// The parent pid from /proc/<pid>/stat ("pid (comm) state ppid ..."); -1 if unreadable.
pid_t ParentPid(pid_t pid) {
  std::string stat = ReadFileOrEmpty("/proc/" + std::to_string(pid) + "/stat");
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos || paren + 4 >= stat.size()) return -1;
  return static_cast<pid_t>(std::atoi(stat.c_str() + paren + 4));
}

TEST_F(DaemonE2eTest, HealthCheckReportsServing) {
  EXPECT_TRUE(Serving(*daemon_));
  v1::ServerInfo info;
  grpc::Status status = daemon_->Stub()->GetServerInfo(daemon_->Context().get(), v1::GetServerInfoRequest(), &info);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_FALSE(info.version().empty());
  EXPECT_FALSE(info.devices().empty());
  EXPECT_THAT(info.available_kinds(), ::testing::Contains(v1::JOB_KIND_PROBE));
  EXPECT_EQ(info.max_concurrent_jobs_per_device(), 4);
}

TEST_F(DaemonE2eTest, ReflectionListsTheQatdService) {
  auto stub = grpc::reflection::v1alpha::ServerReflection::NewStub(daemon_->Channel());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 10s);
  auto stream = stub->ServerReflectionInfo(&context);
  grpc::reflection::v1alpha::ServerReflectionRequest request;
  request.set_list_services("");
  ASSERT_TRUE(stream->Write(request));
  stream->WritesDone();
  grpc::reflection::v1alpha::ServerReflectionResponse response;
  ASSERT_TRUE(stream->Read(&response));
  std::vector<std::string> names;
  for (const auto& service : response.list_services_response().service()) names.push_back(service.name());
  EXPECT_THAT(names, ::testing::Contains("qatd.v1.Qatd"));
  while (stream->Read(&response)) {
  }
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(DaemonE2eTest, GenerateStreamsTheJobIdThenTheJobOutcome) {
  v1::ServerInfo info;
  ASSERT_TRUE(daemon_->Stub()->GetServerInfo(daemon_->Context().get(), v1::GetServerInfoRequest(), &info).ok());
  bool available = false;
  for (int kind : info.available_kinds()) available |= kind == v1::JOB_KIND_GENERATE;
  v1::GenerateRequest request;
  request.mutable_spec()->set_model(dir_->path().string());
  request.mutable_spec()->set_prompt("What is 2+2?");
  v1::GenerateResponse response;
  if (!available) {
    // No GENERATE job function in this build: the stream carries the job id, then ends with
    // the job's error.
    auto context = daemon_->Context(120s);
    auto reader = daemon_->Stub()->Generate(context.get(), request);
    ASSERT_TRUE(reader->Read(&response));
    const int64_t job_id = response.job_id();
    EXPECT_GT(job_id, 0);
    bool done = false;
    while (reader->Read(&response)) done |= response.done();
    grpc::Status status = reader->Finish();
    EXPECT_FALSE(done);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_EQ(status.error_message(), "job kind GENERATE is not available in this build");
    EXPECT_EQ(Get(*daemon_, job_id).state(), v1::JOB_STATE_FAILED);
  }

  // A bad request names the field as the client wrote it.
  request.mutable_spec()->clear_prompt();
  auto bad_context = daemon_->Context();
  auto bad = daemon_->Stub()->Generate(bad_context.get(), request);
  EXPECT_FALSE(bad->Read(&response));
  grpc::Status status = bad->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "spec.prompt is required");
}

TEST_F(DaemonE2eTest, BadSpecIsInvalidArgumentNamingTheFieldAndIsNotQueued) {
  v1::ListJobsRequest list;
  list.set_page_size(1000);
  v1::ListJobsResponse before;
  ASSERT_TRUE(daemon_->Stub()->ListJobs(daemon_->Context().get(), list, &before).ok());

  v1::SubmitJobRequest request;
  request.mutable_spec()->mutable_kd_cache()->set_teacher_model(dir_->path().string());
  request.mutable_spec()->mutable_kd_cache()->set_dataset(dir_->path().string());
  request.mutable_spec()->mutable_kd_cache()->set_max_length(1);
  v1::Job job;
  grpc::Status status = daemon_->Stub()->SubmitJob(daemon_->Context().get(), request, &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("spec.kd_cache.max_length"));

  request.mutable_spec()->Clear();
  status = daemon_->Stub()->SubmitJob(daemon_->Context().get(), request, &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("spec must set one of"));

  *request.mutable_spec() = Probe(1, 0);
  request.mutable_spec()->mutable_probe()->set_step_ms(-5);
  status = daemon_->Stub()->SubmitJob(daemon_->Context().get(), request, &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("spec.probe.step_ms"));

  v1::ListJobsResponse after;
  ASSERT_TRUE(daemon_->Stub()->ListJobs(daemon_->Context().get(), list, &after).ok());
  EXPECT_EQ(after.jobs_size(), before.jobs_size());

  v1::GetJobRequest missing;
  missing.set_job_id(987654321);
  status = daemon_->Stub()->GetJob(daemon_->Context().get(), missing, &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(DaemonE2eTest, MissingOrWrongTokenIsUnauthenticated) {
  auto stub = daemon_->Stub();
  v1::ServerInfo info;
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 10s);
    grpc::Status status = stub->GetServerInfo(&context, v1::GetServerInfoRequest(), &info);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 10s);
    context.AddMetadata("authorization", "Bearer not-the-token");
    grpc::Status status = stub->GetServerInfo(&context, v1::GetServerInfoRequest(), &info);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 10s);
    v1::SubmitJobRequest request;
    *request.mutable_spec() = Probe(1, 0);
    v1::Job job;
    grpc::Status status = stub->SubmitJob(&context, request, &job);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 10s);
    v1::WatchJobRequest request;
    request.set_job_id(1);
    auto reader = stub->WatchJob(&context, request);
    v1::JobEvent event;
    EXPECT_FALSE(reader->Read(&event));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  // The right token works.
  EXPECT_TRUE(stub->GetServerInfo(daemon_->Context().get(), v1::GetServerInfoRequest(), &info).ok());
}

TEST_F(DaemonE2eTest, ProbeJobRunsToCompletionWithMetricsAndArtifact) {
  v1::Job job = Submit(Probe(5, 0));
  ASSERT_GT(job.id(), 0);
  EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);
  job = WaitFor(*daemon_, job.id(), [](const v1::Job& j) { return Terminal(j.state()); });
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.error().message();
  EXPECT_EQ(job.attempt(), 1);
  EXPECT_EQ(job.progress().done(), 5);

  v1::ListArtifactsRequest artifacts_request;
  artifacts_request.set_job_id(job.id());
  v1::ListArtifactsResponse artifacts;
  ASSERT_TRUE(daemon_->Stub()->ListArtifacts(daemon_->Context().get(), artifacts_request, &artifacts).ok());
  ASSERT_EQ(artifacts.artifacts_size(), 1);
  EXPECT_EQ(artifacts.artifacts(0).kind(), "probe");
  EXPECT_EQ(artifacts.artifacts(0).sha256().size(), 64u);
  EXPECT_TRUE(fs::exists(artifacts.artifacts(0).path()));

  v1::GetMetricSeriesRequest series_request;
  series_request.set_job_id(job.id());
  series_request.add_names("loss/kd");
  v1::GetMetricSeriesResponse series;
  ASSERT_TRUE(daemon_->Stub()->GetMetricSeries(daemon_->Context().get(), series_request, &series).ok());
  ASSERT_EQ(series.series_size(), 1);
  ASSERT_EQ(series.series(0).points_size(), 5);
  EXPECT_DOUBLE_EQ(series.series(0).points(4).value(), 0.2);
}

TEST_F(DaemonE2eTest, SubmitWatchCancelList) {
  v1::Job job = Submit(Probe(1000000, 20));
  v1::WatchJobRequest request;
  request.set_job_id(job.id());
  auto context = daemon_->Context(120s);
  auto reader = daemon_->Stub()->WatchJob(context.get(), request);
  v1::JobEvent event;
  bool running = false, progressed = false, cancel_sent = false;
  std::optional<v1::StateChange> end;
  int64_t last_seq = 0;
  while (reader->Read(&event)) {
    EXPECT_EQ(event.job_id(), job.id());
    if (event.seq() != 0) {
      EXPECT_GT(event.seq(), last_seq);
      last_seq = event.seq();
    }
    if (event.has_state() && event.state().to() == v1::JOB_STATE_RUNNING) running = true;
    if (event.has_progress()) progressed = true;
    if (running && progressed && !cancel_sent) {
      v1::CancelJobRequest cancel;
      cancel.set_job_id(job.id());
      cancel.set_reason("e2e");
      v1::Job after;
      grpc::Status status = daemon_->Stub()->CancelJob(daemon_->Context().get(), cancel, &after);
      ASSERT_TRUE(status.ok()) << status.error_message();
      EXPECT_TRUE(after.cancel_requested() || after.state() == v1::JOB_STATE_CANCELLED);
      cancel_sent = true;
    }
    if (event.has_state() && Terminal(event.state().to())) end = event.state();
  }
  grpc::Status status = reader->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_TRUE(end.has_value());
  EXPECT_EQ(end->to(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(end->error().code(), static_cast<int>(grpc::StatusCode::CANCELLED));

  v1::ListJobsRequest list;
  list.add_states(v1::JOB_STATE_CANCELLED);
  list.add_kinds(v1::JOB_KIND_PROBE);
  v1::ListJobsResponse listed;
  ASSERT_TRUE(daemon_->Stub()->ListJobs(daemon_->Context().get(), list, &listed).ok());
  bool found = false;
  for (const v1::Job& j : listed.jobs()) found |= j.id() == job.id();
  EXPECT_TRUE(found);

  // A queued job is cancelled at once; a finished one cannot be.
  v1::JobSpec blocked = Probe(1, 0);
  blocked.mutable_probe()->set_fail(true);
  v1::Job done = Submit(blocked);
  done = WaitFor(*daemon_, done.id(), [](const v1::Job& j) { return Terminal(j.state()); });
  EXPECT_EQ(done.state(), v1::JOB_STATE_FAILED);
  v1::CancelJobRequest cancel;
  cancel.set_job_id(done.id());
  v1::Job ignored;
  EXPECT_EQ(daemon_->Stub()->CancelJob(daemon_->Context().get(), cancel, &ignored).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(DaemonE2eTest, ListJobsPages) {
  for (int i = 0; i < 3; ++i) Submit(Probe(0, 0));
  v1::ListJobsRequest request;
  request.set_page_size(2);
  v1::ListJobsResponse first;
  ASSERT_TRUE(daemon_->Stub()->ListJobs(daemon_->Context().get(), request, &first).ok());
  ASSERT_EQ(first.jobs_size(), 2);
  ASSERT_FALSE(first.next_page_token().empty());
  EXPECT_GT(first.jobs(0).id(), first.jobs(1).id());
  request.set_page_token(first.next_page_token());
  v1::ListJobsResponse second;
  ASSERT_TRUE(daemon_->Stub()->ListJobs(daemon_->Context().get(), request, &second).ok());
  ASSERT_GE(second.jobs_size(), 1);
  EXPECT_LT(second.jobs(0).id(), first.jobs(1).id());
  request.set_page_token("garbage");
  EXPECT_EQ(daemon_->Stub()->ListJobs(daemon_->Context().get(), request, &second).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(DaemonE2eTest, KilledWorkerFailsItsJobAndTheDaemonStaysHealthy) {
  v1::Job job = Submit(Probe(1000000, 20));
  job = WaitFor(*daemon_, job.id(), [](const v1::Job& j) {
    return (j.state() == v1::JOB_STATE_RUNNING && j.worker_pid() > 0) || Terminal(j.state());
  });
  ASSERT_EQ(job.state(), v1::JOB_STATE_RUNNING);
  const pid_t worker = job.worker_pid();
  ASSERT_NE(worker, daemon_->pid());
  // The worker is a child of the daemon this test started.
  ASSERT_EQ(ParentPid(worker), daemon_->pid());
  ASSERT_EQ(::kill(worker, SIGKILL), 0);
  job = WaitFor(*daemon_, job.id(), [](const v1::Job& j) { return Terminal(j.state()); });
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_THAT(job.error().message(), HasSubstr("killed by signal SIGKILL (9)"));
  EXPECT_EQ(job.worker_pid(), 0);

  EXPECT_TRUE(Serving(*daemon_));
  v1::Job next = Submit(Probe(2, 0));
  next = WaitFor(*daemon_, next.id(), [](const v1::Job& j) { return Terminal(j.state()); });
  EXPECT_EQ(next.state(), v1::JOB_STATE_SUCCEEDED);
}

TEST_F(DaemonE2eTest, EveryJobKindIsAvailableAndAFailingJobNamesItsInput) {
  v1::ServerInfo info;
  ASSERT_TRUE(daemon_->Stub()->GetServerInfo(daemon_->Context().get(), v1::GetServerInfoRequest(), &info).ok());
  std::set<int> kinds(info.available_kinds().begin(), info.available_kinds().end());
  for (v1::JobKind kind : {v1::JOB_KIND_KD_CACHE, v1::JOB_KIND_LAYERWISE, v1::JOB_KIND_QAT, v1::JOB_KIND_CONVERT,
                           v1::JOB_KIND_SNAP, v1::JOB_KIND_EVAL, v1::JOB_KIND_GENERATE}) {
    EXPECT_TRUE(kinds.count(kind)) << v1::JobKind_Name(kind);
  }
  // A SNAP of a directory that is no checkpoint runs, fails in the worker, and says why.
  const std::string not_a_checkpoint = dir_->File("not-a-checkpoint");
  fs::create_directories(not_a_checkpoint);
  v1::JobSpec spec;
  spec.mutable_snap()->set_model(dir_->path().string());
  spec.mutable_snap()->set_checkpoint(not_a_checkpoint);
  v1::Job job = Submit(spec);
  job = WaitFor(*daemon_, job.id(), [](const v1::Job& j) { return Terminal(j.state()); });
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.error().code(), static_cast<int>(grpc::StatusCode::NOT_FOUND)) << job.error().message();
  EXPECT_THAT(job.error().message(), HasSubstr("not-a-checkpoint"));
}

TEST_F(DaemonE2eTest, PipelineRunsStagesInDependencyOrder) {
  v1::SubmitPipelineRequest request;
  request.mutable_spec()->set_name("e2e");
  v1::PipelineStage* second = request.mutable_spec()->add_stages();
  second->set_name("second");
  *second->mutable_spec() = Probe(1, 0);
  second->add_depends_on("first");
  v1::PipelineStage* first = request.mutable_spec()->add_stages();
  first->set_name("first");
  *first->mutable_spec() = Probe(3, 10);
  v1::Pipeline pipeline;
  grpc::Status status = daemon_->Stub()->SubmitPipeline(daemon_->Context().get(), request, &pipeline);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(pipeline.job_ids_size(), 2);
  v1::Job a = WaitFor(*daemon_, pipeline.job_ids(0), [](const v1::Job& j) { return Terminal(j.state()); });
  v1::Job b = WaitFor(*daemon_, pipeline.job_ids(1), [](const v1::Job& j) { return Terminal(j.state()); });
  EXPECT_EQ(a.stage(), "first");
  EXPECT_EQ(a.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(b.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_GE(Ms(b.start_time()), Ms(a.end_time()));
  v1::GetPipelineRequest get;
  get.set_pipeline_id(pipeline.id());
  ASSERT_TRUE(daemon_->Stub()->GetPipeline(daemon_->Context().get(), get, &pipeline).ok());
  EXPECT_EQ(pipeline.state(), v1::JOB_STATE_SUCCEEDED);

  request.mutable_spec()->mutable_stages(1)->add_depends_on("second");  // a cycle
  status = daemon_->Stub()->SubmitPipeline(daemon_->Context().get(), request, &pipeline);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("cycle"));
}

TEST_F(DaemonE2eTest, KdCacheJobRunsOnTheTinyModel) {
  const fs::path model = fs::path(QATD_TEST_DATA) / "golden" / "tiny-qwen3";
  const fs::path tokenizer = fs::path(QATD_TEST_DATA) / "golden" / "qwen3-tokenizer";
  v1::ServerInfo info;
  ASSERT_TRUE(daemon_->Stub()->GetServerInfo(daemon_->Context().get(), v1::GetServerInfoRequest(), &info).ok());
  bool available = false;
  for (int kind : info.available_kinds()) available |= kind == v1::JOB_KIND_KD_CACHE;
  if (!available) GTEST_SKIP() << "this qatd build has no KD_CACHE job";
  if (!fs::exists(model / "model.safetensors") || !fs::exists(tokenizer / "tokenizer.json")) {
    GTEST_SKIP() << "tiny model or tokenizer missing under " << QATD_TEST_DATA;
  }
  const std::string dataset = dir_->File("kd.txt");
  {
    std::ofstream out(dataset);
    for (int i = 0; i < 64; ++i) out << "The quick brown fox " << i << " jumps over the lazy dog number " << i * 7 << ".\n";
  }
  v1::JobSpec spec;
  v1::KdCacheSpec* kd = spec.mutable_kd_cache();
  kd->set_teacher_model(model.string());
  kd->set_tokenizer(tokenizer.string());
  kd->set_dataset(dataset);
  kd->set_max_length(16);
  kd->set_topk(4);
  kd->set_num_sequences(8);
  kd->set_shard_size(4);
  kd->set_batch_size(2);
  kd->set_dtype(v1::DTYPE_FP32);
  v1::Job job = Submit(spec);
  job = WaitFor(*daemon_, job.id(), [](const v1::Job& j) { return Terminal(j.state()); }, 300s);
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.error().message();
  EXPECT_EQ(job.progress().done(), 8);
  bool cache = false;
  for (const v1::Artifact& a : job.artifacts()) {
    if (a.kind() != "kd_cache") continue;
    cache = true;
    EXPECT_TRUE(fs::exists(fs::path(a.path()) / "meta.json"));
    EXPECT_GT(a.size_bytes(), 0);
  }
  EXPECT_TRUE(cache);

  // A bad KD spec is refused by the job's own validation before queueing.
  kd->set_topk(0);
  v1::SubmitJobRequest request;
  *request.mutable_spec() = spec;
  v1::Job rejected;
  grpc::Status status = daemon_->Stub()->SubmitJob(daemon_->Context().get(), request, &rejected);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("spec.kd_cache.topk"));
}

TEST_F(DaemonE2eTest, FiftyWatchersAndTwoHundredSubmissions) {
  constexpr int kWatchers = 50;
  constexpr int kSubmissions = 200;
  std::vector<int64_t> ids(kSubmissions, 0);
  std::atomic<int> rpc_errors{0};
  auto submit_range = [&](int begin, int end) {
    auto stub = daemon_->Stub();
    for (int i = begin; i < end; ++i) {
      v1::SubmitJobRequest request;
      *request.mutable_spec() = Probe(2, 0);
      v1::Job job;
      grpc::Status status = stub->SubmitJob(daemon_->Context().get(), request, &job);
      if (!status.ok()) {
        ++rpc_errors;
        ADD_FAILURE() << "SubmitJob: " << status.error_message();
      }
      ids[i] = job.id();
    }
  };
  submit_range(0, kWatchers);  // one job per watcher first

  std::atomic<int> watched_to_success{0};
  std::vector<std::thread> watchers;
  for (int w = 0; w < kWatchers; ++w) {
    watchers.emplace_back([&, w] {
      auto context = daemon_->Context(600s);
      v1::WatchJobRequest request;
      request.set_job_id(ids[w]);
      auto reader = daemon_->Stub()->WatchJob(context.get(), request);
      v1::JobEvent event;
      v1::JobState last = v1::JOB_STATE_UNSPECIFIED;
      while (reader->Read(&event)) {
        if (event.has_state()) last = event.state().to();
      }
      grpc::Status status = reader->Finish();
      if (!status.ok()) {
        ++rpc_errors;
        ADD_FAILURE() << "WatchJob " << ids[w] << ": " << status.error_message();
      }
      if (last == v1::JOB_STATE_SUCCEEDED) ++watched_to_success;
    });
  }
  std::vector<std::thread> submitters;
  const int per_thread = (kSubmissions - kWatchers) / 3;
  for (int t = 0; t < 3; ++t) {
    const int begin = kWatchers + t * per_thread;
    const int end = t == 2 ? kSubmissions : begin + per_thread;
    submitters.emplace_back(submit_range, begin, end);
  }
  for (std::thread& t : submitters) t.join();
  for (std::thread& t : watchers) t.join();
  EXPECT_EQ(rpc_errors.load(), 0);
  EXPECT_EQ(watched_to_success.load(), kWatchers);

  int succeeded = 0;
  for (int64_t id : ids) {
    v1::Job job = WaitFor(*daemon_, id, [](const v1::Job& j) { return Terminal(j.state()); }, 600s);
    succeeded += job.state() == v1::JOB_STATE_SUCCEEDED;
  }
  EXPECT_EQ(succeeded, kSubmissions);
  EXPECT_TRUE(Serving(*daemon_));
}

}  // namespace
}  // namespace qatd::e2e
