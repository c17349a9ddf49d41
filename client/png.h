#pragma once
// A minimal PNG encoder (8-bit RGB, one IDAT chunk, no filtering) over zlib, and the RGB
// raster it encodes.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace qatd::client {

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
};

// A width x height RGB raster, row-major, top row first.
class RgbImage {
 public:
  RgbImage(int width, int height, Rgb background);

  int width() const { return width_; }
  int height() const { return height_; }
  const std::vector<uint8_t>& pixels() const { return pixels_; }
  // Out-of-range coordinates are ignored (drawing code may clip by accident safely).
  void Set(int x, int y, Rgb color);
  Rgb Get(int x, int y) const;

 private:
  int width_;
  int height_;
  std::vector<uint8_t> pixels_;
};

// The PNG file bytes: signature, IHDR (8-bit truecolor), IDAT (zlib), IEND, each chunk with
// its CRC-32. INTERNAL when zlib fails; INVALID_ARGUMENT for an empty image.
absl::StatusOr<std::string> EncodePng(const RgbImage& image);

}  // namespace qatd::client
