// core/train/dist_group.h and the data-parallel step (issue #15): two ranks as two threads of
// this process, joined by a real c10d TCPStore on 127.0.0.1 and ProcessGroupGloo.
#include <ATen/Context.h>
#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "core/quant/quantize_model.h"
#include "core/train/dist_group.h"
#include "core/train/evaluate.h"
#include "core/train/train_common.h"
#include "tests/core/train/train_fixture.h"

namespace qatd::train {
namespace {

using namespace std::chrono_literals;

// Rank 0 hosts the store on an ephemeral port; rank 1 joins it. Returns both, connected.
std::pair<std::unique_ptr<DistGroup>, std::unique_ptr<DistGroup>> TwoRanks(const std::string& version1 = "") {
  DistOptions o0;
  o0.device = "cpu";  // Gloo on CPU tensors, also on a host with GPUs (auto would pick NCCL)
  o0.world_size = 2;
  o0.timeout = 60s;
  auto g0 = DistGroup::Create(o0);
  EXPECT_TRUE(g0.ok()) << g0.status();
  DistOptions o1 = o0;
  o1.rank = 1;
  o1.store_port = (*g0)->store_port();
  o1.version = version1;
  auto g1 = DistGroup::Create(o1);
  EXPECT_TRUE(g1.ok()) << g1.status();
  auto c1 = std::async(std::launch::async, [&] { return (*g1)->Connect(); });
  absl::Status s0 = (*g0)->Connect();
  absl::Status s1 = c1.get();
  EXPECT_TRUE(s0.ok()) << s0;
  EXPECT_TRUE(s1.ok()) << s1;
  return {*std::move(g0), *std::move(g1)};
}

// Issue #15's straggler gauge: the rank that waits for a slow peer counts the wait as
// collective time, so its own work (step time minus that) stays small while the slow rank's
// does not (rank_step_time.h).
TEST(DistGroupTest, TheRankThatWaitsForASlowPeerCountsItAsCollectiveTime) {
  auto [g0, g1] = TwoRanks();
  ASSERT_TRUE(g0 && g1);
  const double before0 = g0->collective_seconds();
  const double before1 = g1->collective_seconds();
  auto slow = std::async(std::launch::async, [&g1 = *g1] {
    std::this_thread::sleep_for(std::chrono::milliseconds(400));  // simulates a straggling rank (not synchronization)
    at::Tensor t = at::ones({4});
    return g1.AllReduce(t);
  });
  at::Tensor t = at::ones({4});
  ASSERT_TRUE(g0->AllReduce(t).ok());
  ASSERT_TRUE(slow.get().ok());
  // Rank 0's all-reduce cannot end before rank 1 joins it, 400 ms after the start: a lower bound
  // that load cannot break. Rank 1 found rank 0 waiting, so it waited less (no upper bound in
  // seconds: a loaded machine may slow its share).
  const double waited0 = g0->collective_seconds() - before0;
  EXPECT_GE(waited0, 0.3);
  EXPECT_LT(g1->collective_seconds() - before1, waited0);
}

TEST(DistGroupTest, CollectivesOverGloo) {
  auto [g0, g1] = TwoRanks();
  ASSERT_TRUE(g0 && g1);
  EXPECT_NE(g0->store_port(), 0);
  // Bucketed sum of tensors of two dtypes, with buckets smaller than some tensors.
  auto run = [](DistGroup& g, float base) {
    std::vector<at::Tensor> ts = {at::full({3, 5}, base), at::full({7}, static_cast<double>(base), at::kDouble),
                                  at::arange(10, at::kFloat) * base, at::full({2}, base)};
    EXPECT_TRUE(g.AllReduceSum(ts, /*bucket_bytes=*/48).ok());
    at::Tensor mx = at::full({1}, base);
    EXPECT_TRUE(g.AllReduce(mx, ReduceOp::kMax).ok());
    at::Tensor b = at::full({4}, base);
    EXPECT_TRUE(g.Broadcast(b, 1).ok());
    auto any = g.Any(base > 1.5f);
    EXPECT_TRUE(any.ok());
    ts.push_back(mx);
    ts.push_back(b);
    ts.push_back(at::full({1}, *any ? 1.0f : 0.0f));
    return ts;
  };
  auto r1 = std::async(std::launch::async, [&] { return run(*g1, 2.0f); });
  std::vector<at::Tensor> a = run(*g0, 1.0f);
  std::vector<at::Tensor> b = r1.get();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i], b[i])) << i;
  EXPECT_TRUE(at::allclose(a[0], at::full({3, 5}, 3.0f)));
  EXPECT_TRUE(at::allclose(a[1], at::full({7}, 3.0, at::kDouble)));
  EXPECT_TRUE(at::allclose(a[2], at::arange(10, at::kFloat) * 3));
  EXPECT_EQ(a[4].item<float>(), 2.0f);  // max
  EXPECT_TRUE(at::allclose(a[5], at::full({4}, 2.0f)));  // rank 1's
  EXPECT_EQ(a[6].item<float>(), 1.0f);  // any
}

