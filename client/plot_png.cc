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

void DrawText(RgbImage& image, int x, int y, const std::string& text, Rgb color, int scale) {
  for (char c : text) {
    if (const Glyph* g = FindGlyph(c)) {
      for (int row = 0; row < 7; ++row) {
        for (int col = 0; col < 5; ++col) {
          if ((g->rows[row] >> (4 - col)) & 1) {
            FillRect(image, x + col * scale, y + row * scale, x + (col + 1) * scale - 1, y + (row + 1) * scale - 1,
                     color);
          }
        }
      }
    }
    x += 6 * scale;
  }
}

RgbImage PlotCurves(const std::vector<CurveSeries>& series, const PlotOptions& o) {
  RgbImage image(o.width, o.height, kWhite);
  const int scale = 2;
  const int char_h = 7 * scale;
  const PlotRange r = RangeOf(series, o.log_y);
  const std::vector<double> y_ticks = NiceTicks(r.y_min, r.y_max, 6);
  const std::vector<double> x_ticks = NiceTicks(r.x_min, r.x_max, 6);
  auto y_label = [&](double v) { return FormatNumber(o.log_y ? std::pow(10.0, v) : v); };
  int label_w = 0;
  for (double t : y_ticks) label_w = std::max(label_w, TextWidth(y_label(t), scale));

  const int left = label_w + 24, right = o.width - 24, top = 24 + char_h + 16, bottom = o.height - (char_h * 2 + 32);
  if (right - left < 20 || bottom - top < 20) return image;
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
    DrawText(image, left - 10 - TextWidth(label, scale), y - char_h / 2, label, kBlack, scale);
  }
  for (double t : x_ticks) {
    const int x = px(t);
    if (x < left || x > right) continue;
    DrawLine(image, x, top, x, bottom, kGrid, 1);
    DrawLine(image, x, bottom, x, bottom + 6, kBlack, 1);
    const std::string label = FormatNumber(t);
    DrawText(image, x - TextWidth(label, scale) / 2, bottom + 12, label, kBlack, scale);
  }
  const std::string x_name = "step";
  DrawText(image, (left + right - TextWidth(x_name, scale)) / 2, bottom + 20 + char_h, x_name, kBlack, scale);
  // Frame.
  DrawLine(image, left, top, right, top, kBlack, 1);
  DrawLine(image, left, bottom, right, bottom, kBlack, 1);
  DrawLine(image, left, top, left, bottom, kBlack, 1);
  DrawLine(image, right, top, right, bottom, kBlack, 1);

  // Series.
  for (size_t si = 0; si < series.size(); ++si) {
    const Rgb color = kPalette[si % 6];
    const CurveSeries& s = series[si];
    bool have_last = false;
    int lx = 0, ly = 0;
    for (size_t i = 0; i < s.steps.size(); ++i) {
      if (o.log_y && !(s.values[i] > 0)) continue;
      const int x = px(s.steps[i]);
      const int y = py(o.log_y ? std::log10(s.values[i]) : s.values[i]);
      if (have_last) {
        DrawLine(image, lx, ly, x, y, color, 2);
      } else {
        FillRect(image, x - 1, y - 1, x + 1, y + 1, color);
      }
      lx = x;
      ly = y;
      have_last = true;
    }
  }

  // Title (top left) and legend (top right, above the plot).
  std::string title = o.title;
  if (o.log_y) title += " (log scale)";
  DrawText(image, left, 16, title, kBlack, scale);
  int x = right;
  for (size_t si = series.size(); si-- > 0;) {
    const int w = TextWidth(series[si].name, scale);
    x -= w;
    DrawText(image, x, 16, series[si].name, kBlack, scale);
    x -= 26;
    FillRect(image, x, 16 + char_h / 2 - 2, x + 18, 16 + char_h / 2 + 1, kPalette[si % 6]);
    x -= 16;
  }
  return image;
}

}  // namespace qatd::client
