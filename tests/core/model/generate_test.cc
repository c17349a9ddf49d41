// Sampling processors on hand-made logits, and Generate() on tiny-qwen3 (greedy against the
// golden greedy ids, seeded sampling, stop tokens, streaming).
#include "core/infer/generate.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/cuda.h>

#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/infer/sampling.h"
#include "core/model/model_io.h"
#include "core/model/safetensors.h"
#include "gtest/gtest.h"

namespace qatd::infer {
namespace {

const std::string kTiny = std::string(QATD_TEST_DATA) + "/golden/tiny-qwen3";
constexpr float kInf = std::numeric_limits<float>::infinity();

at::Tensor Floats(std::vector<float> v) { return at::tensor(v, at::kFloat); }

std::vector<float> ToVector(const at::Tensor& t) {
  at::Tensor c = t.to(at::kFloat).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

// The tiny model and its two golden prompts (24 tokens each), loaded once.
struct Tiny {
  model::Qwen3Model model{nullptr};
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::vector<int32_t>> greedy;
};

const Tiny& GetTiny(at::Device device = at::kCPU) {
  static std::map<std::string, Tiny*> cache;
  Tiny*& slot = cache[device.str()];
  if (slot != nullptr) return *slot;
  slot = new Tiny();
  auto loaded = model::LoadQwen3(kTiny, model::LoadOptions{at::kFloat, device});
  EXPECT_TRUE(loaded.ok()) << loaded.status();
  slot->model = loaded->model;
  auto golden = model::SafetensorsFile::Open(kTiny + "/golden.safetensors");
  EXPECT_TRUE(golden.ok()) << golden.status();
  for (const char* name : {"input_ids", "greedy_ids"}) {
    auto view = (*golden)->Get(name);
    EXPECT_TRUE(view.ok());
    const int64_t* data = static_cast<const int64_t*>(view->data);
    const int64_t rows = view->info->shape[0], cols = view->info->shape[1];
    auto& out = std::string(name) == "input_ids" ? slot->prompts : slot->greedy;
    for (int64_t r = 0; r < rows; ++r) out.emplace_back(data + r * cols, data + (r + 1) * cols);
  }
  return *slot;
}

// ---------------------------------------------------------------------------------------------
// Processors

TEST(Sampling, RepetitionPenaltyHfSemantics) {
  at::Tensor logits = Floats({2.0f, -2.0f, 1.0f, 0.5f, -0.5f});
  ApplyRepetitionPenalty(logits, {0, 1, 1, 4}, 2.0);  // duplicates count once
  EXPECT_EQ(ToVector(logits), (std::vector<float>{1.0f, -4.0f, 1.0f, 0.5f, -1.0f}));

  at::Tensor batch = Floats({3.0f, -1.0f, 3.0f, -1.0f}).view({2, 2});
  ApplyRepetitionPenalty(batch, {1}, 1.5);
  EXPECT_EQ(ToVector(batch), (std::vector<float>{3.0f, -1.5f, 3.0f, -1.5f}));

  at::Tensor same = Floats({1.0f, -1.0f});
  ApplyRepetitionPenalty(same, {0, 1}, 1.0);
  EXPECT_EQ(ToVector(same), (std::vector<float>{1.0f, -1.0f}));
}

TEST(Sampling, TopKKeepsTies) {
  at::Tensor logits = Floats({1.0f, 3.0f, 2.0f, 3.0f, 0.0f});
  EXPECT_EQ(ToVector(TopKFilter(logits, 1)), (std::vector<float>{-kInf, 3.0f, -kInf, 3.0f, -kInf}));
  EXPECT_EQ(ToVector(TopKFilter(logits, 3)), (std::vector<float>{-kInf, 3.0f, 2.0f, 3.0f, -kInf}));
  EXPECT_EQ(ToVector(TopKFilter(logits, 0)), ToVector(logits));
  EXPECT_EQ(ToVector(TopKFilter(logits, 9)), ToVector(logits));
}

TEST(Sampling, TopPKeepsTheCrossingToken) {
  // Probabilities 0.5, 0.3, 0.15, 0.05 in scrambled order.
  at::Tensor logits = Floats({0.15f, 0.5f, 0.05f, 0.3f}).log();
  auto kept = [&](double p) {
    std::vector<float> v = ToVector(TopPFilter(logits, p));
    std::vector<int> idx;
    for (int i = 0; i < 4; ++i) {
      if (v[i] != -kInf) idx.push_back(i);
    }
    return idx;
  };
  EXPECT_EQ(kept(0.7), (std::vector<int>{1, 3}));     // 0.5 < 0.7, 0.5 + 0.3 crosses
  EXPECT_EQ(kept(0.5), (std::vector<int>{1}));        // HF: mass 0.5 reaches top_p exactly
  EXPECT_EQ(kept(0.9), (std::vector<int>{0, 1, 3}));  // 0.8 < 0.9, + 0.15 crosses
  EXPECT_EQ(kept(0.01), (std::vector<int>{1}));       // always at least one
  EXPECT_EQ(kept(1.0), (std::vector<int>{0, 1, 2, 3}));
}

TEST(Sampling, OptionsValidate) {
  EXPECT_TRUE(SamplingOptions{}.Validate().ok());
  EXPECT_EQ(SamplingOptions{.temperature = -1}.Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SamplingOptions{.top_p = 0}.Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SamplingOptions{.top_p = 1.5}.Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SamplingOptions{.top_k = -2}.Validate().code(), absl::StatusCode::kInvalidArgument);
  auto bad = SamplingOptions{.repetition_penalty = 0}.Validate();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("repetition_penalty"), std::string::npos);
  EXPECT_EQ(GenerationOptions{.max_new_tokens = 0}.Validate().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Sampling, SamplerFollowsTheDistribution) {
  // p = [0.7, 0.2, 0.1]: 4000 draws land near those frequencies, and greedy picks 0.
  at::Tensor logits = Floats({0.7f, 0.2f, 0.1f}).log();
  TokenSampler sampler(SamplingOptions{.temperature = 1.0}, 42);
  std::vector<int> counts(3, 0);
  for (int i = 0; i < 4000; ++i) ++counts[sampler.Next(logits, {})];
  EXPECT_NEAR(counts[0] / 4000.0, 0.7, 0.03);
  EXPECT_NEAR(counts[1] / 4000.0, 0.2, 0.03);
  EXPECT_NEAR(counts[2] / 4000.0, 0.1, 0.03);

  TokenSampler top1(SamplingOptions{.temperature = 1.0, .top_k = 1}, 1);
  TokenSampler greedy(SamplingOptions{}, 1);
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(top1.Next(logits, {}), 0);
    EXPECT_EQ(greedy.Next(logits, {}), 0);
  }
  // The repetition penalty applies before greedy selection: 0.7 / 4 < 0.2.
  TokenSampler penalised(SamplingOptions{.repetition_penalty = 4.0}, 1);
  EXPECT_EQ(penalised.Next(Floats({0.7f, 0.2f, 0.1f}), {0}), 1);
}

// ---------------------------------------------------------------------------------------------
// Generate on tiny-qwen3

void ExpectGoldenGreedy(at::Device device) {
  const Tiny& tiny = GetTiny(device);
  model::Qwen3Model model = tiny.model;
  for (size_t row = 0; row < tiny.prompts.size(); ++row) {
    auto result = Generate(model, tiny.prompts[row], GenerationOptions{.max_new_tokens = 16});
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->ids, tiny.greedy[row]) << "row " << row;
    EXPECT_EQ(result->stop_reason, StopReason::kMaxNewTokens);
    EXPECT_EQ(result->timings.prompt_tokens, 24);
    EXPECT_EQ(result->timings.generated_tokens, 16);
  }
}

TEST(Generate, GreedyMatchesGolden) { ExpectGoldenGreedy(at::kCPU); }

TEST(Generate, GreedyMatchesGoldenCuda) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  ExpectGoldenGreedy(at::Device(at::kCUDA, 0));
}

