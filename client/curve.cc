#include "client/curve.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
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

// The largest |value| of a series (0 when it has none).
double Magnitude(const CurveSeries& s) {
  double m = 0;
  for (double v : s.values) m = std::max(m, std::abs(v));
  return m;
}

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

std::vector<std::string> MissingSeries(const std::vector<v1::MetricSeries>& all, const std::vector<std::string>& names) {
  std::vector<std::string> missing;
  for (const std::string& name : names) {
    bool found = false;
    for (const auto& s : all) found |= s.name() == name;
    if (!found) missing.push_back(name);
  }
  return missing;
}

std::string UnknownSeriesMessage(int64_t job_id, const std::vector<std::string>& missing,
                                 const std::vector<std::string>& existing) {
  return absl::StrCat("job ", job_id, " has no series named ", absl::StrJoin(missing, ", "), "; ",
                      existing.empty() ? std::string("it has no metric series yet")
                                       : absl::StrCat("it has: ", absl::StrJoin(existing, ", "), " (pass one to --metric)"));
}

std::vector<std::vector<CurveSeries>> GroupByMagnitude(const std::vector<CurveSeries>& series, double ratio) {
  std::vector<size_t> order(series.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return Magnitude(series[a]) < Magnitude(series[b]); });
  // group_of[i]: the group of series i. All-zero series sort first and join the first group;
  // a series more than `ratio` x its group's smallest non-zero magnitude starts a new group.
  std::vector<int> group_of(series.size(), 0);
  int groups = 0;
  double group_min = 0;
  for (size_t i : order) {
    const double m = Magnitude(series[i]);
    if (group_min > 0 && m > group_min * ratio) {
      ++groups;
      group_min = m;
    } else if (group_min == 0) {
      group_min = m;
    }
    group_of[i] = groups;
  }
  // Order the groups by the position of their first series.
  std::vector<int> rank(groups + 1, -1);
  int next = 0;
  for (size_t i = 0; i < series.size(); ++i) {
    if (rank[group_of[i]] < 0) rank[group_of[i]] = next++;
  }
  std::vector<std::vector<CurveSeries>> out(next);
  for (size_t i = 0; i < series.size(); ++i) {
    CurveSeries s = series[i];
    s.style = StyleOf(series[i], i);
    out[rank[group_of[i]]].push_back(std::move(s));
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

int ChartColumns(int flag_width, bool tty, int tty_columns, const char* columns_env) {
  if (flag_width > 0) return flag_width;
  int columns = 0;
  if (tty && tty_columns > 0) {
    columns = tty_columns;
  } else if (columns_env != nullptr && !absl::SimpleAtoi(columns_env, &columns)) {
    columns = 0;
  }
  if (columns <= 0) columns = 100;
  return std::min(columns, kMaxChartColumns);
}

std::string TerminalCharts(const std::vector<CurveSeries>& series, const ChartOptions& o) {
  if (o.log_y || o.one_axis) return TerminalChart(series, o.columns, o.height, o.log_y, o.color, o.utf8);
  const std::vector<std::vector<CurveSeries>> groups = GroupByMagnitude(series);
  if (groups.size() <= 1) return TerminalChart(series, o.columns, o.height, false, o.color, o.utf8);
  const int height = std::max(6, o.height / static_cast<int>(groups.size()));
  std::string out;
  for (size_t g = 0; g < groups.size(); ++g) {
    if (g > 0) out += "\n";
    out += TerminalChart(groups[g], o.columns, height, false, o.color, o.utf8);
  }
  return out;
}

std::string TerminalChart(const std::vector<CurveSeries>& series, int columns, int height, bool log_y, bool color,
                          bool utf8) {
  if (series.empty()) return "no metric points\n";
  height = std::max(height, 4);
  const PlotRange r = RangeOf(series, log_y);
  const std::string top = AxisLabel(r.y_max, log_y), mid = AxisLabel((r.y_min + r.y_max) / 2, log_y),
                    bottom = AxisLabel(r.y_min, log_y);
  const int label_width = static_cast<int>(std::max({top.size(), mid.size(), bottom.size()}));
  // "<label> │<plot>": the plot area takes what the labels leave of `columns`.
  const int width = std::max(10, columns - label_width - 2);
  const char* glyphs[] = {"*", "+", "o", "x", "#", "%"};
  const char* dots[] = {"\u2022", "+", "o", "x", "#", "%"};
  const Color colors[] = {Color::kCyan, Color::kMagenta, Color::kYellow, Color::kGreen, Color::kBlue, Color::kRed};
  auto glyph = [&](int style) { return Paint(utf8 ? dots[style % 6] : glyphs[style % 6], colors[style % 6], color); };
  // grid[row][col]: style of the series drawn there, -1 = empty. Row 0 is the top.
  std::vector<std::vector<int>> grid(height, std::vector<int>(width, -1));
  for (size_t si = 0; si < series.size(); ++si) {
    const CurveSeries& s = series[si];
    const int style = StyleOf(s, si);
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
          if (grid[rr][c] < 0) grid[rr][c] = style;
        }
      }
      grid[row][col] = style;
      last_col = col;
      last_row = row;
    }
  }
  const std::string vbar = utf8 ? "\u2502" : "|";
  std::string out;
  for (int row = 0; row < height; ++row) {
    std::string label;
    if (row == 0) label = top;
    if (row == height / 2) label = mid;
    if (row == height - 1) label = bottom;
    out += std::string(label_width - label.size(), ' ') + label + " " + vbar;
    for (int col = 0; col < width; ++col) out += grid[row][col] < 0 ? std::string(" ") : glyph(grid[row][col]);
    while (!out.empty() && out.back() == ' ') out.pop_back();
    out += "\n";
  }
  std::string axis;
  for (int col = 0; col < width; ++col) axis += utf8 ? "\u2500" : "-";
  const std::string indent(label_width + 2, ' ');
  out += std::string(label_width + 1, ' ') + (utf8 ? "\u2514" : "+") + axis + "\n";
  // First step on the left, last under the plot's right end, "step" between them.
  const std::string x_lo = absl::StrFormat("%d", static_cast<int64_t>(r.x_min));
  const std::string x_hi = absl::StrFormat("%d", static_cast<int64_t>(r.x_max));
  const int room = width - static_cast<int>(x_lo.size() + x_hi.size()) - 6;
  if (room >= 2) {
    out += indent + x_lo + std::string(room / 2 + 1, ' ') + "step" + std::string(room - room / 2 + 1, ' ') + x_hi + "\n";
  } else {
    out += indent + x_lo + " " + x_hi + " step\n";
  }
  // Legend entries, wrapped to `columns`.
  std::vector<std::pair<std::string, size_t>> entries;  // text, visible width
  for (size_t si = 0; si < series.size(); ++si) {
    std::string name = series[si].name;
    const size_t max_name = static_cast<size_t>(std::max(4, columns - 4));
    if (name.size() > max_name) name = name.substr(0, max_name - 3) + "...";
    entries.emplace_back(glyph(StyleOf(series[si], si)) + " " + name, name.size() + 2);
  }
  if (log_y) entries.emplace_back("(log scale)", 11);
  std::string line = indent;
  size_t line_width = indent.size();
  bool empty_line = true;
  for (const auto& [text, w] : entries) {
    if (!empty_line && line_width + 2 + w > static_cast<size_t>(columns)) {
      out += line + "\n";
      line = indent;
      line_width = indent.size();
      empty_line = true;
    }
    if (empty_line && line_width + w > static_cast<size_t>(columns)) {  // too long to indent
      line.clear();
      line_width = 0;
    }
    if (!empty_line) {
      line += "  ";
      line_width += 2;
    }
    line += text;
    line_width += w;
    empty_line = false;
  }
  out += line + "\n";
  return out;
}

}  // namespace qatd::client
