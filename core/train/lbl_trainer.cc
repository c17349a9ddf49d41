#include "core/train/lbl_trainer.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/common/status_macros.h"
#include "core/kd/cache_reader.h"
#include "core/model/safetensors.h"
#include "core/train/dist_group.h"
#include "core/quant/quantize_model.h"
#include "core/train/evaluate.h"
#include "core/train/held_out.h"
#include "core/train/lbl_step.h"
#include "core/train/loss_values.h"
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

double Nan() { return std::numeric_limits<double>::quiet_NaN(); }
nlohmann::json Num(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); }
double NumFrom(const nlohmann::json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : Nan();
}

LayerResult LayerResultFromJson(const nlohmann::json& j) {
  LayerResult r;
  r.layer = j.value("layer", int64_t{0});
  r.before = NumFrom(j, "before");
  r.after = NumFrom(j, "after");
  r.improvement = NumFrom(j, "improvement");
  r.restored = j.value("restored", false);
  r.local_first = NumFrom(j, "local_first");
  r.local_last = NumFrom(j, "local_last");
  r.global_first = NumFrom(j, "global_first");
  r.global_last = NumFrom(j, "global_last");
  r.steps = j.value("steps", int64_t{0});
  r.seconds = j.value("seconds", 0.0);
  return r;
}

// The layer being trained: its parameters, optimizer and keep-best snapshot.
struct LayerRun {
  int64_t layer = 0;
  std::vector<std::pair<std::string, at::Tensor>> params;
  FloatMlp fp;
  std::unique_ptr<AdamW> adam;
  quant::TensorMap snapshot;
  double seconds_before = 0;  // time in this layer before a resume
  Clock::time_point start;
  double Seconds() const { return seconds_before + std::chrono::duration<double>(Clock::now() - start).count(); }
};

// TrainLayerwise as a class: one method per phase, the run state in members.
class LayerwiseTrainer {
 public:
  LayerwiseTrainer(Student& s, const LblOptions& o, jobs::Reporter& reporter, jobs::CancelToken& cancel)
      : s_(s), o_(o), reporter_(reporter), cancel_(cancel), paths_(o.output_dir),
        resume_dir_(paths_.resume, {.step_key = "global_step"}), log_(paths_.log_csv, "layer") {}

  absl::StatusOr<LblResult> Run();

 private:
  absl::Status Prepare();
  absl::Status ResolveLayers();
  absl::Status OpenData();
  absl::Status MaybeResume();
  absl::Status Resume();
  absl::Status StartFresh();
  absl::Status TrainLayer();
  absl::Status BeginLayer(LayerRun& run);
  absl::Status Step(LayerRun& run, const LblMicroContext& ctx);
  absl::Status EndLayer(LayerRun& run, double* eval_kd);
  void LogWindow(int64_t layer, double eval_kd);
  absl::Status CompleteLayer(LayerRun& run);
  absl::Status SaveCheckpoint(const LayerRun* run);
  absl::StatusOr<EvalResult> Evaluate(kd::KdSplit split) {
    return EvaluateSharded(*s_.model, *reader_, split, eval_options_, dist_);
  }
  // Data parallel: whether any rank was cancelled (every rank stops at the same step).
  absl::StatusOr<bool> Cancelled() {
    return dist_ != nullptr ? dist_->Any(cancel_.cancelled()) : absl::StatusOr<bool>(cancel_.cancelled());
  }
  absl::Status WriteLog() { return primary_ ? log_.Write() : absl::OkStatus(); }
  double ElapsedNow() const {
    return elapsed_before_ + std::chrono::duration<double>(Clock::now() - run_start_).count();
  }
  absl::StatusOr<LblResult> Finish();

  Student& s_;
  const LblOptions& o_;
  jobs::Reporter& reporter_;
  jobs::CancelToken& cancel_;
  const TrainPaths paths_;
  const ResumeDir resume_dir_;

