// The worker memory limit (issue #14, "Bounded resources"), against the real binaries.
//
// Reproduced first: a KD_CACHE job whose teacher logits need 18.5 GiB at once, in a worker
// under `prlimit --data=4GiB`, ended INTERNAL "teacher: ... DefaultCPUAllocator: can't allocate
// memory ..." (without any limit it allocates until the kernel's OOM killer picks a process,
// which may be the daemon), and a worker killed by the OOM killer was reported only as "killed
// by signal SIGKILL (9)". With `qatd --worker-memory-limit 4GiB` workers run under RLIMIT_DATA,
// the same job fails RESOURCE_EXHAUSTED naming the limit, and the daemon keeps serving.
#include <signal.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/e2e/e2e_support.h"

namespace qatd::e2e {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using namespace std::chrono_literals;

constexpr char kLimitFlag[] = "4GiB";

class Access : public DaemonE2eTest {
 public:
  using DaemonE2eTest::Serving;
  using DaemonE2eTest::WaitFor;
};


// "Max data size   4294967296   4294967296   bytes" from /proc/<pid>/limits.
std::string DataLimitLine(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/limits");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Max data size", 0) == 0) return line;
  }
  return "";
}

// A KD cache on the tiny Qwen3 (151,936-token vocabulary) on the CPU. `sequences` of
// `max_length` tokens, all in one teacher forward whose full-vocabulary logits exist at once:
// 64 x 512 positions are 32768 x 151936 fp32 logits, 18.5 GiB.
v1::JobSpec KdCache(const std::string& dataset, int max_length, int sequences) {
  const fs::path golden = fs::path(QATD_TEST_DATA) / "golden";
  v1::JobSpec spec;
  v1::KdCacheSpec* kd = spec.mutable_kd_cache();
  kd->set_teacher_model((golden / "tiny-qwen3").string());
  kd->set_tokenizer((golden / "qwen3-tokenizer").string());
  kd->set_dataset(dataset);
  kd->set_max_length(max_length);
  kd->set_topk(4);
  kd->set_num_sequences(sequences);
  kd->set_batch_size(sequences);
  kd->set_shard_size(sequences);
  kd->set_logits_chunk_rows(static_cast<int64_t>(sequences) * max_length);
  kd->set_dtype(v1::DTYPE_FP32);
  spec.mutable_resources()->set_device_count(0);  // GPU memory is not what the limit covers
  return spec;
}

TEST(MemoryLimitE2eTest, AJobOverTheLimitFailsResourceExhaustedNamingItAndTheDaemonStaysUp) {
  const fs::path golden = fs::path(QATD_TEST_DATA) / "golden";
  if (!fs::exists(golden / "tiny-qwen3" / "model.safetensors") ||
      !fs::exists(golden / "qwen3-tokenizer" / "tokenizer.json")) {
    GTEST_SKIP() << "tiny model or tokenizer missing under " << QATD_TEST_DATA;
  }
  qatd::testing::TempDir dir;
  const std::string dataset = dir.File("kd.txt");
  {
    std::ofstream out(dataset);
    const char* words[] = {"the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "river", "cloud"};
    for (int line = 0; line < 1200; ++line) {
      for (int w = 0; w < 40; ++w) out << words[(line * 7 + w * 3) % 10] << ' ';
      out << line << ".\n";
    }
  }
  DaemonConfig config;
  config.data_dir = dir.File("data");
  config.extra_args = {"--worker-memory-limit", kLimitFlag};
  Daemon daemon(config);
  ASSERT_TRUE(daemon.Start());

  // A small job fits: the limit leaves room for LibTorch and a tiny model.
  v1::Job small = RunToEnd(daemon, KdCache(dataset, 16, 2), 300s);
  EXPECT_EQ(small.state(), v1::JOB_STATE_SUCCEEDED) << small.error().message();

  v1::Job big = RunToEnd(daemon, KdCache(dataset, 512, 64), 300s);
  EXPECT_EQ(big.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(big.error().code(), static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED)) << big.error().message();
  EXPECT_THAT(big.error().message(), HasSubstr("exceeded the worker memory limit (4 GiB): "));
  EXPECT_THAT(big.error().message(), HasSubstr("DefaultCPUAllocator"));  // what failed

  EXPECT_TRUE(Access::Serving(daemon));
  v1::Job after = RunToEnd(daemon, Probe(2, 0), 300s);
  EXPECT_EQ(after.state(), v1::JOB_STATE_SUCCEEDED) << after.error().message();
}

TEST(MemoryLimitE2eTest, WorkersRunUnderTheLimitAndOneKilledBySigkillNamesIt) {
  qatd::testing::TempDir dir;
  DaemonConfig config;
  config.data_dir = dir.File("data");
  config.extra_args = {"--worker-memory-limit", kLimitFlag};
  Daemon daemon(config);
  ASSERT_TRUE(daemon.Start());

  v1::Job job = SubmitTo(daemon, Probe(1000000, 20));
  job = Access::WaitFor(daemon, job.id(), [](const v1::Job& j) {
    return (j.state() == v1::JOB_STATE_RUNNING && j.worker_pid() > 0) || JobEnded(j);
  });
  ASSERT_EQ(job.state(), v1::JOB_STATE_RUNNING);
  const pid_t worker = job.worker_pid();
  ASSERT_NE(worker, daemon.pid());
  // The job has started, so the worker has exec'd qatd-worker; its limit is RLIMIT_DATA (soft
  // and hard) and it is the OOM killer's first choice, not the daemon.
  EXPECT_THAT(DataLimitLine(worker), ::testing::MatchesRegex("Max data size +4294967296 +4294967296 +bytes *"));
  EXPECT_EQ(std::atoi(ReadFileOrEmpty("/proc/" + std::to_string(worker) + "/oom_score_adj").c_str()), 500);
  EXPECT_THAT(DataLimitLine(daemon.pid()), Not(HasSubstr("4294967296")));

  // What the kernel's OOM killer does to a worker over its cgroup's or the host's memory.
  ASSERT_EQ(::kill(worker, SIGKILL), 0);
  job = Access::WaitFor(daemon, job.id(), JobEnded);
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_THAT(job.error().message(),
              HasSubstr("killed by signal SIGKILL (9) (the worker memory limit is 4 GiB) without reporting a result"));
  EXPECT_TRUE(Access::Serving(daemon));
}

TEST(MemoryLimitE2eTest, AnUnusableLimitStopsTheDaemonNamingTheFlag) {
  qatd::testing::TempDir dir;
  for (const auto& [value, expected] : {
           std::pair<std::string, std::string>{"12XB", "--worker-memory-limit: expected a size such as 16GiB"},
           {"512MiB", "--worker-memory-limit: must be 0 (no limit) or at least 1 GiB"},
       }) {
    DaemonConfig config;
    config.data_dir = dir.File("data-" + value);
    config.extra_args = {"--worker-memory-limit", value};
    Daemon daemon(config);
    EXPECT_FALSE(daemon.Start()) << value;
    EXPECT_THAT(ReadFileOrEmpty(config.data_dir + ".out"), HasSubstr(expected)) << value;
  }
}

}  // namespace
}  // namespace qatd::e2e
