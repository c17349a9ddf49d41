// Qwen3 forward against the HF golden outputs of tiny-qwen3 (tests/data/golden/tiny-qwen3,
// copied from shared/golden: README "tiny-qwen3"), KV cache, dtype handling, linear-layer
// swapping and model I/O.
#include "core/model/qwen3_model.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <sys/stat.h>
#include <torch/cuda.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "core/model/model_io.h"
#include "core/model/safetensors.h"
#include "core/model/torch_compat.h"
#include "gtest/gtest.h"
#include "tests/common/temp_dir.h"

namespace qatd::model {
namespace {

const std::string kTiny = std::string(QATD_TEST_DATA) + "/golden/tiny-qwen3";

using ::qatd::testing::TempDir;

// The golden tensors, read once.
class Golden {
 public:
  static const Golden& Get() {
    static const Golden* golden = new Golden();
    return *golden;
  }
  at::Tensor operator[](const std::string& name) const {
    auto view = file_->Get(name);
    EXPECT_TRUE(view.ok()) << view.status();
    at::ScalarType dt = at::kFloat;
    switch (view->info->dtype) {
      case DType::kI64: dt = at::kLong; break;
      case DType::kI32: dt = at::kInt; break;
      default: break;
    }
    return at::from_blob(const_cast<void*>(view->data), view->info->shape, dt).clone();
  }

 private:
  Golden() {
    auto file = SafetensorsFile::Open(kTiny + "/golden.safetensors");
    EXPECT_TRUE(file.ok()) << file.status();
    file_ = *file;
  }
  std::shared_ptr<SafetensorsFile> file_;
};

LoadedModel LoadTiny(at::ScalarType dtype, at::Device device = at::kCPU) {
  auto loaded = LoadQwen3(kTiny, LoadOptions{dtype, device});
  EXPECT_TRUE(loaded.ok()) << loaded.status();
  return std::move(*loaded);
}

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kCPU, at::kDouble) - b.to(at::kCPU, at::kDouble)).abs().max().item<double>();
}

Qwen3Config SmallConfig(bool tied) {
  Qwen3Config c;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.vocab_size = 97;
  c.max_position_embeddings = 64;
  c.tie_word_embeddings = tied;
  return c;
}

// Checks hidden states and logits of `model` on the golden inputs against the golden file.
void ExpectMatchesGolden(Qwen3Model& model, double atol_hidden, double atol_logits) {
  at::NoGradGuard no_grad;
  const Golden& g = Golden::Get();
  at::Tensor ids = g["input_ids"].to(model->device());
  std::vector<at::Tensor> residuals;
  at::Tensor hidden = model->Forward(ids, nullptr, 0, &residuals);
  ASSERT_EQ(residuals.size(), 4u);
  const char* golden_names[] = {"hidden.embed", "hidden.layer_0", "hidden.layer_1", "hidden.final_norm"};
  double worst_hidden = 0;
  for (int i = 0; i < 4; ++i) {
    const double diff = MaxAbsDiff(residuals[i], g[golden_names[i]]);
    EXPECT_LT(diff, atol_hidden) << golden_names[i];
    worst_hidden = std::max(worst_hidden, diff);
  }
  EXPECT_TRUE(residuals[3].equal(hidden));

  at::Tensor logits = model->Logits(hidden).to(at::kCPU, at::kFloat);  // [2, 24, V]
  ASSERT_EQ(logits.sizes(), (std::vector<int64_t>{2, 24, 151936}));
  // Top-64 values must agree; ids are compared through our logits at the golden ids so that
  // near-ties cannot flip the test.
  auto [top_values, top_ids] = logits.topk(64, -1);
  EXPECT_LT(MaxAbsDiff(top_values, g["logits_top64_values"]), atol_logits);
  at::Tensor at_golden_ids = logits.gather(-1, g["logits_top64_ids"].to(at::kLong));
  EXPECT_LT(MaxAbsDiff(at_golden_ids, g["logits_top64_values"]), atol_logits);
  EXPECT_LT(MaxAbsDiff(logits.logsumexp(-1), g["logits_logsumexp"]), atol_logits);
  // A sum over 151936 logits accumulates the per-logit error: ~sqrt(V) * atol.
  EXPECT_LT(MaxAbsDiff(logits.to(at::kDouble).sum(-1), g["logits_sum"]), 400 * atol_logits);
  const double last_diff = MaxAbsDiff(logits.select(1, 23), g["logits_last_position"]);
  EXPECT_LT(last_diff, atol_logits);
  std::printf("[ golden   ] %s: max |diff| hidden %.3g, last-position logits %.3g\n",
              model->device().str().c_str(), worst_hidden, last_diff);
  at::Tensor argmax = logits.select(1, 23).argmax(-1);
  EXPECT_EQ(argmax[0].item<int64_t>(), 43770);
  EXPECT_EQ(argmax[1].item<int64_t>(), 279);
}