  // Set up by Prepare.
  DistGroup* dist_ = nullptr;  // data parallel only (more than one rank)
  bool primary_ = true;        // rank 0 (or the only process): writes every file
  int64_t world_ = 1;
  std::vector<int64_t> order_;
  std::shared_ptr<const kd::KdCacheReader> reader_;
  kd::KdSplits splits_;
  kd::KdSplit layer_split_;
  std::optional<model::Checkpoint> base_;  // the float MLPs of L_local
  std::optional<kd::KdBatchStream> stream_;
  int64_t steps_per_layer_ = 0;
  int64_t total_steps_ = 0;
  KdLossWeights weights_;
  EvalOptions eval_options_;
  nlohmann::json fingerprint_;

  // Run state (everything trainer_state.json holds).
  LblResult result_;
  TrainLog log_;
  size_t pos_ = 0;               // index into order_ of the layer being trained
  int64_t step_in_layer_ = 0;    // steps done in that layer
  int64_t global_step_ = 0;
  double current_kd_ = Nan();    // per-layer-subset held-out kd of the current state
  double current_top1_ = Nan();
  LayerResult running_;          // the layer in progress (before, first/last, seconds so far)
  LossWindow window_;
  RankStepTimes step_times_;  // this rank's steps in the log window (rank_step_time.h)
  double elapsed_before_ = 0;
  std::optional<ResumeState> mid_layer_;  // a resume inside a layer: its optimizer and snapshot

  // This run.
  Clock::time_point run_start_;
  double train_seconds_ = 0;
  int64_t steps_this_run_ = 0;
};

absl::StatusOr<LblResult> LayerwiseTrainer::Run() {
  QATD_RETURN_IF_ERROR(Prepare());
  QATD_RETURN_IF_ERROR(MaybeResume());
  reporter_.Log(jobs::LogLevel::kInfo,
                absl::StrCat(order_.size(), " layers x ", steps_per_layer_, " steps; ", splits_.train.size(),
                             " training / ", splits_.held_out.size(), " held-out sequences"));
  run_start_ = Clock::now();
  while (pos_ < order_.size()) QATD_RETURN_IF_ERROR(TrainLayer());
  return Finish();
}

absl::Status LayerwiseTrainer::Prepare() {
  QATD_RETURN_IF_ERROR(o_.Validate());
  dist_ = o_.dist != nullptr && o_.dist->distributed() ? o_.dist : nullptr;
  primary_ = dist_ == nullptr || dist_->primary();
  world_ = dist_ != nullptr ? dist_->world_size() : 1;
  QATD_RETURN_IF_ERROR(ResolveLayers());
  QATD_RETURN_IF_ERROR(OpenData());
  if (o_.local_weight > 0) {
    std::string base_dir = s_.base_model;
    if (fs::path(base_dir).extension() == ".json") base_dir = fs::path(base_dir).parent_path().string();
    QATD_ASSIGN_OR_RETURN(model::Checkpoint ckpt, model::Checkpoint::Open(base_dir));
    base_.emplace(std::move(ckpt));
  }
  std::error_code ec;
  fs::create_directories(o_.output_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", o_.output_dir, ": ", ec.message()));
  weights_ = KdLossWeights{o_.temperature, o_.hard_top1_weight, o_.hard_full_weight};
  eval_options_.max_sequences = 0;
  eval_options_.batch_size = o_.eval_batch_size;
  eval_options_.temperature = o_.temperature;
  eval_options_.chunk_rows = o_.chunk_rows;
  fingerprint_ = {{"batch_size", o_.batch_size * world_},  // the global batch: resumes with any N
                  {"grad_accum", o_.grad_accum},
                  {"seed", o_.seed},
                  {"eval_samples", o_.eval_samples},
                  {"layer_eval_samples", o_.layer_eval_samples},
                  {"layers", order_},
                  {"steps_per_layer", steps_per_layer_},
                  {"train", {o_.train_scales, o_.train_weights, o_.train_mlp_only}},
                  {"version", s_.version}};
  return absl::OkStatus();
}

absl::Status LayerwiseTrainer::ResolveLayers() {
  const int64_t num_layers = s_.model->num_layers();
  order_ = o_.layers;
  if (order_.empty()) {
    for (int64_t i = 0; i < num_layers; ++i) order_.push_back(i);
  }
  for (int64_t l : order_) {
    if (l >= num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("layers: index ", l, " is out of range; the model has ", num_layers, " decoder layers"));
    }
  }
  return absl::OkStatus();
}

