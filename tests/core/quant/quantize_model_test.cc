// Model-level quantization through the LinearRegistry seam: selection, replacement, freezing,
// trainable sets, snaps/conversions over a model, and the Qwen3 adapter.
#include "core/quant/quantize_model.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <map>

#include "core/model/qwen3_model.h"
#include "core/quant/quant_linear_v1.h"
#include "core/quant/quant_linear_v2.h"
#include "gtest/gtest.h"

namespace qatd::quant {
namespace {

// A dense test layer with an optional bias.
class TestDense : public model::LinearLayer {
 public:
  TestDense(int64_t in, int64_t out, bool with_bias) {
    weight = register_parameter("weight", at::randn({out, in}) * 0.02);
    if (with_bias) bias = register_parameter("bias", at::randn({out}) * 0.1);
  }
  at::Tensor forward(const at::Tensor& x) override { return at::linear(x, weight, bias); }
  int64_t in_features() const override { return weight.size(1); }
  int64_t out_features() const override { return weight.size(0); }
  at::Tensor EffectiveWeight() override { return weight.detach(); }
  at::Tensor weight, bias;
};

// A two-layer "model": 7 projections per layer, an lm_head and a norm weight.
class FakeModel : public LinearRegistry {
 public:
  FakeModel() {
    at::manual_seed(0);
    const std::map<std::string, std::pair<int64_t, int64_t>> shapes = {
        {"self_attn.q_proj", {32, 32}}, {"self_attn.k_proj", {32, 16}}, {"self_attn.v_proj", {32, 16}},
        {"self_attn.o_proj", {32, 32}}, {"mlp.gate_proj", {32, 64}},     {"mlp.up_proj", {32, 64}},
        {"mlp.down_proj", {64, 32}}};
    for (int l = 0; l < 2; ++l) {
      for (const auto& [suffix, io] : shapes) {
        std::string name = "model.layers." + std::to_string(l) + "." + suffix;
        names_.push_back(name);
        layers_[name] = std::make_shared<TestDense>(io.first, io.second, suffix == "mlp.up_proj");
      }
    }
    names_.push_back("lm_head");
    layers_["lm_head"] = std::make_shared<TestDense>(32, 40, false);
    norm = at::ones({32}).requires_grad_(true);
  }
  std::vector<std::string> LinearNames() const override { return names_; }
  std::shared_ptr<model::LinearLayer> GetLinear(const std::string& name) override {
    auto it = layers_.find(name);
    return it == layers_.end() ? nullptr : it->second;
  }
  absl::Status ReplaceLinear(const std::string& name, std::shared_ptr<model::LinearLayer> layer) override {
    if (!layers_.count(name)) return absl::NotFoundError(name);
    layers_[name] = std::move(layer);
    ++replacements;
    return absl::OkStatus();
  }
  void FreezeAllParameters() override {
    norm.requires_grad_(false);
    for (auto& [name, layer] : layers_) {
      for (at::Tensor& p : layer->parameters()) p.requires_grad_(false);
    }
  }
  std::vector<at::Tensor> TrainableParameters() {
    std::vector<at::Tensor> out;
    if (norm.requires_grad()) out.push_back(norm);
    for (auto& [name, layer] : layers_) {
      for (at::Tensor& p : layer->parameters()) {
        if (p.requires_grad()) out.push_back(p);
      }
    }
    return out;
  }

  at::Tensor norm;
  int replacements = 0;

