// DaemonMetrics (server/metrics.h): names and labels of the per-job series, the retention of an
// ended job's final values, the counters, and the /proc readers of process_* and qatd_device_*.
#include "server/metrics.h"

#include <prometheus/text_serializer.h>

#include <fstream>
#include <regex>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/device_metrics.h"
#include "server/process_metrics.h"
#include "server/version.h"
#include "tests/common/temp_dir.h"

namespace qatd::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class FakeClock : public Clock {
 public:
  int64_t NowMs() const override { return now_ms; }
  int64_t now_ms = 1'000'000;
};

std::string Scrape(const DaemonMetrics& metrics) {
  std::vector<prometheus::MetricFamily> families;
  for (const auto& collectable : metrics.Collectables()) {
    for (auto& family : collectable->Collect()) families.push_back(std::move(family));
  }
  return prometheus::TextSerializer().Serialize(families);
}

// The value of the one sample `series` (name and labels as serialized), or NaN if absent.
double Sample(const std::string& text, const std::string& series) {
  const std::string prefix = series + " ";
  for (size_t pos = text.find(prefix); pos != std::string::npos; pos = text.find(prefix, pos + 1)) {
    if (pos == 0 || text[pos - 1] == '\n') return std::stod(text.substr(pos + prefix.size()));
  }
  return std::nan("");
}

v1::Progress StepProgress(int64_t done, int64_t total, double eta_s) {
  v1::Progress p;
  p.set_done(done);
  p.set_total(total);
  p.set_unit("steps");
  p.set_eta_s(eta_s);
  return p;
}

TEST(MetricsTest, WorkerMetricNamesMapToOneSeriesPerMeaning) {
  using T = JobGaugeTarget;
  for (const char* term : {"kd", "hard_top1", "hard_full", "local", "global", "total"}) {
    auto target = JobGaugeTargetOf(std::string("loss/") + term);
    ASSERT_TRUE(target.has_value()) << term;
    EXPECT_EQ(target->family, T::kLoss);
    EXPECT_EQ(target->term, term);
  }
  EXPECT_EQ(JobGaugeTargetOf("loss/made_up"), std::nullopt);  // bounded `term` values
  EXPECT_EQ(JobGaugeTargetOf("eval/kd")->family, T::kEvalKd);
  EXPECT_EQ(JobGaugeTargetOf("eval/kd_final")->family, T::kEvalKd);
  EXPECT_EQ(JobGaugeTargetOf("eval/top1")->family, T::kEvalTop1);
  EXPECT_EQ(JobGaugeTargetOf("eval/ppl")->family, T::kEvalPerplexity);
  EXPECT_EQ(JobGaugeTargetOf("eval/ppl_final")->family, T::kEvalPerplexity);
  EXPECT_EQ(JobGaugeTargetOf("snap/relative_error")->family, T::kSnapRelativeError);
  EXPECT_EQ(JobGaugeTargetOf("train/tokens_per_second")->family, T::kTokensPerSecond);
  EXPECT_EQ(JobGaugeTargetOf("eval/kd_initial"), std::nullopt);
  EXPECT_EQ(JobGaugeTargetOf("eval/kd_best"), std::nullopt);
  EXPECT_EQ(JobGaugeTargetOf("model/dense_bytes"), std::nullopt);
  EXPECT_EQ(JobGaugeTargetOf("lut_usage/mlp/3")->family, T::kLutUsage);
  EXPECT_EQ(JobGaugeTargetOf("lut_usage/attn/15")->term, "attn");
  EXPECT_EQ(JobGaugeTargetOf("lut_usage/attn/15")->entry, "15");
  // Bounded labels: two groups, entries 0..255 written plainly.
  for (const char* bad : {"lut_usage/lm_head/0", "lut_usage/mlp/256", "lut_usage/mlp/-1", "lut_usage/mlp/03",
                          "lut_usage/mlp/x", "lut_usage/mlp", "lut_usage/mlp/1/2"}) {
    EXPECT_EQ(JobGaugeTargetOf(bad), std::nullopt) << bad;
  }
  EXPECT_EQ(GrpcCodeName(16), "UNAUTHENTICATED");
}

