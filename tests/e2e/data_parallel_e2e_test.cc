// Data-parallel QAT (V1, V2) and LAYERWISE through the real daemon and workers (issue #15): on
// this CPU host a job asking for 2 devices runs as 2 qatd-worker processes joined by c10d Gloo,
// and must end with the weights of a 1-rank job with the same global batch; a daemon killed mid-job takes every
// rank with it and the restarted daemon resumes the job; a rank killed mid-job fails the job
// naming it.
#include <signal.h>
#include <sys/wait.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "core/model/safetensors.h"
#include "tests/common/temp_dir.h"
#include "tests/e2e/e2e_support.h"

namespace qatd::e2e {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using namespace std::chrono_literals;

const fs::path kModel = fs::path(QATD_TEST_DATA) / "golden" / "tiny-qwen3";

// 20 steps of V1 QAT (weights and scales) on `devices` ranks with a per-rank batch of
// 4 / devices: the global batch is 4 either way (the last batch of an epoch is partial: 40
// training sequences, so steps 10 and 20 have 4 rows, split 2 + 2, and every epoch is
// reshuffled).
v1::JobSpec QatSpec(const std::string& cache, int devices, int steps = 20) {
  v1::JobSpec spec;
  spec.mutable_resources()->set_device_count(devices);
  v1::QatSpec* q = spec.mutable_qat();
  q->set_model(kModel.string());
  q->set_kd_cache_dir(cache);
  q->set_train_weights(true);
  q->set_train_scales(true);
  q->set_lr(1e-4);
  q->set_max_steps(steps);
  q->set_batch_size(4 / devices);
  q->set_eval_samples(8);
  q->set_eval_steps(10);
  q->set_logging_steps(5);
  q->set_save_steps(2);
  q->set_hard_full_weight(0.0005);
  q->set_dtype(v1::DTYPE_FP32);
  q->mutable_quant()->set_lut_size(4);
  q->mutable_quant()->set_group_size(16);
  return spec;
}

std::string CheckpointOf(const v1::Job& job) {
  for (const auto& a : job.artifacts()) {
    if (a.kind() == "checkpoint") return (fs::path(a.path()) / "model.safetensors").string();
  }
  return "";
}

// The largest relative difference over the float tensors of two checkpoints: per tensor
// ||a - b|| / ||a|| (L2), and in `max_elementwise` the largest max |a - b| / max |a|.
double MaxRelativeDifference(const std::string& a_path, const std::string& b_path, std::string* worst,
                             double* max_elementwise) {
  auto a = model::SafetensorsFile::Open(a_path);
  auto b = model::SafetensorsFile::Open(b_path);
  EXPECT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(b.ok()) << b.status();
  if (!a.ok() || !b.ok()) return INFINITY;
  double max_rel = 0;
  int compared = 0;
  for (const model::TensorInfo& info : (*a)->tensors()) {
    const model::TensorInfo* other = (*b)->Find(info.name);
    EXPECT_NE(other, nullptr) << info.name;
    if (other == nullptr) return INFINITY;
    EXPECT_EQ(info.shape, other->shape) << info.name;
    if (info.dtype != model::DType::kF32) {
      EXPECT_EQ(std::memcmp((*a)->DataOf(info), (*b)->DataOf(*other), info.nbytes()), 0) << info.name;
      continue;
    }
    const auto* x = reinterpret_cast<const float*>((*a)->DataOf(info));
    const auto* y = reinterpret_cast<const float*>((*b)->DataOf(*other));
    double diff = 0, scale = 0, diff2 = 0, norm2 = 0;
    for (int64_t i = 0; i < info.numel(); ++i) {
      const double d = static_cast<double>(x[i]) - y[i];
      diff = std::max(diff, std::fabs(d));
      scale = std::max(scale, std::fabs(static_cast<double>(x[i])));
      diff2 += d * d;
      norm2 += static_cast<double>(x[i]) * x[i];
    }
    *max_elementwise = std::max(*max_elementwise, scale > 0 ? diff / scale : diff);
    const double rel = norm2 > 0 ? std::sqrt(diff2 / norm2) : std::sqrt(diff2);
    if (rel > max_rel) {
      max_rel = rel;
      if (worst != nullptr) *worst = info.name;
    }
    ++compared;
  }
  EXPECT_GT(compared, 4);
  return max_rel;
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// `qat --json status <id>` with the real CLI: its output.
std::string QatJsonStatus(const Daemon& daemon, const qatd::testing::TempDir& dir, int64_t id) {
  const std::string log = dir.File("qat-status-" + std::to_string(id) + ".out");
  ChildProcess qat({QAT_BINARY, "--address", "127.0.0.1:" + std::to_string(daemon.port()), "--json", "status",
                    std::to_string(id)},
                   log);
  const std::optional<int> status = qat.Wait(60s);
  EXPECT_TRUE(status.has_value() && WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << ReadFileOrEmpty(log);
  return ReadFileOrEmpty(log);
}

class DataParallelE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_.data_dir = dir_.File("data");
    config_.max_concurrent_jobs = 2;
    daemon_ = std::make_unique<Daemon>(config_);
    ASSERT_TRUE(daemon_->Start());
  }
  // Waits until `job` has run `steps` steps on its ranks; rank 1's pid (from its first line in
  // the job's worker.log), or 0 when the job ended first.
  pid_t Rank1Running(int64_t job, int64_t steps) {
    const fs::path log_path = fs::path(config_.data_dir) / "jobs" / std::to_string(job) / "worker.log";
    constexpr char kLine[] = "rank 1 of 2, pid ";
    pid_t rank1 = 0;
    EXPECT_TRUE(PollUntil(
        [&] {
          const v1::Job now = GetJobFrom(*daemon_, job);
          if (JobEnded(now)) return true;
          const std::string log = ReadFile(log_path);
          const size_t at = log.find(kLine);
          if (at != std::string::npos) rank1 = static_cast<pid_t>(std::atoi(log.c_str() + at + std::strlen(kLine)));
          return rank1 > 0 && now.progress().done() >= steps;
        },
        300s));
    return JobEnded(GetJobFrom(*daemon_, job)) ? 0 : rank1;
  }

  qatd::testing::TempDir dir_;
  DaemonConfig config_;
  std::unique_ptr<Daemon> daemon_;
};

TEST_F(DataParallelE2eTest, TwoGlooRanksTrainTheSameWeightsAsOneRankWithTheGlobalBatch) {
  const std::string cache = MakeTinyKdCache(*daemon_, dir_, 48);
  ASSERT_FALSE(cache.empty());
  v1::Job one = RunToEnd(*daemon_, QatSpec(cache, 1), 600s);
  ASSERT_EQ(one.state(), v1::JOB_STATE_SUCCEEDED) << one.error().message();
  v1::Job two = RunToEnd(*daemon_, QatSpec(cache, 2), 600s);
  ASSERT_EQ(two.state(), v1::JOB_STATE_SUCCEEDED) << two.error().message();

  // Two ranks really ran: rank 1 logged into the job's worker.log, and rank 0 said so.
  const std::string log = ReadFile(fs::path(config_.data_dir) / "jobs" / std::to_string(two.id()) / "worker.log");
  EXPECT_THAT(log, HasSubstr("rank 1 of 2"));
  // The job view lists both ranks (rank 0 reported where each runs at rendezvous) with each
  // rank's step time of the last log window; a one-rank job lists none.
  const nlohmann::json status = nlohmann::json::parse(QatJsonStatus(*daemon_, dir_, two.id()));
  ASSERT_TRUE(status.contains("ranks")) << status.dump();
  ASSERT_EQ(status["ranks"].size(), 2u) << status.dump();
  std::set<std::string> pids;
  for (int r = 0; r < 2; ++r) {
    const nlohmann::json& rank = status["ranks"][r];
    EXPECT_EQ(rank.value("rank", 0), r);  // proto3 JSON omits 0
    EXPECT_FALSE(rank.value("host", "").empty()) << rank.dump();
    EXPECT_EQ(rank.value("device", ""), "cpu");
    pids.insert(rank.value("pid", "0"));  // int64 is a JSON string
    EXPECT_GT(rank.value("stepSeconds", 0.0), 0.0) << rank.dump();
    EXPECT_EQ(rank.value("step", "0"), "20");
  }
  EXPECT_EQ(pids.size(), 2u);
  EXPECT_EQ(pids.count("0"), 0u);
  EXPECT_EQ(GetJobFrom(*daemon_, one.id()).ranks_size(), 0);
  // /metrics: one gauge family, a series per rank, kept with the job's other series after it
  // ended (until --metrics-retention); the job's other series stay per job.
  const std::optional<std::string> metrics = HttpGet(daemon_->metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.has_value());
  for (int r = 0; r < 2; ++r) {
    EXPECT_THAT(*metrics, HasSubstr("qatd_job_rank_step_seconds{job_id=\"" + std::to_string(two.id()) +
                                        "\",rank=\"" + std::to_string(r) + "\"}"));
  }
  EXPECT_THAT(*metrics, Not(HasSubstr("qatd_job_rank_step_seconds{job_id=\"" + std::to_string(one.id()) + "\"")));
  EXPECT_THAT(*metrics, Not(HasSubstr("rank=\"2\"")));
  // The result keeps the job's own metrics, not the per-rank series.
  EXPECT_EQ(two.result().metrics().count("rank/0/step_seconds"), 0u);
  // Small losses are logged with 4 significant digits (issue #17: "kd 0.0000" hid them).
  EXPECT_THAT(log, ::testing::ContainsRegex("initial held-out eval \\(8 sequences\\): kd 0\\.000[1-9][0-9][0-9]"));

  std::string worst;
  double elementwise = 0;
  const double rel = MaxRelativeDifference(CheckpointOf(one), CheckpointOf(two), &worst, &elementwise);
  std::printf("[ data parallel ] 2 ranks vs 1 rank after 20 steps: relative L2 weight difference %.3g (%s), "
              "largest element %.3g\n", rel, worst.c_str(), elementwise);
  // Not bit-equal: the ranks sum their halves' gradients in another order than one rank sums
  // the batch (the step's gradient agrees to ~5e-7, tests/core/train/data_parallel_test.cc),
  // and AdamW maps an element whose gradient is at that noise level to +-lr, so after 20 steps
  // a few elements differ by up to 2 lr. Whole tensors stay within 5e-4 (L2).
  EXPECT_LE(rel, 5e-4) << worst;
  // The held-out evaluations agree too (summed over the ranks' halves of the held-out split).
  EXPECT_NEAR(one.result().metrics().at("eval/kd_best"), two.result().metrics().at("eval/kd_best"),
              1e-2 * std::fabs(one.result().metrics().at("eval/kd_best")));
}

// V2 (from scratch: SVD init from the float weights) on 2 ranks against 1 with the same global
// batch of 4, 20 steps.
v1::JobSpec QatV2Spec(const std::string& cache, int devices) {
  v1::JobSpec spec;
  spec.mutable_resources()->set_device_count(devices);
  v1::QatSpec* q = spec.mutable_qat();
  q->set_version(v1::QAT_VERSION_V2);
  q->set_v2_init(v1::V2_INIT_FROM_SCRATCH);
  q->set_model(kModel.string());
  q->set_kd_cache_dir(cache);
  q->set_train_scales(true);
  q->set_lr(1e-4);
  q->set_warmup_steps(2);
  q->set_max_steps(20);
  q->set_batch_size(4 / devices);
  q->set_eval_samples(8);
  q->set_eval_steps(10);
  q->set_logging_steps(5);
  q->set_save_steps(10);
  q->set_dtype(v1::DTYPE_FP32);
  v1::QuantSettingsV2* v2 = q->mutable_quant_v2();
  v2->set_lut_size(4);
  v2->set_scale_rank(4);
  v2->set_attn_lut_size(4);
  v2->set_attn_scale_rank(4);
  v2->set_group_size(16);
  return spec;
}

TEST_F(DataParallelE2eTest, TwoGlooRanksTrainTheSameV2WeightsAsOneRankWithTheGlobalBatch) {
  const std::string cache = MakeTinyKdCache(*daemon_, dir_, 48);
  ASSERT_FALSE(cache.empty());
  v1::Job one = RunToEnd(*daemon_, QatV2Spec(cache, 1), 600s);
  ASSERT_EQ(one.state(), v1::JOB_STATE_SUCCEEDED) << one.error().message();
  v1::Job two = RunToEnd(*daemon_, QatV2Spec(cache, 2), 600s);
  ASSERT_EQ(two.state(), v1::JOB_STATE_SUCCEEDED) << two.error().message();
  EXPECT_THAT(ReadFile(fs::path(config_.data_dir) / "jobs" / std::to_string(two.id()) / "worker.log"),
              HasSubstr("rank 1 of 2"));
  // The state after step 20 (resume/; the final checkpoint is the best evaluation's state,
  // which on this tiny model can be the initial one).
  auto last_of = [](const v1::Job& job) {
    return (fs::path(CheckpointOf(job)).parent_path().parent_path() / "resume" / "model.safetensors").string();
  };
  std::string worst;
  double elementwise = 0;
  // Not vacuous: the 20 steps moved the weights.
  EXPECT_GT(MaxRelativeDifference(CheckpointOf(one), last_of(one), &worst, &elementwise), 1e-6);
  worst.clear();
  elementwise = 0;
  const double rel = MaxRelativeDifference(last_of(one), last_of(two), &worst, &elementwise);
  std::printf("[ data parallel ] V2: 2 ranks vs 1 rank after 20 steps: relative L2 weight difference %.3g (%s), "
              "largest element %.3g\n", rel, worst.c_str(), elementwise);
  // Measured 3.0e-8 (fp32, CPU): within the 1e-6 (V1 above needs 5e-4: weight
  // training puts some gradients at rounding noise, which AdamW turns into +-lr).
  EXPECT_LE(rel, 1e-6) << worst;
}

// LAYERWISE on 2 ranks against 1 with the same global batch of 4: 2 layers x 5 steps, the KD
// terms only (L_local is per rank: core/train/lbl_step.h).
v1::JobSpec LayerwiseSpec(const std::string& cache, int devices) {
  v1::JobSpec spec;
  spec.mutable_resources()->set_device_count(devices);
  v1::LayerwiseSpec* l = spec.mutable_layerwise();
  l->set_model(kModel.string());
  l->set_kd_cache_dir(cache);
  l->set_train_scales(true);
  l->set_lr(5e-3);
  l->set_batch_size(4 / devices);
  l->set_steps_per_layer(5);
  l->set_local_weight(0);
  l->set_global_weight(1);
  l->set_eval_samples(8);
  l->set_seed(3);
  l->set_dtype(v1::DTYPE_FP32);
  l->mutable_quant()->set_lut_size(4);
  l->mutable_quant()->set_group_size(16);
  return spec;
}

TEST_F(DataParallelE2eTest, TwoGlooRanksTrainTheSameLayerwiseWeightsAsOneRankWithTheGlobalBatch) {
  const std::string cache = MakeTinyKdCache(*daemon_, dir_, 48);
  ASSERT_FALSE(cache.empty());
  v1::Job one = RunToEnd(*daemon_, LayerwiseSpec(cache, 1), 600s);
  ASSERT_EQ(one.state(), v1::JOB_STATE_SUCCEEDED) << one.error().message();
  v1::Job two = RunToEnd(*daemon_, LayerwiseSpec(cache, 2), 600s);
  ASSERT_EQ(two.state(), v1::JOB_STATE_SUCCEEDED) << two.error().message();
  EXPECT_THAT(ReadFile(fs::path(config_.data_dir) / "jobs" / std::to_string(two.id()) / "worker.log"),
              HasSubstr("rank 1 of 2"));
  // The layer-wise trainer reports each rank's step time too.
  ASSERT_EQ(two.ranks_size(), 2);
  EXPECT_GT(two.ranks(1).step_seconds(), 0.0);
  // Not vacuous: training changed the held-out loss (keep-best did not put every layer back).
  EXPECT_NE(one.result().metrics().at("eval/kd_final"), one.result().metrics().at("eval/kd_initial"));
  std::string worst;
  double elementwise = 0;
  const double rel = MaxRelativeDifference(CheckpointOf(one), CheckpointOf(two), &worst, &elementwise);
  std::printf("[ data parallel ] LAYERWISE: 2 ranks vs 1 rank after 10 steps: relative L2 weight difference %.3g (%s), "
              "largest element %.3g\n", rel, worst.c_str(), elementwise);
  // Measured 4.0e-6 (kd_final 3.9e-4 apart, on a loss of 1e-4): here the student is its own
  // teacher quantized, the KD gradients sit near rounding noise and AdamW normalizes that noise
  // to +-lr (as for V1 above). With a teacher the student is far from, 20 LBL steps on 2 ranks
  // agree with 1 to 1.2e-7 (tests/core/train/lbl_test.cc, bound 1e-6).
  EXPECT_LE(rel, 5e-5) << worst;
  EXPECT_NEAR(one.result().metrics().at("eval/kd_final"), two.result().metrics().at("eval/kd_final"),
              5e-3 * std::fabs(one.result().metrics().at("eval/kd_final")));
}

TEST_F(DataParallelE2eTest, AKilledRankFailsTheJobNamingItAndLeavesNoRankBehind) {
  const std::string cache = MakeTinyKdCache(*daemon_, dir_, 48);
  ASSERT_FALSE(cache.empty());
  v1::Job job = SubmitTo(*daemon_, QatSpec(cache, 2, 100000));
  const pid_t rank1 = Rank1Running(job.id(), 2);
  ASSERT_GT(rank1, 0) << GetJobFrom(*daemon_, job.id()).error().message();
  ASSERT_EQ(::kill(rank1, SIGKILL), 0);
  v1::Job ended = WaitForJob(*daemon_, job.id(), JobEnded, 120s);
  EXPECT_EQ(ended.state(), v1::JOB_STATE_FAILED);
  EXPECT_THAT(ended.error().message(), HasSubstr("rank 1"));
  EXPECT_THAT(ended.error().message(), HasSubstr("SIGKILL"));
  EXPECT_NE(::kill(rank1, 0), 0);  // reaped, not a zombie left running
}

TEST_F(DataParallelE2eTest, ADaemonKilledMidJobLeavesNoRankAndTheRestartedDaemonResumesTheJob) {
  const std::string cache = MakeTinyKdCache(*daemon_, dir_, 48);
  ASSERT_FALSE(cache.empty());
  v1::Job job = SubmitTo(*daemon_, QatSpec(cache, 2, 60));
  const pid_t rank1 = Rank1Running(job.id(), 6);
  ASSERT_GT(rank1, 0);
  daemon_->Kill9();
  // Rank 0 dies with the daemon and rank 1 with rank 0 (PR_SET_PDEATHSIG).
  EXPECT_TRUE(PollUntil([&] { return ::kill(rank1, 0) != 0; }, 30s)) << "rank 1 outlived its daemon";
  daemon_ = std::make_unique<Daemon>(config_);
  ASSERT_TRUE(daemon_->Start());
  v1::Job ended = WaitForJob(*daemon_, job.id(), JobEnded, 300s);
  ASSERT_EQ(ended.state(), v1::JOB_STATE_SUCCEEDED) << ended.error().message();
  EXPECT_GE(ended.attempt(), 2);
  const std::string log =
      ReadFile(fs::path(config_.data_dir) / "jobs" / std::to_string(job.id()) / "worker.log");
  EXPECT_THAT(log, HasSubstr("resuming at step"));
  EXPECT_THAT(log, HasSubstr("rank 1 of 2"));
}

}  // namespace
}  // namespace qatd::e2e
