#include "server/job_journal.h"

#include "core/common/status_macros.h"
#include "core/common/artifact_digest.h"
#include "storage/job_codec.h"

namespace qatd::server {

JobJournal::JobJournal(storage::JobStore* store, EventHub* hub, DaemonMetrics* metrics, const Clock* clock,
                       int64_t progress_persist_interval_ms)
    : store_(store), hub_(hub), metrics_(metrics), clock_(clock), progress_interval_ms_(progress_persist_interval_ms) {}

absl::Status JobJournal::Init() {
  std::lock_guard<std::mutex> lock(mu_);
  for (v1::JobState state : {v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING, v1::JOB_STATE_SUCCEEDED,
                             v1::JOB_STATE_FAILED, v1::JOB_STATE_CANCELLED}) {
    QATD_ASSIGN_OR_RETURN(counts_[state], store_->CountJobs(state));
    metrics_->SetJobCount(state, counts_[state]);
  }
  return absl::OkStatus();
}

void JobJournal::Created(const v1::Job& job) {
  std::lock_guard<std::mutex> lock(mu_);
  metrics_->SetJobCount(job.state(), ++counts_[job.state()]);
}

void JobJournal::Deleted(const std::vector<v1::JobState>& states) {
  std::lock_guard<std::mutex> lock(mu_);
  for (v1::JobState state : states) metrics_->SetJobCount(state, --counts_[state]);
}

absl::StatusOr<v1::JobEvent> JobJournal::Transition(int64_t job_id, const storage::Transition& transition,
                                                    std::optional<v1::JobState> expected_from) {
  std::lock_guard<std::mutex> lock(mu_);
  QATD_ASSIGN_OR_RETURN(v1::JobEvent event,
                        store_->TransitionJob(job_id, transition, clock_->NowMs(), expected_from));
  const v1::JobState from = event.state().from();
  const v1::JobState to = event.state().to();
  metrics_->SetJobCount(from, --counts_[from]);
  metrics_->SetJobCount(to, ++counts_[to]);
  if (from == v1::JOB_STATE_RUNNING || to == v1::JOB_STATE_RUNNING || to == v1::JOB_STATE_SUCCEEDED ||
      to == v1::JOB_STATE_FAILED || to == v1::JOB_STATE_CANCELLED) {
    absl::StatusOr<v1::Job> job = store_->GetJob(job_id);  // its kind labels the metrics
    const v1::JobKind kind = job.ok() ? job->kind() : v1::JOB_KIND_UNSPECIFIED;
    if (to == v1::JOB_STATE_RUNNING) {
      metrics_->JobStarted(job_id, kind);
    } else {
      metrics_->JobEnded(job_id, kind, to);  // counts terminal states; keeps a run's final values
    }
  }
  if (from == v1::JOB_STATE_RUNNING) last_progress_persist_.erase(job_id);
  hub_->Publish(event);
  return event;
}

absl::Status JobJournal::Append(int64_t job_id, const v1::JobEvent& event, bool persist) {
  // Caller holds mu_.
  QATD_ASSIGN_OR_RETURN(v1::JobEvent stored, store_->AppendEvent(job_id, event, clock_->NowMs(), persist));
  hub_->Publish(stored);
  return absl::OkStatus();
}

absl::Status JobJournal::Progress(int64_t job_id, v1::JobKind kind, const v1::Progress& progress) {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = clock_->NowMs();
  auto it = last_progress_persist_.find(job_id);
  const bool finished = progress.total() > 0 && progress.done() >= progress.total();
  const bool persist = it == last_progress_persist_.end() || now - it->second >= progress_interval_ms_ || finished;
  if (persist) last_progress_persist_[job_id] = now;
  v1::JobEvent event;
  *event.mutable_progress() = progress;
  QATD_RETURN_IF_ERROR(Append(job_id, event, persist));
  metrics_->JobProgress(job_id, kind, progress);
  if (progress.unit() == "tokens" && progress.rate() > 0) metrics_->JobMetric(job_id, "tokens_per_second", progress.rate());
  return absl::OkStatus();
}

absl::Status JobJournal::Metric(int64_t job_id, const v1::MetricPoint& point) {
  std::lock_guard<std::mutex> lock(mu_);
  v1::JobEvent event;
  *event.mutable_metric() = point;
  QATD_RETURN_IF_ERROR(Append(job_id, event, true));
  metrics_->JobMetric(job_id, point.name(), point.value());
  const std::optional<JobGaugeTarget> target = JobGaugeTargetOf(point.name());
  if (target.has_value() && target->family == JobGaugeTarget::kRankStepSeconds) {
    QATD_RETURN_IF_ERROR(store_->SetRankStepSeconds(job_id, std::stoi(target->term), point.step(), point.value()));
  }
  return absl::OkStatus();
}

absl::Status JobJournal::Ranks(int64_t job_id, const v1::RankRoster& roster) {
  std::lock_guard<std::mutex> lock(mu_);
  return store_->SetRanks(job_id, roster);
}

absl::Status JobJournal::Log(int64_t job_id, const v1::LogLine& line) {
  std::lock_guard<std::mutex> lock(mu_);
  v1::JobEvent event;
  *event.mutable_log() = line;
  return Append(job_id, event, true);
}

absl::Status JobJournal::Text(int64_t job_id, const v1::GeneratedText& text) {
  std::lock_guard<std::mutex> lock(mu_);
  v1::JobEvent event;
  *event.mutable_text() = text;
  return Append(job_id, event, true);
}

absl::Status JobJournal::Artifact(int64_t job_id, const v1::WorkerArtifact& reported) {
  ArtifactDigest digest{reported.size_bytes(), reported.sha256()};
  if (digest.sha256.empty()) {
    // Digest outside the lock: large artifacts take a while.
    QATD_ASSIGN_OR_RETURN(digest, DigestPath(reported.path()));
  }
  v1::Artifact artifact;
  artifact.set_path(reported.path());
  artifact.set_kind(reported.kind());
  artifact.set_size_bytes(digest.size_bytes);
  artifact.set_sha256(digest.sha256);
  std::lock_guard<std::mutex> lock(mu_);
  QATD_ASSIGN_OR_RETURN(v1::JobEvent event, store_->AddArtifact(job_id, artifact, clock_->NowMs()));
  hub_->Publish(event);
  return absl::OkStatus();
}

int64_t JobJournal::CountInState(v1::JobState state) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = counts_.find(state);
  return it == counts_.end() ? 0 : it->second;
}

}  // namespace qatd::server