// The KD cache, its splits and the training stream; the number of steps per layer.
absl::Status LayerwiseTrainer::OpenData() {
  QATD_ASSIGN_OR_RETURN(reader_, kd::KdCacheReader::Open(o_.kd_cache_dir, {.model_vocab_size = s_.config.vocab_size}));
  QATD_ASSIGN_OR_RETURN(splits_, HeldOutSplits(*reader_, o_.eval_samples));
  layer_split_ = kd::KdSplit{
      splits_.held_out.begin,
      splits_.held_out.begin + (o_.layer_eval_samples > 0 ? std::min(o_.layer_eval_samples, splits_.held_out.size())
                                                          : splits_.held_out.size())};
  kd::KdStreamOptions stream_options;
  stream_options.batch_size = o_.batch_size * world_;  // batch_size is per rank, as in QAT
  stream_options.seed = o_.seed;
  stream_options.shard_index = dist_ != nullptr ? dist_->rank() : 0;
  stream_options.shard_count = dist_ != nullptr ? dist_->world_size() : 1;
  QATD_ASSIGN_OR_RETURN(kd::KdBatchStream stream, kd::KdBatchStream::Create(reader_, splits_.train, stream_options));
  stream_.emplace(std::move(stream));
  steps_per_layer_ = o_.steps_per_layer > 0
                         ? o_.steps_per_layer
                         : std::max<int64_t>(1, o_.epochs_per_layer * stream_->batches_per_epoch() / o_.grad_accum);
  total_steps_ = steps_per_layer_ * static_cast<int64_t>(order_.size());
  return absl::OkStatus();
}

absl::Status LayerwiseTrainer::MaybeResume() {
  return o_.resume && resume_dir_.Exists() ? Resume() : StartFresh();
}

absl::Status LayerwiseTrainer::Resume() {
  QATD_ASSIGN_OR_RETURN(ResumeState st, resume_dir_.Load(fingerprint_));
  QATD_RETURN_IF_ERROR(quant::LoadQuantState(*s_.registry, st.model));
  QATD_RETURN_IF_ERROR(stream_->Seek(st.cursor));
  const nlohmann::json& f = st.fields;
  for (const char* key : {"running", "table", "window"}) {
    if (!f.contains(key)) return absl::DataLossError(absl::StrCat(paths_.resume, "/trainer_state.json: no \"", key, "\""));
  }
  pos_ = f.value("position", size_t{0});
  step_in_layer_ = f.value("step_in_layer", int64_t{0});
  global_step_ = st.step;
  result_.initial_kd = NumFrom(f, "initial_kd");
  result_.initial_top1 = NumFrom(f, "initial_top1");
  current_kd_ = NumFrom(f, "current_kd");
  current_top1_ = NumFrom(f, "current_top1");
  running_ = LayerResultFromJson(f.at("running"));
  for (const auto& row : f.at("table")) result_.layers.push_back(LayerResultFromJson(row));
  QATD_ASSIGN_OR_RETURN(window_, LossWindow::FromJson(f.at("window")));
  elapsed_before_ = st.elapsed_sec;
  log_.FromJson(st.log);
  if (step_in_layer_ > 0) mid_layer_.emplace(std::move(st));
  result_.resumed = true;
  reporter_.Log(jobs::LogLevel::kInfo, absl::StrCat("resuming at layer position ", pos_, " of ", order_.size(), ", step ",
                                                    step_in_layer_, " of ", steps_per_layer_, " from ", paths_.resume));
  return absl::OkStatus();
}

absl::Status LayerwiseTrainer::StartFresh() {
  if (primary_) (void)resume_dir_.Clear();
  QATD_ASSIGN_OR_RETURN(EvalResult initial, Evaluate(splits_.held_out));
  result_.initial_kd = initial.kd;
  result_.initial_top1 = initial.top1;
  QATD_ASSIGN_OR_RETURN(EvalResult sub, Evaluate(layer_split_));
  current_kd_ = sub.kd;
  current_top1_ = sub.top1;
  reporter_.Metric("eval/kd", 0, current_kd_);
  reporter_.Metric("eval/top1", 0, current_top1_);
  log_.Add(0, Nan(), current_kd_, o_.lr, 0, "");
  reporter_.Log(jobs::LogLevel::kInfo,
                absl::StrFormat("initial held-out eval (%d sequences): kd %.4g, top-1 %.3f; per-layer subset (%d): kd %.4g",
                                splits_.held_out.size(), initial.kd, initial.top1, layer_split_.size(), current_kd_));
  return absl::OkStatus();
}