TEST(MetricsTest, JobSeriesUseJobIdAndKeepFinalValuesForTheRetention) {
  FakeClock clock;
  DaemonMetricsOptions options;
  options.clock = &clock;
  options.finished_job_retention_ms = 60'000;
  DaemonMetrics metrics(options);
  metrics.JobStarted(7, v1::JOB_KIND_QAT);
  metrics.JobProgress(7, v1::JOB_KIND_QAT, StepProgress(2, 10, -1));
  EXPECT_THAT(Scrape(metrics), Not(HasSubstr("qatd_job_eta_seconds{")));  // unknown ETA: no series
  metrics.JobProgress(7, v1::JOB_KIND_QAT, StepProgress(3, 10, 12.5));
  metrics.JobMetric(7, "eval/kd", 0.25);
  metrics.JobMetric(7, "eval/top1", 0.75);
  metrics.JobMetric(7, "eval/ppl", 151830);
  metrics.JobMetric(7, "loss/hard_top1", 1.5);
  metrics.JobMetric(7, "loss/hard_full", 2.5);
  metrics.JobMetric(7, "model/dense_bytes", 1e9);  // not exported
  std::string text = Scrape(metrics);
  EXPECT_EQ(Sample(text, R"(qatd_job_eval_kd{job_id="7"})"), 0.25);
  EXPECT_EQ(Sample(text, R"(qatd_job_eval_top1{job_id="7"})"), 0.75);
  EXPECT_EQ(Sample(text, R"(qatd_job_eval_perplexity{job_id="7"})"), 151830);
  EXPECT_EQ(Sample(text, R"(qatd_job_loss{job_id="7",term="hard_top1"})"), 1.5);
  EXPECT_EQ(Sample(text, R"(qatd_job_loss{job_id="7",term="hard_full"})"), 2.5);
  EXPECT_EQ(Sample(text, R"(qatd_job_step{job_id="7",kind="qat"})"), 3);
  EXPECT_EQ(Sample(text, R"(qatd_job_step_target{job_id="7",kind="qat"})"), 10);
  EXPECT_EQ(Sample(text, R"(qatd_job_eta_seconds{job_id="7",kind="qat"})"), 12.5);
  EXPECT_EQ(Sample(text, R"(qatd_job_running{job_id="7",kind="qat"})"), 1);
  EXPECT_EQ(Sample(text, R"(qatd_job_last_progress_timestamp_seconds{job_id="7"})"), 1000);
  EXPECT_EQ(Sample(text, R"(qatd_job_attempts_total{kind="qat"})"), 1);
  EXPECT_THAT(text, Not(HasSubstr("{job=")));
  EXPECT_THAT(text, Not(HasSubstr("dense")));

  clock.now_ms += 5'000;
  metrics.JobEnded(7, v1::JOB_KIND_QAT, v1::JOB_STATE_FAILED);
  clock.now_ms += 59'000;  // within the retention: final values stay
  text = Scrape(metrics);
  EXPECT_EQ(Sample(text, R"(qatd_job_running{job_id="7",kind="qat"})"), 0);
  EXPECT_EQ(Sample(text, R"(qatd_job_eval_kd{job_id="7"})"), 0.25);
  EXPECT_EQ(Sample(text, R"(qatd_jobs_finished_total{kind="qat",state="failed"})"), 1);
  EXPECT_EQ(Sample(text, R"(qatd_jobs_finished_total{kind="qat",state="succeeded"})"), 0);
  metrics.JobMetric(7, "eval/kd", 0.5);  // a late point of the ended job still lands
  EXPECT_EQ(Sample(Scrape(metrics), R"(qatd_job_eval_kd{job_id="7"})"), 0.5);

  clock.now_ms += 1'000;  // retention over: the scrape drops the job's series
  text = Scrape(metrics);
  EXPECT_THAT(text, Not(HasSubstr(R"(job_id="7")")));
  EXPECT_EQ(Sample(text, R"(qatd_jobs_finished_total{kind="qat",state="failed"})"), 1);
  metrics.JobMetric(7, "eval/kd", 0.5);  // and points of a forgotten job do not revive it
  EXPECT_THAT(Scrape(metrics), Not(HasSubstr(R"(job_id="7")")));
}

