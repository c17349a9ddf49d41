#include "core/train/lbl_trainer.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/common/file_util.h"
#include "core/common/status_macros.h"
#include "core/common/torch_status.h"
#include "core/kd/cache_reader.h"
#include "core/kd/packing.h"
#include "core/model/safetensors.h"
#include "core/quant/quantize_model.h"
#include "core/quant/tensor_io.h"
#include "core/train/evaluate.h"
#include "core/train/losses.h"
#include "core/train/optimizer.h"
#include "core/train/train_common.h"

namespace qatd::train {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;

// Salt that separates the L_local row-sampling seeds from the data-order seeds.
constexpr uint64_t kLocalRowsSalt = 0x4c424c6c6f63616cULL;  // "LBLlocal"

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

nlohmann::json WindowToJson(const LossWindow& w) {
  return {{"count", w.count},
          {"sum", {w.sum.total, w.sum.kd, w.sum.hard_top1, w.sum.hard_full, w.sum.local, w.sum.global}}};
}
LossWindow WindowFromJson(const nlohmann::json& j) {
  LossWindow w;
  w.count = j.value("count", int64_t{0});
  const auto& s = j.at("sum");
  w.sum = {s[0].get<double>(), s[1].get<double>(), s[2].get<double>(),
           s[3].get<double>(), s[4].get<double>(), s[5].get<double>()};
  return w;
}

// The original float MLP of one decoder layer: gate/up [I, H], down [H, I], fp32 on the model's
// device, holding the base model's weights rounded to the model dtype (what the student's dense
// layer held before quantization).
struct FloatMlp {
  at::Tensor gate, up, down;
};

absl::StatusOr<FloatMlp> LoadFloatMlp(const model::Checkpoint& base, int64_t layer, at::ScalarType dtype,
                                      at::Device device) {
  FloatMlp mlp;
  const std::string prefix = absl::StrCat("model.layers.", layer, ".mlp.");
  at::Tensor* slots[3] = {&mlp.gate, &mlp.up, &mlp.down};
  const char* names[3] = {"gate_proj", "up_proj", "down_proj"};
  for (int k = 0; k < 3; ++k) {
    QATD_ASSIGN_OR_RETURN(model::TensorView view, base.Get(absl::StrCat(prefix, names[k], ".weight")));
    QATD_RETURN_IF_ERROR(CatchTorch("load float MLP", [&]() -> absl::Status {
      *slots[k] = quant::TensorFromView(view).to(dtype).to(device, at::kFloat);
      return absl::OkStatus();
    }));
  }
  return mlp;
}

// Freezes everything, applies the trainable set to every quantized layer, then freezes again
// whatever is not under "model.layers.<layer>." (spec §8.1 step 1).
absl::Status MakeLayerTrainable(Student& s, int64_t layer, const LblOptions& o) {
  QATD_RETURN_IF_ERROR(
      quant::ApplyTrainableSet(*s.registry, {o.train_weights && s.version == 1, o.train_scales, false, o.train_mlp_only}));
  const std::string prefix = absl::StrCat("model.layers.", layer, ".");
  for (auto& item : s.model->named_parameters(/*recurse=*/true)) {
    if (item.key().rfind(prefix, 0) != 0) item.value().set_requires_grad(false);
  }
  return absl::OkStatus();
}

struct MicroContext {
  Student& s;
  const LblOptions& o;
  const KdLossWeights& weights;
  int64_t layer;
  const FloatMlp* fp;  // null when local_weight == 0
};

// One optimizer step's worth of micro-batches (gradients accumulate); returns the mean terms.
// `first_micro` numbers the micro-batches of the whole run: micro-batch n samples its L_local
// rows from a CPU generator seeded with MixSeed(seed ^ salt, n), so the sampling needs no saved
// generator state to resume exactly and does not depend on the device.
absl::StatusOr<LossValues> RunLblMicroBatches(const MicroContext& c, kd::KdBatchStream& stream, AdamW& adam,
                                              int64_t first_micro) {
  LossValues values;
  QATD_RETURN_IF_ERROR(CatchTorch("training step", [&]() -> absl::Status {
    adam.ZeroGrad();
    model::Qwen3ModelImpl& m = *c.s.model;
    const at::Device device = m.device();
    const bool use_local = c.o.local_weight > 0;
    const bool use_global = c.o.global_weight > 0;
    at::Tensor sums;  // [6] float: total, kd, top1, full, local, global
    for (int64_t micro = 0; micro < c.o.grad_accum; ++micro) {
      QATD_ASSIGN_OR_RETURN(kd::KdBatch batch, stream.Next());
      at::Tensor ids = batch.input_ids.to(device, at::kLong);
      at::Tensor hidden, mlp_in, y_q;
      if (!use_local) {
        hidden = m.Forward(ids);
      } else {
        // The forward, written out so that layer i's MLP input and output are at hand (the
        // reference registers a forward hook on layer i's mlp). It is Qwen3ModelImpl::Forward
        // step for step at no extra cost, except that layer i's residual add is out of place:
        // the decoder layer adds the residual into the MLP output in place, which would
        // overwrite y_q. Running Forward with residuals instead would recompute layer i's
        // attention just to get the MLP input.
        const int64_t len = ids.size(1);
        const model::RotaryTables rope = m.Rope(0, len);
        at::Tensor x = m.Embed(ids);
        for (int64_t j = 0; j < c.layer; ++j) x = m.model->layers[j]->forward(x, rope, 0, nullptr, j);
        auto& dl = *m.model->layers[c.layer];
        at::Tensor h = dl.self_attn->forward(dl.input_layernorm->forward(x), rope, 0, nullptr, c.layer) + x;
        mlp_in = dl.post_attention_layernorm->forward(h);
        y_q = dl.mlp->forward(mlp_in);
        if (use_global) {
          x = y_q + h;
          for (int64_t j = c.layer + 1; j < m.num_layers(); ++j) x = m.model->layers[j]->forward(x, rope, 0, nullptr, j);
          hidden = m.FinalNorm(x);
        }
      }
      at::Tensor total = at::zeros({}, at::TensorOptions().dtype(at::kFloat).device(device));
      at::Tensor row = at::zeros({6}, at::TensorOptions().dtype(at::kFloat).device(device));
      if (use_global) {
        at::Tensor topk_idx = batch.topk_idx.to(device, at::kLong);
        at::Tensor topk_logits = batch.topk_logits.to(device);
        QATD_ASSIGN_OR_RETURN(KdLossTerms terms, ComputeKdLoss(hidden, LmHeadWeight(m), topk_idx, topk_logits, c.weights,
                                                               c.o.chunk_rows));
        total = total + c.o.global_weight * terms.total;
        row[1] = terms.kd.detach();
        if (terms.hard_top1.defined()) row[2] = terms.hard_top1.detach();
        if (terms.hard_full.defined()) row[3] = terms.hard_full.detach();
        row[5] = terms.total.detach();
      }
      if (use_local) {
        // spec §7.4: positions [:, :-1] (the last one predicts nothing), up to local_tokens rows
        // drawn uniformly without replacement. The rows are drawn here rather than inside
        // LocalMlpLoss so that (a) the float MLP runs on the sampled rows only and (b) the row
        // index lives on the model's device (LocalMlpLoss draws its permutation on the CPU).
        const int64_t hdim = mlp_in.size(-1);
        at::Tensor in_rows = mlp_in.narrow(1, 0, mlp_in.size(1) - 1).reshape({-1, hdim});
        at::Tensor q_rows = y_q.narrow(1, 0, y_q.size(1) - 1).reshape({-1, hdim});
        const int64_t n = in_rows.size(0);
        if (n > c.o.local_tokens) {
          at::Generator gen = at::detail::createCPUGenerator(kd::MixSeed(c.o.seed ^ kLocalRowsSalt,
                                                                         static_cast<uint64_t>(first_micro + micro)));
          at::Tensor rows = at::randperm(n, gen, at::TensorOptions().dtype(at::kLong)).narrow(0, 0, c.o.local_tokens);
          rows = rows.to(device);
          in_rows = in_rows.index_select(0, rows);
          q_rows = q_rows.index_select(0, rows);
        }
        at::Tensor y_fp;
        {
          // The reference target: the same input through the float MLP, fp32, no gradient.
          at::NoGradGuard no_grad;
          at::Tensor xin = in_rows.detach().to(at::kFloat);
          y_fp = at::linear(at::silu(at::linear(xin, c.fp->gate)) * at::linear(xin, c.fp->up), c.fp->down);
        }
        LocalMlpLossOptions lo;
        lo.max_tokens = std::max<int64_t>(1, q_rows.size(0));  // already sampled: use every row
        at::Tensor local = LocalMlpLoss(q_rows, y_fp, c10::nullopt, lo);
        total = total + c.o.local_weight * local.to(device);
        row[4] = local.detach().to(device);
      }
      row[0] = total.detach();
      if (total.requires_grad()) (total / static_cast<double>(c.o.grad_accum)).backward();
      sums = sums.defined() ? sums + row : row;
    }
    at::Tensor mean = (sums / static_cast<double>(c.o.grad_accum)).to(at::kDouble).cpu();
    values.total = mean[0].item<double>();
    values.kd = use_global ? mean[1].item<double>() : Nan();
    values.hard_top1 = use_global && c.o.hard_top1_weight > 0 ? mean[2].item<double>() : Nan();
    values.hard_full = use_global && c.o.hard_full_weight > 0 ? mean[3].item<double>() : Nan();
    values.local = use_local ? mean[4].item<double>() : Nan();
    values.global = use_global ? mean[5].item<double>() : Nan();
    return absl::OkStatus();
  }));
  return values;
}

quant::TensorMap Snapshot(const std::vector<std::pair<std::string, at::Tensor>>& params) {
  at::NoGradGuard no_grad;
  quant::TensorMap m;
  for (const auto& [name, p] : params) m[name] = p.detach().clone();
  return m;
}

absl::Status Restore(const std::vector<std::pair<std::string, at::Tensor>>& params, const quant::TensorMap& snap) {
  return CatchTorch("restore layer", [&]() -> absl::Status {
    at::NoGradGuard no_grad;
    for (const auto& [name, p] : params) {
      auto it = snap.find(name);
      if (it == snap.end() || !it->second.sizes().equals(p.sizes())) {
        return absl::DataLossError(absl::StrCat("layer snapshot lacks ", name, " or has the wrong shape"));
      }
      p.copy_(it->second.to(p.device(), p.scalar_type()));
    }
    return absl::OkStatus();
  });
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
  QATD_RETURN_IF_ERROR(o.Validate());
  const int64_t num_layers = s.model->num_layers();
  std::vector<int64_t> order = o.layers;
  if (order.empty()) {
    for (int64_t i = 0; i < num_layers; ++i) order.push_back(i);
  }
  for (int64_t l : order) {
    if (l >= num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("layers: index ", l, " is out of range; the model has ", num_layers, " decoder layers"));
    }
  }
  QATD_ASSIGN_OR_RETURN(auto reader, kd::KdCacheReader::Open(o.kd_cache_dir, {.model_vocab_size = s.config.vocab_size}));
  QATD_ASSIGN_OR_RETURN(kd::KdSplits splits, HeldOutSplits(*reader, o.eval_samples));
  const kd::KdSplit layer_split{
      splits.held_out.begin,
      splits.held_out.begin + (o.layer_eval_samples > 0 ? std::min(o.layer_eval_samples, splits.held_out.size())
                                                        : splits.held_out.size())};
  std::optional<model::Checkpoint> base;
  if (o.local_weight > 0) {
    std::string base_dir = s.base_model;
    if (fs::path(base_dir).extension() == ".json") base_dir = fs::path(base_dir).parent_path().string();
    QATD_ASSIGN_OR_RETURN(model::Checkpoint ckpt, model::Checkpoint::Open(base_dir));
    base.emplace(std::move(ckpt));
  }

