#pragma once
// A small raster line plot for `qat curve --png`: white background, a framed plot area with
// grid lines, tick labels on both axes (a built-in 5x7 pixel font), one colored polyline per
// series, a legend and a title.

#include <string>
#include <vector>

#include "client/curve.h"
#include "client/png.h"

namespace qatd::client {

struct PlotOptions {
  int width = 900;
  int height = 540;
  std::string title;
  bool log_y = false;
};

RgbImage PlotCurves(const std::vector<CurveSeries>& series, const PlotOptions& options);

// Draws `text` with its top-left corner at (x, y), each font pixel `scale` x `scale`.
// Letters are drawn lower-case; characters without a glyph leave a gap.
void DrawText(RgbImage& image, int x, int y, const std::string& text, Rgb color, int scale);
// Width in pixels of `text` drawn at `scale`.
int TextWidth(const std::string& text, int scale);

}  // namespace qatd::client