// The layer order_[pos_], from step_in_layer_ to its end (or a cancel).
absl::Status LayerwiseTrainer::TrainLayer() {
  LayerRun run;
  QATD_RETURN_IF_ERROR(BeginLayer(run));
  const LblMicroContext ctx{s_, o_, weights_, run.layer, base_.has_value() ? &run.fp : nullptr};
  while (step_in_layer_ < steps_per_layer_) {
    QATD_ASSIGN_OR_RETURN(const bool cancelled, Cancelled());
    if (cancelled) {
      running_.seconds = run.Seconds();
      QATD_RETURN_IF_ERROR(SaveCheckpoint(&run));
      return absl::CancelledError(absl::StrCat("cancelled in layer ", run.layer, " at step ", step_in_layer_,
                                               "; resume checkpoint in ", paths_.resume));
    }
    QATD_RETURN_IF_ERROR(Step(run, ctx));
    const bool layer_done = step_in_layer_ == steps_per_layer_;
    double eval_kd = Nan();
    if (layer_done) QATD_RETURN_IF_ERROR(EndLayer(run, &eval_kd));
    if (global_step_ % o_.logging_steps == 0 || layer_done) {
      LogWindow(run.layer, eval_kd);
      QATD_RETURN_IF_ERROR(WriteLog());
      QATD_RETURN_IF_ERROR(step_times_.Report(dist_, global_step_, reporter_));
    }
    if (layer_done) {
      QATD_RETURN_IF_ERROR(CompleteLayer(run));
    } else if (o_.save_steps > 0 && global_step_ % o_.save_steps == 0) {
      running_.seconds = run.Seconds();
      QATD_RETURN_IF_ERROR(SaveCheckpoint(&run));
    } else {
      continue;
    }
    if (o_.after_durable) QATD_RETURN_IF_ERROR(o_.after_durable(global_step_));
    if (layer_done) break;  // step_in_layer_ was reset for the next layer
  }
  return absl::OkStatus();
}

// Makes the layer trainable, builds its optimizer and snapshot (or takes them from a resume
// inside this layer).
absl::Status LayerwiseTrainer::BeginLayer(LayerRun& run) {
  run.layer = order_[pos_];
  run.start = Clock::now();
  QATD_RETURN_IF_ERROR(MakeLayerTrainable(s_, run.layer, o_));
  run.params = TrainableParameters(*s_.model);
  if (run.params.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("nothing to train in layer ", run.layer, ": the trainable set selects no quantized parameter there"));
  }
  if (base_.has_value()) {
    QATD_ASSIGN_OR_RETURN(run.fp, LoadFloatMlp(*base_, run.layer, s_.model->dtype(), s_.model->device()));
  }
  AdamWOptions adam_options;
  adam_options.lr = o_.lr;
  adam_options.weight_decay = o_.weight_decay;
  run.adam = std::make_unique<AdamW>(run.params, adam_options);
  if (mid_layer_.has_value()) {
    QATD_ASSIGN_OR_RETURN(const quant::TensorMap* optimizer, mid_layer_->Tensors("optimizer"));
    QATD_RETURN_IF_ERROR(run.adam->LoadState(*optimizer));
    QATD_ASSIGN_OR_RETURN(const quant::TensorMap* snapshot, mid_layer_->Tensors("layer_start"));
    run.snapshot = *snapshot;
    run.seconds_before = running_.seconds;
    mid_layer_.reset();
  } else {
    run.snapshot = Snapshot(run.params);
    running_ = LayerResult();
    running_.layer = run.layer;
    running_.before = current_kd_;  // the current state on the same subset: no second evaluation
    running_.local_first = running_.global_first = Nan();
  }
  reporter_.Log(jobs::LogLevel::kInfo,
                absl::StrCat("layer ", run.layer, " (", pos_ + 1, "/", order_.size(), "): training ",
                             run.adam->num_parameters(), " parameters in ", run.params.size(), " tensors"));
  return absl::OkStatus();
}