TEST(Qwen3Model, ParameterNamesMatchCheckpoint) {
  auto config = Qwen3Config::FromFile(kTiny);
  ASSERT_TRUE(config.ok()) << config.status();
  Qwen3Model model(*config, at::TensorOptions().dtype(at::kFloat));
  auto ckpt = Checkpoint::Open(kTiny);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  std::vector<std::string> names;
  for (const auto& item : model->named_parameters()) {
    names.push_back(item.key());
    auto view = ckpt->Get(item.key());
    ASSERT_TRUE(view.ok()) << view.status();
    EXPECT_TRUE(item.value().sizes().equals(view->info->shape)) << item.key();
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, ckpt->Names());
  EXPECT_EQ(names.size(), 24u);
  EXPECT_FALSE(model->lm_head);
}

TEST(Qwen3Model, GoldenFp32Cpu) {
  LoadedModel m = LoadTiny(at::kFloat);
  ExpectMatchesGolden(m.model, 1e-5, 1e-5);
}

TEST(Qwen3Model, GoldenFp32Cuda) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  LoadedModel m = LoadTiny(at::kFloat, at::Device(at::kCUDA, 0));
  // cuBLAS and the fused attention kernels sum in other orders than the CPU reference.
  ExpectMatchesGolden(m.model, 1e-4, 1e-4);
}

TEST(Qwen3Model, PiecewiseLayersEqualForward) {
  LoadedModel m = LoadTiny(at::kFloat);
  at::NoGradGuard no_grad;
  at::Tensor ids = Golden::Get()["input_ids"];
  std::vector<at::Tensor> residuals;
  m.model->Forward(ids, nullptr, 0, &residuals);
  at::Tensor x = m.model->Embed(ids);
  for (int64_t i = 0; i < m.model->num_layers(); ++i) {
    x = m.model->RunLayer(i, x);
    EXPECT_TRUE(x.equal(residuals[i + 1])) << "layer " << i;
  }
  EXPECT_TRUE(m.model->FinalNorm(x).equal(residuals.back()));
}

// Feeds `ids` through a cache in the given chunk sizes and returns the logits of every
// position, [B, S, V].
at::Tensor ChunkedLogits(Qwen3Model& model, const at::Tensor& ids, const std::vector<int64_t>& chunks) {
  KvCache cache = model->NewKvCache(ids.size(0), ids.size(1) + 3);
  std::vector<at::Tensor> parts;
  int64_t pos = 0;
  for (int64_t n : chunks) {
    parts.push_back(model->ForwardLogits(ids.narrow(1, pos, n), &cache));
    pos += n;
    EXPECT_EQ(cache.length, pos);
  }
  EXPECT_EQ(pos, ids.size(1));
  return at::cat(parts, 1);
}

void ExpectCacheMatchesFull(at::Device device, double atol) {
  LoadedModel m = LoadTiny(at::kFloat, device);
  at::NoGradGuard no_grad;
  at::Tensor ids = Golden::Get()["input_ids"].to(device);
  at::Tensor full = m.model->ForwardLogits(ids);
  // Prefill 8, then token by token.
  std::vector<int64_t> incremental = {8};
  incremental.resize(17, 1);
  EXPECT_LT(MaxAbsDiff(ChunkedLogits(m.model, ids, incremental), full), atol);
  // Chunks of several tokens appended to a non-empty cache.
  EXPECT_LT(MaxAbsDiff(ChunkedLogits(m.model, ids, {5, 7, 1, 11}), full), atol);
  EXPECT_LT(MaxAbsDiff(ChunkedLogits(m.model, ids, std::vector<int64_t>(24, 1)), full), atol);
}

TEST(Qwen3Model, KvCacheMatchesFullRecomputation) { ExpectCacheMatchesFull(at::kCPU, 1e-5); }

TEST(Qwen3Model, KvCacheMatchesFullRecomputationCuda) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  ExpectCacheMatchesFull(at::Device(at::kCUDA, 0), 1e-4);
}

