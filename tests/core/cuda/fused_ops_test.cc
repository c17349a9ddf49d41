// The fused fake-quant op (quant/fake_quant.h) against the plain autograd composition it
// replaces (runs everywhere), and the CUDA kernels (core/cuda) against the ATen paths (needs a
// GPU and a build with the kernels; skipped otherwise).
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/cuda.h>

#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "core/cuda/fused_ops.h"
#include "core/quant/fake_quant.h"
#include "core/quant/lut.h"
#include "core/quant/quant_linear_v2.h"
#include "core/quant/ste.h"
#include "core/model/model_io.h"
#include "core/quant/quantize_model.h"
#include "core/train/losses.h"
#include "core/train/micro_step.h"
#include "core/train/train_common.h"
#include "core/train/optimizer.h"
#include "gtest/gtest.h"

namespace qatd {
namespace {

using quant::FakeQuantBackend;

// A V1 problem: weight [O, I], low-rank scales A [O, r] and B [r, P] (P >= I, padded), LUT.
struct Problem {
  at::Tensor x, weight, a, b, bias, lut, boundaries;
};

Problem MakeProblem(int64_t out, int64_t in, int64_t padded, int64_t rank, int lut_size, at::ScalarType dtype,
                    const at::Device& device, bool with_bias, uint64_t seed) {
  at::manual_seed(seed);
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  Problem p;
  p.weight = (at::randn({out, in}, f32) * 0.05).to(device, dtype);
  // Positive scales of about the weights' magnitude / max LUT value, a few tiny or negative
  // entries of A @ B so that the clamp at 1e-8 matters.
  at::Tensor a = at::rand({out, rank}, f32) * 0.2 + 0.05;
  a.index_put_({0}, -a[0]);
  p.a = a.to(device, dtype);
  p.b = (at::rand({rank, padded}, f32) * 0.2 + 0.05).to(device, dtype);
  p.x = at::randn({3, 5, in}, f32).to(device, dtype);
  if (with_bias) p.bias = (at::randn({out}, f32) * 0.1).to(device, dtype);
  p.lut = quant::MakeLut(lut_size, /*include_zero=*/false, dtype).value().to(device);
  p.boundaries = quant::LutBoundaries(p.lut).to(device);
  return p;
}

// The reference composition: autograd through clamp(A @ B) and LUT[idx] * S, the weight
// straight-through (what QuantLinearV1 did before the fused op).
at::Tensor ComposedForward(const Problem& p, const at::Tensor& b_used) {
  at::Tensor s = at::matmul(p.a, b_used).clamp_min(quant::kMinScale);
  at::Tensor idx;
  {
    at::NoGradGuard no_grad;
    idx = quant::NearestLutIndexWithBoundaries(p.weight.detach().to(at::kFloat) / s.detach(), p.boundaries);
  }
  at::Tensor q = p.lut.index_select(0, idx.reshape({-1})).reshape(idx.sizes());
  at::Tensor wq = q.to(s.scalar_type()) * s;
  wq = wq + (p.weight - p.weight.detach());  // STE: value W_q, gradient identity to W
  return at::linear(p.x, wq, p.bias.defined() ? p.bias : at::Tensor());
}

void ExpectClose(const at::Tensor& got, const at::Tensor& want, double tol, const std::string& what) {
  ASSERT_TRUE(got.defined()) << what;
  ASSERT_TRUE(want.defined()) << what;
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  const double scale = want.to(at::kFloat).abs().max().item<double>() + 1e-12;
  const double err = (got.to(at::kFloat) - want.to(at::kFloat)).abs().max().item<double>();
  EXPECT_LE(err / scale, tol) << what << ": max abs err " << err << " (scale " << scale << ")";
}

class FakeQuantLinearTest : public ::testing::TestWithParam<std::tuple<at::ScalarType, bool>> {};

TEST_P(FakeQuantLinearTest, MatchesComposedAutogradInValueAndEveryGradient) {
  const auto [dtype, train_weights] = GetParam();
  // in = 40 with group padding to 64: B is narrowed, its padded columns get zero gradient.
  Problem p = MakeProblem(24, 40, 64, 4, 16, dtype, at::kCPU, /*with_bias=*/true, 7);
  const double tol = dtype == at::kFloat ? 1e-5 : 2e-2;
  auto run = [&](bool fused) {
    at::Tensor x = p.x.clone().requires_grad_(true);
    at::Tensor w = p.weight.clone().requires_grad_(train_weights);
    at::Tensor a = p.a.clone().requires_grad_(true);
    at::Tensor b = p.b.clone().requires_grad_(true);
    at::Tensor bias = p.bias.clone().requires_grad_(true);
    Problem q{x, w, a, b, bias, p.lut, p.boundaries};
    at::Tensor b_used = b.narrow(1, 0, 40);
    at::Tensor y = fused ? quant::FakeQuantLinear(x, w, a, b_used, bias, p.lut, p.boundaries) : ComposedForward(q, b_used);
    at::Tensor upstream = at::linspace(-1, 1, y.numel()).reshape(y.sizes()).to(y.scalar_type());
    (y.to(at::kFloat) * upstream.to(at::kFloat)).sum().backward();
    return std::vector<at::Tensor>{y.detach(), x.grad(), train_weights ? w.grad() : at::zeros({1}), a.grad(), b.grad(),
                                   bias.grad()};
  };
  const auto fused = run(true);
  const auto composed = run(false);
  const char* names[] = {"y", "dx", "dweight", "dA", "dB", "dbias"};
  for (size_t i = 0; i < fused.size(); ++i) ExpectClose(fused[i], composed[i], tol, names[i]);
  // The padded columns of B get no gradient.
  EXPECT_EQ(fused[4].narrow(1, 40, 24).abs().max().item<double>(), 0.0);
}

INSTANTIATE_TEST_SUITE_P(DtypesAndModes, FakeQuantLinearTest,
                         ::testing::Combine(::testing::Values(at::kFloat, at::kBFloat16), ::testing::Bool()));

TEST(FakeQuantLinear, FrozenLayerStillPassesInputGradient) {
  Problem p = MakeProblem(8, 32, 32, 2, 4, at::kFloat, at::kCPU, false, 3);
  at::Tensor x = p.x.clone().requires_grad_(true);
  at::Tensor y = quant::FakeQuantLinear(x, p.weight, p.a, p.b, at::Tensor(), p.lut, p.boundaries);
  y.sum().backward();
  at::Tensor wq = quant::LutFakeQuant(p.weight, at::matmul(p.a, p.b), p.lut, p.boundaries);
  ExpectClose(x.grad(), at::ones_like(y).matmul(wq), 1e-6, "dx");
}

// ---- V2 with frozen indices: the fused node against the autograd composition ----

// A V2 Q2 layer [out, in] of rank r, indices frozen, scales (A, B, g) trainable.
std::shared_ptr<quant::QuantLinearV2> MakeV2(int64_t out, int64_t in, int rank, at::ScalarType dtype,
                                             const at::Device& device, uint64_t seed,
                                             quant::LayerQuantSpecV2 spec = {}) {
  at::manual_seed(seed);
  spec.lut_size = 4;
  spec.scale_rank = rank;
  spec.group_size = 16;
  spec.use_ste_fp16 = true;
  auto layer = quant::QuantLinearV2::Create(at::randn({out, in}) * 0.05, at::Tensor(), spec).value();
  layer->to(device, dtype);
  layer->FreezeQ();
  layer->SetTrainable(true, false);
  layer->set_forward_path(quant::V2ForwardPath::kDenseSte);
  return layer;
}

// y and the gradients of x, A, B and g, through the layer (the fused node) or through the plain
// autograd composition the layer used before: linear(x, Ste16(Q ⊙ ((Â diag ĝ) B̂))).
std::vector<at::Tensor> RunV2(quant::QuantLinearV2& layer, const at::Tensor& x0, bool composed) {
  for (at::Tensor* t : {&layer.scale_A, &layer.scale_B, &layer.rank_magnitude}) t->mutable_grad() = at::Tensor();
  at::Tensor x = x0.clone().requires_grad_(true);
  at::Tensor y;
  if (composed) {
    quant::QuantLinearV2::Factors f = layer.ComputeFactors();
    at::Tensor w = layer.q * at::matmul(f.a_dir * f.g_hat.unsqueeze(0), f.b_dir);
    y = at::linear(x, quant::Ste16(w));
  } else {
    y = layer.forward(x);
  }
  at::Tensor upstream = at::linspace(-1, 1, y.numel()).reshape(y.sizes()).to(y.device());
  (y.to(at::kFloat) * upstream).sum().backward();
  return {y.detach(), x.grad(), layer.scale_A.grad(), layer.scale_B.grad(), layer.rank_magnitude.grad()};
}

class FrozenLutLinearTest : public ::testing::TestWithParam<at::ScalarType> {};

TEST_P(FrozenLutLinearTest, MatchesComposedAutogradInValueAndEveryGradient) {
  const at::ScalarType dtype = GetParam();
  auto layer = MakeV2(24, 40, 8, dtype, at::kCPU, 17);
  at::Tensor x = at::randn({3, 5, 40}).to(dtype);
  const auto fused = RunV2(*layer, x, false);
  const auto composed = RunV2(*layer, x, true);
  const char* names[] = {"y", "dx", "dA", "dB", "dg"};
  const double tol = dtype == at::kFloat ? 1e-5 : 2e-2;
  for (size_t i = 0; i < fused.size(); ++i) ExpectClose(fused[i], composed[i], tol, names[i]);
  // The forward values are the same ops on the CPU: bit for bit.
  EXPECT_TRUE(at::equal(fused[0], composed[0]));
  // The fp16 rounding really happens (bf16 and fp32 hold values fp16 cannot).
  at::Tensor w = quant::FrozenLutWeight(layer->q, layer->indices, layer->lut, layer->EffectiveScales(),
                                        at::eye(40).to(dtype), /*round_fp16=*/true);
  EXPECT_TRUE(at::equal(w, w.to(at::kHalf).to(dtype)));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, FrozenLutLinearTest, ::testing::Values(at::kFloat, at::kBFloat16));

// ---- CUDA kernels against the ATen paths ----

bool KernelsRunnable() { return cuda::FusedKernelsEnabled() && torch::cuda::is_available(); }

class LutKernelTest : public ::testing::TestWithParam<std::tuple<at::ScalarType, int>> {};

TEST_P(LutKernelTest, FakeQuantAndScaleGradEqualAtenBitForBit) {
  if (!KernelsRunnable()) GTEST_SKIP() << "needs a CUDA device and the fused kernels (QATD_CUDA_KERNELS)";
  const auto [dtype, lut_size] = GetParam();
  Problem p = MakeProblem(300, 257, 288, 8, lut_size, dtype, at::Device("cuda"), false, 11);
  at::Tensor s = at::matmul(p.a, p.b);  // [300, 288]: the kernel reads the first 257 columns
  at::Tensor fused = quant::LutFakeQuant(p.weight, s, p.lut, p.boundaries, FakeQuantBackend::kAuto);
  at::Tensor aten = quant::LutFakeQuant(p.weight, s, p.lut, p.boundaries, FakeQuantBackend::kAten);
  ASSERT_EQ(fused.sizes(), aten.sizes());
  EXPECT_TRUE(at::equal(fused, aten)) << "max diff " << (fused.to(at::kFloat) - aten.to(at::kFloat)).abs().max().item<double>();
  at::Tensor grad = at::randn({300, 257}, p.weight.options());
  at::Tensor g_fused = quant::LutScaleGrad(p.weight, s, grad, p.lut, p.boundaries, FakeQuantBackend::kAuto);
  at::Tensor g_aten = quant::LutScaleGrad(p.weight, s, grad, p.lut, p.boundaries, FakeQuantBackend::kAten);
  EXPECT_TRUE(at::equal(g_fused, g_aten));
  // The clamped row (A[0] < 0 makes S[0] < 1e-8) gets no scale gradient.
  EXPECT_EQ(g_fused[0].abs().max().item<double>(), 0.0);
}

INSTANTIATE_TEST_SUITE_P(DtypesAndLuts, LutKernelTest,
                         ::testing::Combine(::testing::Values(at::kFloat, at::kBFloat16, at::kHalf),
                                            ::testing::Values(4, 16, 256)));

TEST(LutKernel, IndicesAtExactMidpointsTieToTheLowerEntry) {
  if (!KernelsRunnable()) GTEST_SKIP() << "needs a CUDA device and the fused kernels (QATD_CUDA_KERNELS)";
  at::Tensor lut = quant::MakeLut(4, false, at::kFloat).value().to(at::kCUDA);
  at::Tensor bounds = quant::LutBoundaries(lut).to(at::kCUDA);
  // Weights at each LUT value, at each midpoint and just around it, with S = 1.
  at::Tensor mids = (lut.narrow(0, 0, 3) + lut.narrow(0, 1, 3)) / 2;
  at::Tensor w = at::cat({lut, mids, mids.nextafter(mids + 1), mids.nextafter(mids - 1)}).reshape({1, -1});
  at::Tensor s = at::ones_like(w);
  EXPECT_TRUE(at::equal(quant::LutFakeQuant(w, s, lut, bounds), quant::LutFakeQuant(w, s, lut, bounds, FakeQuantBackend::kAten)));
}

TEST(FakeQuantLinear, CudaForwardAndGradientsMatchTheAtenPath) {
  if (!KernelsRunnable()) GTEST_SKIP() << "needs a CUDA device and the fused kernels (QATD_CUDA_KERNELS)";
  Problem p = MakeProblem(64, 96, 96, 4, 16, at::kBFloat16, at::Device("cuda"), false, 5);
  auto run = [&](bool fused) {
    cuda::SetFusedKernelsEnabled(fused);
    at::Tensor x = p.x.clone().requires_grad_(true);
    at::Tensor w = p.weight.clone().requires_grad_(true);
    at::Tensor a = p.a.clone().requires_grad_(true);
    at::Tensor b = p.b.clone().requires_grad_(true);
    at::Tensor y = quant::FakeQuantLinear(x, w, a, b, at::Tensor(), p.lut, p.boundaries);
    y.to(at::kFloat).pow(2).sum().backward();
    cuda::SetFusedKernelsEnabled(true);
    return std::vector<at::Tensor>{y.detach(), x.grad(), w.grad(), a.grad(), b.grad()};
  };
  const auto with_kernels = run(true);
  const auto aten = run(false);
  // The kernel forms S = A @ B itself (fake_quant.h): equal up to rare last-bit differences of S.
  const char* names[] = {"y", "dx", "dweight", "dA", "dB"};
  for (size_t i = 0; i < aten.size(); ++i) ExpectClose(with_kernels[i], aten[i], 2e-2, names[i]);
}

TEST_P(LutKernelTest, LowRankScalesFormedInTheKernelAgreeWithTheGemm) {
  if (!KernelsRunnable()) GTEST_SKIP() << "needs a CUDA device and the fused kernels (QATD_CUDA_KERNELS)";
  const auto [dtype, lut_size] = GetParam();
  Problem p = MakeProblem(512, 1000, 1024, 32, lut_size, dtype, at::Device("cuda"), false, 13);
  at::Tensor b = p.b.narrow(1, 0, 1000);
  at::Tensor fused = quant::LutFakeQuantLowRank(p.weight, p.a, b, p.lut, p.boundaries, FakeQuantBackend::kAuto);
  at::Tensor aten = quant::LutFakeQuantLowRank(p.weight, p.a, b, p.lut, p.boundaries, FakeQuantBackend::kAten);
  const double mismatched = fused.ne(aten).to(at::kFloat).mean().item<double>();
  EXPECT_LE(mismatched, 1e-3) << "fraction of weights that differ";
  at::Tensor grad = at::randn({512, 1000}, p.weight.options());
  at::Tensor g_fused = quant::LutScaleGradLowRank(p.weight, p.a, b, grad, p.lut, p.boundaries, FakeQuantBackend::kAuto);
  at::Tensor g_aten = quant::LutScaleGradLowRank(p.weight, p.a, b, grad, p.lut, p.boundaries, FakeQuantBackend::kAten);
  EXPECT_LE(g_fused.ne(g_aten).to(at::kFloat).mean().item<double>(), 1e-3);
}

TEST(FusedCrossEntropy, HardFullLossAndGradientMatchTheAtenPath) {
  if (!KernelsRunnable()) GTEST_SKIP() << "needs a CUDA device and the fused kernels (QATD_CUDA_KERNELS)";
  at::manual_seed(21);
  auto opts = at::TensorOptions().dtype(at::kFloat).device(at::kCUDA);
  at::Tensor hidden = (at::randn({3, 50, 64}, opts) * 2).to(at::kBFloat16);
  at::Tensor w = (at::randn({5000, 64}, opts) * 0.3).to(at::kBFloat16);
  at::Tensor idx = at::randint(0, 5000, {3, 49, 4}, opts.dtype(at::kLong));
  auto run = [&](bool fused) {
    cuda::SetFusedKernelsEnabled(fused);
    at::Tensor h = hidden.clone().requires_grad_(true);
    at::Tensor loss = train::HardFullLoss(h, w, idx, /*chunk_rows=*/64);
    (loss * 3.0).backward();
    cuda::SetFusedKernelsEnabled(true);
    return std::make_pair(loss.detach(), h.grad());
  };
  const auto [loss_fused, grad_fused] = run(true);
  const auto [loss_aten, grad_aten] = run(false);
  EXPECT_NEAR(loss_fused.item<double>(), loss_aten.item<double>(), 1e-4 * loss_aten.item<double>());
  ExpectClose(grad_fused, grad_aten, 2e-2, "dL/dhidden");
}

class FusedAdamWTest : public ::testing::TestWithParam<at::ScalarType> {};

TEST_P(FusedAdamWTest, MatchesTheForeachPathOverSeveralSteps) {
  if (!KernelsRunnable()) GTEST_SKIP() << "needs a CUDA device and the fused kernels (QATD_CUDA_KERNELS)";
  const at::ScalarType dtype = GetParam();
  auto make = [&](uint64_t seed) {
    at::manual_seed(seed);
    // Sizes around the kernel's 4096-element chunk, and a tiny one.
    std::vector<std::pair<std::string, at::Tensor>> params;
    for (int64_t n : {4096, 5000, 3, 70000}) {
      params.emplace_back("p" + std::to_string(n), at::randn({n}, at::TensorOptions().dtype(at::kFloat)).to(at::kCUDA, dtype).requires_grad_(true));
    }
    return params;
  };
  auto fused_params = make(1), foreach_params = make(1);
  train::AdamWOptions opts;
  opts.weight_decay = 0.1;
  train::AdamW fused(fused_params, opts), foreach(foreach_params, opts);
  for (int step = 0; step < 4; ++step) {
    at::manual_seed(100 + step);
    for (size_t i = 0; i < fused_params.size(); ++i) {
      at::Tensor g = at::randn(fused_params[i].second.sizes(), at::TensorOptions().dtype(at::kFloat)).to(at::kCUDA, dtype);
      fused_params[i].second.mutable_grad() = g.clone();
      foreach_params[i].second.mutable_grad() = g.clone();
    }
    cuda::SetFusedKernelsEnabled(true);
    fused.Step(1e-2);
    cuda::SetFusedKernelsEnabled(false);
    foreach.Step(1e-2);
    cuda::SetFusedKernelsEnabled(true);
  }
  for (size_t i = 0; i < fused_params.size(); ++i) {
    ExpectClose(fused_params[i].second.detach(), foreach_params[i].second.detach(), dtype == at::kFloat ? 1e-6 : 1e-2,
                fused_params[i].first);
  }
  auto fs = fused.State(), es = foreach.State();
  ASSERT_EQ(fs.size(), es.size());
  for (const auto& [name, t] : fs) {
    if (t.is_floating_point()) ExpectClose(t, es.at(name), 1e-5, name);
  }
}

// Training steps through MicroStep: CUDA graph replays must give the same parameters as eager
// steps (same kernels, same order), including the warm-up and capture steps and a batch of
// another shape in between (which runs eagerly).
TEST(MicroStepGraphs, GraphReplaysTrainExactlyLikeEagerSteps) {
  if (!KernelsRunnable()) GTEST_SKIP() << "needs a CUDA device and the fused kernels (QATD_CUDA_KERNELS)";
  auto config = model::Qwen3Config::FromFile(std::string(QATD_TEST_DATA) + "/golden/tiny-qwen3/config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  auto run = [&](bool graphs, int64_t* replays) {
    auto m = model::InitTinyQwen3(*config, model::InitOptions{3, 0.1, at::kBFloat16, at::Device("cuda")});
    EXPECT_TRUE(m.ok());
    auto registry = quant::MakeQwen3Registry(**m);
    auto cfg = quant::QuantConfig::FromPreset("Q4_A4");
    EXPECT_TRUE(quant::QuantizeLinears(*registry, *cfg).ok());
    EXPECT_TRUE(quant::ApplyTrainableSet(*registry, quant::TrainableSet{true, true}).ok());
    auto params = train::TrainableParameters(**m);
    train::AdamW adam(params, {});
    train::MicroStep micro(**m, train::KdLossWeights{2.0, 0.1, 0.01}, 16, graphs);
    EXPECT_EQ(micro.may_use_graphs(), graphs);
    adam.set_zero_grads_in_place(micro.may_use_graphs());
    at::manual_seed(9);
    auto opts = at::TensorOptions().dtype(at::kLong);
    for (int step = 0; step < 6; ++step) {
      const int64_t b = step == 3 ? 1 : 2;  // step 3: another shape, eager
      at::Tensor ids = at::randint(0, 1000, {b, 12}, opts);
      at::Tensor idx = at::randint(0, 1000, {b, 11, 4}, opts);
      at::Tensor logits = at::randn({b, 11, 4}).to(at::kHalf);
      adam.ZeroGrad();
      for (int micro_batch = 0; micro_batch < 2; ++micro_batch) {
        auto row = micro.Run(ids, idx, logits, 0.5);
        EXPECT_TRUE(row.ok()) << row.status();
      }
      adam.Step(1e-2);
    }
    *replays = micro.replays();
    std::vector<at::Tensor> out;
    for (auto& [name, p] : params) out.push_back(p.detach().clone());
    return out;
  };
  int64_t graph_replays = 0, eager_replays = 0;
  const auto graphed = run(true, &graph_replays);
  const auto eager = run(false, &eager_replays);
  EXPECT_GT(graph_replays, 0);
  EXPECT_EQ(eager_replays, 0);
  ASSERT_EQ(graphed.size(), eager.size());
  for (size_t i = 0; i < eager.size(); ++i) EXPECT_TRUE(at::equal(graphed[i], eager[i])) << "parameter " << i;
}

class FrozenLutKernelTest : public ::testing::TestWithParam<std::tuple<at::ScalarType, bool>> {};

TEST_P(FrozenLutKernelTest, WeightAndScaleGradAgreeWithAten) {
  if (!KernelsRunnable()) GTEST_SKIP() << "needs a CUDA device and the fused kernels (QATD_CUDA_KERNELS)";
  const auto [dtype, round] = GetParam();
  const at::Device dev("cuda");
  at::manual_seed(23);
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  // 1003 rows: the last group of 8 rows is partial. B has padded columns the kernel must skip.
  at::Tensor idx = at::randint(0, 16, {1003, 777}, f32.dtype(at::kLong)).to(dev, at::kByte);
  at::Tensor lut = quant::MakeLut(16, false, dtype).value().to(dev);
  at::Tensor q = lut.index_select(0, idx.to(at::kLong).reshape({-1})).reshape(idx.sizes());
  at::Tensor a = at::randn({1003, 32}, f32).to(dev, dtype);
  at::Tensor b = at::randn({32, 800}, f32).to(dev, dtype).narrow(1, 0, 777);
  at::Tensor fused = quant::FrozenLutWeight(q, idx, lut, a, b, round, FakeQuantBackend::kAuto);
  at::Tensor aten = quant::FrozenLutWeight(q, idx, lut, a, b, round, FakeQuantBackend::kAten);
  ASSERT_EQ(fused.sizes(), aten.sizes());
  // The kernel's float32 sum of the rank products can differ from cuBLAS's in the last bit of S.
  EXPECT_LE(fused.ne(aten).to(at::kFloat).mean().item<double>(), 2e-3) << "fraction of weights that differ";
  ExpectClose(fused, aten, 1e-2, "W");
  if (round && dtype != at::kHalf) EXPECT_TRUE(at::equal(fused, fused.to(at::kHalf).to(dtype)));
  at::Tensor grad = at::randn({1003, 777}, f32).to(dev, dtype);
  EXPECT_TRUE(at::equal(quant::FrozenLutScaleGrad(q, idx, lut, grad, FakeQuantBackend::kAuto),
                        quant::FrozenLutScaleGrad(q, idx, lut, grad, FakeQuantBackend::kAten)));
}

INSTANTIATE_TEST_SUITE_P(DtypesAndRounding, FrozenLutKernelTest,
                         ::testing::Combine(::testing::Values(at::kFloat, at::kBFloat16, at::kHalf), ::testing::Bool()));

TEST(FrozenLutLinear, CudaLayerMatchesTheAtenPathAndTheComposition) {
  if (!KernelsRunnable()) GTEST_SKIP() << "needs a CUDA device and the fused kernels (QATD_CUDA_KERNELS)";
  auto layer = MakeV2(384, 256, 32, at::kBFloat16, at::Device("cuda"), 29);
  at::Tensor x = at::randn({4, 33, 256}).to(at::Device("cuda"), at::kBFloat16);
  const auto with_kernels = RunV2(*layer, x, false);
  cuda::SetFusedKernelsEnabled(false);
  const auto aten = RunV2(*layer, x, false);
  cuda::SetFusedKernelsEnabled(true);
  const auto composed = RunV2(*layer, x, true);
  const char* names[] = {"y", "dx", "dA", "dB", "dg"};
  for (size_t i = 0; i < aten.size(); ++i) {
    ExpectClose(with_kernels[i], aten[i], 2e-2, std::string("kernels vs aten ") + names[i]);
    ExpectClose(aten[i], composed[i], 2e-2, std::string("aten vs composed ") + names[i]);
  }
}

// The fused V2 factor node (Â diag ĝ and B̂ in one kernel, its backward in another) against the
// ATen composition, for every positivity and magnitude activation.
class V2FactorKernelTest
    : public ::testing::TestWithParam<std::tuple<at::ScalarType, quant::MagnitudeActivation, int>> {};

TEST_P(V2FactorKernelTest, LayerValuesAndScaleGradientsMatchTheComposition) {
  if (!KernelsRunnable()) GTEST_SKIP() << "needs a CUDA device and the fused kernels (QATD_CUDA_KERNELS)";
  const auto [dtype, magnitude, positive] = GetParam();
  quant::LayerQuantSpecV2 spec;
  spec.force_positive_scales = positive != 0;
  spec.positive_scale_method = positive == 2 ? quant::PositiveScaleMethod::kSoftplus : quant::PositiveScaleMethod::kAbs;
  spec.magnitude_activation = magnitude;
  auto layer = MakeV2(320, 192, 16, dtype, at::Device("cuda"), 31, spec);
  at::Tensor x = at::randn({2, 40, 192}).to(at::Device("cuda"), dtype);
  const auto fused = RunV2(*layer, x, false);
  const auto composed = RunV2(*layer, x, true);
  const char* names[] = {"y", "dx", "dA", "dB", "dg"};
  for (size_t i = 0; i < fused.size(); ++i) {
    // y and dx see the fp16-rounded weight: a last-bit difference of S can move a weight by one
    // fp16 step (2^-11 relative), so fp32 gets fp16's tolerance there.
    const double tol = dtype == at::kFloat ? (i < 2 ? 1e-3 : 1e-4) : 3e-2;
    ExpectClose(fused[i], composed[i], tol, names[i]);
  }
  // The factors themselves, before any GEMM.
  quant::QuantLinearV2::Factors f = layer->ComputeFactors();
  at::Tensor ag, b_dir;
  ASSERT_TRUE(cuda::TryV2Factors(layer->scale_A, layer->scale_B, layer->rank_magnitude, positive,
                                 static_cast<int>(magnitude), spec.norm_eps, spec.magnitude_eps, &ag, &b_dir));
  ExpectClose(ag, (f.a_dir * f.g_hat.unsqueeze(0)).detach(), dtype == at::kFloat ? 1e-6 : 1e-2, "ag");
  ExpectClose(b_dir, f.b_dir.detach(), dtype == at::kFloat ? 1e-6 : 1e-2, "b_dir");
}

INSTANTIATE_TEST_SUITE_P(
    DtypesAndActivations, V2FactorKernelTest,
    ::testing::Combine(::testing::Values(at::kFloat, at::kBFloat16),
                       ::testing::Values(quant::MagnitudeActivation::kIdentity, quant::MagnitudeActivation::kAbs,
                                         quant::MagnitudeActivation::kSoftplus),
                       ::testing::Values(0, 1, 2)));

TEST(V2FactorKernel, BackwardFallsBackToAutogradWhenKernelsAreSwitchedOff) {
  if (!KernelsRunnable()) GTEST_SKIP() << "needs a CUDA device and the fused kernels (QATD_CUDA_KERNELS)";
  auto layer = MakeV2(96, 64, 8, at::kFloat, at::Device("cuda"), 37);
  at::Tensor x = at::randn({3, 64}).to(at::kCUDA);
  const auto want = RunV2(*layer, x, true);
  for (at::Tensor* t : {&layer->scale_A, &layer->scale_B, &layer->rank_magnitude}) t->mutable_grad() = at::Tensor();
  at::Tensor y = layer->forward(x);  // fused forward
  cuda::SetFusedKernelsEnabled(false);
  (y * at::linspace(-1, 1, y.numel()).reshape(y.sizes()).to(y.device())).sum().backward();
  cuda::SetFusedKernelsEnabled(true);
  ExpectClose(layer->scale_A.grad(), want[2], 1e-4, "dA");
  ExpectClose(layer->scale_B.grad(), want[3], 1e-4, "dB");
  ExpectClose(layer->rank_magnitude.grad(), want[4], 1e-4, "dg");
}

// ---- KD teacher kernels ----

class TeacherKernelTest : public ::testing::TestWithParam<at::ScalarType> {};

TEST_P(TeacherKernelTest, RowBlockMaxEqualsAtenMaxBitForBit) {
  if (!KernelsRunnable()) GTEST_SKIP() << "needs a CUDA device and the fused kernels (QATD_CUDA_KERNELS)";
  const at::ScalarType dtype = GetParam();
  at::manual_seed(41);
  // 5 rows of 64 * 37 columns (the last warp of a row is partial); ties, an infinity and a NaN.
  at::Tensor z = (at::randn({5, 64 * 37}) * 4).round().to(at::kCUDA, dtype);
  z.index_put_({1, 100}, std::numeric_limits<float>::infinity());
  z.index_put_({2, 7}, std::numeric_limits<float>::quiet_NaN());
  for (int64_t block : {8, 16, 64}) {
    if (block * z.element_size() % 16 != 0) continue;
    at::Tensor got;
    ASSERT_TRUE(cuda::TryRowBlockMax(z, block, &got)) << "block " << block;
    at::Tensor want = std::get<0>(z.view({5, -1, block}).max(2));
    EXPECT_TRUE(at::equal(got.isnan(), want.isnan())) << "block " << block;
    EXPECT_TRUE(at::equal(got.nan_to_num(0), want.nan_to_num(0))) << "block " << block;
  }
  // A strided view (a logits chunk narrowed out of a wider buffer) works too.
  at::Tensor wide = at::randn({4, 64 * 40}).to(at::kCUDA, dtype);
  at::Tensor view = wide.narrow(1, 0, 64 * 32);
  at::Tensor got;
  ASSERT_TRUE(cuda::TryRowBlockMax(view, 64, &got));
  EXPECT_TRUE(at::equal(got, std::get<0>(view.reshape({4, 32, 64}).max(2))));
  // Unsupported widths are declined, not mangled.
  EXPECT_FALSE(cuda::TryRowBlockMax(z.narrow(1, 0, 100), 64, &got));
}

TEST_P(TeacherKernelTest, RopeKernelMatchesTheAtenOps) {
  if (!KernelsRunnable()) GTEST_SKIP() << "needs a CUDA device and the fused kernels (QATD_CUDA_KERNELS)";
  const at::ScalarType dtype = GetParam();
  at::manual_seed(43);
  const int64_t b = 3, s = 17, h = 4, d = 128;
  at::Tensor x = at::randn({b, s, h, d}).to(at::kCUDA, dtype);
  at::Tensor angle = at::rand({s, 1, d / 2}) * 6;
  at::Tensor cos = at::cat({angle.cos(), angle.cos()}, -1).to(at::kCUDA, dtype);
  at::Tensor sin = at::cat({-angle.sin(), angle.sin()}, -1).to(at::kCUDA, dtype);
  at::Tensor got;
  ASSERT_TRUE(cuda::TryApplyRope(x, cos, sin, /*transpose=*/false, &got));
  at::Tensor want = at::addcmul(x * cos, x.roll(d / 2, -1), sin);
  // The same roundings (x * cos rounded, then one rounding of a + x_rolled * sin). Whether
  // ATen's build contracts the latter into an FMA is its compiler's choice: in fp32 that moves
  // the last bit of many elements, in 16-bit types of almost none.
  if (dtype != at::kFloat) EXPECT_LE(got.ne(want).to(at::kFloat).mean().item<double>(), 1e-2);
  ExpectClose(got, want, dtype == at::kFloat ? 1e-6 : 1e-2, "rope");
  // The transpose (the backward's rotation) against the same formula as ATen ops.
  at::Tensor back;
  ASSERT_TRUE(cuda::TryApplyRope(x, cos, sin, /*transpose=*/true, &back));
  ExpectClose(back, at::addcmul(x * cos, x.roll(d / 2, -1), sin.roll(d / 2, -1)), dtype == at::kFloat ? 1e-6 : 1e-2,
              "rope transpose");
  // And it is the adjoint: <R x, y> = <x, Rᵀ y> (fp32).
  if (dtype == at::kFloat) {
    at::Tensor y = at::randn_like(x);
    at::Tensor ry;
    ASSERT_TRUE(cuda::TryApplyRope(y, cos, sin, /*transpose=*/true, &ry));
    const double lhs = (got * y).sum().item<double>(), rhs = (x * ry).sum().item<double>();
    EXPECT_NEAR(lhs, rhs, 1e-3 * std::abs(lhs) + 1e-3);
  }
}

// A tiny Qwen3 trained one step on CUDA with the fused kernels (RoPE as one node each way) and
// with the ATen ops: logits and every parameter gradient agree.
TEST(TeacherKernel, ModelForwardAndGradientsMatchWithAndWithoutFusedRope) {
  if (!KernelsRunnable()) GTEST_SKIP() << "needs a CUDA device and the fused kernels (QATD_CUDA_KERNELS)";
  auto loaded = model::LoadQwen3(std::string(QATD_TEST_DATA) + "/golden/tiny-qwen3", {at::kFloat, at::kCUDA});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  model::Qwen3Model m = loaded->model;
  for (auto& p : m->parameters()) p.requires_grad_(true);
  at::Tensor ids = at::randint(0, 1000, {2, 24}, at::TensorOptions().dtype(at::kLong)).to(at::kCUDA);
  auto run = [&](bool fused) {
    cuda::SetFusedKernelsEnabled(fused);
    for (auto& p : m->parameters()) p.mutable_grad() = at::Tensor();
    at::Tensor logits = m->Logits(m->Forward(ids));
    logits.pow(2).mean().backward();
    cuda::SetFusedKernelsEnabled(true);
    std::vector<at::Tensor> out{logits.detach()};
    for (auto& p : m->parameters()) out.push_back(p.grad().defined() ? p.grad().clone() : at::zeros({1}));
    return out;
  };
  const auto fused = run(true);
  const auto aten = run(false);
  ASSERT_EQ(fused.size(), aten.size());
  for (size_t i = 0; i < fused.size(); ++i) ExpectClose(fused[i], aten[i], 1e-4, "tensor " + std::to_string(i));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, TeacherKernelTest, ::testing::Values(at::kFloat, at::kBFloat16, at::kHalf));

INSTANTIATE_TEST_SUITE_P(Dtypes, FusedAdamWTest, ::testing::Values(at::kFloat, at::kBFloat16));

}  // namespace
}  // namespace qatd
