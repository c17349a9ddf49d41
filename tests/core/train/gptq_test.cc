// GPTQ rounding (core/quant/gptq.h, core/train/gptq_init.h, issue #18): on a synthetic layer with
// correlated inputs GPTQ's output error is below round-to-nearest's with the same S and LUT, and
// the layer's own nearest rounding of the new W / S gives back GPTQ's indices; on the tiny Q2
// student, rounding gptq lowers the PTQ held-out KD (uniform and k-means LUTs) and never reads
// the held-out sequences; the setting is validated and round-trips through the spec.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <cstdio>
#include <string>

#include "core/jobs/options_common.h"
#include "core/kd/cache_reader.h"
#include "core/quant/gptq.h"
#include "core/quant/lut_fit.h"
#include "core/quant/quant_config.h"
#include "core/quant/quant_linear_v1.h"
#include "core/quant/quant_linear_v2.h"
#include "core/train/evaluate.h"
#include "core/train/gptq_init.h"
#include "core/train/held_out.h"
#include "core/train/student.h"
#include "qatd/v1/specs.pb.h"
#include "tests/core/train/train_fixture.h"

namespace qatd::train {
namespace {

constexpr int64_t kHeldOut = 12;

// x = z M: 64 inputs driven by 16 latent factors plus a little noise (strongly correlated),
// with per-input magnitudes that differ, as activations do.
at::Tensor CorrelatedInputs(int64_t rows, int64_t in, uint64_t seed) {
  at::manual_seed(seed);
  at::Tensor z = at::randn({rows, 16});
  at::Tensor m = at::randn({16, in});
  at::Tensor gain = at::rand({in}) * 2 + 0.2;
  return (at::matmul(z, m) + 0.1 * at::randn({rows, in})) * gain;
}

std::shared_ptr<quant::QuantLinearV1> Q2Layer(const at::Tensor& w) {
  quant::LayerQuantSpec spec;
  spec.lut_size = 4;
  spec.group_size = 16;
  spec.scale_rank = 4;
  auto layer = quant::QuantLinearV1::Create(w, at::Tensor(), spec);
  EXPECT_TRUE(layer.ok()) << layer.status();
  return *layer;
}

double OutputError(const at::Tensor& x, const at::Tensor& w, const at::Tensor& q) {
  return (at::matmul(x, w.t()) - at::matmul(x, q.t())).norm().item<double>();
}

void ExpectGptqBeatsNearest(bool kmeans, bool act_order) {
  at::NoGradGuard g;
  const at::Tensor x = CorrelatedInputs(2048, 64, 11);
  at::manual_seed(12);
  const at::Tensor w = at::randn({32, 64}) * 0.05;
  auto layer = Q2Layer(w);
  if (kmeans) ASSERT_TRUE(quant::FitLayerLut(*layer).ok());
  const at::Tensor nearest = layer->EffectiveWeight();
  const at::Tensor s = layer->EffectiveScales().detach();
  const at::Tensor h = at::matmul(x.t(), x) / x.size(0);

  auto r = quant::GptqRound(w, s, layer->lut, h, {.act_order = act_order});
  ASSERT_TRUE(r.ok()) << r.status();
  const double e_nearest = OutputError(x, w, nearest);
  const double e_gptq = OutputError(x, w, r->q);
  std::printf("synthetic layer (kmeans %d, act_order %d): ||XW^T - XQ^T|| nearest %.4f, gptq %.4f\n", kmeans,
              act_order, e_nearest, e_gptq);
  EXPECT_LT(e_gptq, 0.8 * e_nearest);
  EXPECT_NEAR(r->error_nearest, e_nearest * e_nearest / x.size(0), 1e-3 * r->error_nearest);
  EXPECT_LT(r->error_gptq, r->error_nearest);

  // The layer takes the rounding: its own nearest(W / S) gives GPTQ's indices, W / S sits on
  // a LUT entry, and the layer computes GPTQ's Q.
  auto applied = quant::ApplyGptqRounding(*layer, h, {.act_order = act_order});
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(applied->index_mismatches, 0);
  EXPECT_GT(applied->indices_changed, 0);
  const at::Tensor idx = layer->ComputeIndices().to(at::kLong);
  EXPECT_TRUE(at::equal(idx, r->indices));
  const at::Tensor u = layer->weight / s;
  const at::Tensor on_lut = layer->lut.index_select(0, idx.reshape({-1})).reshape(idx.sizes());
  EXPECT_LT((u - on_lut).abs().max().item<double>(), 1e-5);
  EXPECT_LT((layer->EffectiveWeight() - r->q).abs().max().item<double>(), 1e-6);
}

TEST(Gptq, LowersTheOutputErrorOfACorrelatedLayerAndTheLayerReproducesItsIndices) {
  ExpectGptqBeatsNearest(/*kmeans=*/false, /*act_order=*/false);
}

TEST(Gptq, AlsoWithAKMeansLutAndActOrder) {
  ExpectGptqBeatsNearest(/*kmeans=*/true, /*act_order=*/false);
  ExpectGptqBeatsNearest(/*kmeans=*/false, /*act_order=*/true);
}

TEST(Gptq, Bf16WeightsLandOnTheSameIndices) {
  at::NoGradGuard g;
  const at::Tensor x = CorrelatedInputs(1024, 64, 13);
  at::manual_seed(14);
  auto layer = Q2Layer((at::randn({32, 64}) * 0.05).to(at::kBFloat16));
  auto r = quant::ApplyGptqRounding(*layer, at::matmul(x.t(), x) / x.size(0));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->index_mismatches, 0);
  EXPECT_LT(r->error_gptq, r->error_nearest);
}

TEST(Gptq, DeadInputsKeepNearestRoundingAndBadInputIsRefused) {
  at::NoGradGuard g;
  at::Tensor x = CorrelatedInputs(1024, 64, 15);
  x.select(1, 5).zero_();
  x.select(1, 40).zero_();
  at::manual_seed(16);
  const at::Tensor w = at::randn({32, 64}) * 0.05;
  auto layer = Q2Layer(w);
  const at::Tensor nearest_idx = layer->ComputeIndices().to(at::kLong);
  auto r = quant::GptqRound(w, layer->EffectiveScales(), layer->lut, at::matmul(x.t(), x));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->dead_columns, 2);
  for (int64_t c : {5, 40}) EXPECT_TRUE(at::equal(r->indices.select(1, c), nearest_idx.select(1, c))) << c;
  EXPECT_LT(r->error_gptq, r->error_nearest);

