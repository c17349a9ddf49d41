#include "core/train/e2e_trainer.h"

#include <ATen/core/grad_mode.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/common/file_util.h"
#include "core/common/status_macros.h"
#include "core/common/torch_status.h"
#include "core/kd/cache_reader.h"
#include "core/quant/quantize_model.h"
#include "core/train/evaluate.h"
#include "core/train/losses.h"
#include "core/train/optimizer.h"
#include "core/train/train_common.h"

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

}  // namespace


absl::StatusOr<E2eResult> TrainE2e(Student& s, const E2eOptions& o, jobs::Reporter& reporter, jobs::CancelToken& cancel) {
  QATD_RETURN_IF_ERROR(o.Validate());
  QATD_ASSIGN_OR_RETURN(auto reader, kd::KdCacheReader::Open(o.kd_cache_dir, {.model_vocab_size = s.config.vocab_size}));
  QATD_ASSIGN_OR_RETURN(kd::KdSplits splits, HeldOutSplits(*reader, o.eval_samples));
  QATD_RETURN_IF_ERROR(quant::ApplyTrainableSet(
      *s.registry, {o.train_weights && s.version == 1, o.train_scales, o.train_g_only, o.train_mlp_only}));
  SelectV2Forward(s, o.v2_factored_forward);
  std::vector<std::pair<std::string, at::Tensor>> params = TrainableParameters(*s.model);
  if (params.empty()) return absl::FailedPreconditionError("nothing to train: the trainable set selects no parameter");

  const TrainPaths paths(o.output_dir);
  std::error_code ec;
  fs::create_directories(o.output_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", o.output_dir, ": ", ec.message()));

  // Data parallel: the stream yields this rank's shard of each global batch (dist_group.h).
  DistGroup* dist = o.dist != nullptr && o.dist->distributed() ? o.dist : nullptr;
  const int64_t world = dist != nullptr ? dist->world_size() : 1;
  const bool primary = dist == nullptr || dist->primary();  // writes files
  AdamWOptions adam_options;
  adam_options.lr = o.lr;
  adam_options.weight_decay = o.weight_decay;
  if (dist != nullptr && o.shard_optimizer) {
    adam_options.shard_index = dist->rank();
    adam_options.shard_count = dist->world_size();
  }
  AdamW adam(params, adam_options);
  const LrSchedule schedule{o.cosine, o.warmup_steps, std::max<int64_t>(1, o.max_steps), o.min_lr_ratio};
  kd::KdStreamOptions stream_options;
  stream_options.batch_size = o.batch_size * world;
  stream_options.shard_index = dist != nullptr ? dist->rank() : 0;
  stream_options.shard_count = world;
  stream_options.seed = o.seed;
  QATD_ASSIGN_OR_RETURN(kd::KdBatchStream stream, kd::KdBatchStream::Create(reader, splits.train, stream_options));
  const KdLossWeights weights{o.temperature, o.hard_top1_weight, o.hard_full_weight};
  EvalOptions eval_options;
  eval_options.max_sequences = 0;
  eval_options.batch_size = o.eval_batch_size;
  eval_options.temperature = o.temperature;
  eval_options.chunk_rows = o.chunk_rows;

  E2eResult result;
  TrainLog log(paths.log_csv);
  int64_t step = 0;
  int64_t stale_evals = 0;
  double elapsed_before = 0;
  // The global batch: a resume with another number of ranks is exact when it is the same.
  const nlohmann::json fingerprint = {{"batch_size", o.batch_size * world}, {"grad_accum", o.grad_accum}, {"seed", o.seed},
                                      {"eval_samples", o.eval_samples}, {"version", s.version}};

  auto evaluate = [&](int64_t at_step) -> absl::StatusOr<EvalPoint> {
    QATD_ASSIGN_OR_RETURN(EvalResult r, EvaluateSharded(*s.model, *reader, splits.held_out, eval_options, dist));
    EvalPoint p{at_step, r.kd, r.top1, r.ppl};
    reporter.Metric("eval/kd", at_step, r.kd);
    reporter.Metric("eval/top1", at_step, r.top1);
    reporter.Metric("eval/ppl", at_step, r.ppl);
    return p;
  };
  auto trainer_state = [&]() {
    return nlohmann::json{{"step", step},
                          {"cursor", stream.cursor().ToJson()},
                          {"initial", ToJson(result.initial)},
                          {"best", ToJson(result.best)},
                          {"last", ToJson(result.last)},
                          {"stale_evals", stale_evals},
                          {"elapsed_sec", elapsed_before},
                          {"log", log.ToJson()},
                          {"fingerprint", fingerprint}};
  };
  auto save_resume = [&]() -> absl::Status {
    // A sharded optimizer's state is gathered (every rank takes part) into the one file.
    absl::StatusOr<quant::TensorMap> optimizer_state = dist != nullptr ? adam.GatheredState(*dist) : adam.State();
    QATD_RETURN_IF_ERROR(optimizer_state.status());
    if (!primary) return absl::OkStatus();
    return SaveStudent(s, paths.resume, {{"step", step}}, false, [&](const std::string& tmp) -> absl::Status {
      QATD_RETURN_IF_ERROR(quant::WriteTensorMap((fs::path(tmp) / "optimizer.safetensors").string(), *optimizer_state));
      return WriteFileAtomically((fs::path(tmp) / "trainer_state.json").string(), trainer_state().dump(1) + "\n");
    });
  };

  auto save_best = [&](int64_t at_step) -> absl::Status {
    if (!primary) return absl::OkStatus();
    return SaveStudent(s, paths.best, {{"step", at_step}, {"eval_kd", result.best.kd}});
  };
  // Every rank resumes, or none: rank 0's view of resume/ decides.
  bool resume = o.resume && fs::is_regular_file(fs::path(paths.resume) / "trainer_state.json", ec);
  if (dist != nullptr) {
    at::Tensor flag = at::full({1}, resume ? 1 : 0, at::kInt);
    QATD_RETURN_IF_ERROR(dist->Broadcast(flag, 0));
    resume = flag.item<int>() != 0;
  }
  if (resume) {
    QATD_ASSIGN_OR_RETURN(nlohmann::json st, ReadJson((fs::path(paths.resume) / "trainer_state.json").string()));
    if (st.value("fingerprint", nlohmann::json()) != fingerprint) {
      return absl::FailedPreconditionError(absl::StrCat("cannot resume from ", paths.resume, ": it was written with ",
                                                        st.value("fingerprint", nlohmann::json()).dump(), ", this job has ",
                                                        fingerprint.dump(), " (use a new output_dir)"));
    }
    QATD_ASSIGN_OR_RETURN(quant::LoadedTensors model_state,
                          quant::ReadTensorMap((fs::path(paths.resume) / "model.safetensors").string()));
    QATD_RETURN_IF_ERROR(quant::LoadQuantState(*s.registry, model_state.tensors));
    QATD_ASSIGN_OR_RETURN(quant::LoadedTensors opt_state,
                          quant::ReadTensorMap((fs::path(paths.resume) / "optimizer.safetensors").string()));
    QATD_RETURN_IF_ERROR(adam.LoadState(opt_state.tensors));
    QATD_ASSIGN_OR_RETURN(kd::KdCursor cursor, kd::KdCursor::FromJson(st.at("cursor")));
    QATD_RETURN_IF_ERROR(stream.Seek(cursor));
    step = st.value("step", int64_t{0});
    result.initial = EvalPointFromJson(st.at("initial"));
    result.best = EvalPointFromJson(st.at("best"));
    result.last = EvalPointFromJson(st.at("last"));
    stale_evals = st.value("stale_evals", int64_t{0});
    elapsed_before = st.value("elapsed_sec", 0.0);
    log.FromJson(st.at("log"));
    result.resumed = true;
    reporter.Log(jobs::LogLevel::kInfo, absl::StrCat("resuming at step ", step, " of ", o.max_steps, " from ", paths.resume));
  } else {
    if (primary) (void)RemoveTree(paths.resume);
    QATD_ASSIGN_OR_RETURN(result.initial, evaluate(0));
    result.best = result.last = result.initial;
    log.Add(0, std::nan(""), result.initial.kd, o.lr * schedule.Factor(0), 0);
    QATD_RETURN_IF_ERROR(save_best(0));
    reporter.Log(jobs::LogLevel::kInfo,
                 absl::StrFormat("initial held-out eval (%d sequences): kd %.4g, top-1 %.3f, ppl %.2f",
                                 splits.held_out.size(), result.initial.kd, result.initial.top1, result.initial.ppl));
  }
  reporter.Log(jobs::LogLevel::kInfo,
               absl::StrCat("training ", adam.num_parameters(), " parameters in ", params.size(), " tensors; ",
                            splits.train.size(), " training / ", splits.held_out.size(), " held-out sequences"));
  if (dist != nullptr) {
    reporter.Log(jobs::LogLevel::kInfo,
                 absl::StrCat("data parallel over ", world, " ranks: global batch ", o.batch_size * world * o.grad_accum,
                              adam.sharded() ? absl::StrCat("; ZeRO-1: rank ", dist->rank(), " keeps the optimizer state of ",
                                                            adam.owned_parameters(), " of them")
                                             : std::string("; optimizer state replicated")));
  }

  // One micro-step for the whole run: on CUDA it captures the step into a graph (micro_step.h).
  MicroStep micro(*s.model, weights, o.chunk_rows, /*allow_graphs=*/true, &reporter);
  adam.set_zero_grads_in_place(micro.may_use_graphs());
  if (micro.may_use_graphs()) reporter.Log(jobs::LogLevel::kInfo, "training steps run as CUDA graph replays after 2 warm-up micro-batches");
  const int64_t tokens_per_step = o.batch_size * world * o.grad_accum * reader->max_length();  // all ranks
  const Clock::time_point run_start = Clock::now();
  double train_seconds = 0;
  int64_t steps_this_run = 0;
  LossWindow window;
  bool stopped_early = false;
  while (step < o.max_steps) {
    bool stop = cancel.cancelled();
    if (dist != nullptr) {
      // A cancel reaches the ranks at different moments: they agree before each step.
      QATD_ASSIGN_OR_RETURN(stop, dist->Any(stop));
    }
    if (stop) {
      QATD_RETURN_IF_ERROR(save_resume());
      return absl::CancelledError(absl::StrCat("cancelled at step ", step, "; resume checkpoint in ", paths.resume));
    }
    const Clock::time_point t0 = Clock::now();
    QATD_ASSIGN_OR_RETURN(LossValues values, RunMicroBatches(micro, stream, o.grad_accum, adam, dist));
    const double lr = o.lr * schedule.Factor(step);
    QATD_RETURN_IF_ERROR(ApplyStep(adam, lr, o.clip_grad_norm, values, step + 1, dist));
    ++step;
    ++steps_this_run;
    train_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    window.Add(values);

    const double elapsed = elapsed_before + std::chrono::duration<double>(Clock::now() - run_start).count();
    const double rate = train_seconds > 0 ? steps_this_run / train_seconds : 0;
    reporter.Progress(step, o.max_steps, "steps", rate, rate > 0 ? (o.max_steps - step) / rate : -1);
    const bool eval_now = (o.eval_steps > 0 && step % o.eval_steps == 0) || step == o.max_steps;
    const bool log_now = step % o.logging_steps == 0 || step == o.max_steps || eval_now;
    double eval_kd = std::nan("");
    if (eval_now) {
      QATD_ASSIGN_OR_RETURN(result.last, evaluate(step));
      eval_kd = result.last.kd;
      if (result.last.kd < result.best.kd) {
        result.best = result.last;
        stale_evals = 0;
        QATD_RETURN_IF_ERROR(save_best(step));
      } else {
        ++stale_evals;
      }
    }
    if (log_now && window.count > 0) {
      const LossValues mean = window.Mean();
      reporter.Metric("loss/total", step, mean.total);
      reporter.Metric("loss/kd", step, mean.kd);
      if (o.hard_top1_weight > 0) reporter.Metric("loss/hard_top1", step, mean.hard_top1);
      if (o.hard_full_weight > 0) reporter.Metric("loss/hard_full", step, mean.hard_full);
      reporter.Metric("train/lr", step, lr);
      reporter.Metric("train/tokens_per_second", step, train_seconds > 0 ? tokens_per_step * steps_this_run / train_seconds : 0);
      result.train_loss_last = mean.total;
      log.Add(step, mean.total, eval_kd, lr, elapsed);
      window = LossWindow();
      if (primary) QATD_RETURN_IF_ERROR(log.Write());
    }
    if (eval_now || (o.save_steps > 0 && step % o.save_steps == 0)) {
      elapsed_before = elapsed;
      QATD_RETURN_IF_ERROR(save_resume());
      if (o.after_durable && primary) QATD_RETURN_IF_ERROR(o.after_durable(step));
    }
    if (eval_now && o.early_stop_patience > 0 && stale_evals >= o.early_stop_patience && step < o.max_steps) {
      reporter.Log(jobs::LogLevel::kInfo, absl::StrFormat("early stop at step %d: held-out kd has not improved on %.4g "
                                                          "(step %d) for %d evaluations",
                                                          step, result.best.kd, result.best.step, stale_evals));
      stopped_early = true;
      break;
    }
  }
  result.steps = step;
  result.early_stopped = stopped_early;
  result.tokens_per_second = train_seconds > 0 ? tokens_per_step * steps_this_run / train_seconds : 0;
  if (!primary) return result;  // the other ranks' work ends here; rank 0 holds the outcome
  QATD_RETURN_IF_ERROR(log.Write());
  // End with the best state (the initial one if training never improved held-out loss).
  if (result.best.step != result.last.step || steps_this_run == 0) {
    QATD_ASSIGN_OR_RETURN(quant::LoadedTensors best, quant::ReadTensorMap((fs::path(paths.best) / "model.safetensors").string()));
    QATD_RETURN_IF_ERROR(quant::LoadQuantState(*s.registry, best.tensors));
  }
  s.registry->FreezeAllParameters();
  reporter.Log(jobs::LogLevel::kInfo,
               absl::StrFormat("held-out kd: initial %.4g -> best %.4g (step %d); %d steps, %.0f tokens/s", result.initial.kd,
                               result.best.kd, result.best.step, result.steps, result.tokens_per_second));
  return result;
}

}  // namespace qatd::train
