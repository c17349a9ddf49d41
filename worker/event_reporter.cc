#include "worker/event_reporter.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/common/artifact_digest.h"

#include "core/jobs/job_kind.h"
#include "worker/framing.h"

namespace qatd::worker {
namespace {

v1::LogLevel ToProtoLevel(jobs::LogLevel level) {
  switch (level) {
    case jobs::LogLevel::kDebug: return v1::LOG_LEVEL_DEBUG;
    case jobs::LogLevel::kInfo: return v1::LOG_LEVEL_INFO;
    case jobs::LogLevel::kWarning: return v1::LOG_LEVEL_WARNING;
    case jobs::LogLevel::kError: return v1::LOG_LEVEL_ERROR;
  }
  return v1::LOG_LEVEL_INFO;
}

}  // namespace

absl::Status EventReporter::Send(const v1::WorkerEvent& event) {
  // Caller holds mu_.
  if (broken_) return absl::UnavailableError("the daemon's event stream is closed");
  absl::Status status = Deliver(event);
  if (!status.ok()) {
    broken_ = true;
    if (cancel_ != nullptr) cancel_->Cancel();
  }
  return status;
}

void EventReporter::Progress(int64_t done, int64_t total, const std::string& unit, double rate, double eta_s) {
  v1::WorkerEvent event;
  v1::Progress* p = event.mutable_progress();
  p->set_done(done);
  p->set_total(total);
  p->set_unit(unit);
  p->set_rate(rate);
  p->set_eta_s(eta_s);
  std::lock_guard<std::mutex> lock(mu_);
  (void)Send(event);
}

void EventReporter::Metric(const std::string& name, int64_t step, double value) {
  v1::WorkerEvent event;
  v1::MetricPoint* m = event.mutable_metric();
  m->set_name(name);
  m->set_step(step);
  m->set_value(value);
  std::lock_guard<std::mutex> lock(mu_);
  last_metric_[name] = value;
  (void)Send(event);
}

void EventReporter::Log(jobs::LogLevel level, const std::string& message) {
  v1::WorkerEvent event;
  event.mutable_log()->set_level(ToProtoLevel(level));
  event.mutable_log()->set_message(message);
  std::lock_guard<std::mutex> lock(mu_);
  (void)Send(event);
}

void EventReporter::Artifact(const std::string& path, const std::string& kind) {
  // Digest here, not in the daemon: a cancel stops it, and the daemon never blocks on a
  // multi-GB checkpoint.
  absl::StatusOr<ArtifactDigest> digest =
      DigestPath(path, [this] { return cancel_ != nullptr && cancel_->cancelled(); });
  if (!digest.ok()) {
    Log(jobs::LogLevel::kWarning,
        absl::StrCat("artifact ", path, " not registered: ", std::string(digest.status().message())));
    return;
  }
  v1::WorkerEvent event;
  event.mutable_artifact()->set_path(path);
  event.mutable_artifact()->set_kind(kind);
  event.mutable_artifact()->set_size_bytes(digest->size_bytes);
  event.mutable_artifact()->set_sha256(digest->sha256);
  std::lock_guard<std::mutex> lock(mu_);
  (void)Send(event);
}

void EventReporter::Text(const std::string& text, int32_t token_id) {
  v1::WorkerEvent event;
  event.mutable_text()->set_text(text);
  event.mutable_text()->set_token_id(token_id);
  std::lock_guard<std::mutex> lock(mu_);
  (void)Send(event);
}

void EventReporter::Ranks(const std::vector<jobs::RankPlacement>& ranks) {
  v1::WorkerEvent event;
  for (const jobs::RankPlacement& r : ranks) {
    v1::RankInfo* info = event.mutable_ranks()->add_ranks();
    info->set_rank(r.rank);
    info->set_host(r.host);
    info->set_device(r.device);
    info->set_pid(r.pid);
  }
  std::lock_guard<std::mutex> lock(mu_);
  (void)Send(event);
}

absl::Status EventReporter::Finish(const absl::Status& status, const std::string& summary) {
  v1::WorkerEvent event;
  v1::WorkerFinal* final = event.mutable_final();
  *final->mutable_status() = jobs::ToJobError(status);
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [name, value] : last_metric_) {
    if (!absl::StartsWith(name, "rank/")) (*final->mutable_result()->mutable_metrics())[name] = value;
  }
  final->mutable_result()->set_summary(summary);
  return Send(event);
}

absl::Status PipeReporter::Deliver(const v1::WorkerEvent& event) { return WriteFrame(fd_, event); }

}  // namespace qatd::worker