  const TrainPaths paths(o.output_dir);
  std::error_code ec;
  fs::create_directories(o.output_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", o.output_dir, ": ", ec.message()));

  kd::KdStreamOptions stream_options;
  stream_options.batch_size = o.batch_size;
  stream_options.seed = o.seed;
  QATD_ASSIGN_OR_RETURN(kd::KdBatchStream stream, kd::KdBatchStream::Create(reader, splits.train, stream_options));
  const int64_t steps_per_layer =
      o.steps_per_layer > 0 ? o.steps_per_layer
                            : std::max<int64_t>(1, o.epochs_per_layer * stream.batches_per_epoch() / o.grad_accum);
  const int64_t total_steps = steps_per_layer * static_cast<int64_t>(order.size());
  const KdLossWeights weights{o.temperature, o.hard_top1_weight, o.hard_full_weight};
  EvalOptions eval_options;
  eval_options.max_sequences = 0;
  eval_options.batch_size = o.eval_batch_size;
  eval_options.temperature = o.temperature;
  eval_options.chunk_rows = o.chunk_rows;

  // Run state (everything trainer_state.json holds).
  LblResult result;
  TrainLog log(paths.log_csv, "layer");
  size_t pos = 0;               // index into `order` of the layer being trained
  int64_t step_in_layer = 0;    // steps done in that layer
  int64_t global_step = 0;
  double current_kd = Nan();    // per-layer-subset held-out kd of the current state
  double current_top1 = Nan();
  LayerResult running;          // the layer in progress (before, first/last, seconds so far)
  LossWindow window;
  double elapsed_before = 0;
  const nlohmann::json fingerprint = {{"batch_size", o.batch_size},
                                      {"grad_accum", o.grad_accum},
                                      {"seed", o.seed},
                                      {"eval_samples", o.eval_samples},
                                      {"layer_eval_samples", o.layer_eval_samples},
                                      {"layers", order},
                                      {"steps_per_layer", steps_per_layer},
                                      {"train", {o.train_scales, o.train_weights, o.train_mlp_only}},
                                      {"version", s.version}};

  auto evaluate = [&](kd::KdSplit split) -> absl::StatusOr<EvalResult> {
    return Evaluate(*s.model, *reader, split, eval_options);
  };
  // Writes resume/. Inside a layer (adam != nullptr) the optimizer and the layer's start
  // snapshot travel with it.
  auto save_resume = [&](const AdamW* adam, const quant::TensorMap* snapshot, double elapsed) -> absl::Status {
    nlohmann::json table = nlohmann::json::array();
    for (const auto& l : result.layers) table.push_back(ToJson(l));
    const nlohmann::json state = {{"position", pos},
                                  {"layer", pos < order.size() ? order[pos] : -1},
                                  {"step_in_layer", step_in_layer},
                                  {"global_step", global_step},
                                  {"cursor", stream.cursor().ToJson()},
                                  // L_local rows of micro-batch n: MixSeed(seed ^ salt, n) (no generator state).
                                  {"local_rng_next_micro_batch", global_step * o.grad_accum},
                                  {"initial_kd", Num(result.initial_kd)},
                                  {"initial_top1", Num(result.initial_top1)},
                                  {"current_kd", Num(current_kd)},
                                  {"current_top1", Num(current_top1)},
                                  {"running", ToJson(running)},
                                  {"table", table},
                                  {"window", WindowToJson(window)},
                                  {"elapsed_sec", elapsed},
                                  {"log", log.ToJson()},
                                  {"fingerprint", fingerprint}};
    return SaveStudent(s, paths.resume, {{"step", global_step}}, false, [&](const std::string& tmp) -> absl::Status {
      if (adam != nullptr) {
        QATD_RETURN_IF_ERROR(quant::WriteTensorMap((fs::path(tmp) / "optimizer.safetensors").string(), adam->State()));
        QATD_RETURN_IF_ERROR(quant::WriteTensorMap((fs::path(tmp) / "layer_start.safetensors").string(), *snapshot));
      }
      return WriteFileAtomically((fs::path(tmp) / "trainer_state.json").string(), state.dump(1) + "\n");
    });
  };

  bool resume_mid_layer = false;
  if (o.resume && fs::is_regular_file(fs::path(paths.resume) / "trainer_state.json", ec)) {
    QATD_ASSIGN_OR_RETURN(nlohmann::json st, ReadJson((fs::path(paths.resume) / "trainer_state.json").string()));
    if (st.value("fingerprint", nlohmann::json()) != fingerprint) {
      return absl::FailedPreconditionError(absl::StrCat("cannot resume from ", paths.resume, ": it was written with ",
                                                        st.value("fingerprint", nlohmann::json()).dump(), ", this job has ",
                                                        fingerprint.dump(), " (use a new output_dir)"));
    }
    QATD_ASSIGN_OR_RETURN(quant::LoadedTensors model_state,
                          quant::ReadTensorMap((fs::path(paths.resume) / "model.safetensors").string()));
    QATD_RETURN_IF_ERROR(quant::LoadQuantState(*s.registry, model_state.tensors));
    QATD_ASSIGN_OR_RETURN(kd::KdCursor cursor, kd::KdCursor::FromJson(st.at("cursor")));
    QATD_RETURN_IF_ERROR(stream.Seek(cursor));
    pos = st.value("position", size_t{0});
    step_in_layer = st.value("step_in_layer", int64_t{0});
    global_step = st.value("global_step", int64_t{0});
    result.initial_kd = NumFrom(st, "initial_kd");
    result.initial_top1 = NumFrom(st, "initial_top1");
    current_kd = NumFrom(st, "current_kd");
    current_top1 = NumFrom(st, "current_top1");
    running = LayerResultFromJson(st.at("running"));
    for (const auto& row : st.at("table")) result.layers.push_back(LayerResultFromJson(row));
    window = WindowFromJson(st.at("window"));
    elapsed_before = st.value("elapsed_sec", 0.0);
    log.FromJson(st.at("log"));
    resume_mid_layer = step_in_layer > 0;
    result.resumed = true;
    reporter.Log(jobs::LogLevel::kInfo, absl::StrCat("resuming at layer position ", pos, " of ", order.size(), ", step ",
                                                     step_in_layer, " of ", steps_per_layer, " from ", paths.resume));
  } else {
    (void)RemoveTree(paths.resume);
    QATD_ASSIGN_OR_RETURN(EvalResult initial, evaluate(splits.held_out));
    result.initial_kd = initial.kd;
    result.initial_top1 = initial.top1;
    QATD_ASSIGN_OR_RETURN(EvalResult sub, evaluate(layer_split));
    current_kd = sub.kd;
    current_top1 = sub.top1;
    reporter.Metric("eval/kd", 0, current_kd);
    reporter.Metric("eval/top1", 0, current_top1);
    log.Add(0, Nan(), current_kd, o.lr, 0, "");
    reporter.Log(jobs::LogLevel::kInfo,
                 absl::StrFormat("initial held-out eval (%d sequences): kd %.4g, top-1 %.3f; per-layer subset (%d): kd %.4g",
                                 splits.held_out.size(), initial.kd, initial.top1, layer_split.size(), current_kd));
  }
  reporter.Log(jobs::LogLevel::kInfo,
               absl::StrCat(order.size(), " layers x ", steps_per_layer, " steps; ", splits.train.size(), " training / ",
                            splits.held_out.size(), " held-out sequences"));

  const Clock::time_point run_start = Clock::now();
  double train_seconds = 0;
  int64_t steps_this_run = 0;
  auto elapsed_now = [&] { return elapsed_before + std::chrono::duration<double>(Clock::now() - run_start).count(); };

  while (pos < order.size()) {
    const int64_t layer = order[pos];
    const Clock::time_point layer_start = Clock::now();
    QATD_RETURN_IF_ERROR(MakeLayerTrainable(s, layer, o));
    std::vector<std::pair<std::string, at::Tensor>> params = TrainableParameters(*s.model);
    if (params.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("nothing to train in layer ", layer, ": the trainable set selects no quantized parameter there"));
    }
    FloatMlp fp;
    if (base.has_value()) {
      QATD_ASSIGN_OR_RETURN(fp, LoadFloatMlp(*base, layer, s.model->dtype(), s.model->device()));
    }
    AdamWOptions adam_options;
    adam_options.lr = o.lr;
    adam_options.weight_decay = o.weight_decay;
    AdamW adam(params, adam_options);
    quant::TensorMap snapshot;
    double seconds_before = 0;
    if (resume_mid_layer) {
      QATD_ASSIGN_OR_RETURN(quant::LoadedTensors opt_state,
                            quant::ReadTensorMap((fs::path(paths.resume) / "optimizer.safetensors").string()));
      QATD_RETURN_IF_ERROR(adam.LoadState(opt_state.tensors));
      QATD_ASSIGN_OR_RETURN(quant::LoadedTensors snap,
                            quant::ReadTensorMap((fs::path(paths.resume) / "layer_start.safetensors").string()));
      snapshot = std::move(snap.tensors);
      seconds_before = running.seconds;
      resume_mid_layer = false;
    } else {
      snapshot = Snapshot(params);
      running = LayerResult();
      running.layer = layer;
      running.before = current_kd;  // the current state on the same subset: no second evaluation
      running.local_first = running.global_first = Nan();
    }
    reporter.Log(jobs::LogLevel::kInfo, absl::StrCat("layer ", layer, " (", pos + 1, "/", order.size(), "): training ",
                                                     adam.num_parameters(), " parameters in ", params.size(), " tensors"));
    const MicroContext ctx{s, o, weights, layer, base.has_value() ? &fp : nullptr};
    auto layer_seconds = [&] {
      return seconds_before + std::chrono::duration<double>(Clock::now() - layer_start).count();
    };

    while (step_in_layer < steps_per_layer) {
      if (cancel.cancelled()) {
        running.seconds = layer_seconds();
        QATD_RETURN_IF_ERROR(save_resume(&adam, &snapshot, elapsed_now()));
        return absl::CancelledError(absl::StrCat("cancelled in layer ", layer, " at step ", step_in_layer,
                                                 "; resume checkpoint in ", paths.resume));
      }
      const Clock::time_point t0 = Clock::now();
      QATD_ASSIGN_OR_RETURN(LossValues values, RunLblMicroBatches(ctx, stream, adam, global_step * o.grad_accum));
      QATD_RETURN_IF_ERROR(ApplyStep(adam, o.lr, /*clip_grad_norm=*/0, values, global_step + 1));
      ++step_in_layer;
      ++global_step;
      ++steps_this_run;
      train_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
      window.Add(values);
      if (step_in_layer == 1) {
        running.local_first = values.local;
        running.global_first = values.global;
      }
      running.local_last = values.local;
      running.global_last = values.global;
      running.steps = step_in_layer;
      const double rate = train_seconds > 0 ? steps_this_run / train_seconds : 0;
      reporter.Progress(global_step, total_steps, "steps", rate, rate > 0 ? (total_steps - global_step) / rate : -1);

      const bool layer_done = step_in_layer == steps_per_layer;
      double eval_kd = Nan();
      if (layer_done) {
        QATD_ASSIGN_OR_RETURN(EvalResult after, evaluate(layer_split));
        running.after = after.kd;
        running.improvement = running.before - after.kd;
        // Keep-best (deliberate difference, see the header): a layer that made the held-out
        // loss worse is put back as it was at the layer's start.
        running.restored = o.keep_best_layer && !(after.kd <= running.before);
        if (running.restored) {
          QATD_RETURN_IF_ERROR(Restore(params, snapshot));
        } else {
          current_kd = after.kd;
          current_top1 = after.top1;
        }
        eval_kd = after.kd;
        reporter.Metric("eval/kd", global_step, current_kd);
        reporter.Metric("eval/top1", global_step, current_top1);
      }
      if (global_step % o.logging_steps == 0 || layer_done) {
        const LossValues mean = window.Mean();
        reporter.Metric("loss/total", global_step, mean.total);
        if (o.local_weight > 0) reporter.Metric("loss/local", global_step, mean.local);
        if (o.global_weight > 0) {
          reporter.Metric("loss/kd", global_step, mean.kd);
          reporter.Metric("loss/global", global_step, mean.global);
          if (o.hard_top1_weight > 0) reporter.Metric("loss/hard_top1", global_step, mean.hard_top1);
          if (o.hard_full_weight > 0) reporter.Metric("loss/hard_full", global_step, mean.hard_full);
        }
        reporter.Metric("train/lr", global_step, o.lr);
        log.Add(global_step, mean.total, eval_kd, o.lr, elapsed_now(), std::to_string(layer));
        window = LossWindow();
        QATD_RETURN_IF_ERROR(log.Write());
      }
      if (layer_done) {
        running.seconds = layer_seconds();
        result.layers.push_back(running);
        reporter.Log(jobs::LogLevel::kInfo,
                     absl::StrFormat("layer %d: held-out kd %.4g -> %.4g (%+.3g)%s; local %.4g -> %.4g, global %.4g -> "
                                     "%.4g; %.1f s",
                                     layer, running.before, running.after, -running.improvement,
                                     running.restored ? ", worse: restored" : "", running.local_first, running.local_last,
                                     running.global_first, running.global_last, running.seconds));
        ++pos;
        step_in_layer = 0;
        running = LayerResult();
        s.registry->FreezeAllParameters();
        QATD_RETURN_IF_ERROR(save_resume(nullptr, nullptr, elapsed_now()));
      } else if (o.save_steps > 0 && global_step % o.save_steps == 0) {
        running.seconds = layer_seconds();
        QATD_RETURN_IF_ERROR(save_resume(&adam, &snapshot, elapsed_now()));
      } else {
        continue;
      }
      if (o.after_durable) QATD_RETURN_IF_ERROR(o.after_durable(global_step));
      if (layer_done) break;  // step_in_layer was reset for the next layer
    }
  }