TEST(Qwen3Model, KvCacheRewindOverwrites) {
  LoadedModel m = LoadTiny(at::kFloat);
  at::NoGradGuard no_grad;
  at::Tensor ids = Golden::Get()["input_ids"];
  at::Tensor full = m.model->ForwardLogits(ids);
  KvCache cache = m.model->NewKvCache(2, 24);
  // Fill 24 positions with other tokens, then rewind to 10 and replay the real suffix.
  at::Tensor other = ids.roll(1, 1);
  m.model->Forward(ids.narrow(1, 0, 10), &cache);
  m.model->Forward(other.narrow(1, 10, 14), &cache);
  EXPECT_EQ(cache.length, 24);
  at::Tensor tail = m.model->ForwardLogits(ids.narrow(1, 10, 14), &cache, /*start_pos=*/10);
  EXPECT_LT(MaxAbsDiff(tail, full.narrow(1, 10, 14)), 1e-5);
  // Past the end of the cache is an error.
  EXPECT_THROW(m.model->Forward(ids.narrow(1, 0, 1), &cache), c10::Error);
}

TEST(Qwen3Model, Bf16CloseToFp32) {
  LoadedModel f32 = LoadTiny(at::kFloat);
  LoadedModel bf16 = LoadTiny(at::kBFloat16);
  at::NoGradGuard no_grad;
  at::Tensor ids = Golden::Get()["input_ids"];
  at::Tensor hidden = bf16.model->Forward(ids);
  EXPECT_EQ(hidden.scalar_type(), at::kBFloat16);
  at::Tensor a = f32.model->ForwardLogits(ids);
  at::Tensor b = bf16.model->ForwardLogits(ids);
  EXPECT_EQ(b.scalar_type(), at::kBFloat16);
  // Logits are within |1.3|; bf16 keeps ~3 significant digits through two layers.
  EXPECT_LT(MaxAbsDiff(a, b), 0.05);
  // And the cache path works in bf16 too.
  KvCache cache = bf16.model->NewKvCache(2, 24);
  bf16.model->Forward(ids.narrow(1, 0, 20), &cache);
  at::Tensor step = bf16.model->ForwardLogits(ids.narrow(1, 20, 4), &cache);
  EXPECT_LT(MaxAbsDiff(step, b.narrow(1, 20, 4)), 0.05);
}

TEST(Qwen3Model, ToDtypeConvertsInPlace) {
  LoadedModel m = LoadTiny(at::kFloat);
  at::NoGradGuard no_grad;
  at::Tensor ids = Golden::Get()["input_ids"];
  at::Tensor ref = m.model->ForwardLogits(ids);
  m.model->to(at::kBFloat16);
  EXPECT_EQ(m.model->dtype(), at::kBFloat16);
  auto dense = std::dynamic_pointer_cast<DenseLinear>(m.model->GetLinear("model.layers.1.mlp.down_proj"));
  ASSERT_TRUE(dense);
  EXPECT_EQ(dense->weight.scalar_type(), at::kBFloat16);
  EXPECT_LT(MaxAbsDiff(m.model->ForwardLogits(ids), ref), 0.05);
}

TEST(Qwen3Model, ToDeviceCuda) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  LoadedModel m = LoadTiny(at::kFloat);
  at::NoGradGuard no_grad;
  at::Tensor ids = Golden::Get()["input_ids"];
  at::Tensor ref = m.model->ForwardLogits(ids);
  m.model->to(at::Device(at::kCUDA, 0));
  EXPECT_TRUE(m.model->device().is_cuda());
  EXPECT_LT(MaxAbsDiff(m.model->ForwardLogits(ids.cuda()), ref), 1e-4);
  KvCache cache = m.model->NewKvCache(2, 24);
  EXPECT_TRUE(cache.k[0].is_cuda());
}

TEST(Qwen3Model, Fp16OnCuda) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  LoadedModel f32 = LoadTiny(at::kFloat);
  LoadedModel f16 = LoadTiny(at::kHalf, at::Device(at::kCUDA, 0));
  LoadedModel bf16 = LoadTiny(at::kBFloat16, at::Device(at::kCUDA, 0));
  at::NoGradGuard no_grad;
  at::Tensor ids = Golden::Get()["input_ids"];
  at::Tensor ref = f32.model->ForwardLogits(ids);
  EXPECT_LT(MaxAbsDiff(f16.model->ForwardLogits(ids.cuda()), ref), 0.01);
  EXPECT_LT(MaxAbsDiff(bf16.model->ForwardLogits(ids.cuda()), ref), 0.05);
}

