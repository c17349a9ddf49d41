#pragma once
// Loss curves for `qat curve`: the series to show, CSV, terminal line charts and the axis
// arithmetic shared with the PNG plot (plot_png.h).
//
// Series whose magnitudes differ by more than kMagnitudeRatio (30x) do not share a linear
// axis (issue #17.6: loss/hard_full ~11 and loss/kd ~2.5e-5 were two flat lines): by default
// each group of comparable series gets its own chart (GroupByMagnitude). --log puts every
// series on one log axis instead, --one-axis on one linear axis.

#include <cstdint>
#include <string>
#include <vector>

#include "qatd/v1/job.pb.h"

namespace qatd::client {

struct CurveSeries {
  std::string name;
  std::vector<double> steps;   // ascending
  std::vector<double> values;  // same length
  int style = -1;              // glyph/color slot; -1 = the series' position in its list
};

// The glyph/color slot of `series`, the `index`-th of its list.
inline int StyleOf(const CurveSeries& series, size_t index) {
  return series.style >= 0 ? series.style : static_cast<int>(index);
}

// Series named in `names`, or by default the "loss/*" series and "eval/kd" (all series when
// the job has none of those). Series without points are left out.
std::vector<CurveSeries> SelectSeries(const std::vector<v1::MetricSeries>& all, const std::vector<std::string>& names);

// The names in `names` that `all` has no series of, in order.
std::vector<std::string> MissingSeries(const std::vector<v1::MetricSeries>& all, const std::vector<std::string>& names);
// "job 17 has no series named nope; it has: loss/kd, eval/kd (pass one to --metric)".
std::string UnknownSeriesMessage(int64_t job_id, const std::vector<std::string>& missing,
                                 const std::vector<std::string>& existing);

// Splits `series` into groups whose magnitudes (largest |value|) are within `ratio` of each
// other: sorted by magnitude, a group takes series until one is more than `ratio` times its
// smallest. Groups are ordered by their first series' position; each series keeps its style
// (set to its position in `series` when it had none).
constexpr double kMagnitudeRatio = 30;
std::vector<std::vector<CurveSeries>> GroupByMagnitude(const std::vector<CurveSeries>& series,
                                                       double ratio = kMagnitudeRatio);

// "series,step,value" lines (with that header), series by series, values with full precision.
std::string CurveCsv(const std::vector<CurveSeries>& series);

// The data range over all series: x = steps, y = values (log10 of values when `log_y`;
// non-positive values are dropped then).
struct PlotRange {
  double x_min = 0, x_max = 1, y_min = 0, y_max = 1;
};
PlotRange RangeOf(const std::vector<CurveSeries>& series, bool log_y);

// About `count` round tick values covering [lo, hi] (1, 2, 5 x 10^k steps).
std::vector<double> NiceTicks(double lo, double hi, int count);

// The total width of a terminal chart: `flag_width` (--width) when > 0; else the terminal's
// columns when stdout is a tty (`tty_columns` from TIOCGWINSZ), else $COLUMNS (`columns_env`,
// may be null), else 100; never more than kMaxChartColumns unless --width asks for it.
constexpr int kMaxChartColumns = 150;
int ChartColumns(int flag_width, bool tty, int tty_columns, const char* columns_env);

struct ChartOptions {
  int columns = 100;      // total width of every line, labels and legend included (>= 30)
  int height = 16;        // plot rows of a single chart; split charts get height / groups (>= 6)
  bool log_y = false;     // one chart, log10 y axis
  bool one_axis = false;  // one chart, linear y axis, whatever the magnitudes
  bool color = false;
  bool utf8 = false;
};

// The charts for `series`: one per GroupByMagnitude group (one in all with log_y or
// one_axis), separated by blank lines.
std::string TerminalCharts(const std::vector<CurveSeries>& series, const ChartOptions& options);

// One line chart `columns` wide in total (y labels, axis and plot area) with `height` plot
// rows, an x axis and a legend (wrapped to `columns`); one glyph and color per series style.
std::string TerminalChart(const std::vector<CurveSeries>& series, int columns, int height, bool log_y, bool color,
                          bool utf8);

}  // namespace qatd::client
