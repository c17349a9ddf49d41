// Q4 -> Q2 (k-means LUT, rank expansion, nearest-value re-indexing) and V1 -> V2.
#include "core/quant/convert.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "core/quant/lut.h"
#include "core/quant/snap.h"
#include "gtest/gtest.h"
#include "tests/core/quant/golden_util.h"

namespace qatd::quant {
namespace {

using testing::MaxRelErr;

std::vector<float> ToVector(const at::Tensor& t) {
  at::Tensor c = t.to(at::kFloat).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

// The golden k-means LUTs for the fp32, fp16 and bf16 versions of LUT16 (torch 2.x, float32
// arithmetic). Our float64 rule with exact ties to the lower centre reproduces all three.
TEST(KMeansLut, MatchesGolden) {
  TensorMap g = testing::LoadGolden("kmeans_lut.safetensors");
  for (const char* src : {"fp32", "fp16", "bf16"}) {
    auto lut4 = KMeansLut(ToVector(testing::Get(g, std::string("lut16_") + src)), 4);
    ASSERT_TRUE(lut4.ok()) << lut4.status();
    at::Tensor want = testing::Get(g, std::string("lut4_kmeans_from_") + src);
    for (int j = 0; j < 4; ++j) EXPECT_NEAR((*lut4)[j], want[j].item<float>(), 1e-6) << src << " centre " << j;
  }
}

// Pinned: from our (bit-exact torch 2.x) LUT16 the result is the symmetric
// [-0.8, -4/15, 4/15, 0.8], not the asymmetric torch 1.13 accident [-0.7333, -0.2, 0.2667, 0.8]
// (spec §11).
TEST(KMeansLut, PinnedSymmetricResultForUniformLut16) {
  auto lut4 = KMeansLut(MakeLutValues(16, false).value(), 4);
  ASSERT_TRUE(lut4.ok());
  EXPECT_NEAR((*lut4)[0], -0.8, 1e-6);
  EXPECT_NEAR((*lut4)[1], -4.0 / 15, 1e-6);
  EXPECT_NEAR((*lut4)[2], 4.0 / 15, 1e-6);
  EXPECT_NEAR((*lut4)[3], 0.8, 1e-6);
  EXPECT_EQ((*lut4)[0], -(*lut4)[3]);
  EXPECT_FALSE(KMeansLut({0.0f, 1.0f}, 3).ok());
}

std::shared_ptr<QuantLinearV2> MakeQ4(uint64_t seed) {
  at::manual_seed(seed);
  at::Tensor w = at::randn({48, 64}) * 0.02 * (1 + at::rand({48, 1}));
  LayerQuantSpecV2 s;
  s.lut_size = 16;
  s.scale_rank = 4;
  s.group_size = 16;
  s.force_positive_scales = false;
  s.magnitude_activation = MagnitudeActivation::kIdentity;
  auto layer = QuantLinearV2::Create(w, at::Tensor(), s);
  EXPECT_TRUE(layer.ok()) << layer.status();
  (*layer)->FreezeQ();
  return *layer;
}

TEST(ConvertLutAndRank, ExpandsRankAndReindexesAgainstTheNewLut) {
  auto q4 = MakeQ4(1);
  LayerQuantSpecV2 target = q4->spec();
  target.lut_size = 4;
  target.scale_rank = 12;
  auto q2 = ConvertLutAndRank(*q4, target, /*seed=*/42);
  ASSERT_TRUE(q2.ok()) << q2.status();
  auto& l = **q2;
  EXPECT_TRUE(at::equal(l.weight, q4->weight));
  // Old components copied; new ones 0.01·N(0,1) and magnitude 0.01 (spec §11).
  EXPECT_TRUE(at::equal(l.scale_A.narrow(1, 0, 4), q4->scale_A));
  EXPECT_TRUE(at::equal(l.scale_B.narrow(0, 0, 4), q4->scale_B));
  EXPECT_TRUE(at::equal(l.rank_magnitude.narrow(0, 0, 4), q4->rank_magnitude));
  EXPECT_TRUE(at::allclose(l.rank_magnitude.narrow(0, 4, 8), at::full({8}, 0.01)));
  double sd = l.scale_A.narrow(1, 4, 8).std().item<double>();
  EXPECT_GT(sd, 0.005);
  EXPECT_LT(sd, 0.02);
  // The LUT is the k-means reduction of LUT16.
  std::vector<float> want = KMeansLut(ToVector(q4->lut), 4).value();
  EXPECT_EQ(ToVector(l.lut), want);
  // Spec §17.5 fix: indices are the nearest *actual* LUT value of weight / S.
  ASSERT_TRUE(l.q_frozen());
  at::NoGradGuard no_grad;
  at::Tensor u = l.weight / l.EffectiveScales();
  at::Tensor dist = (u.unsqueeze(-1) - l.lut.view({1, 1, 4})).abs();  // [O, I, 4]
  at::Tensor chosen = dist.gather(2, l.indices.to(at::kLong).unsqueeze(-1)).squeeze(-1);
  EXPECT_TRUE(at::all(chosen <= std::get<0>(dist.min(2))).item<bool>());
  // The reference's uniform-grid boundaries (-2/3, 0, 2/3) would pick a farther value for some.
  at::Tensor grid = at::round((u.clamp(-1, 1) + 1) / (2.0 / 3)).clamp(0, 3).to(at::kLong);
  at::Tensor grid_dist = dist.gather(2, grid.unsqueeze(-1)).squeeze(-1);
  EXPECT_GT(grid_dist.gt(chosen).sum().item<int64_t>(), 0);
  // Same seed, same result.
  auto again = ConvertLutAndRank(*q4, target, 42);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(at::equal((*again)->scale_A, l.scale_A));
}

TEST(ConvertLutAndRank, RejectsShrinkingRankGrowingLutAndBakedSources) {
  auto q4 = MakeQ4(2);
  LayerQuantSpecV2 target = q4->spec();
  target.scale_rank = 2;
  EXPECT_EQ(ConvertLutAndRank(*q4, target, 0).status().code(), absl::StatusCode::kInvalidArgument);
  target = q4->spec();
  target.lut_size = 32;
  EXPECT_EQ(ConvertLutAndRank(*q4, target, 0).status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(SnapV2ForExport(*q4).ok());
  EXPECT_EQ(ConvertLutAndRank(*q4, q4->spec(), 0).status().code(), absl::StatusCode::kFailedPrecondition);
}

std::shared_ptr<QuantLinearV1> MakeV1(uint64_t seed, int rank = 4) {
  at::manual_seed(seed);
  at::Tensor w = at::randn({40, 64}) * 0.02 * (1 + at::rand({40, 1}));
  LayerQuantSpec s;
  s.lut_size = 16;
  s.group_size = 16;
  s.scale_rank = rank;
  auto layer = QuantLinearV1::Create(w, at::Tensor(), s);
  EXPECT_TRUE(layer.ok()) << layer.status();
  return *layer;
}

LayerQuantSpecV2 V2Target(int lut, int rank) {
  LayerQuantSpecV2 s;
  s.lut_size = lut;
  s.scale_rank = rank;
  s.force_positive_scales = false;
  s.magnitude_activation = MagnitudeActivation::kIdentity;
  return s;
}

TEST(ConvertV1ToV2, ReproducesTheUnclampedV1Scales) {
  auto v1 = MakeV1(3);
  auto v2 = ConvertV1ToV2(*v1, V2Target(16, 4));
  ASSERT_TRUE(v2.ok()) << v2.status();
  at::NoGradGuard no_grad;
  at::Tensor ab = at::matmul(v1->scale_A, v1->scale_B);
  // g = a·b, directions unit norm (spec §5); ĝ adds magnitude_eps = 1e-6.
  EXPECT_LT(MaxRelErr((*v2)->EffectiveScales(), ab), 1e-5);
  EXPECT_LT(((*v2)->scale_A.norm(2, {0}) - 1).abs().max().item<double>(), 1e-5);
  // Where V1's clamp is inactive the effective weights agree (indices may flip only at ties).
  at::Tensor same = (*v2)->indices.eq(v1->ComputeIndices());
  EXPECT_GT(same.to(at::kFloat).mean().item<double>(), 0.99);
  EXPECT_LT(MaxRelErr((*v2)->EffectiveWeight() * same, v1->EffectiveWeight() * same), 1e-5);
}

TEST(ConvertV1ToV2, LutSnappedSourceKeepsItsWeights) {
  auto v1 = MakeV1(4);
  at::Tensor before = v1->EffectiveWeight();
  ASSERT_TRUE(SnapV1(*v1, SnapMode::kLut).ok());
  auto v2 = ConvertV1ToV2(*v1, V2Target(16, 4));
  ASSERT_TRUE(v2.ok()) << v2.status();
  at::Tensor same = (*v2)->indices.eq(v1->ComputeIndices());
  EXPECT_GT(same.to(at::kFloat).mean().item<double>(), 0.99);
  EXPECT_LT(MaxRelErr((*v2)->EffectiveWeight() * same, before * same), 1e-5);
}

TEST(ConvertV1ToV2, RejectsMismatchedTargetsAndFullScales) {
  auto v1 = MakeV1(5);
  EXPECT_EQ(ConvertV1ToV2(*v1, V2Target(16, 8)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ConvertV1ToV2(*v1, V2Target(4, 4)).status().code(), absl::StatusCode::kInvalidArgument);
  auto full = MakeV1(6, /*rank=*/0);
  EXPECT_EQ(ConvertV1ToV2(*full, V2Target(16, 4)).status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace qatd::quant