absl::Status LayerwiseTrainer::Step(LayerRun& run, const LblMicroContext& ctx) {
  const Clock::time_point t0 = Clock::now();
  const double waited0 = dist_ != nullptr ? dist_->collective_seconds() : 0.0;
  QATD_ASSIGN_OR_RETURN(LossValues values, RunLblMicroBatches(ctx, *stream_, *run.adam, global_step_ * o_.grad_accum, dist_));
  QATD_RETURN_IF_ERROR(ApplyStep(*run.adam, o_.lr, /*clip_grad_norm=*/0, values, global_step_ + 1));
  ++step_in_layer_;
  ++global_step_;
  ++steps_this_run_;
  const double step_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  train_seconds_ += step_seconds;
  step_times_.Add(step_seconds, dist_ != nullptr ? dist_->collective_seconds() - waited0 : 0.0);
  window_.Add(values);
  if (step_in_layer_ == 1) {
    running_.local_first = values.local;
    running_.global_first = values.global;
  }
  running_.local_last = values.local;
  running_.global_last = values.global;
  running_.steps = step_in_layer_;
  const double rate = train_seconds_ > 0 ? steps_this_run_ / train_seconds_ : 0;
  reporter_.Progress(global_step_, total_steps_, "steps", rate, rate > 0 ? (total_steps_ - global_step_) / rate : -1);
  return absl::OkStatus();
}

// The layer's "after" evaluation and keep-best (deliberate difference, see the header): a
// layer that made the held-out loss worse is put back as it was at the layer's start.
absl::Status LayerwiseTrainer::EndLayer(LayerRun& run, double* eval_kd) {
  QATD_ASSIGN_OR_RETURN(EvalResult after, Evaluate(layer_split_));
  running_.after = after.kd;
  running_.improvement = running_.before - after.kd;
  running_.restored = o_.keep_best_layer && !(after.kd <= running_.before);
  if (running_.restored) {
    QATD_RETURN_IF_ERROR(Restore(run.params, run.snapshot));
  } else {
    current_kd_ = after.kd;
    current_top1_ = after.top1;
  }
  *eval_kd = after.kd;
  reporter_.Metric("eval/kd", global_step_, current_kd_);
  reporter_.Metric("eval/top1", global_step_, current_top1_);
  return absl::OkStatus();
}

// The window's mean terms as metrics and one training_log.csv row; starts a new window.
void LayerwiseTrainer::LogWindow(int64_t layer, double eval_kd) {
  const LossValues mean = window_.Mean();
  reporter_.Metric("loss/total", global_step_, mean.total);
  if (o_.local_weight > 0) reporter_.Metric("loss/local", global_step_, mean.local);
  if (o_.global_weight > 0) {
    reporter_.Metric("loss/kd", global_step_, mean.kd);
    reporter_.Metric("loss/global", global_step_, mean.global);
    if (o_.hard_top1_weight > 0) reporter_.Metric("loss/hard_top1", global_step_, mean.hard_top1);
    if (o_.hard_full_weight > 0) reporter_.Metric("loss/hard_full", global_step_, mean.hard_full);
  }
  reporter_.Metric("train/lr", global_step_, o_.lr);
  log_.Add(global_step_, mean.total, eval_kd, o_.lr, ElapsedNow(), std::to_string(layer));
  window_ = LossWindow();
}

// Records the layer's row, moves on to the next layer and writes a resume point there.
absl::Status LayerwiseTrainer::CompleteLayer(LayerRun& run) {
  running_.seconds = run.Seconds();
  result_.layers.push_back(running_);
  const LayerResult& r = running_;
  reporter_.Log(jobs::LogLevel::kInfo,
                absl::StrFormat("layer %d: held-out kd %.4g -> %.4g (%+.3g)%s; local %.4g -> %.4g, global %.4g -> "
                                "%.4g; %.1f s",
                                r.layer, r.before, r.after, -r.improvement, r.restored ? ", worse: restored" : "",
                                r.local_first, r.local_last, r.global_first, r.global_last, r.seconds));
  ++pos_;
  step_in_layer_ = 0;
  running_ = LayerResult();
  s_.registry->FreezeAllParameters();
  return SaveCheckpoint(nullptr);
}

