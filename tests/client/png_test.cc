// The PNG encoder: signature, IHDR fields, chunk CRCs (checked with zlib's crc32), and IDAT
// that inflates back to the filtered scanlines; and the plot that `qat curve --png` writes.
#include "client/png.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdint>
#include <string>
#include <vector>

#include "client/plot_png.h"

namespace qatd::client {
namespace {

uint32_t U32(const std::string& s, size_t at) {
  return (uint32_t{static_cast<uint8_t>(s[at])} << 24) | (uint32_t{static_cast<uint8_t>(s[at + 1])} << 16) |
         (uint32_t{static_cast<uint8_t>(s[at + 2])} << 8) | uint32_t{static_cast<uint8_t>(s[at + 3])};
}

struct Chunk {
  std::string type;
  std::string data;
};

// Splits a PNG file into chunks, checking each CRC-32 over type + data.
std::vector<Chunk> Chunks(const std::string& png) {
  std::vector<Chunk> chunks;
  size_t at = 8;
  while (at + 12 <= png.size()) {
    const uint32_t length = U32(png, at);
    EXPECT_LE(at + 12 + length, png.size());
    if (at + 12 + length > png.size()) break;
    Chunk chunk{png.substr(at + 4, 4), png.substr(at + 8, length)};
    uLong crc = crc32(0L, Z_NULL, 0);
    crc = crc32(crc, reinterpret_cast<const Bytef*>(png.data() + at + 4), 4 + length);
    EXPECT_EQ(U32(png, at + 8 + length), static_cast<uint32_t>(crc)) << "CRC of " << chunk.type;
    chunks.push_back(std::move(chunk));
    at += 12 + length;
  }
  EXPECT_EQ(at, png.size()) << "trailing bytes";
  return chunks;
}

TEST(Png, SignatureHeaderCrcAndPixels) {
  RgbImage image(3, 2, {255, 255, 255});
  image.Set(0, 0, {255, 0, 0});
  image.Set(2, 1, {0, 0, 255});
  image.Set(7, 7, {1, 2, 3});  // out of range: ignored
  absl::StatusOr<std::string> png = EncodePng(image);
  ASSERT_TRUE(png.ok()) << png.status();
  ASSERT_GE(png->size(), 8u);
  EXPECT_EQ(png->substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));

  const std::vector<Chunk> chunks = Chunks(*png);
  ASSERT_EQ(chunks.size(), 3u);
  EXPECT_EQ(chunks[0].type, "IHDR");
  ASSERT_EQ(chunks[0].data.size(), 13u);
  EXPECT_EQ(U32(chunks[0].data, 0), 3u);  // width
  EXPECT_EQ(U32(chunks[0].data, 4), 2u);  // height
  EXPECT_EQ(chunks[0].data[8], 8);        // bit depth
  EXPECT_EQ(chunks[0].data[9], 2);        // truecolor
  EXPECT_EQ(chunks[0].data[10], 0);
  EXPECT_EQ(chunks[0].data[11], 0);
  EXPECT_EQ(chunks[0].data[12], 0);
  EXPECT_EQ(chunks[1].type, "IDAT");
  EXPECT_EQ(chunks[2].type, "IEND");
  EXPECT_TRUE(chunks[2].data.empty());

