// V2 layer against the reference golden vectors (v2_q2a4), plus V2 properties.
#include "core/quant/quant_linear_v2.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <string>

#include "core/quant/export.h"
#include "gtest/gtest.h"
#include "tests/core/quant/golden_util.h"

namespace qatd::quant {
namespace {

using testing::Get;
using testing::MaxRelErr;

constexpr double kTol = 1e-5;     // README: <= 2e-6 without STE
constexpr double kSteTol = 1e-3;  // README: STE-fp16 outputs and gradients, ~1e-3 of max|b|

// README "Exact configurations": q2a4, attention lut 16 / rank 8, MLP lut 4 / rank 32.
LayerQuantSpecV2 GoldenSpec(const std::string& layer) {
  LayerQuantSpecV2 s;
  const bool attn = testing::IsGoldenAttention(layer);
  s.lut_size = attn ? 16 : 4;
  s.scale_rank = attn ? 8 : 32;
  s.group_size = 32;
  s.force_positive_scales = false;
  s.magnitude_activation = MagnitudeActivation::kIdentity;
  s.magnitude_eps = 1e-6;
  s.norm_eps = 1e-6;
  s.use_ste_fp16 = true;
  return s;
}

class V2GoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    layer_ = GetParam();
    inputs_ = testing::LoadGolden("inputs.safetensors");
    golden_ = testing::LoadGolden("v2_q2a4.safetensors");
    weight_ = Get(inputs_, layer_ + ".weight");
    x_ = Get(inputs_, layer_ + ".x");
    gy_ = Get(inputs_, layer_ + ".gy");
  }
  at::Tensor G(const std::string& item) { return Get(golden_, layer_ + "." + item); }

  // Our layer with the stored factors loaded; with `golden_indices` also the stored indices
  // (so outputs are comparable bit for bit in Q; FreezeQ is tested separately).
  std::shared_ptr<QuantLinearV2> LoadedLayer(bool golden_indices) {
    auto layer = QuantLinearV2::FromFactors(weight_, at::Tensor(), GoldenSpec(layer_), G("scale_A"), G("scale_B"),
                                            G("rank_magnitude"), G("lut"));
    EXPECT_TRUE(layer.ok()) << layer.status();
    if (golden_indices) (*layer)->SetFrozenIndices(G("indices"));
    return *layer;
  }

  // The kernel the reference picks (rank >= 16: batched) and the other one.
  V2ForwardPath DefaultPath() const {
    return GoldenSpec(layer_).scale_rank >= 16 ? V2ForwardPath::kBatched : V2ForwardPath::kLoop;
  }
  V2ForwardPath OtherPath() const {
    return DefaultPath() == V2ForwardPath::kBatched ? V2ForwardPath::kLoop : V2ForwardPath::kBatched;
  }

  std::string layer_;
  TensorMap inputs_, golden_;
  at::Tensor weight_, x_, gy_;
};

TEST_P(V2GoldenTest, InitScalesAndMagnitudes) {
  auto layer = QuantLinearV2::Create(weight_, at::Tensor(), GoldenSpec(layer_));
  ASSERT_TRUE(layer.ok()) << layer.status();
  at::NoGradGuard no_grad;
  EXPECT_TRUE(at::equal((*layer)->lut, G("lut")));
  // As for V1: the golden float32 SVD is itself a few 1e-5 away from the exact S0.
  EXPECT_LT(MaxRelErr((*layer)->EffectiveScales(), G("scales")), 5e-5);
  auto meta = testing::LoadGoldenMeta()["cases"]["v2_q2a4." + layer_];
  auto top = testing::LoadGoldenMeta()["cases"]["v1_q4." + layer_]["S0_singular_values_top"];
  const int64_t numerical_rank = meta["S0_rank_numerical"].get<int64_t>();
  for (int64_t k = 0; k < std::min<int64_t>({numerical_rank, (*layer)->rank(), (int64_t)top.size()}); ++k) {
    EXPECT_NEAR((*layer)->rank_magnitude[k].item<double>(), top[k].get<double>(), 1e-5 * top[0].get<double>());
  }
  // Unit directions (spec §4.3).
  EXPECT_LT(((*layer)->scale_A.norm(2, {0}) - 1).abs().max().item<double>(), 1e-5);
  EXPECT_FALSE((*layer)->q_frozen());
}