// A linear layer that records its calls, to check the forward goes through swapped layers.
class CountingLinear : public LinearLayer {
 public:
  explicit CountingLinear(std::shared_ptr<LinearLayer> inner) : inner_(register_module("inner", inner)) {}
  at::Tensor forward(const at::Tensor& x) override {
    ++calls;
    return inner_->forward(x);
  }
  int64_t in_features() const override { return inner_->in_features(); }
  int64_t out_features() const override { return inner_->out_features(); }
  at::Tensor EffectiveWeight() override { return inner_->EffectiveWeight(); }
  int calls = 0;

 private:
  std::shared_ptr<LinearLayer> inner_;
};

TEST(Qwen3Model, LinearNamesAndReplace) {
  LoadedModel m = LoadTiny(at::kFloat);
  at::NoGradGuard no_grad;
  std::vector<std::string> names = m.model->LinearNames();
  ASSERT_EQ(names.size(), 14u);
  EXPECT_EQ(names[0], "model.layers.0.self_attn.q_proj");
  EXPECT_EQ(names[3], "model.layers.0.self_attn.o_proj");
  EXPECT_EQ(names[4], "model.layers.0.mlp.gate_proj");
  EXPECT_EQ(names[13], "model.layers.1.mlp.down_proj");
  EXPECT_EQ(m.model->GetLinear("lm_head"), nullptr);  // tied
  EXPECT_EQ(m.model->GetLinear("model.layers.0.mlp"), nullptr);
  auto untied = InitTinyQwen3(SmallConfig(/*tied=*/false));
  ASSERT_TRUE(untied.ok());
  ASSERT_EQ((*untied)->LinearNames().size(), 15u);
  EXPECT_EQ((*untied)->LinearNames().back(), "lm_head");
  EXPECT_EQ((*untied)->GetLinear("lm_head"), (*untied)->lm_head);

  at::Tensor ids = Golden::Get()["input_ids"];
  at::Tensor ref = m.model->ForwardLogits(ids);
  std::vector<std::shared_ptr<CountingLinear>> counters;
  for (const std::string& name : names) {
    auto counting = std::make_shared<CountingLinear>(m.model->GetLinear(name));
    m.model->ReplaceLinear(name, counting);
    EXPECT_EQ(m.model->GetLinear(name), counting);
    counters.push_back(counting);
  }
  EXPECT_TRUE(m.model->ForwardLogits(ids).equal(ref));
  for (const auto& c : counters) EXPECT_EQ(c->calls, 1);
  // The module tree sees the new layers (their parameters moved one level down).
  auto params = m.model->named_parameters();
  EXPECT_NE(params.find("model.layers.0.self_attn.q_proj.inner.weight"), nullptr);
  EXPECT_EQ(params.find("model.layers.0.self_attn.q_proj.weight"), nullptr);

  auto wrong = std::make_shared<DenseLinear>(64, 65, at::TensorOptions());
  EXPECT_THROW(m.model->ReplaceLinear("model.layers.0.self_attn.q_proj", wrong), c10::Error);
  EXPECT_THROW(m.model->ReplaceLinear("model.layers.9.self_attn.q_proj", wrong), c10::Error);
}

TEST(Attention, ExplicitMatchesReference) {
  // Reference: repeat kv heads, full scores, bottom-right causal mask, softmax.
  at::manual_seed(3);
  const int64_t b = 2, hq = 6, hkv = 2, d = 8;
  for (auto [s, t] : std::vector<std::pair<int64_t, int64_t>>{{5, 5}, {1, 9}, {3, 9}}) {
    at::Tensor q = at::randn({b, hq, s, d});
    at::Tensor k = at::randn({b, hkv, t, d});
    at::Tensor v = at::randn({b, hkv, t, d});
    const int64_t offset = t - s;
    at::Tensor out = Attention(q, k, v, /*causal=*/true, offset, 0.3);
    at::Tensor kr = k.repeat_interleave(hq / hkv, 1), vr = v.repeat_interleave(hq / hkv, 1);
    at::Tensor scores = at::matmul(q, kr.transpose(-1, -2)) * 0.3;
    at::Tensor keep = at::ones({s, t}, at::kBool).tril(offset);
    at::Tensor ref = at::matmul(scores.masked_fill(keep.logical_not(), -1e30).softmax(-1), vr);
    EXPECT_LT(MaxAbsDiff(out, ref), 1e-5) << "s=" << s << " t=" << t;
    at::Tensor noncausal = Attention(q, k, v, /*causal=*/false, offset, 0.3);
    EXPECT_LT(MaxAbsDiff(noncausal, at::matmul(scores.softmax(-1), vr)), 1e-5);
  }
}

