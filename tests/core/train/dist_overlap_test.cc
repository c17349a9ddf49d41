// The gradient all-reduce of a data-parallel step (core/train/grad_reducer.h, issue #15): the
// all-reduces overlapped with the last backward give the weights of the after-backward ones
// and of one process; a forced one-rank group runs real collectives; NCCL (GPU builds only).
#include <ATen/Context.h>
#include <gtest/gtest.h>

#include <future>
#include <set>
#include <thread>

#include "core/quant/quantize_model.h"
#include "core/train/dist_group.h"
#include "core/train/grad_reducer.h"
#include "core/train/train_common.h"
#include "tests/core/train/train_fixture.h"

namespace qatd::train {
namespace {

using namespace std::chrono_literals;

// Two connected ranks (threads of this process) over Gloo on 127.0.0.1.
std::pair<std::unique_ptr<DistGroup>, std::unique_ptr<DistGroup>> TwoRanks(DistOptions o0) {
  o0.world_size = 2;
  o0.timeout = 60s;
  o0.device = "cpu";  // Gloo on CPU tensors, also on a host with GPUs (auto would pick NCCL)
  auto g0 = DistGroup::Create(o0);
  EXPECT_TRUE(g0.ok()) << g0.status();
  if (!g0.ok()) return {};
  DistOptions o1 = o0;
  o1.rank = 1;
  o1.store_port = (*g0)->store_port();
  auto g1 = DistGroup::Create(o1);
  EXPECT_TRUE(g1.ok()) << g1.status();
  if (!g1.ok()) return {};
  auto c1 = std::async(std::launch::async, [&] { return (*g1)->Connect(); });
  absl::Status s0 = (*g0)->Connect();
  absl::Status s1 = c1.get();
  EXPECT_TRUE(s0.ok()) << s0;
  EXPECT_TRUE(s1.ok()) << s1;
  return {*std::move(g0), *std::move(g1)};
}

StudentOptions V1Student(const std::string& device) {
  StudentOptions o;
  o.device = device;
  o.model_dir = Teacher().teacher;
  o.dtype = "fp32";
  o.quant_v1.lut_size = 4;
  o.quant_v1.group_size = 16;
  o.quant_v1.scale_rank = 4;
  return o;
}

// The trainable weights after `steps` optimizer steps (global batch 8, `grad_accum`
// micro-batches) on rank `dist` (nullptr: one process, no group).
std::vector<at::Tensor> Train(DistGroup* dist, int64_t grad_accum, int steps, const std::string& device = "cpu",
                              int64_t global_batch = 8, bool graphs = false) {
  auto s = LoadStudent(V1Student(device));
  EXPECT_TRUE(s.ok()) << s.status();
  if (!s.ok()) return {};
  EXPECT_TRUE(quant::ApplyTrainableSet(*s->registry, {true, true, false, false}).ok());
  auto reader = kd::KdCacheReader::Open(Teacher().cache);
  EXPECT_TRUE(reader.ok());
  kd::KdStreamOptions so;
  // 4 + 4 rows over two ranks. With 2 + 2, two AdamW steps already amplify the rounding
  // differences of the ranks' sums to ~5e-6 relative (near-zero gradients), past the bound.
  so.batch_size = global_batch;
  so.seed = 3;
  so.shard_count = dist != nullptr ? dist->world_size() : 1;
  so.shard_index = dist != nullptr ? dist->rank() : 0;
  auto stream = kd::KdBatchStream::Create(*reader, {0, 30}, so);
  EXPECT_TRUE(stream.ok());
  AdamWOptions ao;
  ao.lr = 1e-3;
  AdamW adam(TrainableParameters(*s->model), ao);
  MicroStep micro(*s->model, {2.0, 0.0, 0.0005}, 1024, /*allow_graphs=*/graphs);
  adam.set_zero_grads_in_place(micro.may_use_graphs());  // as the trainer does
  for (int step = 0; step < steps; ++step) {
    auto v = RunMicroBatches(micro, *stream, grad_accum, adam, dist);
    EXPECT_TRUE(v.ok()) << v.status();
    if (!v.ok()) return {};
    absl::Status applied = ApplyStep(adam, ao.lr, 1.0, *v, step + 1, dist);
    EXPECT_TRUE(applied.ok()) << applied;
  }
  std::vector<at::Tensor> out;
  for (const auto& [name, p] : adam.params()) out.push_back(p.detach().cpu().clone());
  return out;
}

// The largest per-tensor relative L2 difference ||a - b|| / ||a||.
double WorstRelative(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    const double scale = a[i].to(at::kDouble).norm().item<double>();
    const double diff = (a[i].to(at::kDouble) - b[i].to(at::kDouble)).norm().item<double>();
    worst = std::max(worst, scale > 0 ? diff / scale : diff);
  }
  return worst;
}

struct TwoRankRun {
  std::vector<at::Tensor> rank0, rank1;
  GradSyncStats stats;
  int64_t buckets = 0;
};

TwoRankRun TrainOnTwoRanks(bool overlap, int64_t grad_accum, int steps) {
  DistOptions o;
  o.overlap_allreduce = overlap;
  o.bucket_bytes = 4096;  // several buckets on the tiny model
  auto [g0, g1] = TwoRanks(o);
  if (!g0 || !g1) return {};
  auto r1 = std::async(std::launch::async, [&, g = g1.get()] { return Train(g, grad_accum, steps); });
  TwoRankRun run;
  run.rank0 = Train(g0.get(), grad_accum, steps);
  run.rank1 = r1.get();
  run.stats = g0->grad_sync_stats();
  run.buckets = g0->grad_reducer() != nullptr ? g0->grad_reducer()->num_buckets() : 0;
  return run;
}

class OverlapTest : public ::testing::TestWithParam<int64_t> {};

// Weights after N steps (4 micro-batches with grad_accum 1, 2 with grad_accum 2: the tests
// stay within a few seconds): overlapped = after-backward = one process, and the overlapped
// run really started every bucket from inside the backward.
TEST_P(OverlapTest, OverlappedAllReduceTrainsLikeAfterBackwardAndOneProcess) {
  const int64_t grad_accum = GetParam();
  const int steps = grad_accum == 1 ? 2 : 1;
  const std::vector<at::Tensor> one = Train(nullptr, grad_accum, steps);
  const TwoRankRun overlapped = TrainOnTwoRanks(/*overlap=*/true, grad_accum, steps);
  const TwoRankRun after = TrainOnTwoRanks(/*overlap=*/false, grad_accum, steps);
  ASSERT_FALSE(one.empty());
  ASSERT_EQ(overlapped.rank0.size(), one.size());
  ASSERT_EQ(after.rank0.size(), one.size());
  for (size_t i = 0; i < one.size(); ++i) {
    EXPECT_TRUE(at::equal(overlapped.rank0[i], overlapped.rank1[i])) << "the ranks' weights differ at tensor " << i;
  }
  const double vs_after = WorstRelative(after.rank0, overlapped.rank0);
  const double vs_one = WorstRelative(one, overlapped.rank0);
  std::printf("[ overlap ] grad_accum %lld, %lld buckets: relative L2 weight difference overlapped vs after-backward %.3g, vs one process %.3g\n",
              static_cast<long long>(grad_accum), static_cast<long long>(overlapped.buckets), vs_after, vs_one);
  // Overlapped and after-backward sum the same buckets in the same order: bit-equal.
  EXPECT_EQ(vs_after, 0);
  // Two ranks sum their halves' gradients in another order than one process sums the batch,
  // and AdamW maps an element whose gradient is at that rounding-noise level to about +-lr, so
  // single elements may differ by ~lr (max-elementwise up to ~1.5e-5 seen, depending on the
  // intra-op thread count); whole tensors stay within 2e-6 in L2 (measured 2e-7 to 8e-7 with
  // 1-2 threads; tests/e2e/data_parallel_e2e_test.cc bounds 20 steps by 5e-4).
  EXPECT_LE(vs_one, 2e-6);
  // Overlap did not fall back: every bucket of every step started from a gradient hook.
  ASSERT_GT(overlapped.buckets, 1);
  EXPECT_EQ(overlapped.stats.steps, steps);
  EXPECT_EQ(overlapped.stats.overlapped_steps, steps);
  EXPECT_EQ(overlapped.stats.buckets_in_backward, overlapped.buckets * steps);
  EXPECT_EQ(overlapped.stats.buckets_after_backward, 0);
  EXPECT_EQ(after.stats.overlapped_steps, 0);
  EXPECT_EQ(after.stats.buckets_in_backward, 0);
  EXPECT_EQ(after.stats.buckets_after_backward, after.buckets * steps);
}

INSTANTIATE_TEST_SUITE_P(GradAccum, OverlapTest, ::testing::Values(1, 2));

TEST(ForcedGroupTest, OneRankGroupRunsRealCollectivesAndTrainsLikeNoGroup) {
  DistOptions o;
  o.force_group = true;
  o.device = "cpu";
  o.timeout = 30s;
  auto g = DistGroup::Create(o);
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_TRUE((*g)->Connect().ok());
  EXPECT_TRUE((*g)->distributed());
  EXPECT_STREQ((*g)->backend_name(), "gloo");
  EXPECT_NE((*g)->store_port(), 0);
  const int64_t after_connect = (*g)->collectives();
  EXPECT_GT(after_connect, 0);  // the barrier of Connect
  // One rank: the same arithmetic as no group (a smaller batch keeps the test short).
  const std::vector<at::Tensor> plain = Train(nullptr, 1, 2, "cpu", 4);
  const std::vector<at::Tensor> grouped = Train(g->get(), 1, 2, "cpu", 4);
  ASSERT_FALSE(plain.empty());
  EXPECT_LE(WorstRelative(plain, grouped), 1e-6);
  EXPECT_GE((*g)->collectives(), after_connect + 4);  // a bucket and the loss sums per step
  EXPECT_EQ((*g)->grad_sync_stats().overlapped_steps, 2);
  // Without force_group a world of one has no group and runs nothing.
  auto none = DistGroup::Create(DistOptions{});
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE((*none)->distributed());
  EXPECT_STREQ((*none)->backend_name(), "none");
}

// The gradients are views of the reducer's buckets (grad_reducer.h): after a step every
// trainable parameter's .grad lies in one of the buckets, consecutive in reverse parameter
// order; a gradient something replaced is bound again by the next Bind(), and only then.
TEST(ForcedGroupTest, GradientsAreViewsOfTheBuckets) {
  DistOptions o;
  o.force_group = true;
  o.device = "cpu";
  o.timeout = 30s;
  o.bucket_bytes = 4096;
  auto g = DistGroup::Create(o);
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_TRUE((*g)->Connect().ok());
  auto s = LoadStudent(V1Student("cpu"));
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE(quant::ApplyTrainableSet(*s->registry, {true, true, false, false}).ok());
  auto reader = kd::KdCacheReader::Open(Teacher().cache);
  ASSERT_TRUE(reader.ok());
  kd::KdStreamOptions so;
  so.batch_size = 2;
  auto stream = kd::KdBatchStream::Create(*reader, {0, 30}, so);
  ASSERT_TRUE(stream.ok());
  AdamW adam(TrainableParameters(*s->model), AdamWOptions{});
  MicroStep micro(*s->model, {2.0, 0.0, 0.0005}, 1024, /*allow_graphs=*/false);
  auto v = RunMicroBatches(micro, *stream, 1, adam, g->get());
  ASSERT_TRUE(v.ok()) << v.status();
  GradReducer* reducer = (*g)->grad_reducer();
  ASSERT_NE(reducer, nullptr);
  const auto& params = adam.params();
  std::set<const void*> storages;
  for (size_t i = 0; i + 1 < params.size(); ++i) {
    const at::Tensor& later = params[i + 1].second.grad();
    const at::Tensor& earlier = params[i].second.grad();
    ASSERT_TRUE(later.defined() && earlier.defined()) << params[i].first;
    storages.insert(earlier.storage().data());
    // Reverse order: parameter i+1's slot comes right before parameter i's in a shared bucket.
    if (later.storage().data() == earlier.storage().data()) {
      EXPECT_EQ(later.storage_offset() + later.numel(), earlier.storage_offset()) << params[i].first;
    }
  }
  storages.insert(params.back().second.grad().storage().data());
  EXPECT_EQ(static_cast<int64_t>(storages.size()), reducer->num_buckets());
  EXPECT_GT(reducer->num_buckets(), 1);
  EXPECT_EQ(reducer->Bind(), 0);  // still bound
  at::Tensor& replaced = const_cast<at::Tensor&>(params[0].second).mutable_grad();
  const at::Tensor value = replaced.clone();
  replaced = value.clone();  // what a set-to-none ZeroGrad and a new backward would leave
  EXPECT_EQ(reducer->Bind(), 1);
  EXPECT_TRUE(at::equal(params[0].second.grad(), value));  // bound again, value kept
  EXPECT_EQ(reducer->Bind(), 0);
}

TEST(ForcedGroupTest, NcclWithoutNcclOrCudaIsAClearError) {
  if (DistHasNccl() && at::hasCUDA()) GTEST_SKIP() << "this build has NCCL and a CUDA device";
  DistOptions o;
  o.force_group = true;
  o.backend = DistBackend::kNccl;
  auto g = DistGroup::Create(o);
  EXPECT_FALSE(g.ok());
  EXPECT_TRUE(g.status().code() == absl::StatusCode::kUnimplemented ||
              g.status().code() == absl::StatusCode::kFailedPrecondition)
      << g.status();
}

// GPU builds with NCCL only.
TEST(NcclTest, OneRankNcclGroupAllReducesCudaTensorsAndTrainsLikeThePlainStep) {
  if (!DistHasNccl()) GTEST_SKIP() << "built without NCCL";
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  DistOptions o;
  o.force_group = true;
  o.backend = DistBackend::kNccl;
  o.device = "cuda:0";
  o.timeout = 60s;
  auto g = DistGroup::Create(o);
  ASSERT_TRUE(g.ok()) << g.status();
  absl::Status connected = (*g)->Connect();
  ASSERT_TRUE(connected.ok()) << connected;
  EXPECT_STREQ((*g)->backend_name(), "nccl");
  EXPECT_EQ((*g)->device(), at::Device("cuda:0"));
  at::Tensor t = at::arange(1000, at::TensorOptions().dtype(at::kFloat).device("cuda:0"));
  ASSERT_TRUE((*g)->AllReduce(t).ok());
  EXPECT_TRUE(at::equal(t.cpu(), at::arange(1000, at::kFloat)));
  at::Tensor host = at::full({3}, 2.0);  // staged through the device
  ASSERT_TRUE((*g)->AllReduce(host, ReduceOp::kMax).ok());
  EXPECT_TRUE(at::equal(host, at::full({3}, 2.0)));
  auto any = (*g)->Any(true);
  ASSERT_TRUE(any.ok()) << any.status();
  EXPECT_TRUE(*any);
  EXPECT_TRUE((*g)->Barrier().ok());
  const std::vector<at::Tensor> plain = Train(nullptr, 2, 2, "cuda:0");
  const std::vector<at::Tensor> grouped = Train(g->get(), 2, 2, "cuda:0");
  ASSERT_FALSE(plain.empty());
  const double worst = WorstRelative(plain, grouped);
  std::printf("[ nccl ] one-rank NCCL group vs no group, 2 steps: max relative weight difference %.3g\n", worst);
  EXPECT_LE(worst, 1e-6);
  EXPECT_EQ((*g)->grad_sync_stats().overlapped_steps, 2);
  // CUDA-graphed micro-steps: the graph writes the gradients into the bucket views (bound
  // before the capture) and the all-reduces run after the backward, outside the graph.
  const std::vector<at::Tensor> plain_graphed = Train(nullptr, 1, 3, "cuda:0", 8, /*graphs=*/true);
  const int64_t after_before = (*g)->grad_sync_stats().buckets_after_backward;
  const std::vector<at::Tensor> grouped_graphed = Train(g->get(), 1, 3, "cuda:0", 8, /*graphs=*/true);
  ASSERT_FALSE(plain_graphed.empty());
  const double worst_graphed = WorstRelative(plain_graphed, grouped_graphed);
  std::printf("[ nccl ] graphed micro-steps, one-rank NCCL group vs no group, 3 steps: %.3g\n", worst_graphed);
  EXPECT_LE(worst_graphed, 1e-6);
  EXPECT_GT((*g)->grad_sync_stats().buckets_after_backward, after_before);
}

// Two ranks over NCCL on two GPUs (threads of this process, one device each).
TEST(NcclTest, TwoRanksOnTwoGpusTrainLikeOneProcess) {
  if (!DistHasNccl()) GTEST_SKIP() << "built without NCCL";
  if (at::getNumGPUs() < 2) GTEST_SKIP() << "fewer than 2 CUDA devices";
  const std::vector<at::Tensor> one = Train(nullptr, 1, 2, "cuda:0");
  DistOptions o0;
  o0.world_size = 2;
  o0.backend = DistBackend::kNccl;
  o0.device = "cuda:0";
  o0.timeout = 60s;
  auto g0 = DistGroup::Create(o0);
  ASSERT_TRUE(g0.ok()) << g0.status();
  DistOptions o1 = o0;
  o1.rank = 1;
  o1.device = "cuda:1";
  o1.store_port = (*g0)->store_port();
  auto g1 = DistGroup::Create(o1);
  ASSERT_TRUE(g1.ok()) << g1.status();
  auto r1 = std::async(std::launch::async, [&] {
    absl::Status s = (*g1)->Connect();
    EXPECT_TRUE(s.ok()) << s;
    return s.ok() ? Train(g1->get(), 1, 2, "cuda:1") : std::vector<at::Tensor>{};
  });
  absl::Status s0 = (*g0)->Connect();
  ASSERT_TRUE(s0.ok()) << s0;
  const std::vector<at::Tensor> rank0 = Train(g0->get(), 1, 2, "cuda:0");
  const std::vector<at::Tensor> rank1 = r1.get();
  ASSERT_EQ(rank0.size(), one.size());
  ASSERT_EQ(rank1.size(), one.size());
  for (size_t i = 0; i < one.size(); ++i) EXPECT_TRUE(at::equal(rank0[i], rank1[i])) << i;
  const double worst = WorstRelative(one, rank0);
  std::printf("[ nccl ] 2 ranks on 2 GPUs vs one process, 2 steps: max relative weight difference %.3g\n", worst);
  EXPECT_LE(worst, 1e-5);  // fp32 on CUDA: the ranks' sums round differently from one process's
  EXPECT_GT((*g0)->grad_sync_stats().buckets_in_backward, 0);
}

}  // namespace
}  // namespace qatd::train