TEST(DistGroupTest, RanksOfDifferentBuildsAreRefusedNamingBoth) {
  DistOptions o0;
  o0.device = "cpu";  // Gloo on CPU tensors, also on a host with GPUs (auto would pick NCCL)
  o0.world_size = 2;
  o0.timeout = 30s;
  auto g0 = DistGroup::Create(o0);
  ASSERT_TRUE(g0.ok()) << g0.status();
  DistOptions o1 = o0;
  o1.rank = 1;
  o1.store_port = (*g0)->store_port();
  o1.version = "qatd 9.9.9 torch 0.0.0";
  auto g1 = DistGroup::Create(o1);
  ASSERT_TRUE(g1.ok());
  auto c1 = std::async(std::launch::async, [&] { return (*g1)->Connect(); });
  absl::Status s0 = (*g0)->Connect();
  absl::Status s1 = c1.get();
  EXPECT_EQ(s0.code(), absl::StatusCode::kFailedPrecondition) << s0;
  EXPECT_NE(s0.message().find("9.9.9"), std::string::npos) << s0;
  EXPECT_EQ(s1.code(), absl::StatusCode::kFailedPrecondition) << s1;
}

TEST(DistGroupTest, ABadRankOrAnUnreachableStoreIsAClearError) {
  DistOptions o;
  o.world_size = 2;
  o.rank = 2;
  EXPECT_EQ(DistGroup::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.rank = 1;
  o.store_port = 1;  // nothing listens there
  o.timeout = 2s;
  EXPECT_EQ(DistGroup::Create(o).status().code(), absl::StatusCode::kUnavailable);
}

StudentOptions V1Student(const std::string& device = "cpu") {
  StudentOptions o;
  o.device = device;
  o.model_dir = Teacher().teacher;
  o.dtype = "fp32";
  o.quant_v1.lut_size = 4;
  o.quant_v1.group_size = 16;
  o.quant_v1.scale_rank = 4;
  return o;
}

// The gradients of one step of `grad_accum` micro-batches of the global batch `global_batch`,
// on rank `rank` of `dist` (nullptr: one rank).
std::vector<at::Tensor> StepGradients(DistGroup* dist, int64_t global_batch, int64_t grad_accum, LossValues* values,
                                      const std::string& device = "cpu") {
  auto s = LoadStudent(V1Student(device));
  EXPECT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(quant::ApplyTrainableSet(*s->registry, {true, true, false, false}).ok());
  auto reader = kd::KdCacheReader::Open(Teacher().cache);
  EXPECT_TRUE(reader.ok());
  kd::KdStreamOptions so;
  so.batch_size = global_batch;
  so.seed = 3;
  so.shard_count = dist != nullptr ? dist->world_size() : 1;
  so.shard_index = dist != nullptr ? dist->rank() : 0;
  // 30 training sequences: with a global batch of 8 the 4th batch is a partial one of 6.
  auto stream = kd::KdBatchStream::Create(*reader, {0, 30}, so);
  EXPECT_TRUE(stream.ok());
  AdamW adam(TrainableParameters(*s->model), {});
  MicroStep micro(*s->model, {2.0, 0.0, 0.0005}, 1024, /*allow_graphs=*/false);
  std::vector<at::Tensor> grads;
  for (int step = 0; step < 4; ++step) {
    auto v = RunMicroBatches(micro, *stream, grad_accum, adam, dist);
    EXPECT_TRUE(v.ok()) << v.status();
    *values = *v;
  }
  for (const auto& [name, p] : adam.params()) grads.push_back(p.grad().cpu().clone());
  return grads;
}

// The 4th step: a partial global batch of 6 rows, 3 + 3 over the 2 ranks.
TEST(DataParallelStepTest, TwoRanksGetTheGradientOfTheGlobalBatch) {
  LossValues one_values, v0, v1;
  std::vector<at::Tensor> one = StepGradients(nullptr, 8, 1, &one_values);
  auto [g0, g1] = TwoRanks();
  ASSERT_TRUE(g0 && g1);
  auto r1 = std::async(std::launch::async, [&, g = g1.get()] { return StepGradients(g, 8, 1, &v1); });
  std::vector<at::Tensor> rank0 = StepGradients(g0.get(), 8, 1, &v0);
  std::vector<at::Tensor> rank1 = r1.get();
  ASSERT_EQ(one.size(), rank0.size());
  double worst = 0;
  for (size_t i = 0; i < one.size(); ++i) {
    EXPECT_TRUE(at::equal(rank0[i], rank1[i])) << "the ranks' gradients differ at tensor " << i;
    const double scale = one[i].abs().max().item<double>();
    const double diff = (one[i] - rank0[i]).abs().max().item<double>();
    worst = std::max(worst, scale > 0 ? diff / scale : diff);
  }
  std::printf("[ data parallel ] gradient of a partial global batch over 2 ranks vs 1: max relative difference %.3g\n",
              worst);
  EXPECT_LT(worst, 1e-5);
  EXPECT_NEAR(one_values.total, v0.total, 1e-6 * std::fabs(one_values.total));
  EXPECT_EQ(v0.total, v1.total);
}

// GPU hosts: Gloo all-reduces CUDA tensors too (staged through host memory), so two ranks can
// share one GPU here; the gradient must again be the global batch's.
TEST(DataParallelStepTest, TwoRanksOnOneGpuGetTheGradientOfTheGlobalBatch) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  LossValues one_values, v0, v1;
  std::vector<at::Tensor> one = StepGradients(nullptr, 8, 2, &one_values, "cuda:0");
  auto [g0, g1] = TwoRanks();
  ASSERT_TRUE(g0 && g1);
  auto r1 = std::async(std::launch::async, [&, g = g1.get()] { return StepGradients(g, 8, 2, &v1, "cuda:0"); });
  std::vector<at::Tensor> rank0 = StepGradients(g0.get(), 8, 2, &v0, "cuda:0");
  std::vector<at::Tensor> rank1 = r1.get();
  double worst = 0;
  for (size_t i = 0; i < one.size(); ++i) {
    EXPECT_TRUE(at::equal(rank0[i], rank1[i])) << i;
    const double scale = one[i].abs().max().item<double>();
    worst = std::max(worst, (one[i] - rank0[i]).abs().max().item<double>() / std::max(scale, 1e-30));
  }
  std::printf("[ data parallel ] CUDA, 2 ranks (Gloo) vs 1, grad_accum 2: max relative gradient difference %.3g\n", worst);
  EXPECT_LT(worst, 1e-4);  // fp32 on CUDA (TF32 off by default in LibTorch's matmul)
}

