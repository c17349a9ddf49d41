// Small server pieces: status mapping, auth, nvidia-smi parsing, device pool, framing,
// artifact digests, metric naming.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/common/artifact_digest.h"
#include "core/common/sha256.h"
#include "core/common/duration.h"
#include "server/auth.h"
#include "server/disk_reserve.h"
#include "server/job_files.h"
#include "server/device_discovery.h"
#include "server/device_pool.h"
#include "worker/framing.h"
#include "server/metrics.h"
#include "qatd/v1/worker.pb.h"
#include "server/status_mapping.h"
#include "tests/common/temp_dir.h"
#include "core/jobs/job_kind.h"

namespace qatd::server {
namespace {

TEST(StatusMappingTest, KeepsCodeAndMessage) {
  grpc::Status s = ToGrpcStatus(absl::InvalidArgumentError("spec.kd_cache.topk must be ..."));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "spec.kd_cache.topk must be ...");
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_EQ(ToGrpcStatus(absl::UnauthenticatedError("x")).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(ToGrpcStatus(absl::ResourceExhaustedError("x")).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  absl::Status round = jobs::FromJobError(jobs::ToJobError(absl::NotFoundError("gone")));
  EXPECT_EQ(round.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(round.message(), "gone");
  EXPECT_TRUE(jobs::FromJobError(v1::JobError()).ok());
}

TEST(AuthTest, BearerTokenChecks) {
  BearerTokenAuth auth("s3cret");
  const std::string good = "Bearer s3cret";
  const std::string lower = "bearer s3cret";
  const std::string wrong = "Bearer s3crex";
  const std::string longer = "Bearer s3cret2";
  const std::string basic = "Basic s3cret";
  EXPECT_TRUE(auth.CheckHeader(&good).ok());
  EXPECT_TRUE(auth.CheckHeader(&lower).ok());
  EXPECT_EQ(auth.CheckHeader(nullptr).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.CheckHeader(&wrong).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.CheckHeader(&longer).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.CheckHeader(&basic).code(), absl::StatusCode::kUnauthenticated);
  BearerTokenAuth open("");
  EXPECT_TRUE(open.CheckHeader(nullptr).ok());
}

TEST(AuthTest, TokenFileIsTrimmedAndMustNotBeEmpty) {
  qatd::testing::TempDir dir;
  std::ofstream(dir.File("token")) << "  abc123\n";
  auto token = ReadTokenFile(dir.File("token"));
  ASSERT_TRUE(token.ok());
  EXPECT_EQ(*token, "abc123");
  std::ofstream(dir.File("empty")) << "\n";
  EXPECT_EQ(ReadTokenFile(dir.File("empty")).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadTokenFile(dir.File("missing")).status().code(), absl::StatusCode::kNotFound);
}

TEST(DeviceDiscoveryTest, ParsesNvidiaSmiCsv) {
  auto gpus = ParseNvidiaSmiCsv("0, 81559 MiB, 80000 MiB\n1, 81559 MiB, 1024 MiB\n\n");
  ASSERT_TRUE(gpus.ok()) << gpus.status();
  ASSERT_EQ(gpus->size(), 2u);
  EXPECT_EQ((*gpus)[1].index, 1);
  EXPECT_EQ((*gpus)[0].memory_total_bytes, int64_t{81559} << 20);
  EXPECT_EQ((*gpus)[1].memory_free_bytes, int64_t{1024} << 20);
  auto nounits = ParseNvidiaSmiCsv("0, 100, 50");
  ASSERT_TRUE(nounits.ok());
  EXPECT_EQ((*nounits)[0].memory_free_bytes, int64_t{50} << 20);
  EXPECT_TRUE(ParseNvidiaSmiCsv("").value().empty());
  auto bad = ParseNvidiaSmiCsv("0, [N/A], 5 MiB");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(DiscoverGpus("false").empty());
  auto fake = DiscoverGpus("printf '0, 16 MiB, 8 MiB\\n'");
  ASSERT_EQ(fake.size(), 1u);
  EXPECT_EQ(fake[0].memory_total_bytes, int64_t{16} << 20);
}

TEST(DevicePoolTest, CpuOnlyHostRunsEveryJobOnTheCpu) {
  DevicePool pool({}, 2);
  EXPECT_FALSE(pool.has_gpus());
  EXPECT_TRUE(pool.CheckFits(4).ok());
  auto a = pool.TryAcquire(1);
  auto b = pool.TryAcquire(4);
  ASSERT_TRUE(a.has_value() && b.has_value());
  EXPECT_EQ(*a, std::vector<std::string>{"cpu"});
  EXPECT_FALSE(pool.TryAcquire(1).has_value());
  pool.Release(*a);
  EXPECT_TRUE(pool.TryAcquire(0).has_value());
  EXPECT_EQ(DevicePool::CudaVisibleDevices(*b), "");
}

TEST(DevicePoolTest, GpusAreBoundedPerDeviceAndPreferTheLeastLoaded) {
  DevicePool pool({{0, 100, 10}, {1, 100, 90}, {2, 100, 50}}, 1);
  EXPECT_EQ(pool.CheckFits(4).code(), absl::StatusCode::kFailedPrecondition);
  auto one = pool.TryAcquire(1);
  ASSERT_TRUE(one.has_value());
  EXPECT_EQ(*one, std::vector<std::string>{"1"});  // most free memory
  auto two = pool.TryAcquire(2);
  ASSERT_TRUE(two.has_value());
  EXPECT_EQ(*two, (std::vector<std::string>{"0", "2"}));
  EXPECT_EQ(DevicePool::CudaVisibleDevices(*two), "0,2");
  EXPECT_FALSE(pool.TryAcquire(1).has_value());
  auto cpu = pool.TryAcquire(0);
  ASSERT_TRUE(cpu.has_value());
  EXPECT_EQ(*cpu, std::vector<std::string>{"cpu"});
  pool.Release(*two);
  EXPECT_TRUE(pool.TryAcquire(2).has_value());
  int running = 0;
  for (const v1::DeviceInfo& d : pool.Snapshot()) running += d.running_jobs();
  EXPECT_EQ(running, 4);
}

TEST(FramingTest, RoundTripsFramesAndDetectsTruncation) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  v1::WorkerEvent a;
  a.mutable_log()->set_message("one");
  v1::WorkerEvent b;
  b.mutable_metric()->set_name("loss/kd");
  b.mutable_metric()->set_value(1.5);
  ASSERT_TRUE(worker::WriteFrame(fds[1], a).ok());
  ASSERT_TRUE(worker::WriteFrame(fds[1], b).ok());
  ASSERT_EQ(::write(fds[1], "\x05\x00", 2), 2);  // a torn header
  ::close(fds[1]);
  worker::FrameReader reader(fds[0]);
  auto first = reader.Next();
  ASSERT_TRUE(first.ok() && first->has_value());
  v1::WorkerEvent parsed;
  ASSERT_TRUE(parsed.ParseFromString(**first));
  EXPECT_EQ(parsed.log().message(), "one");
  auto second = reader.Next();
  ASSERT_TRUE(second.ok() && second->has_value());
  ASSERT_TRUE(parsed.ParseFromString(**second));
  EXPECT_EQ(parsed.metric().value(), 1.5);
  EXPECT_EQ(reader.Next().status().code(), absl::StatusCode::kDataLoss);
  ::close(fds[0]);

  ASSERT_EQ(::pipe(fds), 0);
  ::close(fds[1]);
  worker::FrameReader empty(fds[0]);
  auto eof = empty.Next();
  ASSERT_TRUE(eof.ok());
  EXPECT_FALSE(eof->has_value());
  ::close(fds[0]);

  ASSERT_EQ(::pipe(fds), 0);
  ::close(fds[0]);
  ::signal(SIGPIPE, SIG_IGN);
  EXPECT_EQ(worker::WriteFrame(fds[1], a).code(), absl::StatusCode::kUnavailable);
  ::close(fds[1]);
}

TEST(ArtifactDigestTest, FilesAndDirectories) {
  qatd::testing::TempDir dir;
  std::ofstream(dir.File("a.txt")) << "abc";
  auto file = DigestPath(dir.File("a.txt"));
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(file->size_bytes, 3);
  EXPECT_EQ(file->sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  std::filesystem::create_directories(dir.path() / "tree" / "sub");
  std::ofstream(dir.path() / "tree" / "x") << "abc";
  std::ofstream(dir.path() / "tree" / "sub" / "y") << "";
  auto tree = DigestPath((dir.path() / "tree").string());
  ASSERT_TRUE(tree.ok());
  EXPECT_EQ(tree->size_bytes, 3);
  const std::string expected =
      Sha256Hex(std::string("sub/y") + '\0' + Sha256Hex("") + "\n" + "x" + '\0' + Sha256Hex("abc") + "\n");
  EXPECT_EQ(tree->sha256, expected);
  EXPECT_EQ(DigestPath(dir.File("nope")).status().code(), absl::StatusCode::kNotFound);
}

// Issue #14.2: a worker that reported a symlink to /dev/zero kept the daemon hashing forever.
TEST(ArtifactDigestTest, ACancelStopsIt) {
  qatd::testing::TempDir dir;
  std::ofstream(dir.File("big")) << std::string(3 << 20, 'b');
  int polls = 0;
  auto digest = DigestPath(dir.File("big"), [&] { return ++polls > 1; });
  EXPECT_EQ(digest.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(polls, 2) << "polled between reads";
  EXPECT_TRUE(DigestPath(dir.File("big"), [] { return false; }).ok());
}

TEST(ArtifactDigestTest, SymlinksDevicesAndFifosAreRefusedNotRead) {
  qatd::testing::TempDir dir;
  std::filesystem::create_symlink("/dev/zero", dir.File("zero"));
  EXPECT_EQ(DigestPath(dir.File("zero")).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(DigestPath("/dev/zero").status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_EQ(::mkfifo(dir.File("fifo").c_str(), 0600), 0);
  EXPECT_EQ(DigestPath(dir.File("fifo")).status().code(), absl::StatusCode::kFailedPrecondition);
  // Inside a directory, such entries are skipped (only regular files count).
  std::filesystem::create_directories(dir.path() / "tree");
  std::filesystem::create_symlink("/dev/zero", dir.path() / "tree" / "zero");
  std::ofstream(dir.path() / "tree" / "x") << "abc";
  auto tree = DigestPath((dir.path() / "tree").string());
  ASSERT_TRUE(tree.ok()) << tree.status();
  EXPECT_EQ(tree->size_bytes, 3);
}

}  // namespace
}  // namespace qatd::server

namespace qatd::server {
namespace {

TEST(DurationTest, ParsesWhatPeopleType) {
  EXPECT_EQ(*ParseDurationMs("90s"), 90000);
  EXPECT_EQ(*ParseDurationMs("15m"), 15 * 60000);
  EXPECT_EQ(*ParseDurationMs("1.5h"), 5400000);
  EXPECT_EQ(*ParseDurationMs("7d"), int64_t{7} * 86400000);
  EXPECT_EQ(*ParseDurationMs("2w"), int64_t{14} * 86400000);
  EXPECT_EQ(*ParseDurationMs("30"), 30000);
  EXPECT_EQ(*ParseDurationMs("0s"), 0);
  for (const char* bad : {"", "d", "-1d", "7x", "seven days", "1e300d", "nan"}) {
    absl::StatusOr<int64_t> parsed = ParseDurationMs(bad);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    if (!parsed.ok()) EXPECT_NE(parsed.status().message().find("is not a duration"), std::string::npos) << bad;
  }
}

TEST(JobFilesTest, DiskUsageAndRemovalNeverFollowLinks) {
  qatd::testing::TempDir dir;
  const std::string outside = dir.File("outside");
  std::filesystem::create_directories(outside);
  std::ofstream(outside + "/big") << std::string(1 << 20, 'x');
  const std::string job = dir.File("jobs/7");
  std::filesystem::create_directories(job + "/output/final");
  std::ofstream(job + "/output/final/model") << std::string(64 << 10, 'm');
  std::filesystem::create_directory_symlink(outside, job + "/output/link");
  const int64_t used = DiskUsage(job);
  EXPECT_GE(used, 64 << 10);
  EXPECT_LT(used, 1 << 20) << "the link's target is not counted";
  EXPECT_EQ(DiskUsage(dir.File("missing")), 0);
  absl::StatusOr<int64_t> freed = RemoveAndMeasure(job);
  ASSERT_TRUE(freed.ok()) << freed.status();
  EXPECT_EQ(*freed, used);
  EXPECT_FALSE(std::filesystem::exists(job));
  EXPECT_TRUE(std::filesystem::exists(outside + "/big")) << "removing a link never removes its target";
  EXPECT_GT(FreeBytes(dir.File("")), 0);

  v1::Job spec_job;
  spec_job.set_id(7);
  JobPaths own = PathsOf(spec_job, dir.File("jobs"));
  EXPECT_EQ(own.output_dir, dir.File("jobs/7/output"));
  EXPECT_FALSE(own.output_outside);
  spec_job.mutable_spec()->mutable_probe()->set_output_dir(outside);
  JobPaths named = PathsOf(spec_job, dir.File("jobs"));
  EXPECT_EQ(named.output_dir, outside);
  EXPECT_TRUE(named.output_outside);
}

TEST(DiskReserveTest, FillsReleasesAndRefills) {
  qatd::testing::TempDir dir;
  DiskReserve reserve(dir.File("reserve.bin"), 1 << 20);
  ASSERT_TRUE(reserve.Fill().ok());
  EXPECT_GE(DiskUsage(dir.File("reserve.bin")), 1 << 20) << "real blocks, not a sparse file";
  EXPECT_TRUE(reserve.Release());
  EXPECT_FALSE(std::filesystem::exists(dir.File("reserve.bin")));
  EXPECT_FALSE(reserve.Release());
  ASSERT_TRUE(reserve.Fill().ok());
  DiskReserve none(dir.File("none.bin"), 0);
  EXPECT_TRUE(none.Fill().ok());
  EXPECT_FALSE(std::filesystem::exists(dir.File("none.bin")));
}

}  // namespace
}  // namespace qatd::server
