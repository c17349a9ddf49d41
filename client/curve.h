#pragma once
// Loss curves for `qat curve`: the series to show, CSV, a terminal line chart and the axis
// arithmetic shared with the PNG plot (plot_png.h).

#include <string>
#include <vector>

#include "qatd/v1/job.pb.h"

namespace qatd::client {

struct CurveSeries {
  std::string name;
  std::vector<double> steps;   // ascending
  std::vector<double> values;  // same length
};

// Series named in `names`, or by default the "loss/*" series and "eval/kd" (all series when
// the job has none of those). Series without points are left out.
std::vector<CurveSeries> SelectSeries(const std::vector<v1::MetricSeries>& all, const std::vector<std::string>& names);

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

// A width x height (plot area, in characters) line chart with a y axis, an x axis, and a
// legend line; one glyph and color per series.
std::string TerminalChart(const std::vector<CurveSeries>& series, int width, int height, bool log_y, bool color,
                          bool utf8);

}  // namespace qatd::client
