// Data-parallel KD_CACHE and EVAL jobs through the real daemon and workers (issue #15): on
// this CPU host a job asking for 2 devices runs as 2 qatd-worker processes joined by c10d Gloo.
// A 2-rank KD cache is byte for byte the 1-rank cache; a 2-rank evaluation reports the 1-rank
// numbers.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tests/common/temp_dir.h"
#include "tests/e2e/e2e_support.h"

namespace qatd::e2e {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string ArtifactOf(const v1::Job& job, const std::string& kind) {
  for (const auto& a : job.artifacts()) {
    if (a.kind() == kind) return a.path();
  }
  return "";
}

std::string WorkerLog(const DaemonConfig& config, int64_t job) {
  return ReadFile(fs::path(config.data_dir) / "jobs" / std::to_string(job) / "worker.log");
}

class DataParallelKindsE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // One intra-op thread in every worker (they inherit the daemon's environment): a one-rank
    // job would use the machine's cores and each of 2 ranks half of them, and CPU BLAS kernels
    // may round differently under another thread partition (measured: the KD cache's shards
    // differed in the last bits on a 2-core AVX-512 host with 2 threads vs 1).
    setenv("OMP_NUM_THREADS", "1", /*overwrite=*/1);
    config_.data_dir = dir_.File("data");
    config_.max_concurrent_jobs = 1;
    daemon_ = std::make_unique<Daemon>(config_);
    ASSERT_TRUE(daemon_->Start());
  }

  qatd::testing::TempDir dir_;
  DaemonConfig config_;
  std::unique_ptr<Daemon> daemon_;
};

// 40 sequences in shards of 16 (16 + 16 + 8) with batches of 6, which do not divide a shard.
v1::JobSpec KdCacheSpec(const std::string& dataset, int devices) {
  v1::JobSpec spec;
  spec.mutable_resources()->set_device_count(devices);
  v1::KdCacheSpec* kd = spec.mutable_kd_cache();
  kd->set_teacher_model(TinyModelDir());
  kd->set_tokenizer(TinyTokenizerDir());
  kd->set_dataset(dataset);
  kd->set_max_length(16);
  kd->set_topk(8);
  kd->set_rand_neg(2);
  kd->set_num_sequences(40);
  kd->set_shard_size(16);
  kd->set_batch_size(6);
  kd->set_dtype(v1::DTYPE_FP32);
  return spec;
}

TEST_F(DataParallelKindsE2eTest, KdCacheOnTwoRanksIsByteForByteTheOneRankCache) {
  const std::string dataset = dir_.File("kd.txt");
  {
    std::ofstream out(dataset);
    for (int i = 0; i < 120; ++i) out << "Line " << i << " tells of a river, " << i * 7 << " stones and a boat.\n";
  }
  v1::Job one = RunToEnd(*daemon_, KdCacheSpec(dataset, 1), 300s);
  ASSERT_EQ(one.state(), v1::JOB_STATE_SUCCEEDED) << one.error().message();
  v1::Job two = RunToEnd(*daemon_, KdCacheSpec(dataset, 2), 300s);
  ASSERT_EQ(two.state(), v1::JOB_STATE_SUCCEEDED) << two.error().message();
  EXPECT_THAT(WorkerLog(config_, two.id()), HasSubstr("rank 1 of 2 writes shards 1, 3, ... (1 to compute"));

  const fs::path a = ArtifactOf(one, "kd_cache"), b = ArtifactOf(two, "kd_cache");
  ASSERT_FALSE(a.empty());
  ASSERT_FALSE(b.empty());
  std::set<std::string> files_a, files_b;
  for (const auto& e : fs::directory_iterator(a)) files_a.insert(e.path().filename().string());
  for (const auto& e : fs::directory_iterator(b)) files_b.insert(e.path().filename().string());
  EXPECT_EQ(files_a, files_b);
  EXPECT_EQ(files_a.count("shard_00002.safetensors"), 1u);
  for (const std::string& name : files_a) {
    if (name == "meta.json") continue;
    EXPECT_TRUE(ReadFile(a / name) == ReadFile(b / name)) << name << " differs";
  }
  // meta.json: the same request, only the creation time differs.
  nlohmann::json ma = nlohmann::json::parse(ReadFile(a / "meta.json"));
  nlohmann::json mb = nlohmann::json::parse(ReadFile(b / "meta.json"));
  ma.erase("created_utc");
  mb.erase("created_utc");
  EXPECT_EQ(ma.dump(), mb.dump());
}

v1::JobSpec EvalSpec(const std::string& cache, int devices) {
  v1::JobSpec spec;
  spec.mutable_resources()->set_device_count(devices);
  v1::EvalSpec* e = spec.mutable_eval();
  e->set_model(TinyModelDir());
  e->set_kd_cache_dir(cache);
  e->set_eval_samples(11);  // 6 + 5 over two ranks
  e->set_batch_size(4);
  e->set_dtype(v1::DTYPE_FP32);
  return spec;
}

TEST_F(DataParallelKindsE2eTest, EvalOnTwoRanksReportsTheOneRankNumbers) {
  const std::string cache = MakeTinyKdCache(*daemon_, dir_, 48);
  ASSERT_FALSE(cache.empty());
  v1::Job one = RunToEnd(*daemon_, EvalSpec(cache, 1), 300s);
  ASSERT_EQ(one.state(), v1::JOB_STATE_SUCCEEDED) << one.error().message();
  v1::Job two = RunToEnd(*daemon_, EvalSpec(cache, 2), 300s);
  ASSERT_EQ(two.state(), v1::JOB_STATE_SUCCEEDED) << two.error().message();
  EXPECT_THAT(WorkerLog(config_, two.id()), HasSubstr("rank 1 of 2"));
  EXPECT_THAT(WorkerLog(config_, two.id()), HasSubstr("on 11 held-out sequences"));
  // Each rank evaluates its part in its own batches (4 + 2 and 4 + 1 sequences instead of
  // 4 + 4 + 3) and the per-rank sums are added in double: the fp32 forward of a sequence can
  // differ in the last bits with the batch it is in (~1e-7 relative), the sums do not add more.
  // The top-1 agreement counts argmax hits, which such noise does not flip on this model.
  // The kd here is ~1e-8 (the model is its own teacher): pure fp32 rounding of per-position
  // KLs computed from O(10) logits, whose absolute noise is ~1e-7; hence an absolute floor.
  for (const char* name : {"eval/kd", "eval/ppl"}) {
    const double want = one.result().metrics().at(name), got = two.result().metrics().at(name);
    std::printf("[ data parallel ] %s: 1 rank %.9g, 2 ranks %.9g\n", name, want, got);
    EXPECT_NEAR(got, want, 1e-6 * std::fabs(want) + 1e-7) << name;
  }
  EXPECT_NEAR(one.result().metrics().at("eval/top1"), two.result().metrics().at("eval/top1"), 1e-12);
}

}  // namespace
}  // namespace qatd::e2e
