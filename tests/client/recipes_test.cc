// The built-in q4 / q2 pipelines: stage order, a DAG whose artifact inputs name real string
// fields of the stage's spec, the seed's step counts and learning rates, and flags.
#include "client/recipes.h"

#include <google/protobuf/text_format.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "client/submit.h"
#include "tests/common/temp_dir.h"

namespace qatd::client {
namespace {

absl::StatusOr<v1::PipelineSpec> BuildRecipe(Recipe recipe, std::vector<std::string> args) {
  CLI::App app{"test"};
  RecipeFlags flags;
  flags.Register(&app);
  std::vector<std::string> reversed(args.rbegin(), args.rend());
  app.parse(reversed);
  return flags.Build(recipe);
}

v1::PipelineSpec BuildOk(Recipe recipe, std::vector<std::string> args) {
  absl::StatusOr<v1::PipelineSpec> spec = BuildRecipe(recipe, std::move(args));
  EXPECT_TRUE(spec.ok()) << spec.status();
  return spec.ok() ? *spec : v1::PipelineSpec();
}

std::vector<std::string> StageNames(const v1::PipelineSpec& p) {
  std::vector<std::string> names;
  for (const auto& s : p.stages()) names.push_back(s.name());
  return names;
}

const v1::PipelineStage& Stage(const v1::PipelineSpec& p, const std::string& name) {
  for (const auto& s : p.stages()) {
    if (s.name() == name) return s;
  }
  ADD_FAILURE() << "no stage " << name;
  return v1::PipelineStage::default_instance();
}

// "from_stage:artifact_kind->field" for every input of a stage.
std::set<std::string> Inputs(const v1::PipelineStage& stage) {
  std::set<std::string> out;
  for (const auto& in : stage.inputs()) out.insert(in.from_stage() + ":" + in.artifact_kind() + "->" + in.field());
  return out;
}

// What the daemon checks (server/pipeline_plan.cc): unique names, dependencies and inputs
// naming earlier stages (so the stage list is already a topological order), and every fed
// field a singular string field of the stage's spec message.
void ExpectValidDag(const v1::PipelineSpec& p) {
  std::map<std::string, int> index;
  for (int i = 0; i < p.stages_size(); ++i) {
    const v1::PipelineStage& stage = p.stages(i);
    EXPECT_TRUE(index.emplace(stage.name(), i).second) << "duplicate stage " << stage.name();
    EXPECT_NE(stage.spec().kind_case(), v1::JobSpec::KIND_NOT_SET) << stage.name();
    for (const std::string& d : stage.depends_on()) {
      ASSERT_TRUE(index.count(d) && index[d] < i) << stage.name() << " depends on " << d;
    }
    const auto* oneof = v1::JobSpec::descriptor()->FindOneofByName("kind");
    const auto* active = stage.spec().GetReflection()->GetOneofFieldDescriptor(stage.spec(), oneof);
    ASSERT_NE(active, nullptr);
    for (const v1::ArtifactInput& in : stage.inputs()) {
      ASSERT_TRUE(index.count(in.from_stage()) && index[in.from_stage()] < i)
          << stage.name() << " reads from " << in.from_stage();
      EXPECT_FALSE(in.artifact_kind().empty());
      const auto* field = active->message_type()->FindFieldByName(in.field());
      ASSERT_NE(field, nullptr) << in.field() << " is not a field of " << active->message_type()->name();
      EXPECT_EQ(field->type(), google::protobuf::FieldDescriptor::TYPE_STRING) << in.field();
      EXPECT_FALSE(field->is_repeated()) << in.field();
    }
  }
}

TEST(Recipes, ByName) {
  EXPECT_EQ(RecipeByName("q4"), Recipe::kQ4);
  EXPECT_EQ(RecipeByName("q2"), Recipe::kQ2);
  EXPECT_FALSE(RecipeByName("q3").has_value());
}

TEST(Recipes, Q4FollowsTheSeedsRecommendedPipeline) {
  const v1::PipelineSpec p = BuildOk(Recipe::kQ4, {"--model", "/m", "--dataset", "/d.json", "--recipe", "seed"});
  EXPECT_EQ(p.name(), "q4");
  EXPECT_EQ(StageNames(p), (std::vector<std::string>{"cache", "scales", "weights", "both", "snap", "infer"}));
  ExpectValidDag(p);

  const v1::KdCacheSpec& cache = Stage(p, "cache").spec().kd_cache();
  EXPECT_EQ(cache.teacher_model(), "/m");
  EXPECT_EQ(cache.dataset(), "/d.json");
  EXPECT_TRUE(Stage(p, "cache").inputs().empty());
  // Issue #17: `qat pipeline run q4 --dataset alpaca.json` sent plain; the daemon now detects it.
  EXPECT_EQ(cache.dataset_format(), v1::DATASET_FORMAT_AUTO);

  const v1::QatSpec& scales = Stage(p, "scales").spec().qat();
  EXPECT_EQ(scales.version(), v1::QAT_VERSION_V1);
  EXPECT_TRUE(scales.train_scales());
  EXPECT_FALSE(scales.train_weights());
  EXPECT_DOUBLE_EQ(scales.lr(), 1e-3);
  EXPECT_EQ(scales.max_steps(), 500);
  EXPECT_EQ(scales.model(), "/m");
  EXPECT_EQ(Inputs(Stage(p, "scales")), (std::set<std::string>{"cache:kd_cache->kd_cache_dir"}));

  const v1::QatSpec& weights = Stage(p, "weights").spec().qat();
  EXPECT_TRUE(weights.train_weights());
  EXPECT_FALSE(weights.train_scales());
  EXPECT_DOUBLE_EQ(weights.lr(), 5e-6);
  EXPECT_EQ(weights.max_steps(), 3000);
  EXPECT_DOUBLE_EQ(weights.hard_top1_weight(), 0.1);
  EXPECT_DOUBLE_EQ(weights.hard_full_weight(), 0.0005);
  EXPECT_EQ(Inputs(Stage(p, "weights")),
            (std::set<std::string>{"cache:kd_cache->kd_cache_dir", "scales:checkpoint->init_state"}));

  const v1::QatSpec& both = Stage(p, "both").spec().qat();
  EXPECT_TRUE(both.train_weights());
  EXPECT_TRUE(both.train_scales());
  EXPECT_DOUBLE_EQ(both.lr(), 1e-6);
  EXPECT_EQ(both.max_steps(), 1000);
  EXPECT_EQ(Inputs(Stage(p, "both")),
            (std::set<std::string>{"cache:kd_cache->kd_cache_dir", "weights:checkpoint->init_state"}));

  const v1::QatSpec& snap = Stage(p, "snap").spec().qat();
  EXPECT_TRUE(snap.skip_training());
  EXPECT_TRUE(snap.snap_weights());
  EXPECT_TRUE(snap.kd_cache_dir().empty());
  // The snap stage also gets the cache, to report the snapped model's held-out KD loss.
  EXPECT_EQ(Inputs(Stage(p, "snap")),
            (std::set<std::string>{"both:checkpoint->init_state", "cache:kd_cache->kd_cache_dir"}));

  const v1::GenerateSpec& infer = Stage(p, "infer").spec().generate();
  EXPECT_EQ(infer.model(), "/m");
  EXPECT_FALSE(infer.prompt().empty());
  EXPECT_EQ(infer.version(), v1::QAT_VERSION_V1);
  EXPECT_EQ(Inputs(Stage(p, "infer")), (std::set<std::string>{"snap:checkpoint->checkpoint"}));
}

TEST(Recipes, Q2IsTheProgressivePipeline) {
  const v1::PipelineSpec p =
      BuildOk(Recipe::kQ2, {"--model", "/m", "--dataset", "/d.json", "--scale-rank", "4", "--recipe", "seed"});
  EXPECT_EQ(p.name(), "q2");
  EXPECT_EQ(StageNames(p), (std::vector<std::string>{"cache", "scales", "convert", "v2", "snap", "infer"}));
  ExpectValidDag(p);

  EXPECT_TRUE(Stage(p, "scales").spec().qat().train_scales());
  EXPECT_EQ(Stage(p, "scales").spec().qat().version(), v1::QAT_VERSION_V1);

  const v1::ConvertSpec& convert = Stage(p, "convert").spec().convert();
  EXPECT_EQ(convert.mode(), v1::CONVERT_MODE_Q4_TO_Q2);
  EXPECT_EQ(convert.model(), "/m");
  EXPECT_EQ(convert.q4_rank(), 4);  // follows --scale-rank of the Q4 stage
  EXPECT_EQ(Inputs(Stage(p, "convert")), (std::set<std::string>{"scales:checkpoint->checkpoint"}));

  const v1::QatSpec& v2 = Stage(p, "v2").spec().qat();
  EXPECT_EQ(v2.version(), v1::QAT_VERSION_V2);
  EXPECT_EQ(v2.v2_init(), v1::V2_INIT_FROM_V2);
  EXPECT_TRUE(v2.train_scales());
  EXPECT_EQ(v2.max_steps(), 1000);
  EXPECT_FALSE(v2.has_lr());  // the V2 default
  EXPECT_EQ(Inputs(Stage(p, "v2")),
            (std::set<std::string>{"cache:kd_cache->kd_cache_dir", "convert:checkpoint->v2_checkpoint"}));

  const v1::SnapSpec& snap = Stage(p, "snap").spec().snap();
  EXPECT_EQ(snap.model(), "/m");
  EXPECT_EQ(Inputs(Stage(p, "snap")), (std::set<std::string>{"v2:checkpoint->checkpoint"}));

  EXPECT_EQ(Stage(p, "infer").spec().generate().version(), v1::QAT_VERSION_V2);
  EXPECT_EQ(Inputs(Stage(p, "infer")), (std::set<std::string>{"snap:checkpoint->checkpoint"}));
}

// --recover-steps N (issue #19): a LORA stage on the snapped checkpoint, whose adapter the
// infer stage applies; absent or 0: no stage.
// Issue #18: the default recipe carries what bench/quality measured better; --recipe seed
// keeps the seed's values; an explicit flag wins over both.
TEST(Recipes, QatdDefaultsAreTheBenchmarksWinnersAndSeedKeepsTheSeeds) {
  const v1::PipelineSpec q4 = BuildOk(Recipe::kQ4, {"--model", "/m", "--dataset", "/d"});
  EXPECT_DOUBLE_EQ(Stage(q4, "scales").spec().qat().lr(), 1e-3);  // 16 entries: the seed's (measured better)
  // Stop 29: k-means LUTs won at 16 entries too (Q4_A4 0.0986 -> 0.0855 on bench/quality).
  for (const char* stage : {"scales", "weights", "both", "snap"}) {
    EXPECT_EQ(Stage(q4, stage).spec().qat().quant().lut_init(), "kmeans") << stage;
  }
  for (const std::vector<std::string>& two_bit : {std::vector<std::string>{"--lut-size", "4"},
                                                  std::vector<std::string>{"--preset", "Q2_A4"}}) {
    std::vector<std::string> args{"--model", "/m", "--dataset", "/d"};
    args.insert(args.end(), two_bit.begin(), two_bit.end());
    const v1::PipelineSpec q2v1 = BuildOk(Recipe::kQ4, args);
    for (const char* stage : {"scales", "weights", "both", "snap"}) {
      EXPECT_EQ(Stage(q2v1, stage).spec().qat().quant().lut_init(), "kmeans") << stage << " " << two_bit[0];
    }
    EXPECT_DOUBLE_EQ(Stage(q2v1, "scales").spec().qat().lr(), 1e-4) << two_bit[0];
    // A 2-bit weights stage needs a larger lr to move weights across the wide LUT cells.
    EXPECT_DOUBLE_EQ(Stage(q2v1, "weights").spec().qat().lr(), 3e-5) << two_bit[0];
    EXPECT_DOUBLE_EQ(Stage(q2v1, "both").spec().qat().lr(), 5e-6) << two_bit[0];
  }
  EXPECT_DOUBLE_EQ(Stage(q4, "weights").spec().qat().lr(), 5e-6);
  EXPECT_DOUBLE_EQ(Stage(q4, "both").spec().qat().lr(), 1e-6);
  const v1::PipelineSpec q2 = BuildOk(Recipe::kQ2, {"--model", "/m", "--dataset", "/d"});
  EXPECT_DOUBLE_EQ(Stage(q2, "scales").spec().qat().lr(), 1e-4);
  EXPECT_DOUBLE_EQ(Stage(q2, "v2").spec().qat().lr(), 2e-4);
  EXPECT_EQ(Stage(q2, "v2").spec().qat().max_steps(), 3000);  // longer V2 ended lower, twice
  EXPECT_EQ(Stage(BuildOk(Recipe::kQ2, {"--model", "/m", "--dataset", "/d", "--v2-steps", "700"}), "v2")
                .spec()
                .qat()
                .max_steps(),
            700);
  EXPECT_EQ(Stage(q2, "scales").spec().qat().quant().lut_init(), "");  // convert reads the Q4 grid
  EXPECT_TRUE(Stage(q2, "v2").spec().qat().train_lut());
  EXPECT_FALSE(Stage(BuildOk(Recipe::kQ2, {"--model", "/m", "--dataset", "/d", "--no-v2-train-lut"}), "v2")
                   .spec()
                   .qat()
                   .train_lut());

  const v1::PipelineSpec seed = BuildOk(Recipe::kQ4, {"--model", "/m", "--dataset", "/d", "--recipe", "seed"});
  EXPECT_DOUBLE_EQ(Stage(seed, "scales").spec().qat().lr(), 1e-3);
  EXPECT_EQ(Stage(seed, "weights").spec().qat().quant().lut_init(), "");
  const v1::PipelineSpec seed2 = BuildOk(Recipe::kQ2, {"--model", "/m", "--dataset", "/d", "--recipe", "seed"});
  EXPECT_FALSE(Stage(seed2, "v2").spec().qat().has_lr());
  EXPECT_EQ(Stage(seed2, "v2").spec().qat().max_steps(), 1000);
  EXPECT_FALSE(Stage(seed2, "v2").spec().qat().train_lut());
  EXPECT_TRUE(Stage(BuildOk(Recipe::kQ2, {"--model", "/m", "--dataset", "/d", "--recipe", "seed", "--v2-train-lut"}),
                    "v2")
                  .spec()
                  .qat()
                  .train_lut());
  const v1::PipelineSpec seed3 =
      BuildOk(Recipe::kQ4, {"--model", "/m", "--dataset", "/d", "--recipe", "seed", "--lut-size", "4"});
  EXPECT_DOUBLE_EQ(Stage(seed3, "weights").spec().qat().lr(), 5e-6);
  EXPECT_DOUBLE_EQ(Stage(seed3, "both").spec().qat().lr(), 1e-6);

  const v1::PipelineSpec given = BuildOk(Recipe::kQ4, {"--model", "/m", "--dataset", "/d", "--scales-lr", "3e-3",
                                                      "--lut-size", "4", "--lut-init", "uniform"});
  EXPECT_DOUBLE_EQ(Stage(given, "scales").spec().qat().lr(), 3e-3);
  EXPECT_EQ(Stage(given, "weights").spec().qat().quant().lut_init(), "uniform");
  const v1::PipelineSpec given2 =
      BuildOk(Recipe::kQ2, {"--model", "/m", "--dataset", "/d", "--recipe", "seed", "--v2-lr", "1e-4"});
  EXPECT_DOUBLE_EQ(Stage(given2, "v2").spec().qat().lr(), 1e-4);
}

// --convert-rounding gptq calibrates on the KD cache: the convert stage is fed the cache (or
// given --kd-cache) and keeps the stages' held-out sequences out; --convert-lut-init passes on.
TEST(Recipes, ConvertRoundingAndLutInitReachTheConvertStage) {
  // --recipe seed: the spec's conversion (nearest indices, LUT-value k-means), no cache needed.
  const v1::PipelineSpec plain = BuildOk(Recipe::kQ2, {"--model", "/m", "--dataset", "/d", "--recipe", "seed"});
  EXPECT_TRUE(Stage(plain, "convert").spec().convert().rounding().empty());
  EXPECT_TRUE(Stage(plain, "convert").spec().convert().lut_init().empty());
  EXPECT_EQ(Inputs(Stage(plain, "convert")), (std::set<std::string>{"scales:checkpoint->checkpoint"}));
  const v1::PipelineSpec off = BuildOk(Recipe::kQ2, {"--model", "/m", "--dataset", "/d", "--convert-rounding",
                                                     "nearest", "--convert-lut-init", "values"});
  EXPECT_EQ(Stage(off, "convert").spec().convert().rounding(), "nearest");
  EXPECT_EQ(Stage(off, "convert").spec().convert().lut_init(), "values");

  // The qatd default (bench/quality: final kd 0.743 -> 0.537) and the flags, explicit.
  const v1::PipelineSpec dflt = BuildOk(Recipe::kQ2, {"--model", "/m", "--dataset", "/d"});
  EXPECT_EQ(Stage(dflt, "convert").spec().convert().rounding(), "gptq");
  EXPECT_EQ(Stage(dflt, "convert").spec().convert().lut_init(), "kmeans");
  const v1::PipelineSpec p =
      BuildOk(Recipe::kQ2, {"--model", "/m", "--dataset", "/d", "--convert-rounding", "gptq", "--convert-lut-init",
                            "kmeans", "--eval-samples", "50", "--calibration-sequences", "64"});
  ExpectValidDag(p);
  const v1::ConvertSpec& c = Stage(p, "convert").spec().convert();
  EXPECT_EQ(c.rounding(), "gptq");
  EXPECT_EQ(c.lut_init(), "kmeans");
  EXPECT_EQ(c.eval_samples(), 50);
  EXPECT_EQ(c.calibration_sequences(), 64);
  EXPECT_EQ(Inputs(Stage(p, "convert")),
            (std::set<std::string>{"scales:checkpoint->checkpoint", "cache:kd_cache->kd_cache_dir"}));

  const v1::PipelineSpec given =
      BuildOk(Recipe::kQ2, {"--model", "/m", "--kd-cache", "/c", "--convert-rounding", "gptq"});
  EXPECT_EQ(Stage(given, "convert").spec().convert().kd_cache_dir(), "/c");
  EXPECT_EQ(Inputs(Stage(given, "convert")), (std::set<std::string>{"scales:checkpoint->checkpoint"}));
}

TEST(Recipes, LayerwiseStageBeforeWeightsOnlyWithLblSteps) {
  const v1::PipelineSpec plain = BuildOk(Recipe::kQ4, {"--model", "/m", "--dataset", "/d"});
  EXPECT_EQ(StageNames(plain), (std::vector<std::string>{"cache", "scales", "weights", "both", "snap", "infer"}));

  const v1::PipelineSpec p = BuildOk(Recipe::kQ4, {"--model", "/m", "--dataset", "/d", "--lut-size", "4",
                                                   "--quantize-attn", "--lbl-steps", "200", "--lbl-lr", "1e-5",
                                                   "--steps-scale", "0.5", "--batch-size", "16", "--eval-samples",
                                                   "50"});
  ExpectValidDag(p);
  EXPECT_EQ(StageNames(p),
            (std::vector<std::string>{"cache", "scales", "layerwise", "weights", "both", "snap", "infer"}));
  const v1::LayerwiseSpec& l = Stage(p, "layerwise").spec().layerwise();
  EXPECT_EQ(l.model(), "/m");
  EXPECT_TRUE(l.train_weights());
  ASSERT_TRUE(l.has_train_scales());
  EXPECT_FALSE(l.train_scales());
  EXPECT_EQ(l.steps_per_layer(), 100);
  EXPECT_DOUBLE_EQ(l.lr(), 1e-5);
  EXPECT_EQ(l.batch_size(), 16);
  EXPECT_EQ(l.eval_samples(), 50);
  // The E2E stages' quantization, with their group size (the layerwise job's own default is 128).
  EXPECT_EQ(l.quant().lut_size(), 4);
  EXPECT_TRUE(l.quant().quantize_attn());
  EXPECT_EQ(l.quant().group_size(), 32);
  EXPECT_EQ(Inputs(Stage(p, "layerwise")),
            (std::set<std::string>{"scales:checkpoint->init_state", "cache:kd_cache->kd_cache_dir"}));
  EXPECT_EQ(Inputs(Stage(p, "weights")),
            (std::set<std::string>{"layerwise:checkpoint->init_state", "cache:kd_cache->kd_cache_dir"}));

  absl::StatusOr<v1::PipelineSpec> bad = BuildRecipe(Recipe::kQ2, {"--model", "/m", "--dataset", "/d", "--lbl-steps", "5"});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--lbl-steps"), std::string::npos) << bad.status();
  bad = BuildRecipe(Recipe::kQ4, {"--model", "/m", "--dataset", "/d", "--lbl-steps", "-1"});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--lbl-steps"), std::string::npos) << bad.status();
}

// --train-seed (issue #18: the benchmark's run-to-run noise) reaches every training stage.
TEST(Recipes, TrainSeedReachesEveryTrainingStage) {
  const v1::PipelineSpec q4 =
      BuildOk(Recipe::kQ4, {"--model", "/m", "--kd-cache", "/c", "--train-seed", "8", "--lbl-steps", "2"});
  for (const char* stage : {"scales", "weights", "both"}) EXPECT_EQ(Stage(q4, stage).spec().qat().seed(), 8) << stage;
  EXPECT_EQ(Stage(q4, "layerwise").spec().layerwise().seed(), 8);
  const v1::PipelineSpec q2 = BuildOk(Recipe::kQ2, {"--model", "/m", "--kd-cache", "/c", "--train-seed", "8"});
  for (const char* stage : {"scales", "v2"}) EXPECT_EQ(Stage(q2, stage).spec().qat().seed(), 8) << stage;
  EXPECT_EQ(Stage(BuildOk(Recipe::kQ2, {"--model", "/m", "--kd-cache", "/c"}), "v2").spec().qat().seed(), 0);
}

TEST(Recipes, KdRandNegReachesEveryTrainingStage) {
  for (Recipe r : {Recipe::kQ4, Recipe::kQ2}) {
    const v1::PipelineSpec off = BuildOk(r, {"--model", "/m", "--kd-cache", "/c"});
    const v1::PipelineSpec on = BuildOk(r, {"--model", "/m", "--kd-cache", "/c", "--kd-rand-neg"});
    int training = 0;
    for (int i = 0; i < on.stages_size(); ++i) {
      if (!on.stages(i).spec().has_qat() || on.stages(i).spec().qat().skip_training()) continue;
      ++training;
      EXPECT_TRUE(on.stages(i).spec().qat().kd_rand_neg()) << on.stages(i).name();
      EXPECT_FALSE(off.stages(i).spec().qat().kd_rand_neg()) << off.stages(i).name();
    }
    EXPECT_EQ(training, r == Recipe::kQ4 ? 3 : 2);
  }
}

TEST(Recipes, AnUnknownRecipeIsRefusedByTheParser) {
  CLI::App app{"test"};
  RecipeFlags flags;
  flags.Register(&app);
  std::vector<std::string> args{"bogus", "--recipe", "/m", "--model"};  // reversed, as CLI11 takes them
  EXPECT_THROW(app.parse(args), CLI::ValidationError);
}

TEST(Recipes, RecoverStageOnlyWithRecoverSteps) {
  for (Recipe recipe : {Recipe::kQ2, Recipe::kQ4}) {
    const v1::PipelineSpec plain = BuildOk(recipe, {"--model", "/m", "--dataset", "/d.json"});
    for (const auto& s : plain.stages()) EXPECT_NE(s.name(), "recover");
    const v1::PipelineSpec zero = BuildOk(recipe, {"--model", "/m", "--dataset", "/d.json", "--recover-steps", "0"});
    EXPECT_EQ(StageNames(zero), StageNames(plain));

    const v1::PipelineSpec p = BuildOk(recipe, {"--model", "/m", "--dataset", "/d.json", "--recover-steps", "300",
                                                "--recover-rank", "8", "--recover-lr", "1e-3", "--steps-scale", "0.1"});
    ExpectValidDag(p);
    std::vector<std::string> names = StageNames(plain);
    names.insert(names.end() - 1, "recover");  // between snap and infer
    EXPECT_EQ(StageNames(p), names);
    const v1::LoraSpec& l = Stage(p, "recover").spec().lora();
    EXPECT_EQ(l.model(), "/m");
    EXPECT_EQ(l.max_steps(), 30);
    EXPECT_EQ(l.rank(), 8);
    EXPECT_DOUBLE_EQ(l.lr(), 1e-3);
    EXPECT_EQ(Inputs(Stage(p, "recover")),
              (std::set<std::string>{"cache:kd_cache->kd_cache_dir", "snap:checkpoint->checkpoint"}));
    EXPECT_EQ(Inputs(Stage(p, "infer")),
              (std::set<std::string>{"snap:checkpoint->checkpoint", "recover:adapter->adapter"}));
  }
  EXPECT_FALSE(BuildRecipe(Recipe::kQ2, {"--model", "/m", "--dataset", "/d.json", "--recover-steps", "-1"}).ok());
}

TEST(Recipes, StepsScaleAndPerStageFlags) {
  const v1::PipelineSpec p =
      BuildOk(Recipe::kQ4, {"--model", "/m", "--dataset", "/d", "--steps-scale", "0.01", "--weights-lr", "2e-5",
                            "--both-steps", "50", "--batch-size", "8", "--lut-size", "16", "--quantize-attn"});
  EXPECT_EQ(Stage(p, "scales").spec().qat().max_steps(), 5);
  EXPECT_EQ(Stage(p, "weights").spec().qat().max_steps(), 30);
  EXPECT_EQ(Stage(p, "both").spec().qat().max_steps(), 1);  // 50 * 0.01 rounds to 1: never 0
  EXPECT_DOUBLE_EQ(Stage(p, "weights").spec().qat().lr(), 2e-5);
  for (const char* name : {"scales", "weights", "both"}) {
    EXPECT_EQ(Stage(p, name).spec().qat().batch_size(), 8) << name;
    EXPECT_EQ(Stage(p, name).spec().qat().quant().lut_size(), 16) << name;
    EXPECT_TRUE(Stage(p, name).spec().qat().quant().quantize_attn()) << name;
  }
  // The snap stage quantizes like the trained stages.
  EXPECT_TRUE(Stage(p, "snap").spec().qat().quant().quantize_attn());
  EXPECT_FALSE(Stage(p, "scales").spec().qat().has_eval_samples());
}

// The demo's prompt ("What sound does a cow make?") is answered by repeating the animal's
// name, which the seed's default repetition penalty 1.1 pushes away: the infer stage takes it.
TEST(Recipes, InferStageTakesTheRepetitionPenalty) {
  const v1::PipelineSpec p = BuildOk(Recipe::kQ4, {"--model", "/m", "--dataset", "/d", "--repetition-penalty", "1"});
  ASSERT_TRUE(Stage(p, "infer").spec().generate().has_repetition_penalty());
  EXPECT_DOUBLE_EQ(Stage(p, "infer").spec().generate().repetition_penalty(), 1.0);
  const v1::PipelineSpec d = BuildOk(Recipe::kQ2, {"--model", "/m", "--dataset", "/d"});
  EXPECT_FALSE(Stage(d, "infer").spec().generate().has_repetition_penalty());  // the seed's default
}

TEST(Recipes, AGivenDatasetFormatWins) {
  const v1::PipelineSpec p =
      BuildOk(Recipe::kQ4, {"--model", "/m", "--dataset", "/d.json", "--dataset-format", "sharegpt"});
  EXPECT_EQ(Stage(p, "cache").spec().kd_cache().dataset_format(), v1::DATASET_FORMAT_SHAREGPT);
  // Build is repeatable: the next build without the flag is auto again.
  const v1::PipelineSpec again = BuildOk(Recipe::kQ4, {"--model", "/m", "--dataset", "/d.json"});
  EXPECT_EQ(Stage(again, "cache").spec().kd_cache().dataset_format(), v1::DATASET_FORMAT_AUTO);
}

// Issue #17, item 2: `qat pipeline run` could not set the cache stage's dtype, and every stage
// is auto (bf16 on CUDA, fp32 on the CPU, resolved by the worker) unless a flag says otherwise.
TEST(Recipes, DtypesAreAutoUnlessGivenAndTheCacheHasItsOwn) {
  for (const Recipe recipe : {Recipe::kQ4, Recipe::kQ2}) {
    const v1::PipelineSpec d = BuildOk(recipe, {"--model", "/m", "--dataset", "/d"});
    for (const auto& stage : d.stages()) {
      const google::protobuf::Message* spec = nullptr;
      const auto* oneof = v1::JobSpec::descriptor()->FindOneofByName("kind");
      const auto* active = stage.spec().GetReflection()->GetOneofFieldDescriptor(stage.spec(), oneof);
      spec = &stage.spec().GetReflection()->GetMessage(stage.spec(), active);
      const auto* dtype = spec->GetDescriptor()->FindFieldByName("dtype");
      if (dtype == nullptr) continue;  // SNAP: the worker picks
      EXPECT_EQ(spec->GetReflection()->GetEnumValue(*spec, dtype), v1::DTYPE_AUTO) << stage.name();
    }
    const v1::PipelineSpec p =
        BuildOk(recipe, {"--model", "/m", "--dataset", "/d", "--cache-dtype", "fp32", "--dtype", "bf16"});
    EXPECT_EQ(Stage(p, "cache").spec().kd_cache().dtype(), v1::DTYPE_FP32);
    EXPECT_EQ(Stage(p, "scales").spec().qat().dtype(), v1::DTYPE_BF16);
    EXPECT_EQ(Stage(p, "infer").spec().generate().dtype(), v1::DTYPE_BF16);
    if (recipe == Recipe::kQ2) {
      EXPECT_EQ(Stage(p, "v2").spec().qat().dtype(), v1::DTYPE_BF16);
    } else {
      EXPECT_EQ(Stage(p, "both").spec().qat().dtype(), v1::DTYPE_BF16);
      EXPECT_EQ(Stage(p, "snap").spec().qat().dtype(), v1::DTYPE_BF16);
    }
  }
}

TEST(Recipes, ExistingCacheLeavesTheCacheStageOut) {
  const v1::PipelineSpec p = BuildOk(Recipe::kQ2, {"--model", "/m", "--kd-cache", "/cache"});
  EXPECT_EQ(StageNames(p), (std::vector<std::string>{"scales", "convert", "v2", "snap", "infer"}));
  ExpectValidDag(p);
  EXPECT_EQ(Stage(p, "scales").spec().qat().kd_cache_dir(), "/cache");
  const v1::PipelineSpec relative = BuildOk(Recipe::kQ2, {"--model", "m", "--kd-cache", "c"});
  const std::string cwd = std::filesystem::current_path().string();
  EXPECT_EQ(Stage(relative, "v2").spec().qat().model(), cwd + "/m");
  EXPECT_EQ(Stage(relative, "v2").spec().qat().kd_cache_dir(), cwd + "/c");
  EXPECT_EQ(Stage(p, "v2").spec().qat().kd_cache_dir(), "/cache");
  for (const auto& stage : p.stages()) {
    for (const auto& in : stage.inputs()) EXPECT_NE(in.from_stage(), "cache");
  }
}

TEST(Recipes, JobFlagsApplyToEveryStage) {
  const v1::PipelineSpec p =
      BuildOk(Recipe::kQ4, {"--model", "/m", "--dataset", "/d", "--priority", "3", "--devices", "2", "--name", "demo"});
  EXPECT_EQ(p.name(), "demo");
  for (const auto& stage : p.stages()) {
    EXPECT_EQ(stage.spec().priority(), 3) << stage.name();
    // Data parallel is for the training (QAT) stages; the others run on one device.
    EXPECT_EQ(stage.spec().resources().device_count(), stage.spec().has_qat() ? 2 : 1) << stage.name();
  }
}

TEST(Recipes, MissingInputsNameTheFlag) {
  absl::StatusOr<v1::PipelineSpec> p = BuildRecipe(Recipe::kQ4, {"--dataset", "/d"});
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("--model"), std::string::npos) << p.status();
  p = BuildRecipe(Recipe::kQ2, {"--model", "/m"});
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("--dataset"), std::string::npos) << p.status();
  p = BuildRecipe(Recipe::kQ2, {"--model", "/m", "--dataset", "/d", "--steps-scale", "0"});
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("--steps-scale"), std::string::npos) << p.status();
}