  s.registry->FreezeAllParameters();
  result.steps = global_step;
  QATD_ASSIGN_OR_RETURN(EvalResult final_eval, evaluate(splits.held_out));
  result.final_kd = final_eval.kd;
  result.final_top1 = final_eval.top1;
  QATD_RETURN_IF_ERROR(log.Write());

  std::string table = "layer     before      after     improv  restored     local first/last     global first/last      sec";
  for (const auto& l : result.layers) {
    absl::StrAppend(&table, absl::StrFormat("\n%5d  %9.4f  %9.4f  %+9.4f  %8s  %9.4f/%-9.4f  %9.4f/%-9.4f  %7.1f", l.layer,
                                            l.before, l.after, l.improvement, l.restored ? "yes" : "no", l.local_first,
                                            l.local_last, l.global_first, l.global_last, l.seconds));
  }
  reporter.Log(jobs::LogLevel::kInfo, table);
  reporter.Log(jobs::LogLevel::kInfo,
               absl::StrFormat("held-out kd (%d sequences): initial %.4g -> final %.4g; top-1 %.3f -> %.3f; %d steps",
                               splits.held_out.size(), result.initial_kd, result.final_kd, result.initial_top1,
                               result.final_top1, result.steps));
  return result;
}

}  // namespace qatd::train
