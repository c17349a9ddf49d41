#include "core/train/e2e_trainer.h"

#include <ATen/core/grad_mode.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/common/file_util.h"
#include "core/common/status_macros.h"
#include "core/common/torch_status.h"
#include "core/kd/cache_reader.h"
#include "core/quant/quantize_model.h"
#include "core/train/evaluate.h"
#include "core/train/held_out.h"
#include "core/train/loss_values.h"
#include "core/train/losses.h"
#include "core/train/micro_step.h"
#include "core/train/optimizer.h"
#include "core/train/rank_step_time.h"
#include "core/train/resume_state.h"
#include "core/train/train_log.h"
#include "core/train/train_step.h"
#include "core/train/trainable.h"

namespace qatd::train {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;

nlohmann::json ToJson(const EvalPoint& p) { return {{"step", p.step}, {"kd", p.kd}, {"top1", p.top1}, {"ppl", p.ppl}}; }
EvalPoint EvalPointFromJson(const nlohmann::json& j) {
  EvalPoint p;
  p.step = j.value("step", int64_t{0});
  p.kd = j.value("kd", 0.0);
  p.top1 = j.value("top1", 0.0);
  p.ppl = j.value("ppl", 0.0);
  return p;
}

// TrainE2e as a class: one method per phase, the run state in members.
class E2eTrainer {
 public:
  E2eTrainer(Student& s, const E2eOptions& o, jobs::Reporter& reporter, jobs::CancelToken& cancel)
      : s_(s), o_(o), reporter_(reporter), cancel_(cancel), paths_(o.output_dir),
        resume_dir_(paths_.resume, {.step_key = "step"}), log_(paths_.log_csv) {}

  absl::StatusOr<E2eResult> Run();

 private:
  absl::Status Prepare();
  absl::Status BuildOptimizerAndStream();
  absl::Status MaybeResume();
  absl::Status Resume();
  absl::Status StartFresh();
  void LogPlan();
  absl::Status TrainLoop();
  absl::Status AfterStep(const LossValues& values, double lr);
  void LogWindow(double lr, double eval_kd, double elapsed);
  absl::StatusOr<EvalPoint> Evaluate(int64_t at_step);
  absl::Status SaveCheckpoint();
  absl::Status SaveBest(int64_t at_step);
  absl::StatusOr<E2eResult> Finish();

  Student& s_;
  const E2eOptions& o_;
  jobs::Reporter& reporter_;
  jobs::CancelToken& cancel_;
  const TrainPaths paths_;
  const ResumeDir resume_dir_;

  // Set up by Prepare.
  std::shared_ptr<const kd::KdCacheReader> reader_;
  kd::KdSplits splits_;
  std::vector<std::pair<std::string, at::Tensor>> params_;
  DistGroup* dist_ = nullptr;  // data parallel only: the stream yields this rank's shard (dist_group.h)
  int64_t world_ = 1;
  bool primary_ = true;        // writes files
  std::unique_ptr<AdamW> adam_;
  LrSchedule schedule_;
  std::optional<kd::KdBatchStream> stream_;
  EvalOptions eval_options_;
  nlohmann::json fingerprint_;

  // Run state (what trainer_state.json holds).
  E2eResult result_;
  TrainLog log_;
  int64_t step_ = 0;
  int64_t stale_evals_ = 0;
  double elapsed_before_ = 0;

  // This run's training loop.
  std::unique_ptr<MicroStep> micro_;
  Clock::time_point run_start_;
  double train_seconds_ = 0;
  int64_t steps_this_run_ = 0;
  int64_t tokens_per_step_ = 0;  // all ranks
  LossWindow window_;
  RankStepTimes step_times_;  // this rank's steps in the log window (rank_step_time.h)
  bool stopped_early_ = false;
};

}  // namespace

absl::StatusOr<E2eResult> E2eTrainer::Run() {
  QATD_RETURN_IF_ERROR(Prepare());
  QATD_RETURN_IF_ERROR(MaybeResume());
  LogPlan();
  QATD_RETURN_IF_ERROR(TrainLoop());
  return Finish();
}