struct Trained {
  std::vector<at::Tensor> params;
  quant::TensorMap state;  // gathered
  int64_t owned = 0, total = 0;
};

// `steps` optimizer steps (global batch 8, weights and scales) on rank `dist`, the AdamW state
// ZeRO-1 sharded or replicated.
Trained TrainSteps(DistGroup* dist, bool shard, int steps) {
  auto s = LoadStudent(V1Student());
  EXPECT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(quant::ApplyTrainableSet(*s->registry, {true, true, false, false}).ok());
  auto reader = kd::KdCacheReader::Open(Teacher().cache);
  kd::KdStreamOptions so;
  so.batch_size = 8;
  so.seed = 3;
  so.shard_count = dist->world_size();
  so.shard_index = dist->rank();
  auto stream = kd::KdBatchStream::Create(*reader, {0, 30}, so);
  AdamWOptions ao;
  ao.lr = 1e-3;
  if (shard) {
    ao.shard_index = dist->rank();
    ao.shard_count = dist->world_size();
  }
  AdamW adam(TrainableParameters(*s->model), ao);
  EXPECT_EQ(adam.sharded(), shard);
  MicroStep micro(*s->model, {2.0, 0.0, 0.0005}, 1024, /*allow_graphs=*/false);
  for (int step = 0; step < steps; ++step) {
    auto v = RunMicroBatches(micro, *stream, 1, adam, dist);
    EXPECT_TRUE(v.ok()) << v.status();
    absl::Status applied = ApplyStep(adam, ao.lr, 1.0, *v, step + 1, dist);
    EXPECT_TRUE(applied.ok()) << applied;
  }
  Trained out;
  for (const auto& [name, p] : adam.params()) out.params.push_back(p.detach().clone());
  auto state = adam.GatheredState(*dist);
  EXPECT_TRUE(state.ok()) << state.status();
  out.state = *state;
  out.owned = adam.owned_parameters();
  out.total = adam.num_parameters();
  return out;
}