 private:
  std::vector<std::string> names_;
  std::map<std::string, std::shared_ptr<model::LinearLayer>> layers_;
};

template <typename T>
T* As(LinearRegistry& m, const std::string& name) {
  return dynamic_cast<T*>(m.GetLinear(name).get());
}

TEST(Selection, ClassifiesByModuleName) {
  EXPECT_EQ(ClassifyLinear("model.layers.0.mlp.gate_proj"), LinearKind::kMlp);
  EXPECT_EQ(ClassifyLinear("model.layers.27.mlp.down_proj"), LinearKind::kMlp);
  EXPECT_EQ(ClassifyLinear("model.layers.3.self_attn.o_proj"), LinearKind::kAttention);
  EXPECT_EQ(ClassifyLinear("lm_head"), LinearKind::kLmHead);
  EXPECT_EQ(ClassifyLinear("model.lm_head"), std::nullopt);
  EXPECT_EQ(ClassifyLinear("model.layers.0.mlp.gate_proj.lora"), std::nullopt);
  EXPECT_EQ(ClassifyLinear("model.layers.0.mlpgate_proj"), std::nullopt);
  FakeModel m;
  EXPECT_EQ(SelectQuantTargets(m.LinearNames(), false, false).size(), 6u);
  EXPECT_EQ(SelectQuantTargets(m.LinearNames(), true, false).size(), 14u);
  EXPECT_EQ(SelectQuantTargets(m.LinearNames(), true, true).size(), 15u);
}

TEST(QuantizeLinears, ReplacesMlpOnlyByDefaultAndFreezesEverything) {
  FakeModel m;
  auto* dense_up = As<TestDense>(m, "model.layers.0.mlp.up_proj");
  at::Tensor w = dense_up->weight.detach().clone();
  at::Tensor b = dense_up->bias.detach().clone();
  QuantConfig c;
  c.group_size = 16;
  auto report = QuantizeLinears(m, c);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->replaced.size(), 6u);
  EXPECT_NE(As<QuantLinearV1>(m, "model.layers.1.mlp.down_proj"), nullptr);
  EXPECT_NE(As<TestDense>(m, "model.layers.0.self_attn.q_proj"), nullptr);
  EXPECT_NE(As<TestDense>(m, "lm_head"), nullptr);
  auto* up = As<QuantLinearV1>(m, "model.layers.0.mlp.up_proj");
  ASSERT_NE(up, nullptr);
  EXPECT_TRUE(at::equal(up->weight, w));
  EXPECT_TRUE(at::equal(up->bias, b));
  EXPECT_TRUE(m.TrainableParameters().empty());
  // Running it again leaves quantized layers alone.
  auto again = QuantizeLinears(m, c);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->replaced.empty());
  EXPECT_EQ(again->already_quantized.size(), 6u);
}

TEST(QuantizeLinears, AttentionOverridesAndLmHead) {
  FakeModel m;
  QuantConfig c;
  c.group_size = 16;
  c.lut_size = 4;
  c.scale_rank = 8;
  c.quantize_attn = true;
  c.attn_lut_size = 16;
  c.attn_scale_rank = 2;
  c.quantize_lm_head = true;
  ASSERT_TRUE(QuantizeLinears(m, c).ok());
  auto* q = As<QuantLinearV1>(m, "model.layers.0.self_attn.q_proj");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->lut.numel(), 16);
  EXPECT_EQ(q->rank(), 2);
  auto* head = As<QuantLinearV1>(m, "lm_head");
  ASSERT_NE(head, nullptr);
  EXPECT_EQ(head->lut.numel(), 4);
  c.lut_size = 12;
  FakeModel m2;
  EXPECT_EQ(QuantizeLinears(m2, c).status().message(), "lut_size must be a power of two in [2, 256], got 12");
  EXPECT_EQ(m2.replacements, 0);
}

TEST(TrainableSets, WeightsScalesAndMlpOnly) {
  FakeModel m;
  QuantConfig c;
  c.group_size = 16;
  c.quantize_attn = true;
  ASSERT_TRUE(QuantizeLinears(m, c).ok());
  ASSERT_TRUE(ApplyTrainableSet(m, {.weights = true}).ok());
  EXPECT_EQ(m.TrainableParameters().size(), 14u);  // one latent weight per quantized layer
  ASSERT_TRUE(ApplyTrainableSet(m, {.scales = true}).ok());
  EXPECT_EQ(m.TrainableParameters().size(), 28u);  // A and B
  EXPECT_FALSE(As<QuantLinearV1>(m, "model.layers.0.mlp.up_proj")->weight.requires_grad());
  ASSERT_TRUE(ApplyTrainableSet(m, {.weights = true, .scales = true, .mlp_only = true}).ok());
  EXPECT_EQ(m.TrainableParameters().size(), 18u);  // 6 MLP layers x (W, A, B)
  EXPECT_FALSE(As<QuantLinearV1>(m, "model.layers.0.self_attn.q_proj")->scale_A.requires_grad());
  EXPECT_EQ(ApplyTrainableSet(m, {.g_only = true}).code(), absl::StatusCode::kInvalidArgument);
}