  const at::Tensor s = layer->EffectiveScales();
  EXPECT_EQ(quant::GptqRound(w, s, layer->lut, at::eye(63)).status().code(), absl::StatusCode::kInvalidArgument);
  at::Tensor nan = at::eye(64);
  nan[0][0] = std::nan("");
  EXPECT_EQ(quant::GptqRound(w, s, layer->lut, nan).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(quant::GptqRound(w, s, layer->lut, at::eye(64), {.damp = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// V2 (the Q4 -> Q2 conversion's rounding): S = (A diag g) B is signed; the fitted LUT and
// GPTQ's frozen indices both lower the layer's output error, and GPTQ's indices are what the
// layer then computes with; its latent weight is untouched.
TEST(Gptq, V2LayerWithSignedScalesTakesAFittedLutAndGptqIndices) {
  at::NoGradGuard g;
  const at::Tensor x = CorrelatedInputs(2048, 64, 21);
  at::manual_seed(22);
  const at::Tensor w = at::randn({32, 64}) * 0.05;
  quant::LayerQuantSpecV2 spec;
  spec.lut_size = 4;
  spec.scale_rank = 4;
  spec.force_positive_scales = false;
  spec.magnitude_activation = quant::MagnitudeActivation::kIdentity;
  auto make = [&] {
    auto layer = quant::QuantLinearV2::Create(w, at::Tensor(), spec);
    EXPECT_TRUE(layer.ok()) << layer.status();
    // The SVD init of |W|'s group scales is positive; flipped rows of A make S negative there,
    // as training may (V1's clamp to >= kMinScale would wreck those rows).
    (*layer)->scale_A.narrow(0, 0, 8).neg_();
    return *layer;
  };
  const at::Tensor h = at::matmul(x.t(), x) / x.size(0);
  auto nearest = make();
  ASSERT_TRUE((nearest->EffectiveScales() < 0).any().item<bool>());  // the signed case is exercised
  nearest->FreezeQ();
  const double e_nearest = OutputError(x, w, nearest->EffectiveWeight());

  auto fitted = make();
  auto fit = quant::FitLayerLutV2(*fitted);
  ASSERT_TRUE(fit.ok()) << fit.status();
  EXPECT_LE(fit->mse_fitted, fit->mse_uniform);
  fitted->FreezeQ();
  const double e_fitted = OutputError(x, w, fitted->EffectiveWeight());
  // Fitting a frozen layer again re-freezes it on the nearest entries of the (same) fitted LUT.
  const at::Tensor frozen_idx = fitted->Indices().clone();
  ASSERT_TRUE(quant::FitLayerLutV2(*fitted).ok());
  EXPECT_TRUE(fitted->q_frozen());
  EXPECT_TRUE(at::equal(fitted->Indices(), frozen_idx));

  auto rounded = make();
  ASSERT_TRUE(quant::FitLayerLutV2(*rounded).ok());
  rounded->FreezeQ();
  auto r = quant::ApplyGptqRoundingV2(*rounded, h);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_LT(r->error_gptq, r->error_nearest);
  EXPECT_EQ(r->index_mismatches, 0);
  EXPECT_GT(r->indices_changed, 0);
  EXPECT_TRUE(at::equal(rounded->weight, w));
  const double e_gptq = OutputError(x, w, rounded->EffectiveWeight());
  std::printf("V2 layer ||XW^T - XQ^T||: nearest %.4f, fitted LUT %.4f, fitted + gptq %.4f\n", e_nearest, e_fitted,
              e_gptq);
  EXPECT_LT(e_fitted, e_nearest);
  EXPECT_LT(e_gptq, 0.8 * e_fitted);
  // What the layer computes is S * LUT[GPTQ's indices].
  const at::Tensor idx = rounded->Indices().to(at::kLong);
  const at::Tensor q = rounded->lut.index_select(0, idx.reshape({-1})).reshape(idx.sizes()) * rounded->EffectiveScales();
  EXPECT_LT((rounded->EffectiveWeight() - q).abs().max().item<double>(), 1e-6);
}

StudentOptions Q2(quant::LutInit init, quant::Rounding rounding) {
  StudentOptions o;
  o.model_dir = Teacher().teacher;
  o.dtype = "fp32";
  o.quant_v1.lut_size = 4;
  o.quant_v1.group_size = 16;
  o.quant_v1.scale_rank = 4;
  o.quant_v1.quantize_attn = true;
  o.quant_v1.lut_init = init;
  o.quant_v1.rounding = rounding;
  o.calibration_cache = Teacher().cache;
  o.calibration_held_out = kHeldOut;
  return o;
}

double HeldOutKd(Student& s) {
  auto reader = kd::KdCacheReader::Open(Teacher().cache);
  EXPECT_TRUE(reader.ok());
  auto splits = HeldOutSplits(**reader, kHeldOut);
  auto r = Evaluate(*s.model, **reader, splits->held_out, {.max_sequences = 0, .batch_size = 8});
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? r->kd : std::nan("");
}

TEST(GptqInit, LowersATinyQ2StudentsHeldOutKdWithUniformAndKMeansLuts) {
  for (quant::LutInit init : {quant::LutInit::kUniform, quant::LutInit::kKMeans}) {
    auto nearest = LoadStudent(Q2(init, quant::Rounding::kNearest));
    auto gptq = LoadStudent(Q2(init, quant::Rounding::kGptq));
    ASSERT_TRUE(nearest.ok()) << nearest.status();
    ASSERT_TRUE(gptq.ok()) << gptq.status();
    const double kd_nearest = HeldOutKd(*nearest);
    const double kd_gptq = HeldOutKd(*gptq);
    std::printf("Q2 PTQ held-out KD, %s LUT: nearest %.4f, gptq %.4f  (%s)\n",
                std::string(quant::LutInitName(init)).c_str(), kd_nearest, kd_gptq, gptq->init.dump().c_str());
    EXPECT_LT(kd_gptq, kd_nearest);
    EXPECT_TRUE(nearest->init.empty());
    EXPECT_EQ(gptq->init.at("index_mismatches"), 0);
    EXPECT_LT(gptq->init.at("output_error_gptq").get<double>(), gptq->init.at("output_error_nearest").get<double>());
    // 2 decoder layers x 7 projections (attention too); the tied lm_head is no layer.
    EXPECT_EQ(gptq->init.at("layers"), 14);
  }
}

TEST(GptqInit, CalibratesOnTheTrainingSplitOnlyAndIsNotRedoneOnReload) {
  auto reader = kd::KdCacheReader::Open(Teacher().cache);
  ASSERT_TRUE(reader.ok());
  auto splits = HeldOutSplits(**reader, kHeldOut);
  ASSERT_TRUE(splits.ok());
  // The fixture's 72 sequences: 60 to train on, all of them used (fewer than 128).
  const std::vector<int64_t> ids = CalibrationSequences(splits->train, 128);
  ASSERT_EQ(static_cast<int64_t>(ids.size()), splits->train.size());
  for (int64_t id : ids) EXPECT_LT(id, splits->held_out.begin);
  const std::vector<int64_t> few = CalibrationSequences(splits->train, 7);
  ASSERT_EQ(few.size(), 7u);
  EXPECT_EQ(few.front(), splits->train.begin);
  EXPECT_LT(few.back(), splits->held_out.begin);

  // Without the held-out sequences in the cache's split the rounding is the same: only
  // sequences of splits->train reach GptqInitialize.
  auto s = LoadStudent(Q2(quant::LutInit::kUniform, quant::Rounding::kGptq));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->init.at("sequences"), splits->train.size());
  StudentOptions fewer = Q2(quant::LutInit::kUniform, quant::Rounding::kGptq);
  fewer.quant_v1.calibration_sequences = 16;
  auto f = LoadStudent(fewer);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->init.at("sequences"), 16);

  // A checkpoint carries the rounded weights; the reload does not calibrate again.
  const std::string dir = Scratch().File("gptq-ckpt");
  ASSERT_TRUE(SaveStudent(*s, dir).ok());
  StudentOptions reload;
  reload.model_dir = Teacher().teacher;
  reload.dtype = "fp32";
  reload.checkpoint = dir;  // no calibration cache: a fresh GPTQ would fail
  auto r = LoadStudent(reload);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->quant_v1.rounding, quant::Rounding::kGptq);
  EXPECT_TRUE(r->init.empty());
  EXPECT_NEAR(HeldOutKd(*r), HeldOutKd(*s), 1e-6);

  StudentOptions no_cache = Q2(quant::LutInit::kUniform, quant::Rounding::kGptq);
  no_cache.calibration_cache.clear();
  auto missing = LoadStudent(no_cache);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(missing.status().message().find("rounding gptq"), std::string::npos) << missing.status();
}

TEST(GptqInit, TheSettingIsValidatedAndRoundTrips) {
  EXPECT_EQ(*quant::ParseRounding("gptq"), quant::Rounding::kGptq);
  EXPECT_EQ(*quant::ParseRounding("nearest"), quant::Rounding::kNearest);
  auto bad = quant::ParseRounding("gptqq");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("rounding"), std::string::npos) << bad.status();

  v1::QuantSettings q;
  q.set_rounding("gptq");
  q.set_calibration_sequences(32);
  auto c = jobs::QuantFromProto(q, quant::QuantConfig());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rounding, quant::Rounding::kGptq);
  EXPECT_EQ(c->calibration_sequences, 32);
  EXPECT_EQ(jobs::QuantFromProto(v1::QuantSettings(), quant::QuantConfig())->calibration_sequences,
            quant::kDefaultCalibrationSequences);
  q.set_rounding("round");
  auto wrong = jobs::QuantFromProto(q, quant::QuantConfig());
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(wrong.status().message().rfind("quant.rounding", 0), 0u) << wrong.status();
  q.set_rounding("gptq");
  q.set_calibration_sequences(-1);
  auto negative = jobs::QuantFromProto(q, quant::QuantConfig());
  EXPECT_NE(negative.status().message().find("quant.calibration_sequences"), std::string::npos) << negative.status();

  nlohmann::json j = quant::ToJson(*c);
  EXPECT_EQ(j.at("rounding"), "gptq");
  EXPECT_EQ(j.at("calibration_sequences"), 32);
  auto back = quant::QuantConfigFromJson(j);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->rounding, quant::Rounding::kGptq);
  EXPECT_EQ(back->calibration_sequences, 32);
  EXPECT_FALSE(quant::ToJson(quant::QuantConfig()).contains("rounding"));  // old files stay as they were
  j["rounding"] = "gptqq";
  auto bad_json = quant::QuantConfigFromJson(j);
  EXPECT_FALSE(bad_json.ok());
  EXPECT_NE(bad_json.status().message().find("rounding"), std::string::npos) << bad_json.status();
}

}  // namespace
}  // namespace qatd::train