TEST(Qwen3Model, GradientsFlowToAllParameters) {
  auto model = InitTinyQwen3(SmallConfig(/*tied=*/false), InitOptions{.seed = 1});
  ASSERT_TRUE(model.ok()) << model.status();
  at::Tensor ids = at::randint(0, 97, {2, 7}, at::kLong);
  at::Tensor loss = (*model)->ForwardLogits(ids).logsumexp(-1).mean();
  loss.backward();
  for (const auto& item : (*model)->named_parameters()) {
    ASSERT_TRUE(item.value().grad().defined()) << item.key();
    EXPECT_GT(item.value().grad().abs().sum().item<double>(), 0) << item.key();
  }
}

// ---------------------------------------------------------------------------------------------
// Model I/O

TEST(ModelIo, InitIsSeededAndHfLike) {
  Qwen3Config c = SmallConfig(true);
  auto a = InitTinyQwen3(c, InitOptions{.seed = 5});
  auto b = InitTinyQwen3(c, InitOptions{.seed = 5});
  auto other = InitTinyQwen3(c, InitOptions{.seed = 6});
  ASSERT_TRUE(a.ok() && b.ok() && other.ok());
  auto pa = (*a)->named_parameters(), pb = (*b)->named_parameters(), po = (*other)->named_parameters();
  for (const auto& item : pa) {
    EXPECT_TRUE(item.value().equal(pb[item.key()])) << item.key();
    if (item.value().dim() == 1) {
      EXPECT_TRUE(item.value().eq(1).all().item<bool>()) << item.key();
    } else {
      EXPECT_FALSE(item.value().equal(po[item.key()])) << item.key();
    }
  }
  at::Tensor embed = pa["model.embed_tokens.weight"];
  EXPECT_NEAR(embed.std().item<double>(), 0.02, 0.002);
  EXPECT_NEAR(embed.mean().item<double>(), 0.0, 0.002);

  c.num_key_value_heads = 3;
  EXPECT_EQ(InitTinyQwen3(c).status().code(), absl::StatusCode::kInvalidArgument);
}

void ExpectRoundTrip(bool tied) {
  Qwen3Config c = SmallConfig(tied);
  auto model = InitTinyQwen3(c, InitOptions{.seed = 11});
  ASSERT_TRUE(model.ok()) << model.status();
  TempDir dir;
  ASSERT_TRUE(SaveQwen3(*model, c, dir.File("m")).ok());
  auto ckpt = Checkpoint::Open(dir.File("m"));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(ckpt->Has("lm_head.weight"), !tied);
  auto loaded = LoadQwen3(dir.File("m"), LoadOptions{at::kFloat, at::kCPU});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->config.tie_word_embeddings, tied);
  EXPECT_EQ(loaded->config.torch_dtype, "float32");
  at::NoGradGuard no_grad;
  at::Tensor ids = at::randint(0, 97, {3, 9}, at::kLong);
  EXPECT_TRUE(loaded->model->ForwardLogits(ids).equal((*model)->ForwardLogits(ids)));

  // A bf16 save loads back as the bf16-rounded weights.
  ASSERT_TRUE(SaveQwen3(*model, c, dir.File("b"), SaveOptions{at::kBFloat16}).ok());
  auto bf = LoadQwen3(dir.File("b"), LoadOptions{at::kBFloat16, at::kCPU});
  ASSERT_TRUE(bf.ok()) << bf.status();
  at::Tensor w = bf->model->named_parameters()["model.layers.1.mlp.up_proj.weight"];
  EXPECT_TRUE(w.equal((*model)->named_parameters()["model.layers.1.mlp.up_proj.weight"].to(at::kBFloat16)));
}

TEST(ModelIo, SaveLoadRoundTripTied) { ExpectRoundTrip(true); }
TEST(ModelIo, SaveLoadRoundTripUntied) { ExpectRoundTrip(false); }