TEST(TrainableSets, V2ScalesAndGOnly) {
  FakeModel m;
  QuantConfigV2 c = QuantConfigV2::FromPreset("Q2_A4").value();
  c.group_size = 16;
  c.scale_rank = 8;
  c.attn_scale_rank = 4;
  auto report = QuantizeLinearsV2(m, c, /*freeze_q=*/true);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->replaced.size(), 14u);
  EXPECT_TRUE(As<QuantLinearV2>(m, "model.layers.1.self_attn.k_proj")->q_frozen());
  ASSERT_TRUE(ApplyTrainableSet(m, {.scales = true}).ok());
  EXPECT_EQ(m.TrainableParameters().size(), 42u);
  ASSERT_TRUE(ApplyTrainableSet(m, {.g_only = true, .mlp_only = true}).ok());
  EXPECT_EQ(m.TrainableParameters().size(), 6u);
  EXPECT_EQ(ApplyTrainableSet(m, {.weights = true}).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ModelOps, SnapConvertAndStateOverAModel) {
  FakeModel m;
  QuantConfig c = QuantConfig::FromPreset("Q4_A4").value();
  c.group_size = 16;
  ASSERT_TRUE(QuantizeLinears(m, c).ok());
  // V1 -> V2, then Q4 -> Q2 on every layer.
  QuantConfigV2 v2 = QuantConfigV2::FromPreset("Q4_A4").value();
  ASSERT_TRUE(ConvertAllV1ToV2(m, v2).ok());
  EXPECT_NE(As<QuantLinearV2>(m, "model.layers.0.mlp.gate_proj"), nullptr);
  QuantConfigV2 q2 = QuantConfigV2::FromPreset("Q2_A4").value();
  q2.scale_rank = 8;
  ASSERT_TRUE(ConvertAllLutAndRank(m, q2, 7).ok());
  auto* gate = As<QuantLinearV2>(m, "model.layers.0.mlp.gate_proj");
  ASSERT_NE(gate, nullptr);
  EXPECT_EQ(gate->lut.numel(), 4);
  EXPECT_EQ(gate->rank(), 8);
  EXPECT_EQ(As<QuantLinearV2>(m, "model.layers.0.self_attn.q_proj")->rank(), 8);  // attn rank 4 -> 8
  EXPECT_TRUE(gate->q_frozen());

  TensorMap state = QuantState(m);  // aliases the live tensors: copy it for a snapshot
  for (auto& [name, t] : state) t = t.clone();
  EXPECT_TRUE(state.count("model.layers.1.mlp.down_proj._scales_baked_flag"));
  auto stats = SnapAllV2ForExport(m);
  ASSERT_TRUE(stats.ok()) << stats.status();
  ASSERT_EQ(stats->size(), 14u);
  EXPECT_EQ((*stats)[0].name, m.LinearNames()[0]);
  for (const SnapStats& s : *stats) EXPECT_LT(s.effective_change, 1e-6) << s.name;
  // Restoring the pre-snap state un-bakes every layer.
  ASSERT_TRUE(LoadQuantState(m, state).ok());
  EXPECT_FALSE(gate->scales_baked());
}

// The adapter over the real Qwen3 model (tiny shapes, random weights).
TEST(Qwen3Adapter, QuantizesAllProjectionsAndTrainsOnlyScales) {
  model::Qwen3Config config;
  config.hidden_size = 64;
  config.intermediate_size = 192;
  config.num_hidden_layers = 2;
  config.num_attention_heads = 4;
  config.num_key_value_heads = 2;
  config.head_dim = 16;
  config.vocab_size = 128;
  config.max_position_embeddings = 64;
  ASSERT_TRUE(config.Validate().ok());
  model::Qwen3Model qwen(config);
  at::manual_seed(1);
  {
    at::NoGradGuard no_grad;
    for (at::Tensor& p : qwen->parameters()) p.normal_(0, 0.02);
  }
  auto registry = MakeQwen3Registry(*qwen);
  QuantConfig c = QuantConfig::FromPreset("Q4_A4").value();
  auto report = QuantizeLinears(*registry, c);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->replaced.size(), 14u);
  for (const at::Tensor& p : qwen->parameters()) EXPECT_FALSE(p.requires_grad());
  ASSERT_TRUE(ApplyTrainableSet(*registry, {.scales = true}).ok());
  at::Tensor ids = at::randint(0, 128, {2, 5}, at::kLong);
  at::Tensor logits = qwen->ForwardLogits(ids);
  EXPECT_EQ(logits.sizes(), at::IntArrayRef({2, 5, 128}));
  EXPECT_TRUE(at::all(at::isfinite(logits)).item<bool>());
  logits.pow(2).mean().backward();
  int with_grad = 0;
  for (const auto& item : qwen->named_parameters()) {
    const bool is_scale = item.key().find("scale_") != std::string::npos;
    EXPECT_EQ(item.value().grad().defined(), is_scale) << item.key();
    with_grad += item.value().grad().defined();
  }
  EXPECT_EQ(with_grad, 28);
  EXPECT_EQ(registry->ReplaceLinear("model.layers.9.mlp.up_proj", nullptr).code(), absl::StatusCode::kNotFound);
  auto wrong = QuantLinearV1::Create(at::randn({8, 8}), at::Tensor(), LayerQuantSpec{16, 8, 2, false});
  ASSERT_TRUE(wrong.ok());
  EXPECT_EQ(registry->ReplaceLinear("model.layers.0.mlp.up_proj", *wrong).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace qatd::quant
