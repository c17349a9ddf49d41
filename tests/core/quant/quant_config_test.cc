// QuantConfig / QuantConfigV2: defaults, validation messages, presets, JSON.
#include "core/quant/quant_config.h"

#include "gtest/gtest.h"

namespace qatd::quant {
namespace {

TEST(QuantConfig, DefaultsAreTheReferenceDataclassDefaults) {
  QuantConfig v1;
  EXPECT_EQ(v1.lut_size, 16);
  EXPECT_EQ(v1.group_size, 128);
  EXPECT_EQ(v1.scale_rank, 4);
  EXPECT_FALSE(v1.lut_include_zero);
  EXPECT_FALSE(v1.quantize_attn);
  EXPECT_FALSE(v1.quantize_lm_head);
  EXPECT_TRUE(v1.Validate().ok());

  QuantConfigV2 v2;
  EXPECT_TRUE(v2.force_positive_scales);
  EXPECT_EQ(v2.positive_scale_method, PositiveScaleMethod::kAbs);
  EXPECT_EQ(v2.magnitude_activation, MagnitudeActivation::kSoftplus);
  EXPECT_DOUBLE_EQ(v2.magnitude_eps, 1e-6);
  EXPECT_DOUBLE_EQ(v2.norm_eps, 1e-6);
  EXPECT_FALSE(v2.use_ste_fp16);
  EXPECT_TRUE(v2.Validate().ok());
}

TEST(QuantConfig, ValidationNamesFieldAndRange) {
  QuantConfig c;
  c.lut_size = 12;
  EXPECT_EQ(c.Validate().message(), "lut_size must be a power of two in [2, 256], got 12");
  c.lut_size = 512;
  EXPECT_EQ(c.Validate().message(), "lut_size must be a power of two in [2, 256], got 512");
  c = QuantConfig();
  c.group_size = 0;
  EXPECT_EQ(c.Validate().message(), "group_size must be >= 1, got 0");
  c = QuantConfig();
  c.scale_rank = -2;
  EXPECT_EQ(c.Validate().message(), "scale_rank must be >= 0, got -2");
  c = QuantConfig();
  c.attn_lut_size = 3;
  EXPECT_EQ(c.Validate().message(), "attn_lut_size must be 0 (use lut_size) or a power of two in [2, 256], got 3");
  c = QuantConfig();
  c.attn_scale_rank = -5;
  EXPECT_EQ(c.Validate().message(), "attn_scale_rank must be -1 (use scale_rank) or >= 0, got -5");

  QuantConfigV2 v2;
  v2.scale_rank = 0;
  EXPECT_EQ(v2.Validate().message(), "scale_rank must be >= 1 for V2 layers, got 0");
  v2 = QuantConfigV2();
  v2.norm_eps = 0;
  EXPECT_EQ(v2.Validate().message(), "norm_eps must be finite and in (0, 1), got 0");
}

TEST(QuantConfig, PerLayerRankAndPadding) {
  LayerQuantSpec s;
  s.group_size = 32;
  s.scale_rank = 64;
  EXPECT_TRUE(s.ValidateForShape(64, 64).ok());
  EXPECT_FALSE(s.LowRank(64, 64));  // rank == min(out, padded_in): full scales
  s.scale_rank = 65;
  EXPECT_EQ(s.ValidateForShape(64, 64).message(),
            "scale_rank must be in [0, 64] for a 64x64 layer (min(out, padded_in)), got 65");
  // in = 50, group 32: pad 14, padded 64, two groups (spec §3.2); the rank bound uses padded_in.
  GroupPadding p = ComputeGroupPadding(50, 32);
  EXPECT_EQ(p.pad, 14);
  EXPECT_EQ(p.padded_in, 64);
  EXPECT_EQ(p.num_groups, 2);
  s.scale_rank = 64;
  EXPECT_TRUE(s.ValidateForShape(100, 50).ok());
  EXPECT_EQ(ComputeGroupPadding(1024, 128).pad, 0);

  LayerQuantSpecV2 v2;
  v2.scale_rank = 51;
  EXPECT_EQ(v2.ValidateForShape(100, 50).message(),
            "scale_rank must be in [1, 50] for a 100x50 layer (min(out, in)), got 51");
}

TEST(QuantConfig, AttentionOverridesResolve) {
  QuantConfig c;
  c.lut_size = 4;
  c.scale_rank = 32;
  c.group_size = 16;
  c.attn_lut_size = 16;
  c.attn_scale_rank = 8;
  LayerQuantSpec mlp = c.ForKind(LinearKind::kMlp);
  LayerQuantSpec attn = c.ForKind(LinearKind::kAttention);
  LayerQuantSpec head = c.ForKind(LinearKind::kLmHead);
  EXPECT_EQ(mlp.lut_size, 4);
  EXPECT_EQ(attn.lut_size, 16);
  EXPECT_EQ(attn.scale_rank, 8);
  EXPECT_EQ(attn.group_size, 16);  // 0 override: the MLP value
  EXPECT_EQ(head.lut_size, 4);     // lm_head uses the MLP settings
}

TEST(QuantConfig, PresetsCarryScriptValues) {
  struct Want {
    const char* name;
    int lut, rank, attn_lut, attn_rank;
  };
  for (const Want& w : {Want{"Q4_A4", 16, 4, 16, 4}, Want{"Q2_A4", 4, 32, 16, 8}, Want{"Q4_A4_R32", 16, 32, 16, 32},
                        Want{"q2a2", 4, 32, 4, 32}}) {
    auto c = QuantConfigV2::FromPreset(w.name);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->ForKind(LinearKind::kMlp).lut_size, w.lut) << w.name;
    EXPECT_EQ(c->ForKind(LinearKind::kMlp).scale_rank, w.rank) << w.name;
    EXPECT_EQ(c->ForKind(LinearKind::kAttention).lut_size, w.attn_lut) << w.name;
    EXPECT_EQ(c->ForKind(LinearKind::kAttention).scale_rank, w.attn_rank) << w.name;
    EXPECT_TRUE(c->quantize_attn);
    EXPECT_FALSE(c->force_positive_scales);
    EXPECT_EQ(c->magnitude_activation, MagnitudeActivation::kIdentity);
    EXPECT_TRUE(c->use_ste_fp16);
    EXPECT_EQ(c->group_size, 32);
    EXPECT_TRUE(c->Validate().ok());
    auto v1 = QuantConfig::FromPreset(w.name);
    ASSERT_TRUE(v1.ok());
    EXPECT_EQ(v1->ForKind(LinearKind::kAttention).scale_rank, w.attn_rank);
  }
  auto bad = QuantConfigV2::FromPreset("Q3_A3");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(QuantConfig, JsonRoundTripAndStrictParsing) {
  QuantConfigV2 c = QuantConfigV2::FromPreset("Q2_A4").value();
  c.positive_scale_method = PositiveScaleMethod::kSoftplus;
  c.norm_eps = 1e-5;
  nlohmann::json j = ToJson(c);
  EXPECT_EQ(j["version"], "v2");
  EXPECT_EQ(j["magnitude_activation"], "identity");
  auto back = QuantConfigV2FromJson(j);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(ToJson(*back), j);

  QuantConfig v1;
  v1.quantize_attn = true;
  v1.attn_lut_size = 4;
  auto v1_back = QuantConfigFromJson(ToJson(v1));
  ASSERT_TRUE(v1_back.ok()) << v1_back.status();
  EXPECT_EQ(ToJson(*v1_back), ToJson(v1));

  EXPECT_EQ(QuantConfigFromJson({{"lut_sise", 4}}).status().message(), "quant config: unknown field 'lut_sise'");
  EXPECT_EQ(QuantConfigFromJson({{"lut_size", "4"}}).status().message(), "quant config: 'lut_size' must be an integer");
  EXPECT_EQ(QuantConfigFromJson({{"lut_size", 12}}).status().message(),
            "lut_size must be a power of two in [2, 256], got 12");
  EXPECT_FALSE(QuantConfigFromJson({{"learnable_lut", true}}).ok());
  EXPECT_TRUE(QuantConfigFromJson({{"learnable_lut", false}}).ok());
  EXPECT_FALSE(QuantConfigV2FromJson({{"magnitude_activation", "relu"}}).ok());
  EXPECT_FALSE(QuantConfigFromJson(ToJson(QuantConfigV2())).ok());  // version "v2" is not a V1 config
}

}  // namespace
}  // namespace qatd::quant
