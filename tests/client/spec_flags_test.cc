// Flags -> JobSpec for every `qat` submitting subcommand: defaults leave the optional proto
// fields unset (the daemon's/core's defaults apply), given flags set them, and local usage
// errors name the flag.
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "client/spec_commands.h"

namespace qatd::client {
namespace {

// Parses `args` (without the program name) with `command`'s flags and builds the spec.
absl::StatusOr<v1::JobSpec> Build(SpecCommand& command, std::vector<std::string> args) {
  CLI::App app{"test"};
  command.Register(&app);
  std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 consumes from the back
  app.parse(reversed);
  return command.Build();
}

v1::JobSpec BuildOk(std::unique_ptr<SpecCommand> command, std::vector<std::string> args) {
  absl::StatusOr<v1::JobSpec> spec = Build(*command, std::move(args));
  EXPECT_TRUE(spec.ok()) << spec.status();
  return spec.ok() ? *spec : v1::JobSpec();
}

// The CLI11 error message for `args`, or "" when they parse.
std::string ParseError(std::unique_ptr<SpecCommand> command, std::vector<std::string> args) {
  try {
    (void)Build(*command, std::move(args));
  } catch (const CLI::ParseError& e) {
    return e.what();
  }
  return "";
}

TEST(KdCacheFlags, DefaultsLeaveOptionalFieldsUnset) {
  const v1::JobSpec spec = BuildOk(NewKdCacheCommand(), {"--model", "/m", "--dataset", "/d.json"});
  ASSERT_TRUE(spec.has_kd_cache());
  const v1::KdCacheSpec& k = spec.kd_cache();
  EXPECT_EQ(k.teacher_model(), "/m");
  EXPECT_EQ(k.dataset(), "/d.json");
  EXPECT_FALSE(k.has_max_length());
  EXPECT_FALSE(k.has_topk());
  EXPECT_FALSE(k.has_num_sequences());
  EXPECT_FALSE(k.has_batch_size());
  EXPECT_FALSE(k.has_shard_size());
  EXPECT_FALSE(k.has_shuffle());
  EXPECT_FALSE(k.has_dataset_split());
  EXPECT_FALSE(k.has_logits_chunk_rows());
  EXPECT_EQ(k.dtype(), v1::DTYPE_AUTO);
  // Issue #17: without --dataset-format the daemon detects the format (plain used to be sent).
  EXPECT_EQ(k.dataset_format(), v1::DATASET_FORMAT_AUTO);
  EXPECT_EQ(spec.priority(), 0);
  EXPECT_FALSE(spec.has_resources());
  EXPECT_TRUE(spec.name().empty());
}

TEST(KdCacheFlags, GivenFlagsSetFields) {
  const v1::JobSpec spec = BuildOk(NewKdCacheCommand(), {"--teacher-model",
                                                         "/m",
                                                         "--dataset-name",
                                                         "/d",
                                                         "--dataset-format",
                                                         "alpaca-chat",
                                                         "--enable-thinking",
                                                         "false",
                                                         "--max-length",
                                                         "128",
                                                         "--topk",
                                                         "64",
                                                         "--rand-neg",
                                                         "8",
                                                         "--num-sequences",
                                                         "2048",
                                                         "--batch-size",
                                                         "32",
                                                         "--shard-size",
                                                         "256",
                                                         "--dtype",
                                                         "FP16",
                                                         "--seed",
                                                         "7",
                                                         "--no-shuffle",
                                                         "--resume",
                                                         "--output-dir",
                                                         "/out",
                                                         "--text-unit",
                                                         "paragraph",
                                                         "--dataset-text-field",
                                                         "body",
                                                         "--logits-chunk-rows",
                                                         "0"});
  const v1::KdCacheSpec& k = spec.kd_cache();
  EXPECT_EQ(k.teacher_model(), "/m");
  EXPECT_EQ(k.dataset(), "/d");
  EXPECT_EQ(k.dataset_format(), v1::DATASET_FORMAT_ALPACA_CHAT);
  EXPECT_EQ(k.enable_thinking(), v1::THINKING_MODE_OFF);
  EXPECT_EQ(k.max_length(), 128);
  EXPECT_EQ(k.topk(), 64);
  EXPECT_EQ(k.rand_neg(), 8);
  EXPECT_EQ(k.num_sequences(), 2048);
  EXPECT_EQ(k.batch_size(), 32);
  EXPECT_EQ(k.shard_size(), 256);
  EXPECT_EQ(k.dtype(), v1::DTYPE_FP16);
  EXPECT_EQ(k.seed(), 7);
  ASSERT_TRUE(k.has_shuffle());
  EXPECT_FALSE(k.shuffle());
  EXPECT_TRUE(k.resume());
  EXPECT_FALSE(k.overwrite());
  EXPECT_EQ(k.output_dir(), "/out");
  EXPECT_EQ(k.text_unit(), v1::TEXT_UNIT_PARAGRAPH);
  EXPECT_EQ(k.dataset_text_field(), "body");
  ASSERT_TRUE(k.has_logits_chunk_rows());
  EXPECT_EQ(k.logits_chunk_rows(), 0);
}

TEST(KdCacheFlags, SeedSpellingsAreAliases) {
  const v1::JobSpec spec = BuildOk(NewKdCacheCommand(), {"--model", "/m", "--top-k", "16", "--num-samples", "10"});
  EXPECT_EQ(spec.kd_cache().topk(), 16);
  EXPECT_EQ(spec.kd_cache().num_sequences(), 10);
}

TEST(PathFlags, RelativePathsBecomeAbsolute) {
  // The daemon resolves paths on its host and from its own directory, not the caller's.
  const std::string cwd = std::filesystem::current_path().string();
  const v1::JobSpec spec = BuildOk(NewQatCommand(), {"--model", "models/../Qwen3", "--kd-cache", "/abs/cache",
                                                     "--init-state", "ckpt", "--output-dir", "out"});
  EXPECT_EQ(spec.qat().model(), cwd + "/Qwen3");
  EXPECT_EQ(spec.qat().kd_cache_dir(), "/abs/cache");
  EXPECT_EQ(spec.qat().init_state(), cwd + "/ckpt");
  EXPECT_EQ(spec.qat().output_dir(), cwd + "/out");
  EXPECT_EQ(AbsolutePath(""), "");
}

TEST(CommonFlags, PriorityDevicesName) {
  const v1::JobSpec spec = BuildOk(
      NewProbeCommand(), {"--priority", "5", "--devices", "0", "--name", "smoke", "--steps", "3", "--step-ms", "7"});
  EXPECT_EQ(spec.priority(), 5);
  ASSERT_TRUE(spec.resources().has_device_count());  // 0 was given: CPU only, not "default"
  EXPECT_EQ(spec.resources().device_count(), 0);
  EXPECT_EQ(spec.name(), "smoke");
  ASSERT_TRUE(spec.has_probe());
  EXPECT_EQ(spec.probe().steps(), 3);
  EXPECT_EQ(spec.probe().step_ms(), 7);
}

TEST(ProbeFlags, DefaultStepsUnset) {
  const v1::JobSpec spec = BuildOk(NewProbeCommand(), {});
  ASSERT_TRUE(spec.has_probe());
  EXPECT_FALSE(spec.probe().has_steps());
}

TEST(LayerwiseFlags, DefaultsAndSeedNames) {
  const v1::JobSpec defaults = BuildOk(NewLayerwiseCommand(), {"--model", "/m", "--kd-cache-dir", "/c"});
  const v1::LayerwiseSpec& d = defaults.layerwise();
  EXPECT_EQ(d.model(), "/m");
  EXPECT_EQ(d.kd_cache_dir(), "/c");
  EXPECT_FALSE(d.has_train_scales());
  EXPECT_FALSE(d.has_lr());
  EXPECT_FALSE(d.has_batch_size());
  EXPECT_FALSE(d.has_epochs_per_layer());
  EXPECT_FALSE(d.quant().has_lut_size());
  EXPECT_FALSE(d.quant().has_group_size());
  EXPECT_FALSE(d.quant().has_attn_scale_rank());
  EXPECT_EQ(d.layers_size(), 0);

  const v1::JobSpec spec = BuildOk(NewLayerwiseCommand(), {"--model",
                                                           "/m",
                                                           "--kd-cache",
                                                           "/c",
                                                           "--scale-lr",
                                                           "2e-3",
                                                           "--scale-batch-size",
                                                           "16",
                                                           "--scale-epochs",
                                                           "3",
                                                           "--scale-steps",
                                                           "100",
                                                           "--local-weight",
                                                           "0.7",
                                                           "--global-weight",
                                                           "0.3",
                                                           "--local-tokens",
                                                           "64",
                                                           "--layers",
                                                           "0,2,5",
                                                           "--no-train-scales",
                                                           "--train-weights",
                                                           "--lut-size",
                                                           "16",
                                                           "--group-size",
                                                           "32",
                                                           "--scale-rank",
                                                           "4",
                                                           "--quantize-attn",
                                                           "--attn-scale-rank",
                                                           "8",
                                                           "--save-quantized-dir",
                                                           "/o"});
  const v1::LayerwiseSpec& l = spec.layerwise();
  EXPECT_DOUBLE_EQ(l.lr(), 2e-3);
  EXPECT_EQ(l.batch_size(), 16);
  EXPECT_EQ(l.epochs_per_layer(), 3);
  EXPECT_EQ(l.steps_per_layer(), 100);
  EXPECT_DOUBLE_EQ(l.local_weight(), 0.7);
  EXPECT_DOUBLE_EQ(l.global_weight(), 0.3);
  EXPECT_EQ(l.local_tokens(), 64);
  EXPECT_EQ(std::vector<int>(l.layers().begin(), l.layers().end()), (std::vector<int>{0, 2, 5}));
  ASSERT_TRUE(l.has_train_scales());
  EXPECT_FALSE(l.train_scales());
  EXPECT_TRUE(l.train_weights());
  EXPECT_EQ(l.quant().lut_size(), 16);
  EXPECT_EQ(l.quant().group_size(), 32);
  EXPECT_EQ(l.quant().scale_rank(), 4);
  EXPECT_TRUE(l.quant().quantize_attn());
  EXPECT_EQ(l.quant().attn_scale_rank(), 8);
  EXPECT_EQ(l.output_dir(), "/o");
}

TEST(QatFlags, V1DefaultsLeaveOptionalFieldsUnset) {
  const v1::JobSpec spec = BuildOk(NewQatCommand(), {"--model", "/m", "--kd-cache", "/c", "--train-scales"});
  const v1::QatSpec& q = spec.qat();
  EXPECT_EQ(q.version(), v1::QAT_VERSION_V1);
  EXPECT_EQ(q.model(), "/m");
  EXPECT_EQ(q.kd_cache_dir(), "/c");
  EXPECT_TRUE(q.train_scales());
  EXPECT_FALSE(q.train_weights());
  EXPECT_FALSE(q.has_max_steps());
  EXPECT_FALSE(q.has_batch_size());
  EXPECT_FALSE(q.has_lr());
  EXPECT_FALSE(q.has_temperature());
  EXPECT_FALSE(q.has_hard_top1_weight());
  EXPECT_FALSE(q.has_hard_full_weight());
  EXPECT_FALSE(q.has_logging_steps());
  EXPECT_FALSE(q.has_eval_steps());
  EXPECT_FALSE(q.has_eval_samples());
  EXPECT_FALSE(q.has_cosine());
  EXPECT_FALSE(q.has_warmup_steps());
  EXPECT_FALSE(q.has_min_lr_ratio());
  EXPECT_FALSE(q.has_grad_accum());
  EXPECT_FALSE(q.has_weight_decay());
  EXPECT_FALSE(q.has_quant());
  EXPECT_FALSE(q.has_quant_v2());
}

TEST(QatFlags, V1FlagsFromTheSeedRecipe) {
  const v1::JobSpec spec = BuildOk(NewQatCommand(), {"--model",
                                                     "/m",
                                                     "--kd-cache-dir",
                                                     "/c",
                                                     "--train-weights",
                                                     "--lut-size",
                                                     "16",
                                                     "--group-size",
                                                     "32",
                                                     "--scale-rank",
                                                     "4",
                                                     "--quantize-attn",
                                                     "--attn-lut-size",
                                                     "16",
                                                     "--attn-group-size",
                                                     "64",
                                                     "--attn-scale-rank",
                                                     "8",
                                                     "--max-steps",
                                                     "3000",
                                                     "--batch-size",
                                                     "64",
                                                     "--lr",
                                                     "5e-6",
                                                     "--hard-top1-weight",
                                                     "0.1",
                                                     "--hard-full-weight",
                                                     "0.0005",
                                                     "--temperature",
                                                     "2.5",
                                                     "--logging-steps",
                                                     "10",
                                                     "--eval-steps",
                                                     "100",
                                                     "--eval-samples",
                                                     "20",
                                                     "--save-steps",
                                                     "500",
                                                     "--cosine",
                                                     "--warmup-steps",
                                                     "50",
                                                     "--min-lr-ratio",
                                                     "0.2",
                                                     "--clip-grad-norm",
                                                     "1.0",
                                                     "--init-state",
                                                     "/ckpt",
                                                     "--snap-weights",
                                                     "--snap-bake-scales",
                                                     "--dtype",
                                                     "bf16",
                                                     "--seed",
                                                     "3",
                                                     "--output-dir",
                                                     "/o",
                                                     "--priority",
                                                     "2",
                                                     "--grad-accum",
                                                     "4",
                                                     "--weight-decay",
                                                     "0",
                                                     "--early-stop-patience",
                                                     "3"});
  const v1::QatSpec& q = spec.qat();
  EXPECT_TRUE(q.train_weights());
  EXPECT_EQ(q.quant().lut_size(), 16);
  EXPECT_EQ(q.quant().group_size(), 32);
  EXPECT_EQ(q.quant().scale_rank(), 4);
  EXPECT_TRUE(q.quant().quantize_attn());
  EXPECT_EQ(q.quant().attn_lut_size(), 16);
  EXPECT_EQ(q.quant().attn_group_size(), 64);
  EXPECT_EQ(q.quant().attn_scale_rank(), 8);
  EXPECT_EQ(q.max_steps(), 3000);
  EXPECT_EQ(q.batch_size(), 64);
  EXPECT_DOUBLE_EQ(q.lr(), 5e-6);
  EXPECT_DOUBLE_EQ(q.hard_top1_weight(), 0.1);
  EXPECT_DOUBLE_EQ(q.hard_full_weight(), 0.0005);
  EXPECT_DOUBLE_EQ(q.temperature(), 2.5);
  EXPECT_EQ(q.logging_steps(), 10);
  EXPECT_EQ(q.eval_steps(), 100);
  EXPECT_EQ(q.eval_samples(), 20);
  EXPECT_EQ(q.save_steps(), 500);
  EXPECT_TRUE(q.cosine());
  EXPECT_EQ(q.warmup_steps(), 50);
  EXPECT_DOUBLE_EQ(q.min_lr_ratio(), 0.2);
  EXPECT_DOUBLE_EQ(q.clip_grad_norm(), 1.0);
  EXPECT_EQ(q.init_state(), "/ckpt");
  EXPECT_TRUE(q.snap_weights());
  EXPECT_TRUE(q.snap_bake_scales());
  EXPECT_EQ(q.dtype(), v1::DTYPE_BF16);
  EXPECT_EQ(q.seed(), 3);
  EXPECT_EQ(q.output_dir(), "/o");
  EXPECT_EQ(spec.priority(), 2);
  EXPECT_EQ(q.grad_accum(), 4);
  ASSERT_TRUE(q.has_weight_decay());  // 0 was given: not the default 0.01
  EXPECT_EQ(q.weight_decay(), 0);
  EXPECT_EQ(q.early_stop_patience(), 3);
  EXPECT_FALSE(q.has_quant_v2());
}

TEST(QatFlags, V2RoutesLutFlagsToQuantV2WhateverTheOrder) {
  for (const auto& args :
       std::vector<std::vector<std::string>>{{"--v2", "--model", "/m", "--kd-cache", "/c", "--v2-checkpoint", "/q2",
                                              "--lut-size", "4", "--scale-rank", "32"},
                                             {"--lut-size", "4", "--scale-rank", "32", "--model", "/m", "--kd-cache",
                                              "/c", "--v2-checkpoint", "/q2", "--v2"}}) {
    const v1::JobSpec spec = BuildOk(NewQatCommand(), args);
    const v1::QatSpec& q = spec.qat();
    EXPECT_EQ(q.version(), v1::QAT_VERSION_V2);
    EXPECT_EQ(q.v2_init(), v1::V2_INIT_FROM_V2);
    EXPECT_EQ(q.v2_checkpoint(), "/q2");
    EXPECT_EQ(q.quant_v2().lut_size(), 4);
    EXPECT_EQ(q.quant_v2().scale_rank(), 32);
    EXPECT_FALSE(q.has_quant());
    EXPECT_FALSE(q.has_lr());  // the V2 default (5e-5) is the daemon's
  }
}

TEST(QatFlags, V2InitModes) {
  EXPECT_EQ(BuildOk(NewQatCommand(), {"--v2", "--v1-checkpoint", "/v1"}).qat().v2_init(), v1::V2_INIT_FROM_V1);
  EXPECT_EQ(BuildOk(NewQatCommand(), {"--v2", "--v1-checkpoint", "/v1"}).qat().v1_checkpoint(), "/v1");
  EXPECT_EQ(BuildOk(NewQatCommand(), {"--v2", "--from-scratch"}).qat().v2_init(), v1::V2_INIT_FROM_SCRATCH);
  const v1::JobSpec v2 = BuildOk(NewQatCommand(), {"--v2", "--train-mlp-only", "--no-cosine", "--no-ste-fp16",
                                                   "--magnitude-activation", "softplus"});
  EXPECT_TRUE(v2.qat().train_mlp_only());
  ASSERT_TRUE(v2.qat().has_cosine());
  EXPECT_FALSE(v2.qat().cosine());
  ASSERT_TRUE(v2.qat().quant_v2().has_use_ste_fp16());
  EXPECT_FALSE(v2.qat().quant_v2().use_ste_fp16());
  EXPECT_EQ(v2.qat().quant_v2().magnitude_activation(), v1::MAGNITUDE_ACTIVATION_SOFTPLUS);
}

TEST(QatFlags, LocalContradictionsNameTheFlags) {
  auto error = [](std::vector<std::string> args) {
    auto command = NewQatCommand();
    absl::StatusOr<v1::JobSpec> spec = Build(*command, std::move(args));
    EXPECT_FALSE(spec.ok());
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(spec.status().message());
  };
  std::string m = error({"--v2", "--v1-checkpoint", "/a", "--v2-checkpoint", "/b"});
  EXPECT_NE(m.find("--v1-checkpoint"), std::string::npos) << m;
  EXPECT_NE(m.find("--v2-checkpoint"), std::string::npos) << m;
  m = error({"--v1-checkpoint", "/a"});
  EXPECT_NE(m.find("--v1-checkpoint"), std::string::npos) << m;
  EXPECT_NE(m.find("--v2"), std::string::npos) << m;
  m = error({"--v2", "--quantize-attn"});
  EXPECT_NE(m.find("--quantize-attn"), std::string::npos) << m;
  m = error({"--v2", "--init-state", "/x"});
  EXPECT_NE(m.find("--init-state"), std::string::npos) << m;
}

TEST(QatFlags, BuildIsRepeatable) {
  auto command = NewQatCommand();
  CLI::App app{"test"};
  command->Register(&app);
  std::vector<std::string> args = {"/b", "--v2-checkpoint", "--v2"};
  app.parse(args);
  absl::StatusOr<v1::JobSpec> first = command->Build();
  absl::StatusOr<v1::JobSpec> second = command->Build();
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(first->SerializeAsString(), second->SerializeAsString());
}

TEST(EnumFlags, UnknownNamesFailNamingTheFlag) {
  std::string m = ParseError(NewQatCommand(), {"--dtype", "bf17"});
  EXPECT_NE(m.find("--dtype"), std::string::npos) << m;
  EXPECT_NE(m.find("bf17"), std::string::npos) << m;
  EXPECT_NE(m.find("bf16"), std::string::npos) << m;  // the allowed names
  m = ParseError(NewKdCacheCommand(), {"--dataset-format", "csv"});
  EXPECT_NE(m.find("--dataset-format"), std::string::npos) << m;
  m = ParseError(NewKdCacheCommand(), {"--enable-thinking", "maybe"});
  EXPECT_NE(m.find("--enable-thinking"), std::string::npos) << m;
  m = ParseError(NewQatCommand(), {"--v2", "--magnitude-activation", "relu"});
  EXPECT_NE(m.find("--magnitude-activation"), std::string::npos) << m;
  m = ParseError(NewConvertCommand(), {"q8-to-q1"});
  EXPECT_NE(m.find("mode"), std::string::npos) << m;
  m = ParseError(NewQatCommand(), {"--max-steps", "many"});
  EXPECT_NE(m.find("--max-steps"), std::string::npos) << m;
}

TEST(ConvertFlags, ModesAndRanks) {
  const v1::JobSpec q2 = BuildOk(NewConvertCommand(), {"q4-to-q2", "--model", "/m", "--q4-checkpoint", "/q4"});
  EXPECT_EQ(q2.convert().mode(), v1::CONVERT_MODE_Q4_TO_Q2);
  EXPECT_EQ(q2.convert().checkpoint(), "/q4");
  EXPECT_FALSE(q2.convert().has_q2_mlp_rank());
  EXPECT_FALSE(q2.convert().has_q4_rank());
  const v1::JobSpec ranks = BuildOk(
      NewConvertCommand(), {"q4-to-q2", "--q4-rank", "4", "--q2-mlp-rank", "16", "--q2-attn-rank", "4",
                            "--q2-mlp-lut-size", "4", "--q2-attn-lut-size", "8", "--eval", "--cache-dir", "/c"});
  EXPECT_EQ(ranks.convert().q4_rank(), 4);
  EXPECT_EQ(ranks.convert().q2_mlp_rank(), 16);
  EXPECT_EQ(ranks.convert().q2_attn_rank(), 4);
  EXPECT_EQ(ranks.convert().q2_mlp_lut_size(), 4);
  EXPECT_EQ(ranks.convert().q2_attn_lut_size(), 8);
  EXPECT_TRUE(ranks.convert().eval());
  EXPECT_EQ(ranks.convert().kd_cache_dir(), "/c");
  EXPECT_FALSE(ranks.convert().has_eval_samples());
  // Issue #17: convert --eval always scored the last 40 sequences.
  EXPECT_EQ(BuildOk(NewConvertCommand(), {"q4-to-q2", "--eval", "--eval-samples", "12"}).convert().eval_samples(), 12);
  const v1::JobSpec v2 =
      BuildOk(NewConvertCommand(), {"v1-to-v2", "--v1-checkpoint", "/v1", "--lut-size", "4", "--scale-rank", "8"});
  EXPECT_EQ(v2.convert().mode(), v1::CONVERT_MODE_V1_TO_V2);
  EXPECT_EQ(v2.convert().source_quant().lut_size(), 4);
  EXPECT_EQ(v2.convert().source_quant().scale_rank(), 8);
}

TEST(ConvertFlags, ModeIsRequired) {
  EXPECT_NE(ParseError(NewConvertCommand(), {"--model", "/m"}).find("mode"), std::string::npos);
}

TEST(SnapFlags, DefaultsAndAne) {
  const v1::JobSpec d = BuildOk(NewSnapCommand(), {"--model", "/m", "--checkpoint", "/c"});
  EXPECT_FALSE(d.snap().has_lut_bits());
  EXPECT_FALSE(d.snap().has_test_generation());
  EXPECT_FALSE(d.snap().fp16());
  const v1::JobSpec s = BuildOk(NewSnapCommand(), {"--ane", "--no-test-generation", "--lut-bits", "2",
                                                   "--attn-lut-bits", "4", "--scale-rank", "32", "--output", "/o"});
  EXPECT_TRUE(s.snap().fp16());
  ASSERT_TRUE(s.snap().has_test_generation());
  EXPECT_FALSE(s.snap().test_generation());
  EXPECT_EQ(s.snap().lut_bits(), 2);
  EXPECT_EQ(s.snap().attn_lut_bits(), 4);
  EXPECT_EQ(s.snap().scale_rank(), 32);
  EXPECT_EQ(s.snap().output_dir(), "/o");
}

TEST(EvalFlags, DefaultsAndV2) {
  const v1::JobSpec d = BuildOk(NewEvalCommand(), {"--model", "/m", "--kd-cache", "/c"});
  EXPECT_EQ(d.eval().kd_cache_dir(), "/c");
  EXPECT_EQ(d.eval().version(), v1::QAT_VERSION_V1);
  EXPECT_FALSE(d.eval().has_eval_samples());
  EXPECT_FALSE(d.eval().has_batch_size());
  const v1::JobSpec e = BuildOk(NewEvalCommand(), {"--v2", "--eval-samples", "10", "--temperature", "1.5"});
  EXPECT_EQ(e.eval().version(), v1::QAT_VERSION_V2);
  EXPECT_EQ(e.eval().eval_samples(), 10);
  EXPECT_DOUBLE_EQ(e.eval().temperature(), 1.5);
}

TEST(GenerateFlags, DefaultsAndSwitches) {
  const v1::JobSpec d = BuildOk(NewGenerateCommand(), {"--model", "/m", "--prompt", "What is 2+2?"});
  const v1::GenerateSpec& g = d.generate();
  EXPECT_EQ(g.prompt(), "What is 2+2?");
  EXPECT_FALSE(g.has_chat_template());
  EXPECT_FALSE(g.has_enable_thinking());
  EXPECT_FALSE(g.has_max_new_tokens());
  EXPECT_FALSE(g.has_system_prompt());
  EXPECT_FALSE(g.has_temperature());
  EXPECT_FALSE(g.sample());
  const v1::JobSpec s = BuildOk(
      NewGenerateCommand(), {"--no-template", "--no-thinking", "--max-tokens", "32", "--sample", "--temperature", "0.7",
                             "--top-p", "0.95", "--system-prompt", "", "--v2", "--checkpoint", "/c"});
  EXPECT_TRUE(s.generate().has_chat_template());
  EXPECT_FALSE(s.generate().chat_template());
  EXPECT_TRUE(s.generate().has_enable_thinking());
  EXPECT_FALSE(s.generate().enable_thinking());
  EXPECT_EQ(s.generate().max_new_tokens(), 32);
  EXPECT_TRUE(s.generate().sample());
  EXPECT_DOUBLE_EQ(s.generate().temperature(), 0.7);
  EXPECT_DOUBLE_EQ(s.generate().top_p(), 0.95);
  ASSERT_TRUE(s.generate().has_system_prompt());  // "" = no system prompt, not "default"
  EXPECT_EQ(s.generate().system_prompt(), "");
  EXPECT_EQ(s.generate().version(), v1::QAT_VERSION_V2);
  EXPECT_EQ(s.generate().checkpoint(), "/c");
}

}  // namespace
}  // namespace qatd::client
