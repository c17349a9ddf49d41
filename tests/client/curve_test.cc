// Curve CSV, series selection, axis ticks, the terminal chart, and the text helpers behind
// tables (durations, state names, widths of colored cells).
#include "client/curve.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "client/render.h"

namespace qatd::client {
namespace {

v1::MetricSeries Series(const std::string& name, const std::vector<std::pair<int64_t, double>>& points) {
  v1::MetricSeries s;
  s.set_name(name);
  for (const auto& [step, value] : points) {
    v1::MetricPoint* p = s.add_points();
    p->set_name(name);
    p->set_step(step);
    p->set_value(value);
  }
  return s;
}

TEST(Curve, CsvIsOneRowPerPointWithExactValues) {
  const std::vector<CurveSeries> series = SelectSeries({Series("loss/kd", {{2, 0.5}, {1, 1.0}, {3, 1.0 / 3}})}, {});
  EXPECT_EQ(CurveCsv(series), "series,step,value\nloss/kd,1,1\nloss/kd,2,0.5\nloss/kd,3,0.3333333333333333\n");
}

TEST(Curve, DefaultSeriesAreLossesAndTheKdEvaluation) {
  const std::vector<v1::MetricSeries> all = {Series("tokens_per_second", {{1, 100}}), Series("loss/kd", {{1, 1}}),
                                             Series("eval/kd", {{1, 2}}), Series("loss/hard", {}),
                                             Series("eval/ppl", {{1, 150000}})};
  std::vector<CurveSeries> picked = SelectSeries(all, {});
  ASSERT_EQ(picked.size(), 2u);
  EXPECT_EQ(picked[0].name, "loss/kd");
  EXPECT_EQ(picked[1].name, "eval/kd");
  picked = SelectSeries(all, {"tokens_per_second"});
  ASSERT_EQ(picked.size(), 1u);
  EXPECT_EQ(picked[0].name, "tokens_per_second");
  picked = SelectSeries({Series("lr", {{1, 0.1}})}, {});  // nothing loss-like: everything
  ASSERT_EQ(picked.size(), 1u);
  EXPECT_TRUE(SelectSeries(all, {"nope"}).empty());
}

TEST(Curve, NiceTicks) {
  EXPECT_EQ(NiceTicks(0, 1, 6), (std::vector<double>{0, 0.2, 0.4, 0.6000000000000001, 0.8, 1}));
  const std::vector<double> ticks = NiceTicks(3, 997, 6);
  ASSERT_FALSE(ticks.empty());
  EXPECT_EQ(ticks.front(), 200);
  EXPECT_EQ(ticks.back(), 800);
}

TEST(Curve, TerminalChartHasAxesAndLegend) {
  const std::vector<CurveSeries> series = SelectSeries({Series("loss/kd", {{1, 1}, {2, 0.5}, {10, 0.1}})}, {});
  const std::string chart = TerminalChart(series, 40, 8, false, false, false);
  EXPECT_NE(chart.find("loss/kd"), std::string::npos) << chart;
  EXPECT_NE(chart.find("step"), std::string::npos) << chart;
  EXPECT_NE(chart.find(" 1 "), std::string::npos) << chart;  // x from step 1 ...
  EXPECT_NE(chart.find("10"), std::string::npos) << chart;   // ... to step 10
  EXPECT_NE(chart.find('*'), std::string::npos) << chart;
  int lines = 0;
  for (char c : chart) lines += c == '\n';
  EXPECT_EQ(lines, 8 + 3);  // plot rows, x axis, x labels, legend
  EXPECT_NE(TerminalChart(series, 40, 8, true, false, false).find("log scale"), std::string::npos);
}

TEST(Render, Durations) {
  EXPECT_EQ(FormatDuration(0), "0s");
  EXPECT_EQ(FormatDuration(59.4), "59s");
  EXPECT_EQ(FormatDuration(125), "2m05s");
  EXPECT_EQ(FormatDuration(3 * 3600 + 120), "3h02m");
  EXPECT_EQ(FormatDuration(2 * 86400 + 3600), "2d01h");
  EXPECT_EQ(FormatDuration(-1), "-");
}

TEST(Render, StatesKindsAndProgress) {
  EXPECT_EQ(StateName(v1::JOB_STATE_RUNNING), "RUNNING");
  EXPECT_EQ(KindName(v1::JOB_KIND_KD_CACHE), "KD_CACHE");
  EXPECT_EQ(ParseState("running"), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(ParseState("JOB_STATE_FAILED"), v1::JOB_STATE_FAILED);
  EXPECT_FALSE(ParseState("sleeping").has_value());
  EXPECT_FALSE(ParseState("unspecified").has_value());
  EXPECT_EQ(ParseKind("kd-cache"), v1::JOB_KIND_KD_CACHE);
  EXPECT_EQ(ParseKind("probe"), v1::JOB_KIND_PROBE);
  v1::Progress p;
  EXPECT_EQ(FormatProgress(p), "-");
  p.set_done(45);
  p.set_unit("steps");
  EXPECT_EQ(FormatProgress(p), "45 steps");
  p.set_total(100);
  EXPECT_EQ(FormatProgress(p), "45/100 steps (45%)");
  EXPECT_EQ(FormatBytes(512), "512 B");
  EXPECT_EQ(FormatBytes(1536), "1.5 KiB");
}

TEST(Render, ColoredCellsAlign) {
  EXPECT_EQ(VisibleWidth(Paint("RUNNING", Color::kCyan, true)), 7u);
  EXPECT_EQ(VisibleWidth("\u2588\u2588x"), 3u);
  EXPECT_EQ(Paint("x", Color::kRed, false), "x");
  EXPECT_EQ(ProgressBar(5, 10, 10, false), "[#####-----]");
}

}  // namespace
}  // namespace qatd::client
