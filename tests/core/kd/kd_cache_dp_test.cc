// The data-parallel KD_CACHE job (issue #15; core/jobs/kd_cache_job.h): two ranks as two threads
// of this process, joined by a real c10d TCPStore on 127.0.0.1 and ProcessGroupGloo, write the
// cache a single process writes, byte for byte; a crashed cache continues with another number
// of ranks.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "core/common/durable_hook.h"
#include "core/jobs/kd_cache_job.h"
#include "core/kd/cache_format.h"
#include "core/train/dist_group.h"
#include "tests/core/kd/kd_test_dirs.h"

namespace qatd::kd {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;
using testdirs::FreshDir;

const std::string kData = QATD_TEST_DATA;

class LogReporter : public jobs::Reporter {
 public:
  void Progress(int64_t done, int64_t total, const std::string&, double, double) override {
    std::lock_guard<std::mutex> l(mu_);
    last_total = total;
    progressed += done > 0 ? 1 : 0;
  }
  void Metric(const std::string&, int64_t, double) override {}
  void Log(jobs::LogLevel, const std::string& message) override {
    std::lock_guard<std::mutex> l(mu_);
    logs.push_back(message);
  }
  void Artifact(const std::string&, const std::string&) override {}
  bool Logged(const std::string& needle) const {
    for (const auto& l : logs) {
      if (l.find(needle) != std::string::npos) return true;
    }
    return false;
  }
  int64_t last_total = 0, progressed = 0;
  std::vector<std::string> logs;