TEST(MetricsTest, LutEntryUsageIsOneSeriesPerGroupAndEntryAndExpiresWithTheJob) {
  FakeClock clock;
  DaemonMetricsOptions options;
  options.clock = &clock;
  options.finished_job_retention_ms = 1'000;
  DaemonMetrics metrics(options);
  metrics.JobStarted(3, v1::JOB_KIND_SNAP);
  metrics.JobMetric(3, "lut_usage/mlp/0", 0.75);
  metrics.JobMetric(3, "lut_usage/mlp/1", 0.25);
  metrics.JobMetric(3, "lut_usage/attn/0", 1.0);
  std::string text = Scrape(metrics);
  EXPECT_EQ(Sample(text, R"(qatd_job_lut_entry_usage_ratio{entry="0",group="mlp",job_id="3"})"), 0.75);
  EXPECT_EQ(Sample(text, R"(qatd_job_lut_entry_usage_ratio{entry="1",group="mlp",job_id="3"})"), 0.25);
  EXPECT_EQ(Sample(text, R"(qatd_job_lut_entry_usage_ratio{entry="0",group="attn",job_id="3"})"), 1.0);
  metrics.JobEnded(3, v1::JOB_KIND_SNAP, v1::JOB_STATE_SUCCEEDED);
  clock.now_ms += 1'000;
  EXPECT_THAT(Scrape(metrics), Not(HasSubstr("qatd_job_lut_entry_usage_ratio{")));
}