// Writes resume/. Inside a layer (run != nullptr) its optimizer and start snapshot go with it.
absl::Status LayerwiseTrainer::SaveCheckpoint(const LayerRun* run) {
  if (!primary_) return absl::OkStatus();  // the ranks' states are equal: rank 0 writes it
  nlohmann::json table = nlohmann::json::array();
  for (const auto& l : result_.layers) table.push_back(ToJson(l));
  ResumeState st;
  st.fingerprint = fingerprint_;
  st.step = global_step_;
  st.cursor = stream_->cursor();
  st.elapsed_sec = ElapsedNow();
  st.log = log_.ToJson();
  st.fields = {{"position", pos_},
               {"layer", pos_ < order_.size() ? order_[pos_] : -1},
               {"step_in_layer", step_in_layer_},
               // L_local rows of micro-batch n: MixSeed(seed ^ salt, n) (no generator state).
               {"local_rng_next_micro_batch", global_step_ * o_.grad_accum},
               {"initial_kd", Num(result_.initial_kd)},
               {"initial_top1", Num(result_.initial_top1)},
               {"current_kd", Num(current_kd_)},
               {"current_top1", Num(current_top1_)},
               {"running", ToJson(running_)},
               {"table", table},
               {"window", window_.ToJson()}};
  if (run != nullptr) {
    st.tensors["optimizer"] = run->adam->State();
    st.tensors["layer_start"] = run->snapshot;
  }
  return resume_dir_.Save(s_, st);
}

absl::StatusOr<LblResult> LayerwiseTrainer::Finish() {
  s_.registry->FreezeAllParameters();
  result_.steps = global_step_;
  QATD_ASSIGN_OR_RETURN(EvalResult final_eval, Evaluate(splits_.held_out));
  result_.final_kd = final_eval.kd;
  result_.final_top1 = final_eval.top1;
  QATD_RETURN_IF_ERROR(WriteLog());
  std::string table = "layer     before      after     improv  restored     local first/last     global first/last      sec";
  for (const auto& l : result_.layers) {
    absl::StrAppend(&table, absl::StrFormat("\n%5d  %9.4f  %9.4f  %+9.4f  %8s  %9.4f/%-9.4f  %9.4f/%-9.4f  %7.1f", l.layer,
                                            l.before, l.after, l.improvement, l.restored ? "yes" : "no", l.local_first,
                                            l.local_last, l.global_first, l.global_last, l.seconds));
  }
  reporter_.Log(jobs::LogLevel::kInfo, table);
  reporter_.Log(jobs::LogLevel::kInfo,
                absl::StrFormat("held-out kd (%d sequences): initial %.4g -> final %.4g; top-1 %.3f -> %.3f; %d steps",
                                splits_.held_out.size(), result_.initial_kd, result_.final_kd, result_.initial_top1,
                                result_.final_top1, result_.steps));
  return result_;
}

}  // namespace

nlohmann::json ToJson(const LayerResult& r) {
  return {{"layer", r.layer},
          {"before", Num(r.before)},
          {"after", Num(r.after)},
          {"improvement", Num(r.improvement)},
          {"restored", r.restored},
          {"local_first", Num(r.local_first)},
          {"local_last", Num(r.local_last)},
          {"global_first", Num(r.global_first)},
          {"global_last", Num(r.global_last)},
          {"steps", r.steps},
          {"seconds", r.seconds}};
}

nlohmann::json ToJson(const LblResult& r) {
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& l : r.layers) layers.push_back(ToJson(l));
  return {{"initial_kd", Num(r.initial_kd)}, {"initial_top1", Num(r.initial_top1)},
          {"final_kd", Num(r.final_kd)},     {"final_top1", Num(r.final_top1)},
          {"steps", r.steps},                {"resumed", r.resumed},
          {"layers", layers}};
}


absl::StatusOr<LblResult> TrainLayerwise(Student& s, const LblOptions& o, jobs::Reporter& reporter,
                                         jobs::CancelToken& cancel) {
  return LayerwiseTrainer(s, o, reporter, cancel).Run();
}

}  // namespace qatd::train