std::pair<Trained, Trained> TrainOnTwoRanks(bool shard, int steps) {
  auto [g0, g1] = TwoRanks();
  auto r1 = std::async(std::launch::async, [&, g = g1.get()] { return TrainSteps(g, shard, steps); });
  Trained a = TrainSteps(g0.get(), shard, steps);
  return {std::move(a), r1.get()};
}

TEST(DataParallelStepTest, ZeroOneShardsTheStateAndTrainsBitForBitLikeReplicatedState) {
  auto [rep0, rep1] = TrainOnTwoRanks(/*shard=*/false, 3);
  auto [zero0, zero1] = TrainOnTwoRanks(/*shard=*/true, 3);
  // Each rank keeps about half of the state; together all of it.
  EXPECT_EQ(zero0.owned + zero1.owned, zero0.total);
  EXPECT_LT(zero0.owned, zero0.total);
  EXPECT_LT(zero1.owned, zero0.total);
  EXPECT_EQ(rep0.owned, rep0.total);
  std::printf("[ data parallel ] ZeRO-1 state per rank: %lld + %lld of %lld parameters\n",
              static_cast<long long>(zero0.owned), static_cast<long long>(zero1.owned),
              static_cast<long long>(zero0.total));
  ASSERT_EQ(rep0.params.size(), zero0.params.size());
  for (size_t i = 0; i < rep0.params.size(); ++i) {
    EXPECT_TRUE(at::equal(rep0.params[i], zero0.params[i])) << "parameter " << i;
    EXPECT_TRUE(at::equal(zero0.params[i], zero1.params[i])) << "parameter " << i;
  }
  ASSERT_EQ(rep0.state.size(), zero0.state.size());
  for (const auto& [key, t] : rep0.state) {
    ASSERT_TRUE(zero0.state.count(key)) << key;
    EXPECT_TRUE(at::equal(t, zero0.state.at(key))) << key;
  }
  // The gathered file loads into one rank (resume with another number of ranks).
  auto s = LoadStudent(V1Student());
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE(quant::ApplyTrainableSet(*s->registry, {true, true, false, false}).ok());
  AdamW one(TrainableParameters(*s->model), {});
  ASSERT_TRUE(one.LoadState(zero0.state).ok());
  for (const auto& [key, t] : one.State()) EXPECT_TRUE(at::equal(t, zero0.state.at(key))) << key;
}

TEST(DataParallelStepTest, ShardedEvaluationEqualsOneRank) {
  auto s = LoadStudent(V1Student());
  ASSERT_TRUE(s.ok());
  auto reader = kd::KdCacheReader::Open(Teacher().cache);
  ASSERT_TRUE(reader.ok());
  EvalOptions eo;
  eo.max_sequences = 0;
  const int64_t n = (*reader)->num_sequences();
  const kd::KdSplit split{n - 11, n};  // 11 sequences: 6 + 5 over the ranks
  auto one = Evaluate(*s->model, **reader, split, eo);
  ASSERT_TRUE(one.ok()) << one.status();
  auto [g0, g1] = TwoRanks();
  ASSERT_TRUE(g0 && g1);
  auto s1 = LoadStudent(V1Student());
  ASSERT_TRUE(s1.ok());
  auto r1 = std::async(std::launch::async, [&] { return EvaluateSharded(*s1->model, **reader, split, eo, g1.get()); });
  auto r0 = EvaluateSharded(*s->model, **reader, split, eo, g0.get());
  auto e1 = r1.get();
  ASSERT_TRUE(r0.ok() && e1.ok());
  EXPECT_EQ(r0->sequences, 11);
  EXPECT_EQ(r0->positions, one->positions);
  EXPECT_NEAR(r0->kd, one->kd, 1e-6 * std::fabs(one->kd));
  EXPECT_NEAR(r0->top1, one->top1, 1e-12);
  EXPECT_NEAR(r0->ppl, one->ppl, 1e-6 * one->ppl);
  EXPECT_EQ(r0->kd, e1->kd);
}

}  // namespace
}  // namespace qatd::train