TEST(Recipes, TextFormatRoundTrip) {
  const v1::PipelineSpec p = BuildOk(Recipe::kQ2, {"--model", "/m", "--dataset", "/d"});
  qatd::testing::TempDir dir;
  const std::string file = dir.File("q2.textproto");
  {
    FILE* f = std::fopen(file.c_str(), "w");
    ASSERT_NE(f, nullptr);
    const std::string text = PipelineText(p);
    std::fwrite(text.data(), 1, text.size(), f);
    std::fclose(f);
  }
  absl::StatusOr<v1::PipelineSpec> read = ReadPipelineFile(file);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(p, *read));
}

TEST(Recipes, BadTextFormatReportsTheLine) {
  qatd::testing::TempDir dir;
  const std::string file = dir.File("bad.textproto");
  FILE* f = std::fopen(file.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs("name: \"x\"\nstages { nme: \"a\" }\n", f);
  std::fclose(f);
  absl::StatusOr<v1::PipelineSpec> read = ReadPipelineFile(file);
  ASSERT_FALSE(read.ok());
  EXPECT_NE(read.status().message().find("line 2"), std::string::npos) << read.status();
  EXPECT_FALSE(ReadPipelineFile(dir.File("missing.textproto")).ok());
}

}  // namespace
}  // namespace qatd::client
