// Snapping: V1 lut/baked, V2 export bake and FP16/ANE snap, persisted baked flag.
#include "core/quant/snap.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <filesystem>

#include "core/jobs/snap_report.h"
#include "core/quant/export.h"
#include "gtest/gtest.h"
#include "tests/core/quant/golden_util.h"

namespace qatd::quant {
namespace {

using testing::MaxRelErr;

at::Tensor RandomWeight(int64_t out, int64_t in, uint64_t seed) {
  at::manual_seed(seed);
  return at::randn({out, in}) * 0.02 * (1 + at::rand({out, 1})) * (1 + at::rand({1, in}));
}

std::shared_ptr<QuantLinearV1> MakeV1(at::ScalarType dtype = at::kFloat, int lut = 16) {
  LayerQuantSpec spec;
  spec.lut_size = lut;
  spec.group_size = 16;
  spec.scale_rank = 4;
  auto layer = QuantLinearV1::Create(RandomWeight(32, 48, 11).to(dtype), at::Tensor(), spec);
  EXPECT_TRUE(layer.ok()) << layer.status();
  return *layer;
}

LayerQuantSpecV2 ScriptSpecV2(int lut, int rank) {
  LayerQuantSpecV2 s;
  s.lut_size = lut;
  s.scale_rank = rank;
  s.group_size = 16;
  s.force_positive_scales = false;
  s.magnitude_activation = MagnitudeActivation::kIdentity;
  s.use_ste_fp16 = true;
  return s;
}

std::shared_ptr<QuantLinearV2> MakeV2(int lut = 4, int rank = 8) {
  auto layer = QuantLinearV2::Create(RandomWeight(32, 48, 12), at::Tensor(), ScriptSpecV2(lut, rank));
  EXPECT_TRUE(layer.ok()) << layer.status();
  return *layer;
}

// quantize -> snap -> dequantize gives back the same effective weight, and snapping again
// changes nothing.
TEST(SnapV1, SnapIsIdempotentInBothModes) {
  for (SnapMode mode : {SnapMode::kLut, SnapMode::kBakeScales}) {
    auto layer = MakeV1();
    at::Tensor before = layer->EffectiveWeight();
    at::Tensor idx = layer->ComputeIndices();
    auto st = SnapV1(*layer, mode);
    ASSERT_TRUE(st.ok()) << st.status();
    EXPECT_EQ(layer->snapped_mode(), mode);
    EXPECT_EQ(st->indices_changed, 0.0);
    EXPECT_LT(st->effective_change, 1e-7);
    EXPECT_GT(st->rel_error, 0.0);  // vs the latent weight: the quantization error
    EXPECT_LT(MaxRelErr(layer->EffectiveWeight(), before), 1e-6);
    EXPECT_TRUE(at::equal(layer->ComputeIndices(), idx));
    // Dequantise from indices: LUT[idx] * S is the effective weight.
    at::NoGradGuard no_grad;
    at::Tensor deq = layer->lut.index_select(0, idx.to(at::kLong).reshape({-1})).reshape(idx.sizes()) *
                     layer->EffectiveScales().narrow(1, 0, 48);
    EXPECT_LT(MaxRelErr(deq, before), 1e-6);
    at::Tensor w = layer->weight.detach().clone();
    auto again = SnapV1(*layer, mode);
    ASSERT_TRUE(again.ok());
    EXPECT_TRUE(at::equal(layer->weight.detach(), w));
    EXPECT_EQ(again->indices_changed, 0.0);
  }
}

TEST(SnapV1, LutThenBakedKeepsTheWeights) {
  auto layer = MakeV1();
  at::Tensor before = layer->EffectiveWeight();
  ASSERT_TRUE(SnapV1(*layer, SnapMode::kLut).ok());
  auto st = SnapV1(*layer, SnapMode::kBakeScales);
  ASSERT_TRUE(st.ok());
  EXPECT_LT(MaxRelErr(layer->EffectiveWeight(), before), 1e-6);
  EXPECT_FALSE(SnapV1(*layer, SnapMode::kNone).ok());
}

TEST(SnapV1, Bf16BakedWeightsAreRoundedButIndicesStay) {
  auto layer = MakeV1(at::kBFloat16, 4);
  at::Tensor idx = layer->ComputeIndices();
  auto st = SnapV1(*layer, SnapMode::kBakeScales);
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(layer->weight.scalar_type(), at::kBFloat16);
  EXPECT_EQ(st->indices_changed, 0.0);
  EXPECT_TRUE(at::equal(layer->ComputeIndices(), idx));
}

// Every snap counts how many weights each LUT entry holds (qatd_job_lut_entry_usage_ratio).
TEST(SnapV1, CountsTheWeightsOfEveryLutEntry) {
  auto layer = MakeV1(at::kFloat, 16);
  absl::StatusOr<SnapStats> st = SnapV1(*layer, SnapMode::kLut);
  ASSERT_TRUE(st.ok()) << st.status();
  ASSERT_EQ(st->lut_counts.size(), 16u);
  const at::Tensor expected = at::bincount(layer->ComputeIndices().reshape({-1}).to(at::kLong), {}, 16);
  int64_t total = 0;
  for (int64_t i = 0; i < 16; ++i) {
    EXPECT_EQ(st->lut_counts[static_cast<size_t>(i)], expected[i].item<int64_t>()) << "entry " << i;
    total += st->lut_counts[static_cast<size_t>(i)];
  }
  EXPECT_EQ(total, 32 * 48);
  auto v2 = MakeV2(4, 8);
  absl::StatusOr<SnapStats> st2 = SnapV2ForExport(*v2);
  ASSERT_TRUE(st2.ok()) << st2.status();
  ASSERT_EQ(st2->lut_counts.size(), 4u);
  EXPECT_EQ(st2->lut_counts[0] + st2->lut_counts[1] + st2->lut_counts[2] + st2->lut_counts[3],
            v2->Indices().numel());
}

TEST(SnapReport, LutUsageIsGroupedByLayerKindAndSumsToOne) {
  SnapStats mlp_a, mlp_b, attn, unknown;
  mlp_a.name = "model.layers.0.mlp.gate_proj";
  mlp_a.lut_counts = {1, 3};
  mlp_b.name = "model.layers.1.mlp.down_proj";
  mlp_b.lut_counts = {0, 4};
  attn.name = "model.layers.0.self_attn.q_proj";
  attn.lut_counts = {2, 0, 0, 2};
  unknown.name = "model.layers.0.self_attn.o_proj";  // no counts: skipped
  const auto usage = jobs::LutUsageByGroup({mlp_a, mlp_b, attn, unknown});
  ASSERT_EQ(usage.size(), 2u);
  EXPECT_EQ(usage.at("mlp"), (std::vector<double>{0.125, 0.875}));
  EXPECT_EQ(usage.at("attn"), (std::vector<double>{0.5, 0.0, 0.0, 0.5}));
}

TEST(SnapV2, ExportBakeKeepsOutputAndPersistsFlag) {
  auto layer = MakeV2();
  layer->FreezeQ();
  at::Tensor x = at::randn({3, 48});
  at::NoGradGuard no_grad;
  at::Tensor w_before = layer->EffectiveWeight();
  at::Tensor y_before = layer->forward(x);
  auto st = SnapV2ForExport(*layer);
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_TRUE(layer->scales_baked());
  EXPECT_EQ(layer->scales_baked_flag.item<int8_t>(), 1);
  EXPECT_TRUE(at::equal(layer->rank_magnitude, at::ones_like(layer->rank_magnitude)));
  EXPECT_LT(st->effective_change, 1e-6);
  EXPECT_LT(MaxRelErr(layer->EffectiveWeight(), w_before), 1e-6);
  EXPECT_LT(MaxRelErr(layer->forward(x), y_before), 1e-5);

  // Spec §17.6 fix: the flag travels with the state. Reload into a fresh layer of the same
  // config through a safetensors file.
  auto path = (std::filesystem::temp_directory_path() / "qatd_snap_v2_state.safetensors").string();
  ASSERT_TRUE(WriteTensorMap(path, LayerState(*layer)).ok());
  auto loaded = ReadTensorMap(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto fresh = MakeV2();
  ASSERT_TRUE(LoadLayerState(*fresh, loaded->tensors).ok());
  std::filesystem::remove(path);
  EXPECT_TRUE(fresh->scales_baked());
  EXPECT_TRUE(fresh->q_frozen());
  EXPECT_LT(MaxRelErr(fresh->forward(x), y_before), 1e-5);
  // What the reference's reload did (flag lost): re-normalising the baked A loses the
  // magnitudes, and the output is wrong.
  fresh->SetScalesBaked(false);
  EXPECT_GT(MaxRelErr(fresh->forward(x), y_before), 0.1);
}

TEST(SnapV2, AneSnapMakesEverythingFp16AndKeepsIndices) {
  auto layer = MakeV2(16, 8);
  layer->FreezeQ();
  at::Tensor idx = layer->indices.clone();
  at::Tensor w_before = layer->EffectiveWeight();
  auto st = SnapV2ForAne(*layer);
  ASSERT_TRUE(st.ok()) << st.status();
  for (const at::Tensor& t : {layer->weight, layer->scale_A, layer->scale_B, layer->rank_magnitude, layer->lut, layer->q}) {
    EXPECT_EQ(t.scalar_type(), at::kHalf);
  }
  EXPECT_TRUE(layer->scales_baked());
  EXPECT_TRUE(at::equal(layer->indices, idx));
  EXPECT_EQ(st->indices_changed, 0.0);
  EXPECT_LT(st->effective_change, 2e-3);  // fp16 rounding of the factors
  EXPECT_LT(MaxRelErr(layer->EffectiveWeight(), w_before), 2e-3);
  // A float32 input still works (the layer casts to x's dtype).
  at::NoGradGuard no_grad;
  EXPECT_EQ(layer->forward(at::randn({2, 48})).scalar_type(), at::kFloat);
}

// Spec §17.7 fix: with force_positive off, negative scales keep their sign in the fp16 snap
// (the reference clamped them to 1e-8 and so destroyed those weights).
TEST(SnapV2, AneSnapKeepsNegativeScales) {
  auto layer = MakeV2(16, 8);
  {
    at::NoGradGuard no_grad;
    // Flip the sign of the magnitude of the leading component: S becomes mostly negative.
    layer->rank_magnitude.narrow(0, 0, 1).mul_(-1);
  }
  layer->FreezeQ();
  at::NoGradGuard no_grad;
  at::Tensor s_before = layer->EffectiveScales();
  ASSERT_GT(s_before.lt(0).sum().item<int64_t>(), 0);
  at::Tensor w_before = layer->EffectiveWeight();
  auto st = SnapV2ForAne(*layer, AneSnapOptions{/*recompute_indices=*/true});
  ASSERT_TRUE(st.ok()) << st.status();
  at::Tensor s_after = layer->EffectiveScales().to(at::kFloat);
  EXPECT_GT(s_after.lt(0).sum().item<int64_t>(), 0);
  EXPECT_LT(s_after.lt(0).ne(s_before.lt(0)).to(at::kFloat).mean().item<double>(), 0.01);
  EXPECT_LT(st->indices_changed, 0.02);
  EXPECT_LT(st->effective_change, 0.01);
}

}  // namespace
}  // namespace qatd::quant