TEST_P(V2GoldenTest, FactorsScalesAndFreezeQ) {
  auto layer = LoadedLayer(/*golden_indices=*/false);
  at::NoGradGuard no_grad;
  QuantLinearV2::Factors f = layer->ComputeFactors();
  EXPECT_LT(MaxRelErr(f.a_dir, G("A_dir")), kTol);
  EXPECT_LT(MaxRelErr(f.b_dir, G("B_dir")), kTol);
  EXPECT_LT(MaxRelErr(f.g_hat, G("g_hat")), kTol);
  EXPECT_LT(MaxRelErr(layer->EffectiveScales(), G("scales")), kTol);
  layer->FreezeQ();
  ASSERT_TRUE(layer->q_frozen());
  EXPECT_FALSE(layer->weight.requires_grad());
  at::Tensor differ = layer->indices.ne(G("indices"));
  EXPECT_EQ(differ.logical_and(G("near_boundary").eq(0)).sum().item<int64_t>(), 0)
      << "index flips outside near_boundary";
  at::Tensor same = differ.logical_not();
  EXPECT_TRUE(at::equal(layer->q * same, G("Q") * same));
  EXPECT_LT(MaxRelErr(layer->EffectiveWeight() * same, G("w_eff") * same), kTol);
}

TEST_P(V2GoldenTest, ForwardWithSteAlongBothKernels) {
  auto layer = LoadedLayer(/*golden_indices=*/true);
  at::NoGradGuard no_grad;
  EXPECT_EQ(layer->ResolvedPath(), DefaultPath());
  EXPECT_LT(MaxRelErr(layer->forward(x_), G("y")), kSteTol);
  layer->set_forward_path(OtherPath());
  EXPECT_LT(MaxRelErr(layer->forward(x_), G("y_other_path")), kSteTol);
  EXPECT_LT(MaxRelErr(layer->EffectiveWeight(), G("w_eff")), kTol);
}

TEST_P(V2GoldenTest, ForwardWithoutSteAllKernelsAgree) {
  auto layer = LoadedLayer(/*golden_indices=*/true);
  layer->set_use_ste_fp16(false);
  at::NoGradGuard no_grad;
  layer->set_forward_path(DefaultPath());
  EXPECT_LT(MaxRelErr(layer->forward(x_), G("y_no_ste")), kTol);
  layer->set_forward_path(OtherPath());
  EXPECT_LT(MaxRelErr(layer->forward(x_), G("y_no_ste_other_path")), kTol);
  // The dense kernel (kAuto without STE) is the fast equivalent of both.
  layer->set_forward_path(V2ForwardPath::kAuto);
  EXPECT_EQ(layer->ResolvedPath(), V2ForwardPath::kDense);
  EXPECT_LT(MaxRelErr(layer->forward(x_), G("y_no_ste")), kTol);
  EXPECT_LT(MaxRelErr(layer->forward(x_), G("y_dense_weff")), kTol);
}

TEST_P(V2GoldenTest, ScaleGradientsWithSte) {
  auto layer = LoadedLayer(/*golden_indices=*/true);
  layer->SetTrainable(/*scales=*/true, /*g_only=*/false);
  at::Tensor x = x_.clone().requires_grad_(true);
  (layer->forward(x) * gy_).sum().backward();
  EXPECT_LT(MaxRelErr(layer->scale_A.grad(), G("grad_scale_A")), kSteTol);
  EXPECT_LT(MaxRelErr(layer->scale_B.grad(), G("grad_scale_B")), kSteTol);
  EXPECT_LT(MaxRelErr(layer->rank_magnitude.grad(), G("grad_rank_magnitude")), kSteTol);
  EXPECT_LT(MaxRelErr(x.grad(), G("grad_x")), kSteTol);
  EXPECT_FALSE(layer->weight.grad().defined());  // golden meta weight_grad_is_none
}

