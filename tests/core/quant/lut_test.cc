// LUT values (pinned, bit-exact vs the golden torch 2.x LUTs) and nearest-index mapping.
#include "core/quant/lut.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "gtest/gtest.h"
#include "tests/core/quant/golden_util.h"

namespace qatd::quant {
namespace {

at::Tensor ToTensor(const std::vector<float>& v) {
  at::Tensor t = at::empty({static_cast<int64_t>(v.size())}, at::kFloat);
  std::copy(v.begin(), v.end(), t.data_ptr<float>());
  return t;
}

TEST(Lut, UniformLutsAreBitExactWithGolden) {
  TensorMap v1_q4 = testing::LoadGolden("v1_q4.safetensors");
  TensorMap v1_q2 = testing::LoadGolden("v1_q2.safetensors");
  TensorMap kmeans = testing::LoadGolden("kmeans_lut.safetensors");
  EXPECT_TRUE(at::equal(ToTensor(MakeLutValues(16, false).value()), testing::Get(v1_q4, "q_proj.lut")));
  EXPECT_TRUE(at::equal(ToTensor(MakeLutValues(16, false).value()), testing::Get(kmeans, "lut16_fp32")));
  EXPECT_TRUE(at::equal(ToTensor(MakeLutValues(4, false).value()), testing::Get(v1_q2, "q_proj.lut")));
  // Rounded to bf16 it is the golden lut16_bf16 (a bf16 model's LUT buffer). The golden
  // lut16_fp16 is a linspace evaluated in fp16 arithmetic (HEAD builds its LUT that way); our
  // fp32 values rounded to fp16 are within one fp16 ulp of it.
  at::Tensor lut16 = MakeLut(16, false).value();
  EXPECT_TRUE(at::equal(lut16.to(at::kBFloat16).to(at::kFloat), testing::Get(kmeans, "lut16_bf16")));
  EXPECT_LE((lut16.to(at::kHalf).to(at::kFloat) - testing::Get(kmeans, "lut16_fp16")).abs().max().item<double>(),
            1.0 / 2048);
}

TEST(Lut, UniformLutsAreSymmetricAndSorted) {
  for (int n = 2; n <= 256; n *= 2) {
    std::vector<float> v = MakeLutValues(n, false).value();
    ASSERT_EQ(static_cast<int>(v.size()), n);
    EXPECT_EQ(v.front(), -1.0f);
    EXPECT_EQ(v.back(), 1.0f);
    for (int j = 0; j < n; ++j) {
      EXPECT_EQ(v[j], -v[n - 1 - j]) << "n=" << n << " j=" << j;
      if (j > 0) EXPECT_LT(v[j - 1], v[j]);
      EXPECT_NEAR(v[j], -1.0 + 2.0 * j / (n - 1), 1e-7);
    }
    EXPECT_TRUE(CheckLut(ToTensor(v)).ok());
  }
}

TEST(Lut, ZeroContainingVariant) {
  // linspace(-1, 0, n/2 + 1) without its 0, then linspace(0, 1, n/2) (spec §2.1).
  std::vector<float> four = MakeLutValues(4, true).value();
  EXPECT_EQ(four, (std::vector<float>{-1.0f, -0.5f, 0.0f, 1.0f}));
  std::vector<float> sixteen = MakeLutValues(16, true).value();
  ASSERT_EQ(sixteen.size(), 16u);
  EXPECT_EQ(sixteen[7], -0.125f);
  EXPECT_EQ(sixteen[8], 0.0f);
  EXPECT_NEAR(sixteen[9], 1.0 / 7.0, 1e-7);
  EXPECT_EQ(sixteen[15], 1.0f);
  EXPECT_TRUE(CheckLut(ToTensor(sixteen)).ok());
}

TEST(Lut, RejectsBadSizesAndUnsortedLuts) {
  EXPECT_EQ(MakeLutValues(12, false).status().message(), "lut_size must be a power of two in [2, 256], got 12");
  EXPECT_FALSE(MakeLutValues(1, false).ok());
  EXPECT_FALSE(MakeLutValues(512, false).ok());
  EXPECT_FALSE(CheckLut(ToTensor({0.5f, -0.5f})).ok());
  EXPECT_FALSE(CheckLut(ToTensor({0.0f, std::numeric_limits<float>::quiet_NaN()})).ok());
}

// Brute force: argmin_j |u - lut[j]| in float64 (exact for float32 inputs), first index wins.
int64_t BruteNearest(float u, const std::vector<float>& lut) {
  int64_t best = 0;
  double best_d = std::fabs(static_cast<double>(u) - lut[0]);
  for (size_t j = 1; j < lut.size(); ++j) {
    double d = std::fabs(static_cast<double>(u) - lut[j]);
    if (d < best_d) {
      best = static_cast<int64_t>(j);
      best_d = d;
    }
  }
  return best;
}

TEST(Lut, NearestIndexIsExactArgminWithTiesToLower) {
  at::manual_seed(7);
  std::vector<std::vector<float>> luts = {MakeLutValues(4, false).value(), MakeLutValues(16, false).value(),
                                          MakeLutValues(16, true).value(), MakeLutValues(256, false).value(),
                                          {-0.7333f, -0.2f, 0.2667f, 0.8f}};
  for (const auto& lut_values : luts) {
    at::Tensor lut = ToTensor(lut_values);
    at::Tensor boundaries = LutBoundaries(lut);
    // Random values, values just around every boundary, exact LUT values and out-of-range ones.
    std::vector<float> probes;
    at::Tensor r = at::rand({2000}) * 3 - 1.5;
    for (int64_t i = 0; i < r.numel(); ++i) probes.push_back(r[i].item<float>());
    for (int64_t j = 0; j < boundaries.numel(); ++j) {
      float b = boundaries[j].item<float>();
      float lo = b, hi = b;
      for (int k = 0; k < 3; ++k) {
        lo = std::nextafter(lo, -2.0f);
        hi = std::nextafter(hi, 2.0f);
        probes.push_back(lo);
        probes.push_back(hi);
      }
      probes.push_back(b);
    }
    for (float v : lut_values) probes.push_back(v);
    probes.push_back(-5.0f);
    probes.push_back(7.0f);
    // The float64 brute force cannot resolve |u| far below the LUT spacing (1/3 ± 1e-45 are the
    // same double), so drop the denormals that nextafter produced around a boundary at 0.
    probes.erase(std::remove_if(probes.begin(), probes.end(),
                                [](float u) { return u != 0.0f && std::fabs(u) < 1e-30f; }),
                 probes.end());
    at::Tensor idx = NearestLutIndex(ToTensor(probes), lut);
    for (size_t i = 0; i < probes.size(); ++i) {
      ASSERT_EQ(idx[i].item<int64_t>(), BruteNearest(probes[i], lut_values)) << "u=" << probes[i];
    }
  }
}

// The CPU fast path (compare-and-count, binary search for > 31 boundaries) equals ATen's
// searchsorted, including NaN (-> 0 here; any index in range is acceptable).
TEST(Lut, CpuFastPathMatchesSearchsorted) {
  at::manual_seed(8);
  for (int n : {2, 4, 16, 32, 64, 256}) {
    at::Tensor lut = MakeLut(n, false).value();
    at::Tensor b = LutBoundaries(lut);
    at::Tensor u = at::randn({37, 301}) * 0.7;
    EXPECT_TRUE(at::equal(NearestLutIndexWithBoundaries(u, b), at::searchsorted(b, u))) << n;
    at::Tensor nan = at::full({3}, std::numeric_limits<float>::quiet_NaN());
    at::Tensor idx = NearestLutIndexWithBoundaries(nan, b);
    EXPECT_GE(idx.min().item<int64_t>(), 0);
    EXPECT_LT(idx.max().item<int64_t>(), n);
  }
}

TEST(Lut, ExactMidpointGoesToLowerIndex) {
  at::Tensor lut = ToTensor({-1.0f, 0.0f, 1.0f, 2.0f});
  at::Tensor idx = NearestLutIndex(ToTensor({-0.5f, 0.5f, 1.5f}), lut);
  EXPECT_EQ(idx[0].item<int64_t>(), 0);
  EXPECT_EQ(idx[1].item<int64_t>(), 1);
  EXPECT_EQ(idx[2].item<int64_t>(), 2);
  // u = 0 with the 4-entry uniform LUT is an exact tie between -1/3 and +1/3: index 1 (the
  // reference's round-half-even grid formula gives 2).
  at::Tensor four = MakeLut(4, false).value();
  EXPECT_EQ(NearestLutIndex(at::zeros({1}), four)[0].item<int64_t>(), 1);
}

TEST(Lut, NearestIndexKeepsShapeAndAcceptsLowPrecisionInput) {
  at::Tensor lut = MakeLut(16, false).value();
  at::Tensor u = (at::rand({3, 5, 7}) * 2 - 1).to(at::kBFloat16);
  at::Tensor idx = NearestLutIndex(u, lut);
  EXPECT_EQ(idx.sizes(), u.sizes());
  EXPECT_EQ(idx.scalar_type(), at::kLong);
  EXPECT_TRUE(at::equal(idx, NearestLutIndex(u.to(at::kFloat), lut)));
  EXPECT_GE(idx.min().item<int64_t>(), 0);
  EXPECT_LE(idx.max().item<int64_t>(), 15);
}

}  // namespace
}  // namespace qatd::quant