TEST(Generate, RepetitionPenaltyMatchesFullRecomputation) {
  // Reference: re-run the whole sequence every step, penalise by hand, take the argmax.
  const Tiny& tiny = GetTiny();
  model::Qwen3Model model = tiny.model;
  const double penalty = 5.0;
  std::vector<int32_t> seq = tiny.prompts[1];
  std::vector<int32_t> expected;
  {
    at::NoGradGuard no_grad;
    for (int step = 0; step < 10; ++step) {
      at::Tensor ids = at::tensor(std::vector<int64_t>(seq.begin(), seq.end()), at::kLong).view({1, -1});
      at::Tensor last = model->ForwardLogits(ids).select(1, -1).squeeze(0).clone();
      std::set<int32_t> seen(seq.begin(), seq.end());
      auto acc = last.accessor<float, 1>();
      for (int32_t t : seen) acc[t] = acc[t] < 0 ? acc[t] * penalty : acc[t] / penalty;
      const int32_t next = static_cast<int32_t>(last.argmax().item<int64_t>());
      expected.push_back(next);
      seq.push_back(next);
    }
  }
  auto result = Generate(model, tiny.prompts[1], GenerationOptions{.max_new_tokens = 10, .repetition_penalty = penalty});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->ids, expected);
  // The penalty breaks the golden repetition of token 279.
  EXPECT_NE(result->ids, std::vector<int32_t>(10, 279));
}

