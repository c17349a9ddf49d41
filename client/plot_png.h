#pragma once
// A small raster line plot for `qat curve --png`: white background, the title in its own band
// at the top, then one panel per group of series of comparable magnitude (GroupByMagnitude in
// curve.h; one panel with log_y or one_axis), each with its legend above a framed plot area
// with grid lines, tick labels on both axes (a built-in 5x7 pixel font), the x axis name
// ("step") and the y axis name (rotated; "loss" for loss/* series, "value" for a mix), one
// colored polyline per series. Nothing is drawn within 12 pixels of the border.

#include <string>
#include <vector>

#include "client/curve.h"
#include "client/png.h"

namespace qatd::client {

struct PlotOptions {
  int width = 900;
  int height = 540;  // the image with one panel; each further panel adds 60% of it
  std::string title;
  bool log_y = false;     // one panel, log10 y axis
  bool one_axis = false;  // one panel, linear y axis, whatever the magnitudes
};

RgbImage PlotCurves(const std::vector<CurveSeries>& series, const PlotOptions& options);

// Draws `text` with its top-left corner at (x, y), each font pixel `scale` x `scale`.
// Letters are drawn lower-case; characters without a glyph leave a gap.
void DrawText(RgbImage& image, int x, int y, const std::string& text, Rgb color, int scale);
// Draws `text` rotated a quarter turn counter-clockwise (it reads bottom to top): (x, y) is the
// bottom-left corner of its 7*scale wide, TextWidth(text, scale) tall box.
void DrawTextUp(RgbImage& image, int x, int y, const std::string& text, Rgb color, int scale);
// Width in pixels of `text` drawn at `scale`.
int TextWidth(const std::string& text, int scale);

}  // namespace qatd::client
