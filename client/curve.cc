#include "client/curve.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "absl/strings/str_format.h"
#include "client/render.h"

namespace qatd::client {
namespace {

// Training losses and the held-out KD loss share a scale; perplexities, accuracies and
// one-point summaries (eval/kd_final, ...) would flatten them, so they need --metric.
bool DefaultSeries(const std::string& name) { return name.rfind("loss/", 0) == 0 || name == "eval/kd"; }

CurveSeries ToCurve(const v1::MetricSeries& s) {
  CurveSeries c;
  c.name = s.name();
  std::vector<const v1::MetricPoint*> points;
  for (const auto& p : s.points()) points.push_back(&p);
  std::stable_sort(points.begin(), points.end(), [](auto* a, auto* b) { return a->step() < b->step(); });
  for (const auto* p : points) {
    if (!std::isfinite(p->value())) continue;
    c.steps.push_back(static_cast<double>(p->step()));
    c.values.push_back(p->value());
  }
  return c;
}

// Maps v in [lo, hi] to a cell in [0, cells-1].
int Cell(double v, double lo, double hi, int cells) {
  if (hi <= lo) return 0;
  const int c = static_cast<int>(std::lround((v - lo) / (hi - lo) * (cells - 1)));
  return std::clamp(c, 0, cells - 1);
}

// The shortest of %.15g / %.16g / %.17g that reads back as the same double.
std::string ShortestDouble(double v) {
  std::string text = absl::StrFormat("%.15g", v);
  if (std::strtod(text.c_str(), nullptr) != v) text = absl::StrFormat("%.16g", v);
  if (std::strtod(text.c_str(), nullptr) != v) text = absl::StrFormat("%.17g", v);
  return text;
}

std::string AxisLabel(double v, bool log_y) { return FormatNumber(log_y ? std::pow(10.0, v) : v); }

}  // namespace

std::vector<CurveSeries> SelectSeries(const std::vector<v1::MetricSeries>& all, const std::vector<std::string>& names) {
  std::vector<CurveSeries> out;
  if (!names.empty()) {
    for (const std::string& name : names) {
      for (const auto& s : all) {
        if (s.name() == name && s.points_size() > 0) out.push_back(ToCurve(s));
      }
    }
    return out;
  }
  for (const auto& s : all) {
    if (DefaultSeries(s.name()) && s.points_size() > 0) out.push_back(ToCurve(s));
  }
  if (out.empty()) {
    for (const auto& s : all) {
      if (s.points_size() > 0) out.push_back(ToCurve(s));
    }
  }
  return out;
}

std::string CurveCsv(const std::vector<CurveSeries>& series) {
  std::string out = "series,step,value\n";
  for (const auto& s : series) {
    for (size_t i = 0; i < s.steps.size(); ++i) {
      out += absl::StrFormat("%s,%d,%s\n", s.name, static_cast<int64_t>(s.steps[i]), ShortestDouble(s.values[i]));
    }
  }
  return out;
}

PlotRange RangeOf(const std::vector<CurveSeries>& series, bool log_y) {
  PlotRange r;
  bool any = false;
  for (const auto& s : series) {
    for (size_t i = 0; i < s.steps.size(); ++i) {
      if (log_y && !(s.values[i] > 0)) continue;
      const double y = log_y ? std::log10(s.values[i]) : s.values[i];
      if (!any) {
        r = {s.steps[i], s.steps[i], y, y};
        any = true;
      }
      r.x_min = std::min(r.x_min, s.steps[i]);
      r.x_max = std::max(r.x_max, s.steps[i]);
      r.y_min = std::min(r.y_min, y);
      r.y_max = std::max(r.y_max, y);
    }
  }
  if (r.x_max <= r.x_min) r.x_max = r.x_min + 1;
  if (r.y_max <= r.y_min) {
    const double pad = std::abs(r.y_min) > 0 ? std::abs(r.y_min) * 0.1 : 1;
    r.y_min -= pad;
    r.y_max += pad;
  }
  return r;
}

std::vector<double> NiceTicks(double lo, double hi, int count) {
  std::vector<double> ticks;
  if (!(hi > lo) || count < 2) return {lo};
  const double raw = (hi - lo) / (count - 1);
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = magnitude;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * magnitude;
    if (step >= raw) break;
  }
  for (double t = std::ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) {
    ticks.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
  }
  return ticks;
}

