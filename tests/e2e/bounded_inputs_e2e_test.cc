// Readers that bound what they read (issue #14, item 9), through the real qatd, qatd-worker and
// qat binaries. Each case was first reproduced at the reader's level (tests/core/kd,
// tests/core/model): dataset=/dev/zero was read until memory ran out, a FIFO blocked the worker
// forever, a 1 GB line was read whole; a tokenizer id of 2^30 ended in std::bad_alloc;
// out-of-range token ids in a KD cache reached the model ("index out of range in self") and NaN
// logits ended as "diverged... try a lower lr". Now each ends with a clear error naming the
// file and the bound: refused at submit when the daemon can tell without reading (qat exits 2),
// else the job FAILS with it; the daemon carries on either way.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "core/model/safetensors.h"
#include "tests/common/temp_dir.h"
#include "tests/e2e/e2e_support.h"

namespace qatd::e2e {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

const fs::path kGolden = fs::path(QATD_TEST_DATA) / "golden";
const std::string kModel = (kGolden / "tiny-qwen3").string();
const std::string kTokenizer = (kGolden / "qwen3-tokenizer").string();

bool Terminal(v1::JobState s) {
  return s == v1::JOB_STATE_SUCCEEDED || s == v1::JOB_STATE_FAILED || s == v1::JOB_STATE_CANCELLED;
}

struct CliRun {
  int exit_code = -1;  // -1: killed after the timeout
  std::string output;  // stdout and stderr
};

std::ostream& operator<<(std::ostream& os, const CliRun& r) { return os << "exit " << r.exit_code << ":\n" << r.output; }

class BoundedInputsE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new qatd::testing::TempDir();
    DaemonConfig config;
    config.data_dir = dir_->File("data");
    config.max_concurrent_jobs = 1;  // one job at a time: a job can be kept queued behind a probe
    daemon_ = new Daemon(config);
    if (!daemon_->Start()) {
      delete daemon_;
      daemon_ = nullptr;
    }
  }
  static void TearDownTestSuite() {
    if (daemon_ != nullptr) {
      std::optional<int> status = daemon_->Stop();
      EXPECT_TRUE(status.has_value() && WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << daemon_->LogTail();
    }
    delete daemon_;
    daemon_ = nullptr;
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(daemon_, nullptr) << "qatd did not start"; }

  static std::string File(const std::string& name) { return dir_->File(name); }

  // `qat --address <daemon> args...`.
  static CliRun Qat(const std::vector<std::string>& args, std::chrono::seconds timeout = 300s) {
    static int runs = 0;
    const std::string log = File("qat-" + std::to_string(++runs) + ".out");
    std::vector<std::string> argv = {QAT_BINARY, "--address", "127.0.0.1:" + std::to_string(daemon_->port())};
    argv.insert(argv.end(), args.begin(), args.end());
    ChildProcess qat(argv, log);
    CliRun run;
    std::optional<int> status = qat.Wait(timeout);
    if (status && WIFEXITED(*status)) run.exit_code = WEXITSTATUS(*status);
    run.output = ReadFileOrEmpty(log);
    return run;
  }

  // The id in qat's "submitted job N (...)", or -1.
  static int64_t SubmittedJob(const CliRun& run) {
    std::smatch m;
    static const std::regex submitted("submitted job ([0-9]+)");
    return std::regex_search(run.output, m, submitted) ? std::stoll(m[1].str()) : -1;
  }

  static v1::Job Get(int64_t id) {
    v1::GetJobRequest request;
    request.set_job_id(id);
    v1::Job job;
    grpc::Status status = daemon_->Stub()->GetJob(daemon_->Context().get(), request, &job);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return job;
  }

  static v1::Job WaitForEnd(int64_t id, std::chrono::seconds timeout = 300s) {
    v1::Job job;
    EXPECT_TRUE(PollUntil(
        [&] {
          job = Get(id);
          return Terminal(job.state());
        },
        timeout))
        << job.ShortDebugString();
    return job;
  }

  // The daemon still answers, and its health service says SERVING.
  static void ExpectDaemonFine() {
    v1::ServerInfo info;
    EXPECT_TRUE(daemon_->Stub()->GetServerInfo(daemon_->Context().get(), v1::GetServerInfoRequest(), &info).ok())
        << daemon_->LogTail();
    auto health = grpc::health::v1::Health::NewStub(daemon_->Channel());
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::health::v1::HealthCheckResponse response;
    ASSERT_TRUE(health->Check(&context, grpc::health::v1::HealthCheckRequest(), &response).ok());
    EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  }

  // A small text dataset.
  static std::string Dataset() {
    const std::string path = File("lines.txt");
    if (!fs::exists(path)) {
      std::ofstream out(path);
      for (int i = 0; i < 120; ++i) out << "Line " << i << " tells of a river, " << i * 3 << " stones and a boat.\n";
    }
    return path;
  }

  static std::vector<std::string> CacheFlags(const std::string& dataset) {
    return {"cache",       "--model",      kModel, "--tokenizer", kTokenizer, "--dataset", dataset,
            "--max-length", "16",          "--top-k", "8",       "--num-samples", "24", "--batch-size",
            "8",           "--dtype",      "fp32"};
  }

  // A KD cache made by the real KD_CACHE job (24 sequences of 16 tokens, top-8), once.
  static const std::string& GoodCache() {
    static const std::string cache = [] {
      std::vector<std::string> args = CacheFlags(Dataset());
      args.push_back("--wait");
      const CliRun run = Qat(args);
      EXPECT_EQ(run.exit_code, 0) << run;
      const v1::Job job = Get(SubmittedJob(run));
      for (const auto& a : job.artifacts()) {
        if (a.kind() == "kd_cache") return a.path();
      }
      return std::string();
    }();
    return cache;
  }

  // A copy of GoodCache() in `name` whose single shard's tensors (raw bytes) `edit` changes.
  using Tensors = std::map<std::string, std::vector<uint8_t>>;
  static std::string DamagedCopy(const std::string& name, const std::function<void(Tensors&)>& edit) {
    const fs::path good(GoodCache()), copy(File(name));
    fs::create_directories(copy);
    for (const char* f : {"meta.json", "progress.json"}) fs::copy_file(good / f, copy / f);
    const std::string shard = "shard_00000.safetensors";
    absl::StatusOr<std::shared_ptr<model::SafetensorsFile>> file = model::SafetensorsFile::Open((good / shard).string());
    EXPECT_TRUE(file.ok()) << file.status();
    if (!file.ok()) return copy.string();
    Tensors bytes;
    for (const model::TensorInfo& t : (*file)->tensors()) {
      const uint8_t* data = (*file)->DataOf(t);
      bytes[t.name].assign(data, data + t.nbytes());
    }
    edit(bytes);
    std::vector<model::TensorToWrite> out;
    for (const model::TensorInfo& t : (*file)->tensors()) {
      out.push_back({t.name, t.dtype, t.shape, bytes[t.name].data(), bytes[t.name].size()});
    }
    EXPECT_TRUE(model::WriteSafetensors((copy / shard).string(), out).ok());
    return copy.string();
  }

  // `qat train` on `cache` (8 held-out sequences: 16..23), waiting for its end.
  static CliRun Train(const std::string& cache) {
    return Qat({"train", "--model", kModel, "--kd-cache", cache, "--train-scales", "--max-steps", "2", "--batch-size",
                "4", "--eval-samples", "8", "--dtype", "fp32", "--lut-size", "4", "--group-size", "16", "--wait"});
  }

  inline static qatd::testing::TempDir* dir_ = nullptr;
  inline static Daemon* daemon_ = nullptr;
};