TEST(Generate, SamplingIsReproducibleWithASeed) {
  const Tiny& tiny = GetTiny();
  model::Qwen3Model model = tiny.model;
  GenerationOptions options{.max_new_tokens = 12, .temperature = 0.8, .top_p = 0.9, .top_k = 1000, .seed = 7};
  auto a = Generate(model, tiny.prompts[0], options);
  auto b = Generate(model, tiny.prompts[0], options);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->ids, b->ids);
  options.seed = 8;
  auto c = Generate(model, tiny.prompts[0], options);
  ASSERT_TRUE(c.ok());
  // Near-uniform distributions over 1000 candidates: another seed gives another sequence.
  EXPECT_NE(a->ids, c->ids);
  for (int32_t t : c->ids) {
    EXPECT_GE(t, 0);
    EXPECT_LT(t, 151936);
  }
}

TEST(Generate, StopsAtStopToken) {
  const Tiny& tiny = GetTiny();
  model::Qwen3Model model = tiny.model;
  // Row 0 greedily repeats 43770 (golden): stopping on it ends after one token.
  auto result = Generate(model, tiny.prompts[0],
                         GenerationOptions{.max_new_tokens = 16, .stop_token_ids = {151645, 43770}});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->ids, std::vector<int32_t>{43770});
  EXPECT_EQ(result->stop_reason, StopReason::kStopToken);
  EXPECT_EQ(StopReasonName(result->stop_reason), "stop_token");
}

TEST(Generate, StreamingCallbackSeesEveryTokenAndCanStop) {
  const Tiny& tiny = GetTiny();
  model::Qwen3Model model = tiny.model;
  std::vector<int32_t> streamed;
  auto result = Generate(model, tiny.prompts[1], GenerationOptions{.max_new_tokens = 9, .temperature = 1.0, .seed = 3},
                         [&](int32_t token) {
                           streamed.push_back(token);
                           return true;
                         });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(streamed, result->ids);
  EXPECT_EQ(result->ids.size(), 9u);
  EXPECT_GE(result->timings.decode_tokens_per_second, 0.0);

  streamed.clear();
  auto stopped = Generate(model, tiny.prompts[1], GenerationOptions{.max_new_tokens = 9},
                          [&](int32_t token) {
                            streamed.push_back(token);
                            return streamed.size() < 3;
                          });
  ASSERT_TRUE(stopped.ok());
  EXPECT_EQ(stopped->ids.size(), 3u);
  EXPECT_EQ(streamed, stopped->ids);
  EXPECT_EQ(stopped->stop_reason, StopReason::kCallback);
}

TEST(Generate, RejectsBadInput) {
  const Tiny& tiny = GetTiny();
  model::Qwen3Model model = tiny.model;
  EXPECT_EQ(Generate(model, {}, GenerationOptions{}).status().code(), absl::StatusCode::kInvalidArgument);
  auto oov = Generate(model, {1, 151936}, GenerationOptions{});
  EXPECT_EQ(oov.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(oov.status().message().find("prompt_ids[1]"), std::string::npos);
  EXPECT_EQ(Generate(model, {1}, GenerationOptions{.top_p = 2}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace qatd::infer