absl::Status E2eTrainer::Prepare() {
  QATD_RETURN_IF_ERROR(o_.Validate());
  QATD_ASSIGN_OR_RETURN(reader_, kd::KdCacheReader::Open(o_.kd_cache_dir, {.model_vocab_size = s_.config.vocab_size}));
  QATD_ASSIGN_OR_RETURN(splits_, HeldOutSplits(*reader_, o_.eval_samples));
  if (o_.kd_rand_neg && reader_->rand_neg() == 0) {
    return absl::InvalidArgumentError(absl::StrCat("kd_rand_neg: the KD cache ", o_.kd_cache_dir,
                                                   " holds no random negatives (rand_neg 0 in meta.json); make one with "
                                                   "`qat cache --rand-neg N`"));
  }
  if (o_.external != nullptr) {
    params_ = o_.external->Parameters();  // the quantized layers stay frozen
  } else {
    QATD_RETURN_IF_ERROR(quant::ApplyTrainableSet(
        *s_.registry, {o_.train_weights && s_.version == 1, o_.train_scales, o_.train_g_only, o_.train_mlp_only}));
    SelectV2Forward(s_, o_.v2_factored_forward);
    params_ = TrainableParameters(*s_.model);
  }
  if (params_.empty()) return absl::FailedPreconditionError("nothing to train: the trainable set selects no parameter");

  std::error_code ec;
  fs::create_directories(o_.output_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", o_.output_dir, ": ", ec.message()));
  dist_ = o_.dist != nullptr && o_.dist->distributed() ? o_.dist : nullptr;
  world_ = dist_ != nullptr ? dist_->world_size() : 1;
  primary_ = dist_ == nullptr || dist_->primary();
  QATD_RETURN_IF_ERROR(BuildOptimizerAndStream());
  eval_options_.max_sequences = 0;
  eval_options_.batch_size = o_.eval_batch_size;
  eval_options_.temperature = o_.temperature;
  eval_options_.chunk_rows = o_.chunk_rows;
  // The global batch: a resume with another number of ranks is exact when it is the same.
  fingerprint_ = {{"batch_size", o_.batch_size * world_}, {"grad_accum", o_.grad_accum}, {"seed", o_.seed},
                  {"eval_samples", o_.eval_samples},      {"version", s_.version}};
  if (o_.external != nullptr) fingerprint_["external"] = o_.external->Fingerprint();
  return absl::OkStatus();
}

absl::Status E2eTrainer::BuildOptimizerAndStream() {
  AdamWOptions adam_options;
  adam_options.lr = o_.lr;
  adam_options.weight_decay = o_.weight_decay;
  if (dist_ != nullptr && o_.shard_optimizer) {
    adam_options.shard_index = dist_->rank();
    adam_options.shard_count = dist_->world_size();
  }
  adam_ = std::make_unique<AdamW>(params_, adam_options);
  schedule_ = LrSchedule{o_.cosine, o_.warmup_steps, std::max<int64_t>(1, o_.max_steps), o_.min_lr_ratio};
  kd::KdStreamOptions stream_options;
  stream_options.batch_size = o_.batch_size * world_;
  stream_options.shard_index = dist_ != nullptr ? dist_->rank() : 0;
  stream_options.shard_count = world_;
  stream_options.seed = o_.seed;
  stream_options.with_rand = o_.kd_rand_neg;
  QATD_ASSIGN_OR_RETURN(kd::KdBatchStream stream, kd::KdBatchStream::Create(reader_, splits_.train, stream_options));
  stream_.emplace(std::move(stream));
  return absl::OkStatus();
}

absl::Status E2eTrainer::MaybeResume() {
  // Every rank resumes, or none: rank 0's view of resume/ decides.
  bool resume = o_.resume && resume_dir_.Exists();
  if (dist_ != nullptr) {
    at::Tensor flag = at::full({1}, resume ? 1 : 0, at::kInt);
    QATD_RETURN_IF_ERROR(dist_->Broadcast(flag, 0));
    resume = flag.item<int>() != 0;
  }
  return resume ? Resume() : StartFresh();
}

absl::Status E2eTrainer::Resume() {
  QATD_ASSIGN_OR_RETURN(ResumeState st, resume_dir_.Load(fingerprint_));
  if (o_.external != nullptr) {
    QATD_ASSIGN_OR_RETURN(const quant::TensorMap* adapters, st.Tensors("adapters"));
    QATD_RETURN_IF_ERROR(o_.external->LoadState(*adapters));
  } else {
    QATD_RETURN_IF_ERROR(quant::LoadQuantState(*s_.registry, st.model));
  }
  QATD_ASSIGN_OR_RETURN(const quant::TensorMap* optimizer, st.Tensors("optimizer"));
  QATD_RETURN_IF_ERROR(adam_->LoadState(*optimizer));
  QATD_RETURN_IF_ERROR(stream_->Seek(st.cursor));
  step_ = st.step;
  for (const char* key : {"initial", "best", "last"}) {
    if (!st.fields.contains(key)) {
      return absl::DataLossError(absl::StrCat(paths_.resume, "/trainer_state.json: no \"", key, "\""));
    }
  }
  result_.initial = EvalPointFromJson(st.fields.at("initial"));
  result_.best = EvalPointFromJson(st.fields.at("best"));
  result_.last = EvalPointFromJson(st.fields.at("last"));
  stale_evals_ = st.fields.value("stale_evals", int64_t{0});
  elapsed_before_ = st.elapsed_sec;
  log_.FromJson(st.log);
  result_.resumed = true;
  reporter_.Log(jobs::LogLevel::kInfo,
                absl::StrCat("resuming at step ", step_, " of ", o_.max_steps, " from ", paths_.resume));
  return absl::OkStatus();
}

absl::Status E2eTrainer::StartFresh() {
  if (primary_) (void)resume_dir_.Clear();
  QATD_ASSIGN_OR_RETURN(result_.initial, Evaluate(0));
  result_.best = result_.last = result_.initial;
  log_.Add(0, std::nan(""), result_.initial.kd, o_.lr * schedule_.Factor(0), 0);
  QATD_RETURN_IF_ERROR(SaveBest(0));
  reporter_.Log(jobs::LogLevel::kInfo,
                absl::StrFormat("initial held-out eval (%d sequences): kd %.4g, top-1 %.3f, ppl %.2f",
                                splits_.held_out.size(), result_.initial.kd, result_.initial.top1, result_.initial.ppl));
  return absl::OkStatus();
}

void E2eTrainer::LogPlan() {
  reporter_.Log(jobs::LogLevel::kInfo,
                absl::StrCat("training ", adam_->num_parameters(), " parameters in ", params_.size(), " tensors; ",
                             splits_.train.size(), " training / ", splits_.held_out.size(), " held-out sequences"));
  if (dist_ != nullptr) {
    reporter_.Log(jobs::LogLevel::kInfo,
                  absl::StrCat("data parallel over ", world_, " ranks: global batch ", o_.batch_size * world_ * o_.grad_accum,
                               adam_->sharded() ? absl::StrCat("; ZeRO-1: rank ", dist_->rank(),
                                                               " keeps the optimizer state of ", adam_->owned_parameters(),
                                                               " of them")
                                                : std::string("; optimizer state replicated")));
  }
}

absl::Status E2eTrainer::TrainLoop() {
  // One micro-step for the whole run: on CUDA it captures the step into a graph (micro_step.h).
  const KdLossWeights weights{o_.temperature, o_.hard_top1_weight, o_.hard_full_weight};
  micro_ = std::make_unique<MicroStep>(*s_.model, weights, o_.chunk_rows, /*allow_graphs=*/o_.external == nullptr,
                                       &reporter_);
  adam_->set_zero_grads_in_place(micro_->may_use_graphs());
  if (micro_->may_use_graphs()) {
    reporter_.Log(jobs::LogLevel::kInfo, "training steps run as CUDA graph replays after 2 warm-up micro-batches");
  }
  tokens_per_step_ = o_.batch_size * world_ * o_.grad_accum * reader_->max_length();
  run_start_ = Clock::now();
  while (step_ < o_.max_steps && !stopped_early_) {
    bool stop = cancel_.cancelled();
    if (dist_ != nullptr) {
      // A cancel reaches the ranks at different moments: they agree before each step.
      QATD_ASSIGN_OR_RETURN(stop, dist_->Any(stop));
    }
    if (stop) {
      QATD_RETURN_IF_ERROR(SaveCheckpoint());
      return absl::CancelledError(absl::StrCat("cancelled at step ", step_, "; resume checkpoint in ", paths_.resume));
    }
    const Clock::time_point t0 = Clock::now();
    const double waited0 = dist_ != nullptr ? dist_->collective_seconds() : 0.0;
    QATD_ASSIGN_OR_RETURN(LossValues values, RunMicroBatches(*micro_, *stream_, o_.grad_accum, *adam_, dist_));
    const double lr = o_.lr * schedule_.Factor(step_);
    QATD_RETURN_IF_ERROR(ApplyStep(*adam_, lr, o_.clip_grad_norm, values, step_ + 1, dist_));
    ++step_;
    ++steps_this_run_;
    const double step_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    train_seconds_ += step_seconds;
    step_times_.Add(step_seconds, dist_ != nullptr ? dist_->collective_seconds() - waited0 : 0.0);
    QATD_RETURN_IF_ERROR(AfterStep(values, lr));
  }
  return absl::OkStatus();
}

// Progress, evaluation (keep-best), the log window, checkpoints and early stopping of one step.
absl::Status E2eTrainer::AfterStep(const LossValues& values, double lr) {
  window_.Add(values);
  const double elapsed = elapsed_before_ + std::chrono::duration<double>(Clock::now() - run_start_).count();
  const double rate = train_seconds_ > 0 ? steps_this_run_ / train_seconds_ : 0;
  reporter_.Progress(step_, o_.max_steps, "steps", rate, rate > 0 ? (o_.max_steps - step_) / rate : -1);
  const bool eval_now = (o_.eval_steps > 0 && step_ % o_.eval_steps == 0) || step_ == o_.max_steps;
  const bool log_now = step_ % o_.logging_steps == 0 || step_ == o_.max_steps || eval_now;
  double eval_kd = std::nan("");
  if (eval_now) {
    QATD_ASSIGN_OR_RETURN(result_.last, Evaluate(step_));
    eval_kd = result_.last.kd;
    if (result_.last.kd < result_.best.kd) {
      result_.best = result_.last;
      stale_evals_ = 0;
      QATD_RETURN_IF_ERROR(SaveBest(step_));
    } else {
      ++stale_evals_;
    }
  }
  if (log_now && window_.count > 0) {
    LogWindow(lr, eval_kd, elapsed);
    if (primary_) QATD_RETURN_IF_ERROR(log_.Write());
    QATD_RETURN_IF_ERROR(step_times_.Report(dist_, step_, reporter_));
  }
  if (eval_now || (o_.save_steps > 0 && step_ % o_.save_steps == 0)) {
    elapsed_before_ = elapsed;
    QATD_RETURN_IF_ERROR(SaveCheckpoint());
    if (o_.after_durable && primary_) QATD_RETURN_IF_ERROR(o_.after_durable(step_));
  }
  if (eval_now && o_.early_stop_patience > 0 && stale_evals_ >= o_.early_stop_patience && step_ < o_.max_steps) {
    reporter_.Log(jobs::LogLevel::kInfo, absl::StrFormat("early stop at step %d: held-out kd has not improved on %.4g "
                                                         "(step %d) for %d evaluations",
                                                         step_, result_.best.kd, result_.best.step, stale_evals_));
    stopped_early_ = true;
  }
  return absl::OkStatus();
}

// The window's mean terms as metrics and one training_log.csv row; starts a new window.
void E2eTrainer::LogWindow(double lr, double eval_kd, double elapsed) {
  const LossValues mean = window_.Mean();
  reporter_.Metric("loss/total", step_, mean.total);
  reporter_.Metric("loss/kd", step_, mean.kd);
  if (o_.hard_top1_weight > 0) reporter_.Metric("loss/hard_top1", step_, mean.hard_top1);
  if (o_.hard_full_weight > 0) reporter_.Metric("loss/hard_full", step_, mean.hard_full);
  reporter_.Metric("train/lr", step_, lr);
  reporter_.Metric("train/tokens_per_second", step_,
                   train_seconds_ > 0 ? tokens_per_step_ * steps_this_run_ / train_seconds_ : 0);
  result_.train_loss_last = mean.total;
  log_.Add(step_, mean.total, eval_kd, lr, elapsed);
  window_ = LossWindow();
}

absl::StatusOr<EvalPoint> E2eTrainer::Evaluate(int64_t at_step) {
  QATD_ASSIGN_OR_RETURN(EvalResult r, EvaluateSharded(*s_.model, *reader_, splits_.held_out, eval_options_, dist_));
  EvalPoint p{at_step, r.kd, r.top1, r.ppl};
  reporter_.Metric("eval/kd", at_step, r.kd);
  reporter_.Metric("eval/top1", at_step, r.top1);
  reporter_.Metric("eval/ppl", at_step, r.ppl);
  return p;
}

absl::Status E2eTrainer::SaveCheckpoint() {
  // A sharded optimizer's state is gathered (every rank takes part) into the one file.
  absl::StatusOr<quant::TensorMap> optimizer_state = dist_ != nullptr ? adam_->GatheredState(*dist_) : adam_->State();
  QATD_RETURN_IF_ERROR(optimizer_state.status());
  if (!primary_) return absl::OkStatus();
  ResumeState st;
  st.fingerprint = fingerprint_;
  st.step = step_;
  st.cursor = stream_->cursor();
  st.elapsed_sec = elapsed_before_;
  st.log = log_.ToJson();
  st.fields = {{"initial", ToJson(result_.initial)},
               {"best", ToJson(result_.best)},
               {"last", ToJson(result_.last)},
               {"stale_evals", stale_evals_}};
  st.tensors["optimizer"] = std::move(*optimizer_state);
  if (o_.external != nullptr) st.tensors["adapters"] = o_.external->State();
  return resume_dir_.Save(s_, st);
}

absl::Status E2eTrainer::SaveBest(int64_t at_step) {
  if (!primary_) return absl::OkStatus();
  const nlohmann::json extra = {{"step", at_step}, {"eval_kd", result_.best.kd}};
  if (o_.external != nullptr) return o_.external->SaveBest(s_, paths_.best, extra);
  return SaveStudent(s_, paths_.best, extra);
}

absl::StatusOr<E2eResult> E2eTrainer::Finish() {
  result_.steps = step_;
  result_.early_stopped = stopped_early_;
  result_.tokens_per_second = train_seconds_ > 0 ? tokens_per_step_ * steps_this_run_ / train_seconds_ : 0;
  if (!primary_) return result_;  // the other ranks' work ends here; rank 0 holds the outcome
  QATD_RETURN_IF_ERROR(log_.Write());
  // End with the best state (the initial one if training never improved held-out loss).
  if ((result_.best.step != result_.last.step || steps_this_run_ == 0) && o_.external != nullptr) {
    QATD_RETURN_IF_ERROR(o_.external->LoadBest(paths_.best));
  } else if (result_.best.step != result_.last.step || steps_this_run_ == 0) {
    QATD_ASSIGN_OR_RETURN(quant::LoadedTensors best,
                          quant::ReadTensorMap((fs::path(paths_.best) / "model.safetensors").string()));
    QATD_RETURN_IF_ERROR(quant::LoadQuantState(*s_.registry, best.tensors));
  }
  s_.registry->FreezeAllParameters();
  reporter_.Log(jobs::LogLevel::kInfo,
                absl::StrFormat("held-out kd: initial %.4g -> best %.4g (step %d); %d steps, %.0f tokens/s",
                                result_.initial.kd, result_.best.kd, result_.best.step, result_.steps,
                                result_.tokens_per_second));
  return result_;
}

absl::StatusOr<E2eResult> TrainE2e(Student& s, const E2eOptions& o, jobs::Reporter& reporter, jobs::CancelToken& cancel) {
  return E2eTrainer(s, o, reporter, cancel).Run();
}

}  // namespace qatd::train