// Element `index` of an int32 / f16 tensor's bytes.
void SetI32(std::vector<uint8_t>& bytes, size_t index, int32_t value) {
  std::memcpy(bytes.data() + index * sizeof(int32_t), &value, sizeof(value));
}
void SetF16Bits(std::vector<uint8_t>& bytes, size_t index, uint16_t bits) {
  std::memcpy(bytes.data() + index * sizeof(uint16_t), &bits, sizeof(bits));
}

TEST_F(BoundedInputsE2eTest, DevicesFifosAndHugeDatasetsAreRefusedAtSubmitUnread) {
  ASSERT_EQ(::mkfifo(File("pipe.jsonl").c_str(), 0600), 0);
  std::ofstream(File("huge.txt")).close();
  fs::resize_file(File("huge.txt"), uintmax_t{100} << 30);  // sparse: nothing on disk
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"/dev/zero", "/dev/zero is a character device, not a regular file"},
      {File("pipe.jsonl"), File("pipe.jsonl") + " is a FIFO, not a regular file"},
      {File("huge.txt"), File("huge.txt") + " holds 100 GiB, more than the 64 GiB a dataset may hold"},
  };
  for (const auto& [dataset, why] : cases) {
    SCOPED_TRACE(dataset);
    const CliRun run = Qat(CacheFlags(dataset), 60s);
    EXPECT_EQ(run.exit_code, 2) << run;  // the daemon's INVALID_ARGUMENT
    EXPECT_THAT(run.output, HasSubstr("spec.kd_cache.dataset names a path that cannot be a dataset: " + why)) << run;
    EXPECT_EQ(SubmittedJob(run), -1) << run;
  }
  ExpectDaemonFine();
}