  std::string raw(2 * (1 + 3 * 3), '\0');
  uLongf raw_size = raw.size();
  ASSERT_EQ(uncompress(reinterpret_cast<Bytef*>(raw.data()), &raw_size,
                       reinterpret_cast<const Bytef*>(chunks[1].data.data()), chunks[1].data.size()),
            Z_OK);
  ASSERT_EQ(raw_size, raw.size());
  EXPECT_EQ(raw[0], 0);  // filter type None
  EXPECT_EQ(raw[10], 0);
  EXPECT_EQ(static_cast<uint8_t>(raw[1]), 255);  // (0,0) red
  EXPECT_EQ(static_cast<uint8_t>(raw[2]), 0);
  EXPECT_EQ(static_cast<uint8_t>(raw[3]), 0);
  EXPECT_EQ(static_cast<uint8_t>(raw[4]), 255);         // (1,0) white
  EXPECT_EQ(static_cast<uint8_t>(raw[10 + 1 + 6]), 0);  // (2,1) blue
  EXPECT_EQ(static_cast<uint8_t>(raw[10 + 1 + 8]), 255);
}

TEST(Png, EmptyImageIsAnError) { EXPECT_FALSE(EncodePng(RgbImage(0, 5, {})).ok()); }

TEST(PlotPng, DrawsAxesSeriesAndText) {
  CurveSeries loss{"loss/kd", {1, 2, 3, 4}, {1.0, 0.5, 0.33, 0.25}};
  CurveSeries eval{"eval/kd", {2, 4}, {0.8, 0.4}};
  PlotOptions options;
  options.width = 400;
  options.height = 300;
  options.title = "job 1";
  const RgbImage image = PlotCurves({loss, eval}, options);
  ASSERT_EQ(image.width(), 400);
  ASSERT_EQ(image.height(), 300);
  // Both palette colors appear (first series blue, second orange), and so does dark text.
  int blue = 0, orange = 0, dark = 0;
  for (int y = 0; y < image.height(); ++y) {
    for (int x = 0; x < image.width(); ++x) {
      const Rgb c = image.Get(x, y);
      blue += c.r == 31 && c.g == 119 && c.b == 180;
      orange += c.r == 255 && c.g == 127 && c.b == 14;
      dark += c.r == 30 && c.g == 30 && c.b == 30;
    }
  }
  EXPECT_GT(blue, 100);
  EXPECT_GT(orange, 50);
  EXPECT_GT(dark, 500);
  absl::StatusOr<std::string> png = EncodePng(image);
  ASSERT_TRUE(png.ok());
  EXPECT_EQ(Chunks(*png).size(), 3u);
}

bool IsPalette(Rgb c) {
  const Rgb palette[] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44}, {214, 39, 40}, {148, 103, 189}, {140, 86, 75}};
  for (const Rgb& p : palette) {
    if (c.r == p.r && c.g == p.g && c.b == p.b) return true;
  }
  return false;
}
bool IsWhite(Rgb c) { return c.r == 255 && c.g == 255 && c.b == 255; }

// True when every dark pixel of `text` drawn at (0, 0) in a blank image (upright, or rotated
// to read bottom-to-top) appears somewhere in `image` with the same shape.
bool ContainsText(const RgbImage& image, const std::string& text, bool up) {
  const int w = TextWidth(text, 2), h = 14;
  RgbImage stamp(up ? h : w, up ? w : h, {255, 255, 255});
  if (up) {
    DrawTextUp(stamp, 0, w - 1, text, {0, 0, 0}, 2);
  } else {
    DrawText(stamp, 0, 0, text, {0, 0, 0}, 2);
  }
  std::vector<std::pair<int, int>> ink;
  for (int y = 0; y < stamp.height(); ++y) {
    for (int x = 0; x < stamp.width(); ++x) {
      if (!IsWhite(stamp.Get(x, y))) ink.emplace_back(x, y);
    }
  }
  if (ink.empty()) return false;
  for (int oy = 0; oy + stamp.height() <= image.height(); ++oy) {
    for (int ox = 0; ox + stamp.width() <= image.width(); ++ox) {
      bool all = true;
      for (const auto& [x, y] : ink) {
        const Rgb c = image.Get(ox + x, oy + y);
        if (!(c.r == 30 && c.g == 30 && c.b == 30)) {
          all = false;
          break;
        }
      }
      if (all) return true;
    }
  }
  return false;
}