TEST_P(V2GoldenTest, GOnlyTrainsOnlyMagnitudes) {
  auto layer = LoadedLayer(/*golden_indices=*/true);
  layer->SetTrainable(/*scales=*/true, /*g_only=*/true);
  (layer->forward(x_) * gy_).sum().backward();
  EXPECT_FALSE(layer->scale_A.grad().defined());
  EXPECT_FALSE(layer->scale_B.grad().defined());
  EXPECT_LT(MaxRelErr(layer->rank_magnitude.grad(), G("grad_rank_magnitude")), kSteTol);
}

INSTANTIATE_TEST_SUITE_P(Golden, V2GoldenTest,
                         ::testing::Values("q_proj", "k_proj", "gate_proj", "down_proj", "wide"),
                         [](const auto& info) { return info.param; });

// --- properties ------------------------------------------------------------------------------

std::shared_ptr<QuantLinearV2> RandomV2(int64_t out, int64_t in, LayerQuantSpecV2 spec, uint64_t seed,
                                        bool with_bias = false) {
  at::manual_seed(seed);
  at::Tensor w = at::randn({out, in}) * 0.02 * (1 + at::rand({out, 1}));
  at::Tensor b = with_bias ? at::randn({out}) * 0.1 : at::Tensor();
  auto layer = QuantLinearV2::Create(w, b, spec);
  EXPECT_TRUE(layer.ok()) << layer.status();
  return *layer;
}

TEST(V2Properties, KernelsAgreeWithBiasAndBatchShapes) {
  LayerQuantSpecV2 spec;
  spec.lut_size = 4;
  spec.scale_rank = 20;
  spec.group_size = 8;
  spec.magnitude_activation = MagnitudeActivation::kIdentity;
  spec.force_positive_scales = false;
  auto layer = RandomV2(24, 40, spec, 1, /*with_bias=*/true);
  layer->FreezeQ();
  at::Tensor x = at::randn({3, 2, 4, 40});
  at::NoGradGuard no_grad;
  layer->set_forward_path(V2ForwardPath::kDense);
  at::Tensor dense = layer->forward(x);
  EXPECT_EQ(dense.sizes(), at::IntArrayRef({3, 2, 4, 24}));
  for (V2ForwardPath p : {V2ForwardPath::kLoop, V2ForwardPath::kBatched}) {
    layer->set_forward_path(p);
    EXPECT_LT(MaxRelErr(layer->forward(x), dense), 1e-5);
  }
  EXPECT_LT(MaxRelErr(dense, at::linear(x, layer->EffectiveWeight(), layer->bias)), 1e-5);
}

TEST(V2Properties, TwoBitLayerHoldsAtMostFourNormalisedValues) {
  LayerQuantSpecV2 spec;
  spec.lut_size = 4;
  spec.scale_rank = 4;
  spec.group_size = 16;
  auto layer = RandomV2(32, 64, spec, 2);
  layer->FreezeQ();
  at::NoGradGuard no_grad;
  EXPECT_LE(std::get<0>(at::_unique(layer->q)).numel(), 4);
  EXPECT_LT(layer->indices.max().item<int64_t>(), 4);
  at::Tensor normalised = layer->EffectiveWeight() / layer->EffectiveScales();
  EXPECT_LT(MaxRelErr(normalised, layer->q), 1e-5);
}

