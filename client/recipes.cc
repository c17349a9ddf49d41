#include "client/recipes.h"

#include <algorithm>
#include <cmath>

#include "absl/status/status.h"

namespace qatd::client {
namespace {

void Feed(v1::PipelineStage* stage, const std::string& from, const char* kind, const std::string& field) {
  v1::ArtifactInput* input = stage->add_inputs();
  input->set_from_stage(from);
  input->set_artifact_kind(kind);
  input->set_field(field);
}

}  // namespace

std::optional<Recipe> RecipeByName(const std::string& name) {
  if (name == "q4") return Recipe::kQ4;
  if (name == "q2") return Recipe::kQ2;
  return std::nullopt;
}

std::optional<RecipeDefaults> RecipeDefaultsFor(const std::string& name, Recipe recipe) {
  if (name == "seed") return RecipeDefaults{};
  if (name != "qatd") return std::nullopt;
  // Measured on bench/quality (real 103M teacher, held-out, seed 7; the table in
  // bench/quality/README.md): scales lr 1e-3 never improved on its start, 1e-4 does; V2 at
  // 2e-4 ends lower than at 5e-5; per-layer k-means LUTs start and end the 2-bit V1 recipe lower
  // (applied by Build() to 2-bit LUTs only).
  // Stop 19 (same benchmark, full budgets): a 2-bit V1 weights stage at 3e-5 (both 5e-6) ends
  // at kd 0.644 instead of 0.824 at the seed's 5e-6 / 1e-6; trained V2 LUTs end q2 at 0.724
  // instead of 0.743; the conversion's GPTQ indices on per-layer fitted LUTs start V2 at 0.664
  // instead of 1.009 and end q2 at 0.537 (top-1 0.771 instead of 0.724).
  RecipeDefaults d;
  // A 16-entry q4 pipeline keeps the seed's scales lr: at full budget 1e-3 ended lower (0.0986)
  // than 1e-4 (0.1069), although 1e-4 improves the scales stage itself (one run each).
  d.scales_lr = recipe == Recipe::kQ4 ? 1e-3 : 1e-4;
  d.scales_lr_2bit = 1e-4;
  d.v2_lr = 2e-4;
  // Stop 29 (2026-12-03): k-means LUTs also win at 16 entries (Q4_A4 final 0.0986 -> 0.0855,
  // top-1 0.902 -> 0.909), and V2 at 3000 steps ends q2 lower than at 1000 (0.537 -> 0.524;
  // 0.776 -> 0.746 on the older conversion), for about 2.5 x the V2 time.
  d.lut_init = recipe == Recipe::kQ4 ? "kmeans" : "";
  d.v2_steps = 3000;
  d.weights_lr_2bit = 3e-5;
  d.both_lr_2bit = 5e-6;
  d.v2_train_lut = true;
  d.convert_rounding = recipe == Recipe::kQ2 ? "gptq" : "";
  d.convert_lut_init = recipe == Recipe::kQ2 ? "kmeans" : "";
  return d;
}

void RecipeFlags::Register(CLI::App* app) {
  flags_ = std::make_unique<SpecFlags>(app);
  SpecFlags& f = *flags_;
  AddJobFlags(f, &job_);
  f.Path("--model", "Base/teacher model: a Hugging Face Qwen3 folder on the daemon's host (required)",
         [this](const std::string& v) {
           cache_.set_teacher_model(v);
           train_.set_model(v);
         });
  f.Path("--dataset", "Local dataset for the KD cache (required unless --kd-cache)",
         [this](const std::string& v) { cache_.set_dataset(v); });
  app->add_option("--kd-cache,--kd-cache-dir", kd_cache_dir_, "Use this existing KD cache: no cache stage");
  // The cache stage (qat cache's flags; --cache-batch-size because --batch-size is training's).
  f.Enum("--dataset-format", kDatasetFormatHelp, kDatasetFormatNames,
         [this](int v) { cache_.set_dataset_format(static_cast<v1::DatasetFormat>(v)); });
  f.Value<std::string>("--dataset-text-field", "JSON field holding the text, plain format (default text)",
                       [this](const std::string& v) { cache_.set_dataset_text_field(v); });
  f.Enum("--enable-thinking", "Chat formats' think blocks (default none)",
         {{"none", v1::THINKING_MODE_NONE},
          {"on", v1::THINKING_MODE_ON},
          {"off", v1::THINKING_MODE_OFF},
          {"both", v1::THINKING_MODE_BOTH},
          {"false", v1::THINKING_MODE_OFF},
          {"true", v1::THINKING_MODE_ON}},
         [this](int v) { cache_.set_enable_thinking(static_cast<v1::ThinkingMode>(v)); });
  f.Value<int>("--max-length", "Cache: tokens per sequence (default 64)",
               [this](const int& v) { cache_.set_max_length(v); });
  f.Value<int>("--top-k,--topk", "Cache: teacher logits per position (default 32)",
               [this](const int& v) { cache_.set_topk(v); });
  f.Value<int>("--rand-neg", "Cache: random negatives per position (default 0)",
               [this](const int& v) { cache_.set_rand_neg(v); });
  f.Value<int64_t>("--num-samples,--num-sequences", "Cache: sequences (default 20000)",
                   [this](const int64_t& v) { cache_.set_num_sequences(v); });
  f.Value<int>("--cache-batch-size", "Cache: sequences per teacher forward (default 1)",
               [this](const int& v) { cache_.set_batch_size(v); });
  f.Enum("--cache-dtype", "Cache: teacher compute dtype (default auto = bf16 on CUDA, fp32 on the CPU)", kDtypeNames,
         [this](int v) { cache_.set_dtype(static_cast<v1::Dtype>(v)); });
  // Shared by the training stages.
  AddQuantFlags(f, [this] { return train_.mutable_quant(); });
  f.Value<int>("--batch-size", "Training stages: batch size (default V1 32, V2 8)",
               [this](const int& v) { train_.set_batch_size(v); });
  f.Value<int>("--eval-samples", "Training stages: sequences per evaluation (default 40)",
               [this](const int& v) { train_.set_eval_samples(v); });
  f.Value<int>("--eval-steps", "Training stages: steps between evaluations (default V1 200, V2 100)",
               [this](const int& v) { train_.set_eval_steps(v); });
  f.Value<int>("--logging-steps", "Training stages: steps between logged losses (default V1 50, V2 20)",
               [this](const int& v) { train_.set_logging_steps(v); });
  f.Value<int64_t>("--train-seed", "Training stages: seed of the data order (QatSpec.seed, default 0)",
                   [this](const int64_t& v) { train_.set_seed(v); });
  f.Flag("--kd-rand-neg",
         "Training stages: KD over the top-K plus the cache's random negatives (needs a cache made with --rand-neg; "
         "QatSpec.kd_rand_neg)",
         [this](bool v) { train_.set_kd_rand_neg(v); });
  f.Enum("--dtype",
         "Model dtype of every stage after the cache: training, convert's evaluation, snap, infer (default auto = "
         "bf16 on CUDA (V2 training: fp32), fp32 on the CPU)",
         kDtypeNames,
         [this](int v) { train_.set_dtype(static_cast<v1::Dtype>(v)); });
  // Per stage.
  app->add_option("--scales-steps", scales_steps_, "scales: steps")->capture_default_str();
  app->add_option("--recipe", defaults_name_,
                  "Defaults of the stage flags below: qatd (what bench/quality measured better: for q4 k-means "
                  "LUTs, and at 2 bits scales lr 1e-4, weights lr 3e-5, both lr 5e-6; for q2 scales lr 1e-4, a "
                  "GPTQ-rounded conversion on fitted LUTs, v2 lr 2e-4 with trained LUTs, 3000 v2 steps) or seed "
                  "(the seed's documented values); explicit flags win")
      ->check(CLI::IsMember({"qatd", "seed"}))
      ->capture_default_str();
  f.Value<double>("--scales-lr", "scales: learning rate (default 1e-3 for a 16-entry q4 pipeline, else 1e-4; --recipe seed: 1e-3)",
                  [this](const double& v) { scales_lr_ = v; });
  app->add_option("--weights-steps", weights_steps_, "q4 weights: steps")->capture_default_str();
  f.Value<double>("--weights-lr", "q4 weights: learning rate (default 5e-6; 2-bit LUT: 3e-5, --recipe seed: 5e-6)",
                  [this](const double& v) { weights_lr_ = v; });
  app->add_option("--weights-hard-top1", weights_hard_top1_, "q4 weights: hard top-1 weight")->capture_default_str();
  app->add_option("--weights-hard-full", weights_hard_full_, "q4 weights: full-vocabulary hard weight")
      ->capture_default_str();
  app->add_option("--lbl-steps", lbl_steps_,
                  "q4: a layerwise stage between scales and weights training each layer's weights for this many "
                  "steps (LAYERWISE job, local + global KD, hard 0.1 / 0.0005 as the seed's notebook); 0 = none")
      ->capture_default_str();
  app->add_option("--lbl-lr", lbl_lr_, "q4 layerwise stage: learning rate")->capture_default_str();
  app->add_option("--both-steps", both_steps_, "q4 both: steps")->capture_default_str();
  f.Value<double>("--both-lr", "q4 both: learning rate (default 1e-6; 2-bit LUT: 5e-6, --recipe seed: 1e-6)",
                  [this](const double& v) { both_lr_ = v; });
  f.Value<int>("--v2-steps", "q2 v2: steps (default 3000; --recipe seed: 1000)",
               [this](const int& v) { v2_steps_ = v; });
  f.Value<double>("--v2-lr", "q2 v2: learning rate (default 2e-4; --recipe seed: 5e-5)",
                  [this](const double& v) { v2_lr_ = v; });
  app->add_flag("--v2-mlp-only", v2_mlp_only_, "q2 v2: train only the MLP layers");
  f.Flag("--v2-train-lut,!--no-v2-train-lut",
         "q2 v2: also train each layer's LUT values (QatSpec.train_lut; default on, --recipe seed: off)",
         [this](bool v) { v2_train_lut_ = v; });
  f.Value<std::string>("--convert-rounding",
                       "q2 convert: how the Q2 indices are chosen: gptq (default: GPTQ error feedback on the KD cache's "
                       "training sequences) or nearest (the nearest LUT entry; --recipe seed)",
                       [this](const std::string& v) { convert_rounding_ = v; });
  f.Value<std::string>("--convert-lut-init",
                       "q2 convert: each reduced MLP LUT: kmeans (default: fitted to each layer's own W / S) or values "
                       "(k-means of the 16 LUT values, spec 11; --recipe seed)",
                       [this](const std::string& v) { convert_lut_init_ = v; });
  f.Flag("--ane,--fp16", "q2 snap: fp16 snap for the ANE", [this](bool v) { snap_.set_fp16(v); });
  app->add_option("--recover-steps", recover_steps_,
                  "recover: LoRA steps on the snapped model (LORA job; 0 = no recover stage); infer then applies "
                  "the adapter")
      ->capture_default_str();
  f.Value<int>("--recover-rank", "recover: LoRA rank (default 16)", [this](const int& v) { recover_rank_ = v; });
  f.Value<double>("--recover-lr", "recover: learning rate (default 2e-4)", [this](const double& v) { recover_lr_ = v; });
  app->add_option("--steps-scale", steps_scale_, "Multiply every step count by this (e.g. 0.01 for a demo)")
      ->capture_default_str();
  app->add_option("--prompt", prompt_, "infer: the prompt")->capture_default_str();
  f.Value<int>("--max-new-tokens", "infer: tokens to generate (default 256)",
               [this](const int& v) { infer_.set_max_new_tokens(v); });
  f.Value<double>("--repetition-penalty",
                  "infer: HF-style repetition penalty (default 1.1, the seed's; 1 = off, for answers that must repeat "
                  "words of the prompt)",
                  [this](const double& v) { infer_.set_repetition_penalty(v); });
}

int RecipeFlags::Scaled(int steps) const { return std::max(1, static_cast<int>(std::lround(steps * steps_scale_))); }

constexpr int kRecipeEarlyStopPatience = 5;

v1::PipelineStage* RecipeFlags::AddStage(v1::PipelineSpec& pipeline, const std::string& name, const v1::JobSpec& spec) {
  v1::PipelineStage* stage = pipeline.add_stages();
  stage->set_name(name);
  *stage->mutable_spec() = spec;
  stage->mutable_spec()->set_priority(job_.priority());
  if (job_.has_resources()) *stage->mutable_spec()->mutable_resources() = job_.resources();
  // --devices N > 1 makes the training stages data parallel; the other stages run on one.
  v1::Resources* r = stage->mutable_spec()->mutable_resources();
  if (!spec.has_qat() && !spec.has_lora() && r->has_device_count() && r->device_count() > 1) r->set_device_count(1);
  return stage;
}

v1::JobSpec RecipeFlags::TrainStage(int steps, double lr) const {
  v1::JobSpec spec;
  v1::QatSpec* q = spec.mutable_qat();
  *q = train_;
  q->set_max_steps(Scaled(steps));
  q->set_lr(lr);
  // Built-in pipelines stop a stage after 5 evaluations without a better held-out loss (the
  // best state is kept either way).
  if (q->early_stop_patience() == 0) q->set_early_stop_patience(kRecipeEarlyStopPatience);
  if (!kd_cache_dir_.empty()) q->set_kd_cache_dir(kd_cache_dir_);
  return spec;
}

absl::StatusOr<v1::PipelineSpec> RecipeFlags::Build(Recipe recipe) {
  job_.Clear();
  cache_.Clear();
  train_.Clear();
  infer_.Clear();
  snap_.Clear();
  v2_lr_.reset();
  scales_lr_.reset();
  recover_rank_.reset();
  recover_lr_.reset();
  weights_lr_.reset();
  both_lr_.reset();
  v2_train_lut_.reset();
  v2_steps_.reset();
  convert_rounding_.clear();
  convert_lut_init_.clear();
  cache_.set_dataset_format(v1::DATASET_FORMAT_AUTO);  // the daemon detects it unless given
  flags_->Apply();
  kd_cache_dir_ = AbsolutePath(kd_cache_dir_);
  const std::string recipe_name = recipe == Recipe::kQ4 ? "q4" : "q2";
  if (train_.model().empty())
    return absl::InvalidArgumentError("--model is required for the " + recipe_name + " recipe");
  if (kd_cache_dir_.empty() && cache_.dataset().empty()) {
    return absl::InvalidArgumentError("--dataset (or an existing cache with --kd-cache) is required for the " +
                                      recipe_name + " recipe");
  }
  if (!(steps_scale_ > 0)) return absl::InvalidArgumentError("--steps-scale must be > 0");
  if (recover_steps_ < 0) return absl::InvalidArgumentError("--recover-steps must be >= 0 (0 = no recover stage)");
  if (lbl_steps_ < 0) return absl::InvalidArgumentError("--lbl-steps must be >= 0 (0 = no layerwise stage)");
  if (lbl_steps_ > 0 && recipe != Recipe::kQ4) {
    return absl::InvalidArgumentError("--lbl-steps: the layerwise stage is part of the q4 recipe only");
  }
  if (!(lbl_lr_ > 0)) return absl::InvalidArgumentError("--lbl-lr must be > 0");
  const std::string& model = train_.model();
  const std::optional<RecipeDefaults> defaults = RecipeDefaultsFor(defaults_name_, recipe);
  if (!defaults.has_value()) return absl::InvalidArgumentError("--recipe must be qatd or seed, not " + defaults_name_);
  // k-means LUTs are measured better at 2 and at 4 bits (every LUT of the q4 recipe).
  const v1::QuantSettings& quant = train_.quant();
  const int lut_size = quant.lut_size() > 0 ? quant.lut_size() : (quant.preset().rfind("Q2", 0) == 0 ? 4 : 16);
  if (quant.lut_init().empty() && !defaults->lut_init.empty()) {
    train_.mutable_quant()->set_lut_init(defaults->lut_init);
  }
  const double scales_lr = scales_lr_.value_or(lut_size <= 4 ? defaults->scales_lr_2bit : defaults->scales_lr);
  const double weights_lr = weights_lr_.value_or(lut_size <= 4 ? defaults->weights_lr_2bit : defaults->weights_lr);
  const double both_lr = both_lr_.value_or(lut_size <= 4 ? defaults->both_lr_2bit : defaults->both_lr);
  const bool v2_train_lut = v2_train_lut_.value_or(defaults->v2_train_lut);
  const std::string convert_rounding = convert_rounding_.empty() ? defaults->convert_rounding : convert_rounding_;
  const std::string convert_lut_init = convert_lut_init_.empty() ? defaults->convert_lut_init : convert_lut_init_;
  const std::optional<double> v2_lr = v2_lr_.has_value() ? v2_lr_ : defaults->v2_lr;

  v1::PipelineSpec pipeline;
  pipeline.set_name(job_.name().empty() ? recipe_name : job_.name());
  const bool with_cache = kd_cache_dir_.empty();
  // Feeds the KD cache into `field` of a stage (from the cache stage, or --kd-cache is set).
  auto feed_cache = [&](v1::PipelineStage* stage) {
    if (with_cache) Feed(stage, "cache", kKdCacheArtifact, "kd_cache_dir");
  };
  // recover (LORA) on the checkpoint of stage `snap`, when --recover-steps > 0; infer then
  // applies its adapter. Returns the infer stage's feeds' source for the adapter ("" = none).
  auto add_recover = [&]() -> std::string {
    if (recover_steps_ <= 0) return "";
    v1::JobSpec recover;
    v1::LoraSpec* l = recover.mutable_lora();
    l->set_model(model);
    l->set_max_steps(Scaled(recover_steps_));
    if (recover_rank_.has_value()) l->set_rank(*recover_rank_);
    if (recover_lr_.has_value()) l->set_lr(*recover_lr_);
    l->set_dtype(train_.dtype());
    l->set_early_stop_patience(train_.early_stop_patience() != 0 ? train_.early_stop_patience()
                                                                 : kRecipeEarlyStopPatience);
    if (train_.has_batch_size()) l->set_batch_size(train_.batch_size());
    if (train_.has_eval_samples()) l->set_eval_samples(train_.eval_samples());
    if (train_.has_eval_steps()) l->set_eval_steps(train_.eval_steps());
    if (train_.has_logging_steps()) l->set_logging_steps(train_.logging_steps());
    if (!kd_cache_dir_.empty()) l->set_kd_cache_dir(kd_cache_dir_);
    v1::PipelineStage* stage = AddStage(pipeline, "recover", recover);
    feed_cache(stage);
    Feed(stage, "snap", kCheckpointArtifact, "checkpoint");
    return "recover";
  };
  if (with_cache) {
    v1::JobSpec cache;
    *cache.mutable_kd_cache() = cache_;
    AddStage(pipeline, "cache", cache);
  }

  v1::JobSpec scales = TrainStage(scales_steps_, scales_lr);
  scales.mutable_qat()->set_train_scales(true);
  feed_cache(AddStage(pipeline, "scales", scales));

  v1::JobSpec infer;
  *infer.mutable_generate() = infer_;
  infer.mutable_generate()->set_model(model);
  infer.mutable_generate()->set_prompt(prompt_);
  infer.mutable_generate()->set_dtype(train_.dtype());

  if (recipe == Recipe::kQ4) {
    std::string before_weights = "scales";
    if (lbl_steps_ > 0) {  // layer-by-layer weight training before E2E (issue #18)
      v1::JobSpec lbl;
      v1::LayerwiseSpec* l = lbl.mutable_layerwise();
      l->set_model(model);
      *l->mutable_quant() = train_.quant();
      // The E2E stages' group size (QAT default 32), not the layerwise job's own default (128);
      // a preset sets its own for both.
      if (!l->quant().has_group_size() && l->quant().preset().empty()) l->mutable_quant()->set_group_size(32);
      l->set_dtype(train_.dtype());
      l->set_train_scales(false);
      l->set_train_weights(true);
      l->set_lr(lbl_lr_);
      l->set_steps_per_layer(Scaled(lbl_steps_));
      l->set_hard_top1_weight(0.1);
      l->set_hard_full_weight(0.0005);
      if (train_.has_batch_size()) l->set_batch_size(train_.batch_size());
      if (train_.has_eval_samples()) l->set_eval_samples(train_.eval_samples());
      l->set_seed(train_.seed());
      if (!kd_cache_dir_.empty()) l->set_kd_cache_dir(kd_cache_dir_);
      v1::PipelineStage* stage = AddStage(pipeline, "layerwise", lbl);
      feed_cache(stage);
      Feed(stage, "scales", kCheckpointArtifact, "init_state");
      before_weights = "layerwise";
    }
    v1::JobSpec weights = TrainStage(weights_steps_, weights_lr);
    weights.mutable_qat()->set_train_weights(true);
    weights.mutable_qat()->set_hard_top1_weight(weights_hard_top1_);
    weights.mutable_qat()->set_hard_full_weight(weights_hard_full_);
    v1::PipelineStage* stage = AddStage(pipeline, "weights", weights);
    feed_cache(stage);
    Feed(stage, before_weights, kCheckpointArtifact, "init_state");

    v1::JobSpec both = TrainStage(both_steps_, both_lr);
    both.mutable_qat()->set_train_weights(true);
    both.mutable_qat()->set_train_scales(true);
    stage = AddStage(pipeline, "both", both);
    feed_cache(stage);
    Feed(stage, "weights", kCheckpointArtifact, "init_state");

    v1::JobSpec snap;
    v1::QatSpec* s = snap.mutable_qat();
    s->set_model(model);
    *s->mutable_quant() = train_.quant();
    s->set_dtype(train_.dtype());
    s->set_skip_training(true);
    s->set_snap_weights(true);
    // With the cache, the snap stage also reports the snapped model's held-out KD loss.
    if (train_.has_eval_samples()) s->set_eval_samples(train_.eval_samples());
    if (!kd_cache_dir_.empty()) s->set_kd_cache_dir(kd_cache_dir_);
    v1::PipelineStage* snap_stage = AddStage(pipeline, "snap", snap);
    feed_cache(snap_stage);
    Feed(snap_stage, "both", kCheckpointArtifact, "init_state");

    const std::string recover = add_recover();
    v1::PipelineStage* infer_stage = AddStage(pipeline, "infer", infer);
    Feed(infer_stage, "snap", kCheckpointArtifact, "checkpoint");
    if (!recover.empty()) Feed(infer_stage, recover, kAdapterArtifact, "adapter");
    return pipeline;
  }

  v1::JobSpec convert;
  v1::ConvertSpec* c = convert.mutable_convert();
  c->set_mode(v1::CONVERT_MODE_Q4_TO_Q2);
  c->set_model(model);
  if (train_.quant().has_scale_rank()) c->set_q4_rank(train_.quant().scale_rank());
  if (!convert_lut_init.empty()) c->set_lut_init(convert_lut_init);
  v1::PipelineStage* convert_stage = AddStage(pipeline, "convert", convert);
  Feed(convert_stage, "scales", kCheckpointArtifact, "checkpoint");
  if (!convert_rounding.empty()) {
    c = convert_stage->mutable_spec()->mutable_convert();
    c->set_rounding(convert_rounding);
    // GPTQ calibrates on the cache's training split: the stages' held-out sequences stay out.
    if (train_.has_eval_samples()) c->set_eval_samples(train_.eval_samples());
    if (train_.quant().calibration_sequences() > 0) c->set_calibration_sequences(train_.quant().calibration_sequences());
    if (!kd_cache_dir_.empty()) c->set_kd_cache_dir(kd_cache_dir_);
    feed_cache(convert_stage);
  }

  v1::JobSpec v2;
  v1::QatSpec* q = v2.mutable_qat();
  q->set_version(v1::QAT_VERSION_V2);
  q->set_model(model);
  q->set_v2_init(v1::V2_INIT_FROM_V2);
  q->set_train_scales(true);
  q->set_train_mlp_only(v2_mlp_only_);
  if (v2_train_lut) q->set_train_lut(true);
  q->set_kd_rand_neg(train_.kd_rand_neg());
  q->set_seed(train_.seed());
  q->set_max_steps(Scaled(v2_steps_.value_or(defaults->v2_steps)));
  if (v2_lr.has_value()) q->set_lr(*v2_lr);
  q->set_early_stop_patience(train_.early_stop_patience() != 0 ? train_.early_stop_patience() : kRecipeEarlyStopPatience);
  if (train_.has_batch_size()) q->set_batch_size(train_.batch_size());
  if (train_.has_eval_samples()) q->set_eval_samples(train_.eval_samples());
  if (train_.has_eval_steps()) q->set_eval_steps(train_.eval_steps());
  if (train_.has_logging_steps()) q->set_logging_steps(train_.logging_steps());
  q->set_dtype(train_.dtype());
  if (!kd_cache_dir_.empty()) q->set_kd_cache_dir(kd_cache_dir_);
  v1::PipelineStage* stage = AddStage(pipeline, "v2", v2);
  feed_cache(stage);
  Feed(stage, "convert", kCheckpointArtifact, "v2_checkpoint");

  v1::JobSpec snap;
  *snap.mutable_snap() = snap_;
  snap.mutable_snap()->set_model(model);
  Feed(AddStage(pipeline, "snap", snap), "v2", kCheckpointArtifact, "checkpoint");

  infer.mutable_generate()->set_version(v1::QAT_VERSION_V2);
  const std::string recover = add_recover();
  v1::PipelineStage* infer_stage = AddStage(pipeline, "infer", infer);
  Feed(infer_stage, "snap", kCheckpointArtifact, "checkpoint");
  if (!recover.empty()) Feed(infer_stage, recover, kAdapterArtifact, "adapter");
  return pipeline;
}

}  // namespace qatd::client