// Issue #17.6: with --log the title ran into the legend.
TEST(PlotPng, TitleSitsAboveTheLegend) {
  CurveSeries a{"loss/hard_full", {0, 10, 20}, {11, 10.5, 10.2}};
  CurveSeries b{"loss/kd", {0, 10, 20}, {3e-5, 2.7e-5, 2.5e-5}};
  CurveSeries c{"eval/kd", {10, 20}, {2.9e-5, 2.6e-5}};
  PlotOptions options;
  options.title = "job 1234 qat run with a long name";
  options.log_y = true;
  const RgbImage image = PlotCurves({a, b, c}, options);
  int first_ink = -1;
  for (int y = 0; y < image.height() && first_ink < 0; ++y) {
    for (int x = 0; x < image.width(); ++x) {
      if (!IsWhite(image.Get(x, y))) {
        first_ink = y;
        break;
      }
    }
  }
  ASSERT_GE(first_ink, 0);
  EXPECT_TRUE(ContainsText(image, options.title + " (log scale)", false));
  // The title's band (its 14 rows and 2 more either side) holds no legend swatch or line color.
  for (int y = std::max(0, first_ink - 2); y < first_ink + 16; ++y) {
    for (int x = 0; x < image.width(); ++x) ASSERT_FALSE(IsPalette(image.Get(x, y))) << "x=" << x << " y=" << y;
  }
}

// The last x tick label ran past the right edge; nothing may touch the image border.
TEST(PlotPng, EverythingIsInsideTheImage) {
  CurveSeries loss{"loss/kd", {0, 2500, 5000, 7500, 10000}, {1.25, 1.0, 0.75, 0.6, 0.5}};
  for (bool log_y : {false, true}) {
    PlotOptions options;
    options.width = 640;
    options.height = 400;
    options.title = "job 1";
    options.log_y = log_y;
    const RgbImage image = PlotCurves({loss}, options);
    for (int y = 0; y < image.height(); ++y) {
      for (int x = 0; x < image.width(); ++x) {
        if (x < 3 || y < 3 || x >= image.width() - 3 || y >= image.height() - 3) {
          ASSERT_TRUE(IsWhite(image.Get(x, y))) << "ink at the border: x=" << x << " y=" << y;
        }
      }
    }
    EXPECT_TRUE(ContainsText(image, "step", false));
    EXPECT_TRUE(ContainsText(image, "10000", false));
    EXPECT_TRUE(ContainsText(image, log_y ? "loss (log)" : "loss", true));  // y label
  }
}

// Series 10^5 apart get one panel each, so the small one is not a flat line at the bottom.
TEST(PlotPng, VeryDifferentMagnitudesGetTheirOwnPanel) {
  CurveSeries hard{"loss/hard_full", {0, 10, 20, 30, 40}, {11.2, 11.0, 10.9, 10.8, 10.7}};
  CurveSeries kd{"loss/kd", {0, 10, 20, 30, 40}, {3.0e-5, 2.8e-5, 2.6e-5, 2.5e-5, 2.4e-5}};
  PlotOptions options;
  options.title = "job 1";
  const RgbImage image = PlotCurves({hard, kd}, options);
  auto rows_of = [&](Rgb want) {
    int rows = 0;
    for (int y = 0; y < image.height(); ++y) {
      int n = 0;
      for (int x = 0; x < image.width(); ++x) {
        const Rgb c = image.Get(x, y);
        n += c.r == want.r && c.g == want.g && c.b == want.b;
      }
      rows += n > 0 && n < 40;  // the legend swatch is a solid bar: count line rows only
    }
    return rows;
  };
  EXPECT_GT(rows_of({31, 119, 180}), 60);
  EXPECT_GT(rows_of({255, 127, 14}), 60);
  EXPECT_TRUE(ContainsText(image, "step", false));
}

TEST(PlotPng, TextUsesTheFont) {
  RgbImage image(40, 20, {255, 255, 255});
  DrawText(image, 0, 0, " ", {0, 0, 0}, 1);
  int dark = 0;
  for (int y = 0; y < 20; ++y) {
    for (int x = 0; x < 40; ++x) dark += image.Get(x, y).r == 0;
  }
  EXPECT_EQ(dark, 0);
  DrawText(image, 0, 0, "1.5e", {0, 0, 0}, 1);
  for (int y = 0; y < 20; ++y) {
    for (int x = 0; x < 40; ++x) dark += image.Get(x, y).r == 0;
  }
  EXPECT_GT(dark, 20);
  EXPECT_EQ(TextWidth("abc", 2), 3 * 12 - 2);
}

}  // namespace
}  // namespace qatd::client
