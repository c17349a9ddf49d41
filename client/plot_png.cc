#include "client/plot_png.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "client/render.h"

namespace qatd::client {
namespace {

// 5x7 glyphs: 7 rows, bit 4 = leftmost column.
struct Glyph {
  char c;
  uint8_t rows[7];
};

constexpr Glyph kFont[] = {
    {'0', {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}}, {'1', {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'2', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}}, {'3', {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E}},
    {'4', {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}}, {'5', {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}},
    {'6', {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}}, {'7', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
    {'8', {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}}, {'9', {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}},
    {'.', {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}}, {'-', {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00}},
    {'+', {0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00}}, {'/', {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00}},
    {'_', {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F}}, {':', {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00}},
    {'(', {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}}, {')', {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}},
    {'=', {0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00}}, {'%', {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03}},
    {'a', {0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F}}, {'b', {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1E}},
    {'c', {0x00, 0x00, 0x0E, 0x10, 0x10, 0x11, 0x0E}}, {'d', {0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F}},
    {'e', {0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E}}, {'f', {0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08}},
    {'g', {0x00, 0x0F, 0x11, 0x11, 0x0F, 0x01, 0x0E}}, {'h', {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11}},
    {'i', {0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E}}, {'j', {0x02, 0x00, 0x06, 0x02, 0x02, 0x12, 0x0C}},
    {'k', {0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12}}, {'l', {0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'m', {0x00, 0x00, 0x1A, 0x15, 0x15, 0x11, 0x11}}, {'n', {0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11}},
    {'o', {0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E}}, {'p', {0x00, 0x00, 0x1E, 0x11, 0x11, 0x1E, 0x10}},
    {'q', {0x00, 0x00, 0x0F, 0x11, 0x11, 0x0F, 0x01}}, {'r', {0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10}},
    {'s', {0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E}}, {'t', {0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06}},
    {'u', {0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0D}}, {'v', {0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04}},
    {'w', {0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0A}}, {'x', {0x00, 0x00, 0x11, 0x0A, 0x04, 0x0A, 0x11}},
    {'y', {0x00, 0x00, 0x11, 0x11, 0x0F, 0x01, 0x0E}}, {'z', {0x00, 0x00, 0x1F, 0x02, 0x04, 0x08, 0x1F}},
};

const Glyph* FindGlyph(char c) {
  c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const Glyph& g : kFont) {
    if (g.c == c) return &g;
  }
  return nullptr;
}

constexpr Rgb kWhite{255, 255, 255};
constexpr Rgb kBlack{30, 30, 30};
constexpr Rgb kGrid{225, 225, 225};
constexpr Rgb kPalette[] = {{31, 119, 180}, {255, 127, 14},  {44, 160, 44},
                            {214, 39, 40},  {148, 103, 189}, {140, 86, 75}};

void FillRect(RgbImage& image, int x0, int y0, int x1, int y1, Rgb color) {
  for (int y = y0; y <= y1; ++y) {
    for (int x = x0; x <= x1; ++x) image.Set(x, y, color);
  }
}

// Bresenham, `thickness` x `thickness` pen.
void DrawLine(RgbImage& image, int x0, int y0, int x1, int y1, Rgb color, int thickness) {
  const int dx = std::abs(x1 - x0), sx = x0 < x1 ? 1 : -1;
  const int dy = -std::abs(y1 - y0), sy = y0 < y1 ? 1 : -1;
  int err = dx + dy;
  while (true) {
    FillRect(image, x0 - thickness / 2, y0 - thickness / 2, x0 + (thickness - 1) / 2, y0 + (thickness - 1) / 2, color);
    if (x0 == x1 && y0 == y1) break;
    const int e2 = 2 * err;
    if (e2 >= dy) {
      err += dy;
      x0 += sx;
    }
    if (e2 <= dx) {
      err += dx;
      y0 += sy;
    }
  }
}

}  // namespace

int TextWidth(const std::string& text, int scale) { return static_cast<int>(text.size()) * 6 * scale - scale; }

namespace {

// Draws `text`'s font pixels through `place(col, row)` (col along the text, row 0..6 down
// the glyph), which fills one scale x scale block.
template <typename Place>
void DrawGlyphs(const std::string& text, Place place) {
  int base = 0;
  for (char c : text) {
    if (const Glyph* g = FindGlyph(c)) {
      for (int row = 0; row < 7; ++row) {
        for (int col = 0; col < 5; ++col) {
          if ((g->rows[row] >> (4 - col)) & 1) place(base + col, row);
        }
      }
    }
    base += 6;
  }
}

// "loss" when every series is "loss/...", else "kd" when every one is ".../kd", else "value".
std::string YAxisName(const std::vector<CurveSeries>& series) {
  auto part = [](const std::string& name, bool prefix) {
    const size_t slash = prefix ? name.find('/') : name.rfind('/');
    if (slash == std::string::npos) return std::string();
    return prefix ? name.substr(0, slash) : name.substr(slash + 1);
  };
  for (bool prefix : {true, false}) {
    const std::string first = part(series.front().name, prefix);
    bool same = !first.empty();
    for (const auto& s : series) same &= part(s.name, prefix) == first;
    if (same) return first;
  }
  return "value";
}

constexpr int kScale = 2;
constexpr int kCharH = 7 * kScale;
constexpr int kMargin = 12;

// One chart of `series` in rows [y0, y1) of `image`: legend, framed plot area with grid and
// tick labels, the y axis name (rotated) and the x axis name, everything inside the image.
void DrawPanel(RgbImage& image, int y0, int y1, const std::vector<CurveSeries>& series, bool log_y) {
  const int width = image.width();
  const PlotRange r = RangeOf(series, log_y);
  const std::vector<double> y_ticks = NiceTicks(r.y_min, r.y_max, 6);
  const std::vector<double> x_ticks = NiceTicks(r.x_min, r.x_max, 6);
  auto y_label = [&](double v) { return FormatNumber(log_y ? std::pow(10.0, v) : v); };
  int label_w = 0;
  for (double t : y_ticks) label_w = std::max(label_w, TextWidth(y_label(t), kScale));
  int x_half = 0;  // half the widest x tick label: the plot's right end leaves room for it
  for (double t : x_ticks) x_half = std::max(x_half, TextWidth(FormatNumber(t), kScale) / 2 + 1);
  const int left = kMargin + kCharH + 12 + label_w + 10;
  const int right = width - kMargin - std::max(x_half, 4);

  // Legend: swatch + name entries, left to right from the plot's left edge, wrapped.
  int lx = left, ly = y0 + 8;
  for (size_t si = 0; si < series.size(); ++si) {
    const std::string& name = series[si].name;
    const int w = 18 + 8 + TextWidth(name, kScale);
    if (lx > left && lx + w > right) {
      lx = left;
      ly += kCharH + 8;
    }
    FillRect(image, lx, ly + kCharH / 2 - 2, lx + 17, ly + kCharH / 2 + 1, kPalette[StyleOf(series[si], si) % 6]);
    DrawText(image, lx + 26, ly, name, kBlack, kScale);
    lx += w + 20;
  }
  const int top = ly + kCharH + 14;
  const int bottom = y1 - kMargin - (kCharH + 10) - (kCharH + 12);
  if (right - left < 20 || bottom - top < 20) return;
  auto px = [&](double x) {
    return left + static_cast<int>(std::lround((x - r.x_min) / (r.x_max - r.x_min) * (right - left)));
  };
  auto py = [&](double y) {
    return bottom - static_cast<int>(std::lround((y - r.y_min) / (r.y_max - r.y_min) * (bottom - top)));
  };

  // Grid and tick labels.
  for (double t : y_ticks) {
    const int y = py(t);
    if (y < top || y > bottom) continue;
    DrawLine(image, left, y, right, y, kGrid, 1);
    DrawLine(image, left - 6, y, left, y, kBlack, 1);
    const std::string label = y_label(t);
    DrawText(image, left - 10 - TextWidth(label, kScale), y - kCharH / 2, label, kBlack, kScale);
  }
  for (double t : x_ticks) {
    const int x = px(t);
    if (x < left || x > right) continue;
    DrawLine(image, x, top, x, bottom, kGrid, 1);
    DrawLine(image, x, bottom, x, bottom + 6, kBlack, 1);
    const std::string label = FormatNumber(t);
    const int w = TextWidth(label, kScale);
    DrawText(image, std::clamp(x - w / 2, kMargin, width - kMargin - w), bottom + 12, label, kBlack, kScale);
  }
  const std::string x_name = "step";
  DrawText(image, (left + right - TextWidth(x_name, kScale)) / 2, bottom + 12 + kCharH + 10, x_name, kBlack, kScale);
  const std::string y_name = YAxisName(series) + (log_y ? " (log)" : "");
  const int y_name_w = TextWidth(y_name, kScale);
  DrawTextUp(image, kMargin, std::min(bottom, (top + bottom + y_name_w) / 2), y_name, kBlack, kScale);
  // Frame.
  DrawLine(image, left, top, right, top, kBlack, 1);
  DrawLine(image, left, bottom, right, bottom, kBlack, 1);
  DrawLine(image, left, top, left, bottom, kBlack, 1);
  DrawLine(image, right, top, right, bottom, kBlack, 1);

  // Series.
  for (size_t si = 0; si < series.size(); ++si) {
    const Rgb color = kPalette[StyleOf(series[si], si) % 6];
    const CurveSeries& s = series[si];
    bool have_last = false;
    int last_x = 0, last_y = 0;
    for (size_t i = 0; i < s.steps.size(); ++i) {
      if (log_y && !(s.values[i] > 0)) continue;
      const int x = px(s.steps[i]);
      const int y = py(log_y ? std::log10(s.values[i]) : s.values[i]);
      if (have_last) {
        DrawLine(image, last_x, last_y, x, y, color, 2);
      } else {
        FillRect(image, x - 1, y - 1, x + 1, y + 1, color);
      }
      last_x = x;
      last_y = y;
      have_last = true;
    }
  }
}

}  // namespace

void DrawText(RgbImage& image, int x, int y, const std::string& text, Rgb color, int scale) {
  DrawGlyphs(text, [&](int col, int row) {
    FillRect(image, x + col * scale, y + row * scale, x + (col + 1) * scale - 1, y + (row + 1) * scale - 1, color);
  });
}

void DrawTextUp(RgbImage& image, int x, int y, const std::string& text, Rgb color, int scale) {
  // Rotated a quarter turn counter-clockwise: the glyphs' tops face left, the text runs up.
  DrawGlyphs(text, [&](int col, int row) {
    FillRect(image, x + row * scale, y - (col + 1) * scale + 1, x + (row + 1) * scale - 1, y - col * scale, color);
  });
}

RgbImage PlotCurves(const std::vector<CurveSeries>& series, const PlotOptions& o) {
  std::vector<std::vector<CurveSeries>> panels;
  if (o.log_y || o.one_axis) {
    panels.push_back(series);
  } else {
    panels = GroupByMagnitude(series);
  }
  if (panels.empty()) panels.emplace_back();
  // Each extra panel adds 60% of the requested height.
  const int n = static_cast<int>(panels.size());
  const int height = o.height + (n - 1) * o.height * 3 / 5;
  RgbImage image(o.width, height, kWhite);
  if (series.empty()) return image;
  int y = kMargin;
  if (!o.title.empty() || o.log_y) {
    const std::string title = o.title + (o.log_y ? " (log scale)" : "");
    DrawText(image, kMargin + kCharH + 12, y, title, kBlack, kScale);
    y += kCharH + 12;  // the title's own band: the legend starts below it
  }
  const int panel_h = (height - y) / n;
  for (int i = 0; i < n; ++i) DrawPanel(image, y + i * panel_h, y + (i + 1) * panel_h, panels[i], o.log_y);
  return image;
}

}  // namespace qatd::client