 private:
  std::mutex mu_;
};

jobs::KdCacheOptions Options(const fs::path& out) {
  jobs::KdCacheOptions o;
  o.teacher_model = kData + "/golden/tiny-qwen3";
  o.tokenizer = kData + "/golden/qwen3-tokenizer";
  o.dataset = kData + "/kd/job_alpaca.json";
  o.dataset_format = DatasetFormat::kAlpacaChat;
  o.enable_thinking = ThinkingMode::kBoth;
  o.max_length = 16;
  o.topk = 8;
  o.rand_neg = 3;  // seeded per sequence index: a rank must draw the single process's negatives
  o.num_sequences = 20;
  o.batch_size = 3;  // does not divide shard_size: batches restart at each shard on every rank
  o.shard_size = 8;
  o.device = "cpu";
  o.dtype = jobs::Dtype::kFp32;
  o.seed = 5;
  o.num_threads = 1;
  o.output_dir = out.string();
  return o;
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Every file of two caches, byte for byte; meta.json may differ in created_utc only.
void ExpectSameCache(const fs::path& want, const fs::path& got) {
  std::set<std::string> a, b;
  for (const auto& e : fs::directory_iterator(want)) a.insert(e.path().filename().string());
  for (const auto& e : fs::directory_iterator(got)) b.insert(e.path().filename().string());
  EXPECT_EQ(a, b);
  for (const std::string& name : a) {
    if (name == "meta.json") continue;
    EXPECT_TRUE(ReadFile(want / name) == ReadFile(got / name)) << name << " differs";
  }
  json ma = json::parse(ReadFile(want / "meta.json")), mb = json::parse(ReadFile(got / "meta.json"));
  ma.erase("created_utc");
  mb.erase("created_utc");
  EXPECT_EQ(ma.dump(), mb.dump());
}

// One process, uninterrupted: the cache every other run must write.
fs::path ReferenceRun(const std::string& name, int64_t num_sequences) {
  fs::path d = FreshDir(name);
  jobs::KdCacheOptions o = Options(d);
  o.num_sequences = num_sequences;
  LogReporter rep;
  jobs::CancelToken cancel;
  absl::Status s = jobs::RunKdCache(o, rep, cancel);
  EXPECT_TRUE(s.ok()) << s;
  return d;
}

struct TwoRankRun {
  absl::Status status[2];
  LogReporter reporter[2];
};

// Runs `o` as ranks 0 and 1 of a Gloo group (one thread each). A rank's group is destroyed as
// soon as its job returns, so a rank that fails ends the other's next collective.
void RunTwoRanks(const jobs::KdCacheOptions& o, const std::vector<DurableHook>& hooks, TwoRankRun& run) {
  train::DistOptions d0;
  d0.world_size = 2;
  d0.device = "cpu";  // Gloo, also where a GPU is visible
  d0.timeout = 60s;
  auto g0 = train::DistGroup::Create(d0);
  ASSERT_TRUE(g0.ok()) << g0.status();
  train::DistOptions d1 = d0;
  d1.rank = 1;
  d1.store_port = (*g0)->store_port();
  auto g1 = train::DistGroup::Create(d1);
  ASSERT_TRUE(g1.ok()) << g1.status();
  auto rank = [&](int r, std::unique_ptr<train::DistGroup> group) {
    absl::Status s = group->Connect();
    if (s.ok()) {
      jobs::KdCacheOptions mine = o;
      mine.dist = group.get();
      if (!hooks.empty()) mine.after_durable = hooks[r];
      jobs::CancelToken cancel;
      s = jobs::RunKdCache(mine, run.reporter[r], cancel);
    }
    group.reset();
    return s;
  };
  auto one = std::async(std::launch::async, rank, 1, *std::move(g1));
  run.status[0] = rank(0, *std::move(g0));
  run.status[1] = one.get();
}

TEST(KdCacheDataParallelTest, TwoRanksWriteTheSingleProcessCacheByteForByte) {
  const fs::path want = ReferenceRun("dp_reference", 20);  // shards of 8 + 8 + 4
  const fs::path got = FreshDir("dp_two_ranks");
  TwoRankRun run;
  RunTwoRanks(Options(got), {}, run);
  ASSERT_TRUE(run.status[0].ok()) << run.status[0];
  ASSERT_TRUE(run.status[1].ok()) << run.status[1];
  // Rank 0 computed shards 0 and 2 (12 sequences), rank 1 shard 1 (8).
  EXPECT_TRUE(run.reporter[0].Logged("rank 0 of 2 writes shards 0, 2, ... (2 to compute")) << run.reporter[0].logs[0];
  EXPECT_TRUE(run.reporter[1].Logged("rank 1 of 2 writes shards 1, 3, ... (1 to compute"));
  EXPECT_EQ(run.reporter[0].last_total, 12);
  EXPECT_EQ(run.reporter[1].last_total, 8);
  EXPECT_GT(run.reporter[1].progressed, 0);
  ASSERT_TRUE(fs::exists(got / "shard_00002.safetensors"));
  ExpectSameCache(want, got);
  const auto progress = *KdProgress::FromJson(*ReadJsonFile((got / "progress.json").string()));
  EXPECT_TRUE(progress.done);
  EXPECT_EQ(progress.n_written, 20);
}

TEST(KdCacheDataParallelTest, DataThatRunsOutEndsWhereTheSingleProcessEnds) {
  // More sequences asked than the data packs into: the cache ends in a partial shard, whichever
  // rank finds the end.
  const fs::path want = ReferenceRun("dp_exhausted_reference", 100000);
  const auto progress = *KdProgress::FromJson(*ReadJsonFile((want / "progress.json").string()));
  ASSERT_LT(progress.n_written, 100000);
  ASSERT_GT(progress.n_written, 16);
  const fs::path got = FreshDir("dp_exhausted");
  jobs::KdCacheOptions o = Options(got);
  o.num_sequences = 100000;
  TwoRankRun run;
  RunTwoRanks(o, {}, run);
  ASSERT_TRUE(run.status[0].ok()) << run.status[0];
  ASSERT_TRUE(run.status[1].ok()) << run.status[1];
  EXPECT_TRUE(run.reporter[0].Logged("dataset exhausted after " + std::to_string(progress.n_written)));
  ExpectSameCache(want, got);
}

TEST(KdCacheDataParallelTest, ACrashOfTwoRanksContinuesOnOne) {
  const fs::path want = ReferenceRun("dp_reference_2", 20);
  const fs::path dir = FreshDir("dp_crashed_two");
  TwoRankRun run;
  // Each rank "dies" once its first shard is durable: shards 0 and 1 are on disk, 2 is not.
  RunTwoRanks(Options(dir), {CrashAfter(1), CrashAfter(1)}, run);
  EXPECT_EQ(run.status[0].code(), absl::StatusCode::kAborted) << run.status[0];
  EXPECT_EQ(run.status[1].code(), absl::StatusCode::kAborted) << run.status[1];
  EXPECT_TRUE(fs::exists(dir / "shard_00001.safetensors"));
  EXPECT_FALSE(fs::exists(dir / "shard_00002.safetensors"));
  EXPECT_FALSE(KdProgress::FromJson(*ReadJsonFile((dir / "progress.json").string()))->done);

  jobs::KdCacheOptions o = Options(dir);
  o.resume = true;
  LogReporter rep;
  jobs::CancelToken cancel;
  absl::Status s = jobs::RunKdCache(o, rep, cancel);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_TRUE(rep.Logged("resume: 16 sequences already on disk"));  // both ranks' shards kept
  ExpectSameCache(want, dir);
}

TEST(KdCacheDataParallelTest, ACrashOfOneProcessContinuesOnTwoRanks) {
  const fs::path want = ReferenceRun("dp_reference_3", 20);
  const fs::path dir = FreshDir("dp_crashed_one");
  jobs::KdCacheOptions o = Options(dir);
  o.after_durable = CrashAfter(1);
  LogReporter rep;
  jobs::CancelToken cancel;
  ASSERT_EQ(jobs::RunKdCache(o, rep, cancel).code(), absl::StatusCode::kAborted);
  ASSERT_TRUE(fs::exists(dir / "shard_00000.safetensors"));

  o.after_durable = nullptr;
  o.resume = true;
  TwoRankRun run;
  RunTwoRanks(o, {}, run);
  ASSERT_TRUE(run.status[0].ok()) << run.status[0];
  ASSERT_TRUE(run.status[1].ok()) << run.status[1];
  EXPECT_TRUE(run.reporter[0].Logged("(1 to compute, 1 already on disk)"));  // shard 0 kept, 2 computed
  ExpectSameCache(want, dir);
}

}  // namespace
}  // namespace qatd::kd