std::string TerminalChart(const std::vector<CurveSeries>& series, int width, int height, bool log_y, bool color,
                          bool utf8) {
  if (series.empty()) return "no metric points\n";
  width = std::max(width, 10);
  height = std::max(height, 4);
  const PlotRange r = RangeOf(series, log_y);
  const char* glyphs[] = {"*", "+", "o", "x", "#", "%"};
  const char* dots[] = {"\u2022", "+", "o", "x", "#", "%"};
  const Color colors[] = {Color::kCyan, Color::kMagenta, Color::kYellow, Color::kGreen, Color::kBlue, Color::kRed};
  // grid[row][col]: index of the series drawn there, -1 = empty. Row 0 is the top.
  std::vector<std::vector<int>> grid(height, std::vector<int>(width, -1));
  for (size_t si = 0; si < series.size(); ++si) {
    const CurveSeries& s = series[si];
    int last_col = -1, last_row = -1;
    for (size_t i = 0; i < s.steps.size(); ++i) {
      if (log_y && !(s.values[i] > 0)) continue;
      const double y = log_y ? std::log10(s.values[i]) : s.values[i];
      const int col = Cell(s.steps[i], r.x_min, r.x_max, width);
      const int row = height - 1 - Cell(y, r.y_min, r.y_max, height);
      // Join consecutive points so sparse series still read as lines.
      if (last_col >= 0) {
        const int n = std::max(std::abs(col - last_col), std::abs(row - last_row));
        for (int k = 1; k < n; ++k) {
          const int c = last_col + (col - last_col) * k / n;
          const int rr = last_row + (row - last_row) * k / n;
          if (grid[rr][c] < 0) grid[rr][c] = static_cast<int>(si);
        }
      }
      grid[row][col] = static_cast<int>(si);
      last_col = col;
      last_row = row;
    }
  }
  const std::string top = AxisLabel(r.y_max, log_y), mid = AxisLabel((r.y_min + r.y_max) / 2, log_y),
                    bottom = AxisLabel(r.y_min, log_y);
  const size_t label_width = std::max({top.size(), mid.size(), bottom.size()});
  const std::string vbar = utf8 ? "\u2502" : "|";
  std::string out;
  for (int row = 0; row < height; ++row) {
    std::string label;
    if (row == 0) label = top;
    if (row == height / 2) label = mid;
    if (row == height - 1) label = bottom;
    out += std::string(label_width - label.size(), ' ') + label + " " + vbar;
    for (int col = 0; col < width; ++col) {
      const int si = grid[row][col];
      if (si < 0) {
        out += ' ';
      } else {
        const size_t g = static_cast<size_t>(si) % 6;
        out += Paint(utf8 ? dots[g] : glyphs[g], colors[g], color);
      }
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    out += "\n";
  }
  std::string axis;
  for (int col = 0; col < width; ++col) axis += utf8 ? "\u2500" : "-";
  out += std::string(label_width + 1, ' ') + (utf8 ? "\u2514" : "+") + axis + "\n";
  const std::string x_lo = absl::StrFormat("%d", static_cast<int64_t>(r.x_min));
  const std::string x_hi = absl::StrFormat("%d", static_cast<int64_t>(r.x_max));
  const int gap = std::max(1, width - static_cast<int>(x_lo.size() + x_hi.size()));
  out += std::string(label_width + 2, ' ') + x_lo + std::string(gap, ' ') + x_hi + "  step\n";
  std::string legend = std::string(label_width + 2, ' ');
  for (size_t si = 0; si < series.size(); ++si) {
    const size_t g = si % 6;
    legend += Paint(utf8 ? dots[g] : glyphs[g], colors[g], color) + " " + series[si].name + "  ";
  }
  if (log_y) legend += "(log scale)";
  while (!legend.empty() && legend.back() == ' ') legend.pop_back();
  out += legend + "\n";
  return out;
}

}  // namespace qatd::client
