// The worker memory limit's contract (worker/memory_limit.h): the size syntax of
// `qatd --worker-memory-limit`, and which final statuses a worker reports as over the limit.
#include "worker/memory_limit.h"

#include <stdlib.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace qatd::worker {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kGiB = uint64_t{1} << 30;
constexpr uint64_t kMiB = uint64_t{1} << 20;

TEST(MemorySizeTest, ParsesBytesAndBinaryAndDecimalUnits) {
  EXPECT_EQ(*ParseMemorySize("16GiB"), 16 * kGiB);
  EXPECT_EQ(*ParseMemorySize("512MiB"), 512 * kMiB);
  EXPECT_EQ(*ParseMemorySize(" 512 mib "), 512 * kMiB);
  EXPECT_EQ(*ParseMemorySize("2G"), 2 * kGiB);
  EXPECT_EQ(*ParseMemorySize("3k"), 3 * 1024u);
  EXPECT_EQ(*ParseMemorySize("1TiB"), kGiB * 1024);
  EXPECT_EQ(*ParseMemorySize("1500MB"), 1500u * 1000 * 1000);
  EXPECT_EQ(*ParseMemorySize("2GB"), 2000u * 1000 * 1000);
  EXPECT_EQ(*ParseMemorySize("1073741824"), kGiB);
  EXPECT_EQ(*ParseMemorySize("4096B"), 4096u);
  EXPECT_EQ(*ParseMemorySize("0"), 0u);
}

TEST(MemorySizeTest, RefusesWhatIsNoSize) {
  for (const char* bad : {"", "GiB", "-1GiB", "1.5GiB", "16 PiB", "16 GiBs", "0x10", "16GiB!", "1 2"}) {
    absl::StatusOr<uint64_t> size = ParseMemorySize(bad);
    ASSERT_FALSE(size.ok()) << bad;
    EXPECT_EQ(size.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(size.status().message(), HasSubstr("expected a size such as 16GiB, 512MiB or a number of bytes"));
  }
  EXPECT_THAT(ParseMemorySize("20000000TiB").status().message(), HasSubstr("too large"));
  EXPECT_THAT(ParseMemorySize("99999999999999999999").status().message(), HasSubstr("expected a size"));
}

TEST(MemorySizeTest, FormatsInTheLargestUnitThatDividesIt) {
  EXPECT_EQ(FormatMemorySize(16 * kGiB), "16 GiB");
  EXPECT_EQ(FormatMemorySize(1536 * kMiB), "1536 MiB");
  EXPECT_EQ(FormatMemorySize(2048 * kGiB), "2 TiB");
  EXPECT_EQ(FormatMemorySize(1536), "1536 bytes");
  EXPECT_EQ(FormatMemorySize(4096), "4 KiB");
  EXPECT_EQ(FormatMemorySize(1000 * 1000 * 1000), "1000000000 bytes");
}

TEST(WorkerMemoryLimitTest, IsZeroOrAtLeastOneGib) {
  EXPECT_EQ(*ParseWorkerMemoryLimit("0"), 0u);
  EXPECT_EQ(*ParseWorkerMemoryLimit("1GiB"), kGiB);
  EXPECT_EQ(*ParseWorkerMemoryLimit("16GiB"), 16 * kGiB);
  EXPECT_EQ(ParseWorkerMemoryLimit("512MiB").status().message(),
            "must be 0 (no limit) or at least 1 GiB (a worker needs about 0.5 GiB to start LibTorch), got 512 MiB");
  EXPECT_EQ(ParseWorkerMemoryLimit("lots").status().message(),
            "expected a size such as 16GiB, 512MiB or a number of bytes, got \"lots\"");
}

TEST(MemoryLimitEnvironmentTest, ReadsTheLimitTheDaemonPasses) {
  ::unsetenv(kMemoryLimitEnv);
  EXPECT_EQ(MemoryLimitFromEnvironment(), 0u);
  ::setenv(kMemoryLimitEnv, "4294967296", 1);
  EXPECT_EQ(MemoryLimitFromEnvironment(), 4 * kGiB);
  ::setenv(kMemoryLimitEnv, "4GiB", 1);  // the daemon passes bytes; anything else is no limit
  EXPECT_EQ(MemoryLimitFromEnvironment(), 0u);
  ::unsetenv(kMemoryLimitEnv);
}

TEST(AllocationFailureTest, HostAllocationFailuresNameTheLimit) {
  const absl::Status torch = absl::InternalError(
      "teacher: [enforce fail at alloc_cpu.cpp:75] err == 0. DefaultCPUAllocator: can't allocate memory: you tried "
      "to allocate 19875659776 bytes. Error code 12 (Cannot allocate memory)");
  absl::Status reported = ExplainAllocationFailure(torch, 4 * kGiB);
  EXPECT_EQ(reported.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(reported.message(), "exceeded the worker memory limit (4 GiB): " + std::string(torch.message()));

  for (const absl::Status& failure : {
           absl::InternalError("job threw: std::bad_alloc"),
           absl::InternalError("load weights: DefaultCPUAllocator: not enough memory: you tried to allocate 8 bytes"),
           absl::InternalError("read shard: Cannot allocate memory"),
       }) {
    EXPECT_TRUE(IsHostAllocationFailure(failure)) << failure;
    reported = ExplainAllocationFailure(failure, 16 * kGiB);
    EXPECT_EQ(reported.code(), absl::StatusCode::kResourceExhausted) << failure;
    EXPECT_THAT(reported.message(), HasSubstr("exceeded the worker memory limit (16 GiB): "));
  }
  // Without a limit the failure is still RESOURCE_EXHAUSTED, in its own words.
  reported = ExplainAllocationFailure(torch, 0);
  EXPECT_EQ(reported.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(reported.message(), torch.message());
}

TEST(AllocationFailureTest, OtherStatusesAreReportedUnchanged) {
  for (const absl::Status& other : {
           absl::OkStatus(),
           // GPU memory is not what the limit covers.
           absl::ResourceExhaustedError("forward: out of memory: CUDA out of memory. Tried to allocate 2.00 GiB"),
           absl::ResourceExhaustedError("write shard-0.bin: No space left on device"),
           absl::NotFoundError("cannot open /x/tokenizer.json"),
           absl::CancelledError("cancelled (job threw: std::bad_alloc)"),
       }) {
    EXPECT_FALSE(IsHostAllocationFailure(other)) << other;
    EXPECT_EQ(ExplainAllocationFailure(other, 4 * kGiB), other);
  }
}

}  // namespace
}  // namespace qatd::worker
