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

// Issue #17.6: loss/hard_full (~11) and loss/kd (~2.5e-5) on one linear axis are both flat.
std::vector<CurveSeries> HardAndKd() {
  return SelectSeries({Series("loss/hard_full", {{0, 11.2}, {10, 11.0}, {20, 10.9}, {30, 10.8}, {40, 10.7}}),
                       Series("loss/kd", {{0, 3.0e-5}, {10, 2.8e-5}, {20, 2.6e-5}, {30, 2.5e-5}, {40, 2.4e-5}}),
                       Series("eval/kd", {{20, 2.7e-5}, {40, 2.5e-5}})},
                      {});
}

// Plot rows (those with the y axis bar) holding `glyph`.
int RowsWith(const std::string& chart, const std::string& glyph) {
  int rows = 0;
  size_t start = 0;
  while (start < chart.size()) {
    size_t end = chart.find('\n', start);
    if (end == std::string::npos) end = chart.size();
    const std::string line = chart.substr(start, end - start);
    const size_t bar = line.find("\u2502");
    if (bar != std::string::npos && line.find(glyph, bar) != std::string::npos) ++rows;
    start = end + 1;
  }
  return rows;
}

TEST(Curve, SeriesOfVeryDifferentMagnitudeGetTheirOwnChart) {
  const std::vector<CurveSeries> series = HardAndKd();
  const std::vector<std::vector<CurveSeries>> groups = GroupByMagnitude(series);
  ASSERT_EQ(groups.size(), 2u);
  ASSERT_EQ(groups[0].size(), 1u);
  EXPECT_EQ(groups[0][0].name, "loss/hard_full");
  ASSERT_EQ(groups[1].size(), 2u);  // loss/kd and eval/kd share a scale
  EXPECT_EQ(groups[1][0].name, "loss/kd");
  EXPECT_EQ(groups[1][1].style, 2);  // glyph and color stay those of the series' position
  ChartOptions o;
  o.columns = 80;
  o.height = 12;
  o.utf8 = true;
  const std::string chart = TerminalCharts(series, o);
  // loss/kd (the second glyph, "+") falls over several rows instead of one flat line.
  EXPECT_GE(RowsWith(chart, "+"), 4) << chart;
  EXPECT_GE(RowsWith(chart, "\u2022"), 4) << chart;
  // --log: one chart on a log axis, as asked; --one-axis: one linear chart.
  o.log_y = true;
  EXPECT_NE(TerminalCharts(series, o).find("log scale"), std::string::npos);
  o.log_y = false;
  o.one_axis = true;
  EXPECT_LE(RowsWith(TerminalCharts(series, o), "+"), 2);
  // Within 30x of each other: one chart.
  EXPECT_EQ(GroupByMagnitude(SelectSeries({Series("loss/kd", {{1, 1}}), Series("eval/kd", {{1, 25}})}, {})).size(), 1u);
}

TEST(Curve, ChartFitsTheColumns) {
  std::vector<v1::MetricSeries> many;
  for (const char* name : {"loss/kd_with_a_long_name", "loss/hard_full_with_a_long_name", "loss/total_with_a_long_name",
                           "eval/kd_with_a_long_name"}) {
    many.push_back(Series(name, {{0, 1.5}, {100000, 1.0}}));
  }
  for (int columns : {40, 64, 100, 150}) {
    ChartOptions o;
    o.columns = columns;
    o.utf8 = true;
    o.color = true;
    for (const auto& series : {HardAndKd(), SelectSeries(many, {})}) {
      const std::string chart = TerminalCharts(series, o);
      size_t start = 0;
      while (start < chart.size()) {
        const size_t end = chart.find('\n', start);
        const std::string line = chart.substr(start, end - start);
        EXPECT_LE(VisibleWidth(line), static_cast<size_t>(columns)) << "\n" << line;
        start = end + 1;
      }
    }
  }
}

TEST(Curve, ChartColumnsFollowTheTerminal) {
  EXPECT_EQ(ChartColumns(0, false, 0, nullptr), 100);   // not a tty, no COLUMNS
  EXPECT_EQ(ChartColumns(0, false, 0, "120"), 120);
  EXPECT_EQ(ChartColumns(0, false, 0, "400"), 150);     // at most 150
  EXPECT_EQ(ChartColumns(0, false, 0, "wide"), 100);
  EXPECT_EQ(ChartColumns(0, true, 90, "400"), 90);      // the terminal's own width wins
  EXPECT_EQ(ChartColumns(0, true, 220, nullptr), 150);
  EXPECT_EQ(ChartColumns(70, true, 220, nullptr), 70);  // --width
}

TEST(Curve, UnknownSeriesAreNamedWithTheOnesThatExist) {
  const std::vector<v1::MetricSeries> all = {Series("loss/kd", {{1, 1}}), Series("eval/kd", {{1, 2}})};
  EXPECT_EQ(MissingSeries(all, {"loss/kd", "nope"}), std::vector<std::string>{"nope"});
  EXPECT_TRUE(MissingSeries(all, {"loss/kd"}).empty());
  const std::string message = UnknownSeriesMessage(17, {"nope"}, {"loss/kd", "eval/kd"});
  EXPECT_NE(message.find("job 17 has no series named nope; it has: loss/kd, eval/kd"), std::string::npos) << message;
  EXPECT_NE(UnknownSeriesMessage(17, {"nope"}, {}).find("no metric series yet"), std::string::npos);
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