// A data-parallel job's per-rank step times are one family with a `rank` label (the job's
// other series stay per job), kept and dropped with the job's series.
TEST(MetricsTest, RankStepSecondsIsOneSeriesPerRankAndExpiresWithTheJob) {
  EXPECT_EQ(JobGaugeTargetOf("rank/0/step_seconds")->family, JobGaugeTarget::kRankStepSeconds);
  EXPECT_EQ(JobGaugeTargetOf("rank/17/step_seconds")->term, "17");
  for (const char* bad : {"rank/01/step_seconds", "rank/-1/step_seconds", "rank/4096/step_seconds", "rank/x/step_seconds",
                          "rank/0/loss", "rank/0", "rank/0/step_seconds/1"}) {
    EXPECT_EQ(JobGaugeTargetOf(bad), std::nullopt) << bad;
  }
  FakeClock clock;
  DaemonMetricsOptions options;
  options.clock = &clock;
  options.finished_job_retention_ms = 1'000;
  DaemonMetrics metrics(options);
  metrics.JobStarted(4, v1::JOB_KIND_QAT);
  metrics.JobMetric(4, "rank/0/step_seconds", 0.5);
  metrics.JobMetric(4, "rank/1/step_seconds", 0.75);
  metrics.JobMetric(4, "loss/kd", 1.0);
  std::string text = Scrape(metrics);
  EXPECT_EQ(Sample(text, R"(qatd_job_rank_step_seconds{job_id="4",rank="0"})"), 0.5);
  EXPECT_EQ(Sample(text, R"(qatd_job_rank_step_seconds{job_id="4",rank="1"})"), 0.75);
  EXPECT_EQ(Sample(text, R"(qatd_job_loss{job_id="4",term="kd"})"), 1.0);
  EXPECT_THAT(text, HasSubstr("# HELP qatd_job_rank_step_seconds "));
  EXPECT_THAT(text, HasSubstr("# TYPE qatd_job_rank_step_seconds gauge"));
  metrics.JobEnded(4, v1::JOB_KIND_QAT, v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(Sample(Scrape(metrics), R"(qatd_job_rank_step_seconds{job_id="4",rank="1"})"), 0.75);  // kept
  clock.now_ms += 1'000;
  EXPECT_THAT(Scrape(metrics), Not(HasSubstr("qatd_job_rank_step_seconds{")));
}

TEST(MetricsTest, TokensCounterIntegratesTheReportedThroughput) {
  FakeClock clock;
  DaemonMetricsOptions options;
  options.clock = &clock;
  DaemonMetrics metrics(options);
  metrics.JobStarted(3, v1::JOB_KIND_LAYERWISE);
  clock.now_ms += 60'000;  // loading the model: not counted
  metrics.JobProgress(3, v1::JOB_KIND_LAYERWISE, StepProgress(1, 10, -1));
  clock.now_ms += 2'000;
  metrics.JobMetric(3, "train/tokens_per_second", 100);
  clock.now_ms += 500;
  metrics.JobMetric(3, "train/tokens_per_second", 40);
  const std::string text = Scrape(metrics);
  EXPECT_DOUBLE_EQ(Sample(text, R"(qatd_job_tokens_total{job_id="3"})"), 220);
  EXPECT_EQ(Sample(text, R"(qatd_job_reported_tokens_per_second{job_id="3"})"), 40);
}

TEST(MetricsTest, AtMostMaxRetainedEndedJobsAreKept) {
  FakeClock clock;
  DaemonMetricsOptions options;
  options.clock = &clock;
  options.max_retained_jobs = 2;
  DaemonMetrics metrics(options);
  for (int64_t id = 1; id <= 4; ++id) {
    metrics.JobStarted(id, v1::JOB_KIND_PROBE);
    clock.now_ms += 10;
    metrics.JobEnded(id, v1::JOB_KIND_PROBE, v1::JOB_STATE_SUCCEEDED);
  }
  metrics.JobStarted(5, v1::JOB_KIND_PROBE);  // running jobs never count against the bound
  const std::string text = Scrape(metrics);
  EXPECT_THAT(text, Not(HasSubstr(R"(job_id="1")")));
  EXPECT_THAT(text, Not(HasSubstr(R"(job_id="2")")));
  EXPECT_THAT(text, HasSubstr(R"(qatd_job_running{job_id="3",kind="probe"} 0)"));
  EXPECT_THAT(text, HasSubstr(R"(qatd_job_running{job_id="4",kind="probe"} 0)"));
  EXPECT_THAT(text, HasSubstr(R"(qatd_job_running{job_id="5",kind="probe"} 1)"));
  EXPECT_EQ(Sample(text, R"(qatd_jobs_finished_total{kind="probe",state="succeeded"})"), 4);
}

TEST(MetricsTest, BuildInfoProcessAndDeviceSeries) {
  DaemonMetrics metrics;
  metrics.Devices({{"0", 100, 400, 0.5}, {"cpu", 1, 2, -1}});
  const std::string text = Scrape(metrics);
  // Labels serialize sorted by name.
  EXPECT_THAT(text, HasSubstr(std::string("qatd_build_info{cuda=\"") + kQatdCuda + "\",git_sha=\"" + kQatdGitSha +
                              "\",torch=\"" + kQatdTorch + "\",version=\"" + kQatdVersion + "\"} 1"));
  EXPECT_EQ(Sample(text, R"(qatd_device_memory_used_bytes{device="0"})"), 100);
  EXPECT_EQ(Sample(text, R"(qatd_device_memory_total_bytes{device="0"})"), 400);
  EXPECT_EQ(Sample(text, R"(qatd_device_utilization_ratio{device="0"})"), 0.5);
  EXPECT_THAT(text, Not(HasSubstr(R"(qatd_device_utilization_ratio{device="cpu"})")));  // unknown: absent
  EXPECT_GT(Sample(text, "process_resident_memory_bytes"), 1e6);
  EXPECT_GE(Sample(text, "process_open_fds"), 3);
  EXPECT_GE(Sample(text, "process_cpu_seconds_total"), 0);
  EXPECT_GT(Sample(text, "process_start_time_seconds"), 1.6e9);
  EXPECT_THAT(text, HasSubstr("# TYPE process_cpu_seconds_total counter"));
}

TEST(MetricsTest, ProcParsers) {
  // A command name with spaces and parentheses; fields 14, 15, 22, 23, 24 = 11, 12, 500, 4096, 7.
  auto stat = ParseProcStat("42 (a b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 500 4096 7 99 100");
  ASSERT_TRUE(stat.has_value());
  EXPECT_EQ(stat->utime_ticks, 11);
  EXPECT_EQ(stat->stime_ticks, 12);
  EXPECT_EQ(stat->starttime_ticks, 500);
  EXPECT_EQ(stat->vsize_bytes, 4096);
  EXPECT_EQ(stat->rss_pages, 7);
  EXPECT_EQ(ParseProcStat("42 (x) S 1 2"), std::nullopt);
  EXPECT_EQ(ParseBootTime("cpu 1 2\nbtime 1700000000\n"), 1.7e9);
  EXPECT_EQ(ParseBootTime("cpu 1 2\n"), std::nullopt);

  auto memory = ParseMemInfo("MemTotal: 1000 kB\nMemFree: 10 kB\nMemAvailable: 250 kB\n");
  ASSERT_TRUE(memory.has_value());
  EXPECT_EQ(memory->first, 750 * 1024);
  EXPECT_EQ(memory->second, 1000 * 1024);
  EXPECT_EQ(ParseMemInfo("MemTotal: 1000 kB\n"), std::nullopt);
  auto jiffies = ParseCpuJiffies("cpu  10 0 10 70 10 0 0 0 0 0\ncpu0 1 1 1 1\n");
  ASSERT_TRUE(jiffies.has_value());
  EXPECT_EQ(jiffies->first, 20);
  EXPECT_EQ(jiffies->second, 100);
  auto utilization = ParseNvidiaSmiUtilization("0, 37\n1, 100 %\nbad line\n2, [N/A]\n");
  ASSERT_EQ(utilization.size(), 2u);
  EXPECT_EQ(utilization[0], std::make_pair(0, 0.37));
  EXPECT_EQ(utilization[1], std::make_pair(1, 1.0));
}

TEST(MetricsTest, CpuDeviceUtilisationComesFromTwoSamples) {
  qatd::testing::TempDir dir;
  std::ofstream(dir.File("meminfo")) << "MemTotal: 1000 kB\nMemAvailable: 400 kB\n";
  std::ofstream(dir.File("stat")) << "cpu 10 0 10 80 0 0 0 0 0 0\n";
  DeviceSampler sampler(dir.path().string(), "false");
  std::vector<DeviceSample> first = sampler.Sample({});
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].device, "cpu");
  EXPECT_EQ(first[0].memory_used_bytes, 600 * 1024);
  EXPECT_LT(first[0].utilization, 0);  // no earlier sample yet
  std::ofstream(dir.File("stat"), std::ios::trunc) << "cpu 40 0 10 110 0 0 0 0 0 0\n";
  std::vector<DeviceSample> second = sampler.Sample({});
  ASSERT_EQ(second.size(), 1u);
  EXPECT_DOUBLE_EQ(second[0].utilization, 0.5);
  // With GPUs, their memory; a failing nvidia-smi leaves the utilisation unknown.
  std::vector<DeviceSample> gpus = sampler.Sample({{1, 1000, 300}});
  ASSERT_EQ(gpus.size(), 1u);
  EXPECT_EQ(gpus[0].device, "1");
  EXPECT_EQ(gpus[0].memory_used_bytes, 700);
  EXPECT_LT(gpus[0].utilization, 0);
}

}  // namespace
}  // namespace qatd::server