TEST(ModelIo, SaveWritesEffectiveWeightsOfSwappedLayers) {
  Qwen3Config c = SmallConfig(true);
  auto model = InitTinyQwen3(c, InitOptions{.seed = 2});
  ASSERT_TRUE(model.ok());
  const std::string name = "model.layers.0.mlp.up_proj";
  (*model)->ReplaceLinear(name, std::make_shared<CountingLinear>((*model)->GetLinear(name)));
  TempDir dir;
  ASSERT_TRUE(SaveQwen3(*model, c, dir.path().string()).ok());
  auto ckpt = Checkpoint::Open(dir.path().string());
  ASSERT_TRUE(ckpt.ok());
  EXPECT_TRUE(ckpt->Has(name + ".weight"));
  EXPECT_FALSE(ckpt->Has(name + ".inner.weight"));
  EXPECT_TRUE(LoadQwen3(dir.path().string(), LoadOptions{at::kFloat, at::kCPU}).ok());
}

// Writes the tensors of a small model to `path`, with `edit` applied to the list first.
void WriteEdited(const std::string& dir, const Qwen3Config& c,
                 const std::function<void(std::vector<TensorToWrite>&)>& edit, std::vector<at::Tensor>& keep) {
  auto model = InitTinyQwen3(c, InitOptions{.seed = 3});
  ASSERT_TRUE(model.ok());
  std::vector<TensorToWrite> ts;
  for (const auto& item : (*model)->named_parameters()) {
    keep.push_back(item.value().detach().contiguous());
    const at::Tensor& t = keep.back();
    ts.push_back({item.key(), DType::kF32, t.sizes().vec(), t.data_ptr(), static_cast<size_t>(t.nbytes())});
  }
  edit(ts);
  ::mkdir(dir.c_str(), 0755);
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", ts).ok());
  std::ofstream(dir + "/config.json") << c.ToJson();
}

TEST(ModelIo, LoadErrorsNameTheTensor) {
  Qwen3Config c = SmallConfig(true);
  TempDir dir;
  std::vector<at::Tensor> keep;
  const std::string victim = "model.layers.1.self_attn.k_norm.weight";

  WriteEdited(dir.File("missing"), c, [&](std::vector<TensorToWrite>& ts) {
    std::erase_if(ts, [&](const TensorToWrite& t) { return t.name == victim; });
  }, keep);
  auto missing = LoadQwen3(dir.File("missing"), LoadOptions{at::kFloat, at::kCPU});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(missing.status().message().find(victim), std::string::npos) << missing.status();
  EXPECT_NE(missing.status().message().find("missing"), std::string::npos) << missing.status();

  std::vector<float> wrong(9, 0.f);
  WriteEdited(dir.File("shape"), c, [&](std::vector<TensorToWrite>& ts) {
    for (auto& t : ts) {
      if (t.name == victim) t = {victim, DType::kF32, {9}, wrong.data(), wrong.size() * 4};
    }
  }, keep);
  auto shape = LoadQwen3(dir.File("shape"), LoadOptions{at::kFloat, at::kCPU});
  EXPECT_EQ(shape.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(shape.status().message().find(victim), std::string::npos) << shape.status();
  EXPECT_NE(shape.status().message().find("[9]"), std::string::npos) << shape.status();

  WriteEdited(dir.File("extra"), c, [&](std::vector<TensorToWrite>& ts) {
    ts.push_back({"model.layers.7.mlp.up_proj.weight", DType::kF32, {9}, wrong.data(), wrong.size() * 4});
  }, keep);
  auto extra = LoadQwen3(dir.File("extra"), LoadOptions{at::kFloat, at::kCPU});
  EXPECT_EQ(extra.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(extra.status().message().find("model.layers.7.mlp.up_proj.weight"), std::string::npos)
      << extra.status();

  std::vector<int32_t> ints(8, 0);
  WriteEdited(dir.File("dtype"), c, [&](std::vector<TensorToWrite>& ts) {
    for (auto& t : ts) {
      if (t.name == victim) t = {victim, DType::kI32, {8}, ints.data(), ints.size() * 4};
    }
  }, keep);
  auto dtype = LoadQwen3(dir.File("dtype"), LoadOptions{at::kFloat, at::kCPU});
  EXPECT_EQ(dtype.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(dtype.status().message().find(victim), std::string::npos) << dtype.status();

  EXPECT_EQ(LoadQwen3(dir.File("nothing-here")).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(LoadQwen3(kTiny, LoadOptions{at::kLong, at::kCPU}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace qatd::model
