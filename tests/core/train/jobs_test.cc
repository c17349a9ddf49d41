// The job functions end to end on the tiny peaked teacher: the seed's recommended 4-bit
// pipeline (scales -> weights -> both -> snap -> generate) and the Q4 -> Q2 progressive path
// (convert -> V2 training -> fp16 snap), each stage's held-out loss recorded and never worse
// than where the stage started.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "core/jobs/convert_options.h"
#include "core/jobs/model_jobs.h"
#include "core/jobs/qat_job.h"
#include "core/train/student.h"
#include "tests/core/train/train_fixture.h"

namespace qatd::train {
namespace {
namespace fs = std::filesystem;

jobs::QatOptions V1Stage(const std::string& name, const std::string& init) {
  jobs::QatOptions o;
  o.model = Teacher().teacher;
  o.train.kd_cache_dir = Teacher().cache;
  o.init_state = init;
  o.dtype = jobs::Dtype::kFp32;
  o.device = "cpu";
  o.quant.lut_size = 16;
  o.quant.group_size = 16;
  o.quant.scale_rank = 4;
  o.quant.quantize_attn = true;
  o.train.batch_size = 8;
  o.train.max_steps = 8;
  o.train.eval_steps = 4;
  o.train.logging_steps = 2;
  o.train.eval_samples = 12;
  o.train.output_dir = Scratch().File(name);
  return o;
}

struct StageResult {
  double initial, best, final_kd;
  std::string checkpoint;
};

StageResult RunStage(const jobs::QatOptions& o) {
  QuietReporter rep;
  jobs::CancelToken cancel;
  absl::Status s = jobs::RunQat(o, rep, cancel);
  EXPECT_TRUE(s.ok()) << s;
  StageResult r{rep.Last("eval/kd_initial"), rep.Last("eval/kd_best"), rep.Last("eval/kd_final"), rep.ArtifactOf("checkpoint")};
  EXPECT_FALSE(r.checkpoint.empty());
  EXPECT_TRUE(IsQatdCheckpoint(r.checkpoint)) << r.checkpoint;
  return r;
}

TEST(Jobs, Recommended4BitPipelineEndToEnd) {
  jobs::QatOptions scales = V1Stage("p4_scales", "");
  scales.train.train_scales = true;
  scales.train.lr = 2e-3;
  StageResult a = RunStage(scales);

  jobs::QatOptions weights = V1Stage("p4_weights", a.checkpoint);
  weights.train.train_weights = true;
  weights.train.lr = 1e-3;
  weights.train.hard_top1_weight = 0.1;
  weights.train.hard_full_weight = 0.0005;
  StageResult b = RunStage(weights);

  jobs::QatOptions both = V1Stage("p4_both", b.checkpoint);
  both.train.train_weights = both.train.train_scales = true;
  both.train.lr = 1e-4;
  StageResult c = RunStage(both);

  jobs::QatOptions snap = V1Stage("p4_snap", c.checkpoint);
  snap.skip_training = true;
  snap.snap_weights = true;
  StageResult d = RunStage(snap);

  std::printf("4-bit pipeline held-out kd: initial %.4f | scales %.4f | weights %.4f | both %.4f | snapped %.4f\n",
              a.initial, a.best, b.best, c.best, d.final_kd);
  // Each training stage starts where the previous one ended and never ends worse.
  EXPECT_NEAR(b.initial, a.best, 1e-4);
  EXPECT_NEAR(c.initial, b.best, 1e-4);
  EXPECT_LE(a.best, a.initial);
  EXPECT_LE(b.best, b.initial);
  EXPECT_LE(c.best, c.initial);
  EXPECT_LT(c.best, a.initial);  // the pipeline as a whole improves the quantized student
  // The 'lut' snap is exact for V1 (LUT[idx] * S is what the fake quant computes).
  EXPECT_NEAR(d.final_kd, c.best, 1e-3);
  for (const char* f : {"model_state_dict.pt", "indices.pt", "config.json", "model.safetensors"}) {
    EXPECT_TRUE(fs::exists(fs::path(d.checkpoint) / f)) << f;
  }
  EXPECT_TRUE(fs::exists(fs::path(scales.train.output_dir) / "best" / "best_state_dict.pt"));

  // Inference from the snapped checkpoint, streamed.
  jobs::GenerateJobOptions g;
  g.model = Teacher().teacher;
  g.tokenizer = kTokenizer;
  g.checkpoint = d.checkpoint;
  g.prompt = "What is 2+2?";
  g.max_new_tokens = 8;
  g.device = "cpu";
  QuietReporter rep;
  jobs::CancelToken cancel;
  ASSERT_TRUE(jobs::RunGenerateJob(g, rep, cancel).ok());
  EXPECT_GE(rep.Last("generate/tokens"), 1);
  EXPECT_FALSE(rep.text.empty());

  // EVAL of the unquantized teacher against its own cache: near-zero KD loss.
  jobs::EvalJobOptions e;
  e.model = Teacher().teacher;
  e.kd_cache_dir = Teacher().cache;
  e.eval_samples = 12;
  e.device = "cpu";
  QuietReporter erep;
  ASSERT_TRUE(jobs::RunEval(e, erep, cancel).ok());
  EXPECT_LT(erep.Last("eval/kd"), 1e-3);
  EXPECT_GT(erep.Last("eval/top1"), 0.99);
  e.checkpoint = d.checkpoint;
  QuietReporter erep2;
  ASSERT_TRUE(jobs::RunEval(e, erep2, cancel).ok());
  EXPECT_NEAR(erep2.Last("eval/kd"), d.final_kd, 1e-4);
}

// Q4 -> Q2 of `checkpoint` on the tiny teacher, evaluated before and after, into `name`.
jobs::ConvertOptions Q2Convert(const std::string& checkpoint, const std::string& name) {
  jobs::ConvertOptions c;
  c.model = Teacher().teacher;
  c.checkpoint = checkpoint;
  c.eval = true;
  c.kd_cache_dir = Teacher().cache;
  c.eval_samples = 12;
  c.device = "cpu";
  c.q2_mlp_rank = 8;
  c.q2_attn_rank = 4;
  c.output_dir = Scratch().File(name);
  return c;
}

TEST(Jobs, Q4ToQ2ProgressivePath) {
  jobs::QatOptions q4 = V1Stage("q2_q4", "");
  q4.train.train_scales = true;
  q4.train.lr = 2e-3;
  StageResult a = RunStage(q4);

  jobs::ConvertOptions c = Q2Convert(a.checkpoint, "q2_convert");
  QuietReporter crep;
  jobs::CancelToken cancel;
  ASSERT_TRUE(jobs::RunConvert(c, crep, cancel).ok());
  const std::string q2_ckpt = crep.ArtifactOf("checkpoint");
  ASSERT_TRUE(IsQatdCheckpoint(q2_ckpt));
  const double converted = crep.Last("eval/kd_after");
  EXPECT_GT(converted, crep.Last("eval/kd_before"));  // 2-bit LUTs lose information

  jobs::QatOptions v2 = jobs::QatOptions::ForVersion(jobs::QatVersion::kV2);
  v2.model = Teacher().teacher;
  v2.train.kd_cache_dir = Teacher().cache;
  v2.v2_init = jobs::V2Init::kFromV2;
  v2.v2_checkpoint = q2_ckpt;
  v2.device = "cpu";
  v2.train.max_steps = 12;
  v2.train.eval_steps = 4;
  v2.train.warmup_steps = 2;
  v2.train.eval_samples = 12;
  v2.train.lr = 5e-3;
  v2.train.output_dir = Scratch().File("q2_v2");
  StageResult b = RunStage(v2);
  std::printf("Q4->Q2: q4 %.4f -> converted %.4f -> V2 trained %.4f\n", a.best, converted, b.best);
  EXPECT_NEAR(b.initial, converted, 1e-3);
  EXPECT_LT(b.best, b.initial);

  jobs::SnapOptions snap;
  snap.model = Teacher().teacher;
  snap.checkpoint = b.checkpoint;
  snap.fp16 = true;
  snap.tokenizer = kTokenizer;
  snap.max_new_tokens = 4;
  snap.device = "cpu";
  snap.output_dir = Scratch().File("q2_snap");
  QuietReporter srep;
  ASSERT_TRUE(jobs::RunSnap(snap, srep, cancel).ok());
  EXPECT_TRUE(fs::exists(srep.ArtifactOf("export")));
  EXPECT_LT(srep.Last("model/quantized_bytes"), srep.Last("model/dense_bytes"));
  // The snapped checkpoint reloads with its baked flag and evaluates close to the trained one.
  jobs::EvalJobOptions e;
  e.model = Teacher().teacher;
  e.checkpoint = srep.ArtifactOf("checkpoint");
  e.kd_cache_dir = Teacher().cache;
  e.eval_samples = 12;
  e.device = "cpu";
  QuietReporter erep;
  ASSERT_TRUE(jobs::RunEval(e, erep, cancel).ok());
  std::printf("fp16 snap: %.4f (trained %.4f)\n", erep.Last("eval/kd"), b.best);
  EXPECT_NEAR(erep.Last("eval/kd"), b.best, 0.05 * b.best + 0.01);
}

// Issue #18: the Q4 -> Q2 conversion with each reduced MLP LUT fitted to its layer (lut_init
// kmeans) and the Q2 indices chosen by GPTQ (rounding gptq) starts V2 training lower than the
// spec's conversion (LUT-value k-means, nearest indices) of the same Q4 checkpoint.
TEST(Jobs, Q4ToQ2ConvertWithFittedLutsAndGptqStartsLower) {
  jobs::QatOptions q4 = V1Stage("q2g_q4", "");
  q4.train.train_scales = true;
  q4.train.lr = 2e-3;
  StageResult a = RunStage(q4);
  auto convert = [&](const std::string& name, bool fit, bool gptq) {
    jobs::ConvertOptions c = Q2Convert(a.checkpoint, name);
    c.fit_luts = fit;
    if (gptq) c.rounding = quant::Rounding::kGptq;
    c.calibration_sequences = 32;
    QuietReporter rep;
    jobs::CancelToken cancel;
    absl::Status s = jobs::RunConvert(c, rep, cancel);
    EXPECT_TRUE(s.ok()) << s;
    if (gptq) EXPECT_LT(rep.Last("convert/gptq_error"), rep.Last("convert/gptq_error_nearest"));
    return rep.Last("eval/kd_after");
  };
  const double spec = convert("q2g_spec", false, false);
  const double fitted = convert("q2g_fit", true, false);
  const double gptq = convert("q2g_gptq", false, true);
  const double both = convert("q2g_both", true, true);
  std::printf("Q4 -> Q2 held-out kd: spec %.4f, fitted LUTs %.4f, GPTQ %.4f, both %.4f\n", spec, fitted, gptq, both);
  // Measured here: spec 0.928, fitted LUTs 0.971 (alone they do not help on this tiny model),
  // GPTQ 0.534, both 0.513.
  EXPECT_TRUE(std::isfinite(fitted));
  EXPECT_LT(gptq, 0.7 * spec);
  EXPECT_LT(both, 0.7 * spec);
}

TEST(Jobs, OptionsNameTheBadField) {
  jobs::QatOptions o = V1Stage("bad", "");
  EXPECT_NE(o.Validate().message().find("train_weights or train_scales"), std::string::npos);
  o.train.train_scales = true;
  o.train.kd_cache_dir.clear();
  EXPECT_NE(o.Validate().message().find("kd_cache_dir"), std::string::npos);
  o = V1Stage("bad", "");
  o.version = jobs::QatVersion::kV2;
  EXPECT_NE(o.Validate().message().find("v1_checkpoint"), std::string::npos);
  jobs::ConvertOptions c;
  c.model = "m";
  c.checkpoint = "c";
  c.output_dir = "o";
  c.q2_mlp_lut_size = 3;
  EXPECT_NE(c.Validate().message().find("q2_mlp_lut_size"), std::string::npos);
  c.q2_mlp_lut_size = 4;
  c.rounding = quant::Rounding::kGptq;
  EXPECT_NE(c.Validate().message().find("kd_cache_dir is required with rounding gptq"), std::string::npos);
  c.kd_cache_dir = "k";
  c.calibration_sequences = 0;
  EXPECT_NE(c.Validate().message().find("calibration_sequences"), std::string::npos);
  c.calibration_sequences = 8;
  EXPECT_TRUE(c.Validate().ok());
  c.mode = jobs::ConvertMode::kV1ToV2;
  EXPECT_NE(c.Validate().message().find("q4_to_q2 conversions only"), std::string::npos);
  v1::ConvertSpec cs;
  cs.set_lut_init("kmean");
  EXPECT_NE(jobs::ConvertOptions::FromProto(cs).status().message().find("convert.lut_init"), std::string::npos);
  cs.set_lut_init("kmeans");
  cs.set_rounding("gptqq");
  EXPECT_NE(jobs::ConvertOptions::FromProto(cs).status().message().find("convert.rounding"), std::string::npos);
  jobs::GenerateJobOptions g;
  g.model = "m";
  EXPECT_NE(g.Validate().message().find("prompt"), std::string::npos);
}

TEST(Jobs, MissingCheckpointFailsClearly) {
  jobs::QatOptions o = V1Stage("missing", Scratch().File("does-not-exist"));
  o.train.train_scales = true;
  QuietReporter rep;
  jobs::CancelToken cancel;
  absl::Status s = jobs::RunQat(o, rep, cancel);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_NE(s.message().find("does-not-exist"), std::string::npos);
}

}  // namespace
}  // namespace qatd::train