TEST(V2Properties, PositivityAndActivations) {
  for (auto method : {PositiveScaleMethod::kAbs, PositiveScaleMethod::kSoftplus}) {
    for (auto act : {MagnitudeActivation::kIdentity, MagnitudeActivation::kAbs, MagnitudeActivation::kSoftplus}) {
      LayerQuantSpecV2 spec;
      spec.scale_rank = 3;
      spec.group_size = 8;
      spec.force_positive_scales = true;
      spec.positive_scale_method = method;
      spec.magnitude_activation = act;
      auto layer = RandomV2(8, 16, spec, 3);
      at::NoGradGuard no_grad;
      QuantLinearV2::Factors f = layer->ComputeFactors();
      EXPECT_GE(f.a_dir.min().item<double>(), 0.0);
      EXPECT_GE(f.b_dir.min().item<double>(), 0.0);
      EXPECT_GT(layer->EffectiveScales().min().item<double>(), 0.0);
      EXPECT_LT((f.a_dir.norm(2, {0}) - 1).abs().max().item<double>(), 1e-5);
      at::Tensor g = layer->rank_magnitude;
      at::Tensor want = act == MagnitudeActivation::kSoftplus ? at::softplus(g)
                        : act == MagnitudeActivation::kAbs    ? g.abs()
                                                              : g;
      EXPECT_LT((f.g_hat - want - 1e-6).abs().max().item<double>(), 1e-7);
    }
  }
}

TEST(V2Properties, RankIsValidatedPerLayer) {
  LayerQuantSpecV2 spec;
  spec.scale_rank = 0;
  auto layer = QuantLinearV2::Create(at::randn({4, 8}), at::Tensor(), spec);
  ASSERT_FALSE(layer.ok());
  EXPECT_EQ(layer.status().message(), "scale_rank must be >= 1 for V2 layers, got 0");
  spec.scale_rank = 5;
  layer = QuantLinearV2::Create(at::randn({4, 8}), at::Tensor(), spec);
  ASSERT_FALSE(layer.ok());
  EXPECT_NE(layer.status().message().find("scale_rank must be in [1, 4]"), std::string::npos);
}

TEST(V2Properties, ModuleToDtypeKeepsIntegerBuffers) {
  LayerQuantSpecV2 spec;
  spec.lut_size = 16;
  spec.scale_rank = 4;
  spec.group_size = 8;
  auto layer = RandomV2(16, 32, spec, 6);
  layer->FreezeQ();
  at::Tensor idx = layer->indices.clone();
  layer->to(at::kBFloat16);
  EXPECT_EQ(layer->weight.scalar_type(), at::kBFloat16);
  EXPECT_EQ(layer->lut.scalar_type(), at::kBFloat16);
  EXPECT_EQ(layer->q.scalar_type(), at::kBFloat16);
  EXPECT_EQ(layer->indices.scalar_type(), at::kByte);
  EXPECT_EQ(layer->scales_baked_flag.scalar_type(), at::kChar);
  EXPECT_TRUE(at::equal(layer->indices, idx));
  at::NoGradGuard no_grad;
  EXPECT_EQ(layer->forward(at::randn({2, 32}).to(at::kBFloat16)).scalar_type(), at::kBFloat16);
  // The index boundaries follow the (now bf16-rounded) LUT: re-freezing keeps the indices.
  layer->FreezeQ();
  EXPECT_GT(layer->indices.eq(idx).to(at::kFloat).mean().item<double>(), 0.99);
}

TEST(V2Properties, Bf16ForwardKeepsDtype) {
  LayerQuantSpecV2 spec;
  spec.lut_size = 4;
  spec.scale_rank = 16;
  spec.group_size = 8;
  spec.use_ste_fp16 = true;
  at::manual_seed(5);
  auto layer = QuantLinearV2::Create((at::randn({16, 32}) * 0.02).to(at::kBFloat16), at::Tensor(), spec);
  ASSERT_TRUE(layer.ok()) << layer.status();
  (*layer)->FreezeQ();
  (*layer)->SetTrainable(true, false);
  at::Tensor x = at::randn({2, 32}).to(at::kBFloat16);
  at::Tensor y = (*layer)->forward(x);
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  y.sum().backward();
  EXPECT_EQ((*layer)->scale_A.grad().scalar_type(), at::kBFloat16);
}

}  // namespace
}  // namespace qatd::quant
