// Index packing, the compact artifact, and layer state save/load.
#include "core/quant/export.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <unistd.h>

#include <filesystem>

#include "core/quant/quant_linear_v1.h"
#include "core/quant/quant_linear_v2.h"
#include "core/quant/snap.h"
#include "gtest/gtest.h"
#include "tests/core/quant/golden_util.h"

namespace qatd::quant {
namespace {

using testing::MaxRelErr;
namespace fs = std::filesystem;

std::string TempPath(const std::string& name) {
  return (fs::temp_directory_path() / ("qatd_quant_" + std::to_string(::getpid()) + "_" + name)).string();
}

TEST(PackIndices, BitLayoutIsLittleEndianLowBitsFirst) {
  at::Tensor two = at::tensor({1, 2, 3, 0, 3}, at::kByte);
  at::Tensor packed = PackIndices(two, 2).value();
  ASSERT_EQ(packed.numel(), 2);
  EXPECT_EQ(packed[0].item<uint8_t>(), 0b00111001);  // 1 | 2<<2 | 3<<4 | 0<<6
  EXPECT_EQ(packed[1].item<uint8_t>(), 0b00000011);  // unused high bits are zero
  at::Tensor four = PackIndices(at::tensor({0xA, 0x5, 0xF}, at::kByte), 4).value();
  ASSERT_EQ(four.numel(), 2);
  EXPECT_EQ(four[0].item<uint8_t>(), 0x5A);
  EXPECT_EQ(four[1].item<uint8_t>(), 0x0F);
}

TEST(PackIndices, RoundTripForAllWidths) {
  at::manual_seed(3);
  for (int bits : {2, 4, 8}) {
    for (int64_t n : {1, 7, 64, 1001}) {
      at::Tensor idx = at::randint(0, 1 << bits, {n}, at::kLong).to(at::kByte).reshape({n});
      at::Tensor packed = PackIndices(idx, bits).value();
      EXPECT_EQ(packed.numel(), (n * bits + 7) / 8);
      at::Tensor back = UnpackIndices(packed, bits, {n}).value();
      EXPECT_TRUE(at::equal(back, idx)) << bits << " bits, n=" << n;
    }
    at::Tensor m = at::randint(0, 1 << bits, {6, 10}, at::kLong);
    EXPECT_TRUE(at::equal(UnpackIndices(PackIndices(m, bits).value(), bits, {6, 10}).value(), m.to(at::kByte)));
  }
}

TEST(PackIndices, RejectsBadInput) {
  EXPECT_FALSE(PackIndices(at::tensor({4}, at::kByte), 2).ok());
  EXPECT_FALSE(PackIndices(at::tensor({1}, at::kByte), 3).ok());
  EXPECT_FALSE(PackIndices(at::tensor({1.0f}), 4).ok());
  EXPECT_FALSE(UnpackIndices(at::zeros({3}, at::kByte), 4, {8}).ok());
  EXPECT_EQ(PackedBitsForLutSize(4), 2);
  EXPECT_EQ(PackedBitsForLutSize(16), 4);
  EXPECT_EQ(PackedBitsForLutSize(256), 8);
}

at::Tensor RandomWeight(int64_t out, int64_t in, uint64_t seed) {
  at::manual_seed(seed);
  return at::randn({out, in}) * 0.02 * (1 + at::rand({out, 1}));
}

std::shared_ptr<QuantLinearV1> MakeV1(int rank, int lut = 16, int64_t in = 48) {
  LayerQuantSpec s;
  s.lut_size = lut;
  s.group_size = 16;
  s.scale_rank = rank;
  auto layer = QuantLinearV1::Create(RandomWeight(24, in, rank + lut), at::Tensor(), s);
  EXPECT_TRUE(layer.ok()) << layer.status();
  return *layer;
}

std::shared_ptr<QuantLinearV2> MakeV2(int lut, int rank) {
  LayerQuantSpecV2 s;
  s.lut_size = lut;
  s.scale_rank = rank;
  s.group_size = 16;
  s.force_positive_scales = false;
  s.magnitude_activation = MagnitudeActivation::kIdentity;
  at::manual_seed(lut * 100 + rank);
  auto layer = QuantLinearV2::Create(RandomWeight(24, 48, lut + rank), at::randn({24}) * 0.1, s);
  EXPECT_TRUE(layer.ok()) << layer.status();
  return *layer;
}

TEST(Artifact, RoundTripDequantisesToTheEffectiveWeights) {
  auto v1 = MakeV1(4, 16, 40);  // padded 40 -> 48: B is exported trimmed to [r, I]
  auto v1_lut_snapped = MakeV1(3, 4);
  auto v1_full = MakeV1(0, 16);
  auto v2 = MakeV2(4, 8);
  v2->FreezeQ();
  at::Tensor snapped_idx = v1_lut_snapped->ComputeIndices();
  ASSERT_TRUE(SnapV1(*v1_lut_snapped, SnapMode::kLut).ok());

  std::vector<std::pair<std::string, std::shared_ptr<model::LinearLayer>>> layers = {
      {"model.layers.0.mlp.up_proj", v1},
      {"model.layers.0.mlp.down_proj", v1_lut_snapped},
      {"model.layers.0.mlp.gate_proj", v1_full},
      {"model.layers.1.mlp.up_proj", v2}};
  const std::string path = TempPath("artifact.safetensors");
  ASSERT_TRUE(ExportQuantizedArtifact(path, layers, ExportOptions{at::kFloat}).ok());
  auto records = ReadQuantizedArtifact(path);
  ASSERT_TRUE(records.ok()) << records.status();
  ASSERT_EQ(records->size(), 4u);
  for (const QuantizedLayerRecord& r : *records) {
    std::shared_ptr<model::LinearLayer> layer;
    for (auto& [name, l] : layers) {
      if (name == r.name) layer = l;
    }
    ASSERT_TRUE(layer) << r.name;
    EXPECT_EQ(r.out_features, layer->out_features());
    EXPECT_EQ(r.in_features, layer->in_features());
    EXPECT_LT(MaxRelErr(DequantizeRecord(r), layer->EffectiveWeight()), 1e-6) << r.name;
  }
  // Spec §17.4 fix: the lut-snapped layer exports its real indices (2-bit packed).
  for (const QuantizedLayerRecord& r : *records) {
    if (r.name == "model.layers.0.mlp.down_proj") {
      EXPECT_EQ(r.bits, 2);
      EXPECT_TRUE(at::equal(r.indices, snapped_idx));
    }
    if (r.name == "model.layers.1.mlp.up_proj") {
      EXPECT_EQ(r.version, "v2");
      EXPECT_TRUE(at::equal(r.indices, v2->indices));
      EXPECT_TRUE(r.bias.defined());
    }
    if (r.name == "model.layers.0.mlp.gate_proj") EXPECT_TRUE(r.scales.defined());
  }
  // The default fp16 artifact is close (fp16 rounding of LUT and scales only).
  ASSERT_TRUE(ExportQuantizedArtifact(path, layers).ok());
  auto half = ReadQuantizedArtifact(path);
  ASSERT_TRUE(half.ok());
  for (const QuantizedLayerRecord& r : *half) {
    EXPECT_EQ(r.lut.scalar_type(), at::kHalf);
    for (auto& [name, l] : layers) {
      if (name == r.name) EXPECT_LT(MaxRelErr(DequantizeRecord(r), l->EffectiveWeight()), 2e-3) << r.name;
    }
  }
  fs::remove(path);
}

TEST(LayerState, V1RoundTripThroughSafetensors) {
  auto layer = MakeV1(4, 16, 40);
  {
    at::NoGradGuard no_grad;
    layer->scale_A.mul_(1.1);  // trained state differs from the init
  }
  ASSERT_TRUE(SnapV1(*layer, SnapMode::kLut).ok());
  TensorMap state = LayerState(*layer, "model.layers.3.mlp.up_proj");
  EXPECT_TRUE(state.count("model.layers.3.mlp.up_proj._snapped_mode"));
  EXPECT_FALSE(state.count("model.layers.3.mlp.up_proj._cached_weight_q"));
  const std::string path = TempPath("v1_state.safetensors");
  ASSERT_TRUE(WriteTensorMap(path, state).ok());
  auto loaded = ReadTensorMap(path);
  ASSERT_TRUE(loaded.ok());
  fs::remove(path);
  auto fresh = MakeV1(4, 16, 40);
  ASSERT_TRUE(LoadLayerState(*fresh, loaded->tensors, "model.layers.3.mlp.up_proj").ok());
  EXPECT_EQ(fresh->snapped_mode(), SnapMode::kLut);
  EXPECT_TRUE(at::equal(fresh->EffectiveWeight(), layer->EffectiveWeight()));
  EXPECT_TRUE(at::equal(fresh->ComputeIndices(), layer->ComputeIndices()));
}

TEST(LayerState, V2RoundTripAndReferenceInt64Indices) {
  auto layer = MakeV2(16, 8);
  layer->FreezeQ();
  TensorMap state = LayerState(*layer);
  EXPECT_EQ(state.at("_indices").scalar_type(), at::kByte);
  state["_indices"] = state["_indices"].to(at::kLong);  // the reference keeps int64
  auto fresh = MakeV2(16, 8);
  ASSERT_TRUE(LoadLayerState(*fresh, state).ok());
  EXPECT_TRUE(fresh->q_frozen());
  EXPECT_TRUE(at::equal(fresh->indices, layer->indices));
  at::Tensor x = at::randn({2, 48});
  at::NoGradGuard no_grad;
  EXPECT_TRUE(at::equal(fresh->forward(x), layer->forward(x)));
  // _Q without _indices (HEAD's loader accepts it): indices are recovered from the values.
  state.erase("_indices");
  auto from_q = MakeV2(16, 8);
  ASSERT_TRUE(LoadLayerState(*from_q, state).ok());
  EXPECT_TRUE(at::equal(from_q->indices, layer->indices));
  // Neither: the layer is left unfrozen.
  state.erase("_Q");
  auto unfrozen = MakeV2(16, 8);
  unfrozen->FreezeQ();
  ASSERT_TRUE(LoadLayerState(*unfrozen, state).ok());
  EXPECT_FALSE(unfrozen->q_frozen());
}

TEST(LayerState, RejectsMissingWrongAndUnknownEntries) {
  auto layer = MakeV2(4, 8);
  TensorMap state = LayerState(*layer, "p");
  TensorMap missing = state;
  missing.erase("p.scale_B");
  EXPECT_EQ(LoadLayerState(*layer, missing, "p").message(), "state lacks 'p.scale_B'");
  TensorMap wrong = state;
  wrong["p.scale_A"] = at::zeros({24, 9});
  EXPECT_EQ(LoadLayerState(*layer, wrong, "p").code(), absl::StatusCode::kInvalidArgument);
  TensorMap unknown = state;
  unknown["p.full_scales"] = at::zeros({24, 48});
  EXPECT_EQ(LoadLayerState(*layer, unknown, "p").message(), "unexpected state entry 'p.full_scales'");
  TensorMap bad_idx = state;
  bad_idx["p._indices"] = at::full({24, 48}, 7, at::kLong);  // lut has 4 entries
  EXPECT_EQ(LoadLayerState(*layer, bad_idx, "p").code(), absl::StatusCode::kInvalidArgument);
  TensorMap unsorted = state;
  unsorted["p.lut"] = at::tensor({1.0f, 0.0f, -1.0f, 2.0f});
  EXPECT_EQ(LoadLayerState(*layer, unsorted, "p").code(), absl::StatusCode::kInvalidArgument);
  // Nothing was half-applied: the layer still loads its own state.
  EXPECT_TRUE(LoadLayerState(*layer, state, "p").ok());
}

}  // namespace
}  // namespace qatd::quant