TEST_F(BoundedInputsE2eTest, ADatasetSwappedForDevZeroAfterSubmitFailsItsJob) {
  // A probe holds the only slot, so the KD cache job waits; its dataset becomes /dev/zero.
  v1::SubmitJobRequest request;
  *request.mutable_spec() = Probe(100000, 50);
  v1::Job probe;
  ASSERT_TRUE(daemon_->Stub()->SubmitJob(daemon_->Context().get(), request, &probe).ok());
  ASSERT_TRUE(PollUntil([&] { return Get(probe.id()).state() == v1::JOB_STATE_RUNNING; }, 60s));
  const std::string dataset = File("swapped.txt");
  std::ofstream(dataset) << "a regular file when submitted\n";
  const CliRun submitted = Qat(CacheFlags(dataset), 60s);
  ASSERT_EQ(submitted.exit_code, 0) << submitted;
  const int64_t id = SubmittedJob(submitted);
  ASSERT_GT(id, 0) << submitted;
  fs::remove(dataset);
  fs::create_symlink("/dev/zero", dataset);
  EXPECT_EQ(Qat({"cancel", std::to_string(probe.id())}, 60s).exit_code, 0);

  const v1::Job job = WaitForEnd(id, 120s);
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_THAT(job.error().message(), HasSubstr(dataset + " is a character device, not a regular file"));
  ExpectDaemonFine();
}

TEST_F(BoundedInputsE2eTest, AGigabyteLineFailsTheJobNamingTheLineAndTheBound) {
  const std::string dataset = File("one_line.txt");
  std::ofstream(dataset).close();
  fs::resize_file(dataset, uintmax_t{1} << 30);  // sparse: a 1 GiB line without a newline
  std::vector<std::string> args = CacheFlags(dataset);
  args.push_back("--wait");
  const CliRun run = Qat(args);
  EXPECT_EQ(run.exit_code, 1) << run;
  const v1::Job job = Get(SubmittedJob(run));
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_THAT(job.error().message(), HasSubstr(dataset + ":1: line is longer than 64 MiB"));
  EXPECT_THAT(run.output, HasSubstr("line is longer than 64 MiB"));
  ExpectDaemonFine();
}

TEST_F(BoundedInputsE2eTest, ATokenizerIdOf2To30FailsTheJobNamingTokenIdAndBound) {
  fs::create_directories(File("huge_id_tokenizer"));
  std::ofstream(File("huge_id_tokenizer/tokenizer.json"))
      << R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1073741824}, "merges": []},
             "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false}})";
  std::vector<std::string> args = CacheFlags(Dataset());
  args[4] = File("huge_id_tokenizer");  // --tokenizer
  args.push_back("--wait");
  const CliRun run = Qat(args);
  EXPECT_EQ(run.exit_code, 1) << run;
  const v1::Job job = Get(SubmittedJob(run));
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_THAT(job.error().message(),
              HasSubstr("model.vocab[\"b\"]: id 1073741824 is out of range: token ids must be below 16777216"));
  ExpectDaemonFine();
}

TEST_F(BoundedInputsE2eTest, OutOfRangeIdsInACacheFailTheJobNamingShardSampleAndVocabulary) {
  ASSERT_FALSE(GoodCache().empty());
  // Sequence 20 (held out, so read by the first evaluation), position 3: past the vocabulary.
  const std::string cache = DamagedCopy("bad_ids", [](Tensors& t) { SetI32(t["input_ids"], 20 * 16 + 3, 200000); });
  const CliRun run = Train(cache);
  EXPECT_EQ(run.exit_code, 1) << run;
  const v1::Job job = Get(SubmittedJob(run));
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_THAT(job.error().message(),
              HasSubstr("KD cache shard " + cache + "/shard_00000.safetensors sample 20 (sequence 20): input_ids[3] "
                        "holds id 200000, outside the vocabulary of 151936 ids (meta.json vocab_size)"));
  EXPECT_THAT(job.error().message(), ::testing::Not(HasSubstr("index out of range")));
  ExpectDaemonFine();
}

TEST_F(BoundedInputsE2eTest, NanLogitsInACacheFailTheJobNamingShardAndSample) {
  ASSERT_FALSE(GoodCache().empty());
  // Sequence 21, position 2, top-1 logit: NaN.
  const std::string cache =
      DamagedCopy("nan_logits", [](Tensors& t) { SetF16Bits(t["topk_logits"], (21 * 15 + 2) * 8, 0x7e00); });
  const CliRun run = Train(cache);
  EXPECT_EQ(run.exit_code, 1) << run;
  const v1::Job job = Get(SubmittedJob(run));
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_THAT(job.error().message(),
              HasSubstr("KD cache shard " + cache + "/shard_00000.safetensors sample 21 (sequence 21) has non-finite "
                        "teacher logits (topk_logits[2][0] is nan)"));
  EXPECT_THAT(job.error().message(), ::testing::Not(HasSubstr("diverged")));
  // The undamaged cache trains.
  const CliRun good = Train(GoodCache());
  EXPECT_EQ(good.exit_code, 0) << good;
  ExpectDaemonFine();
}

}  // namespace
}  // namespace qatd::e2e
