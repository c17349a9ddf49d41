#pragma once
// Fitted LUTs (issue #18): instead of one uniform grid in [-1, 1] for every layer, a layer's
// LUT can be the 1-D k-means (Lloyd-Max) centroids of its normalised weights u = W / S, so
// that the 2^bits entries sit where the weights are. For the bell-shaped u of a real model
// a 2-bit uniform grid {-1, -1/3, 1/3, 1} wastes its outer entries on a few outliers; the
// fitted one moves them in, and the round-to-nearest (PTQ) error of the layer falls before
// any training.
//
// The fit (FitLutKMeans):
//   - u is flattened to float32; above `max_samples` values, a deterministic evenly strided
//     subset is used (no RNG: the same weights always give the same LUT);
//   - weighted Lloyd iterations start from the uniform LUT (MakeLutValues), so the squared error of
//     nearest-entry rounding never ends above the uniform grid's (each step can only lower
//     it); on sorted data one iteration is a binary search per boundary plus prefix sums;
//   - an entry whose cell is empty keeps its value; the result is sorted ascending with
//     strictly increasing entries (CheckLut), and include_zero keeps one entry at exactly 0.
//
// FitLayerLut applies it to a V1 layer in place (its "lut" buffer, in the buffer's dtype; the
// index boundaries are refreshed). The LUT is a buffer, so checkpoints, snap, convert and the
// exports carry the fitted values unchanged; nothing else needs to know how it was made.

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace qatd::quant {

class QuantLinearV1;
class QuantLinearV2;

struct LutFitOptions {
  int iterations = 30;             // Lloyd iterations at most (stops early when nothing moves)
  int64_t max_samples = 1 << 20;   // values of u used for the fit (evenly strided subset)
  bool include_zero = false;       // keep an entry at exactly 0 (lut_include_zero)
};

struct LutFit {
  std::vector<float> values;  // sorted ascending, strictly increasing
  double mse_uniform = 0;     // mean squared rounding error of the uniform LUT on the samples
  double mse_fitted = 0;      // the same for the fitted LUT (<= mse_uniform)
  int iterations = 0;         // Lloyd iterations run
};

// u: any shape, floating, finite; lut_size a power of two in [2, 256]; weight: undefined (all
// 1) or u's shape, >= 0 (the error of each value counts weight times). INVALID_ARGUMENT for an
// empty or non-finite u, bad weights or a bad size. The MSEs in the result are weighted.
absl::StatusOr<LutFit> FitLutKMeans(const at::Tensor& u, int lut_size, const LutFitOptions& options = {},
                                    const at::Tensor& weight = {});

// Fits the LUT of `layer` to its current u = W / S (not snapped), weighting each value by S^2
// so that the fit minimises the squared error of the quantized weight W_q = LUT[idx] * S
// itself. Returns the fit.
absl::StatusOr<LutFit> FitLayerLut(QuantLinearV1& layer, const LutFitOptions& options = {});

// The same for a V2 layer (the Q4 -> Q2 conversion's `lut_init: kmeans`): u = W / S with the
// layer's signed S = (A diag g) B (|S| < kMinScale moved out to +-kMinScale), weighted by S^2.
// Frozen indices are frozen again as the nearest entries of the new LUT (FreezeQ); unfrozen
// ones stay unfrozen. Refuses a baked (snapped) layer.
absl::StatusOr<LutFit> FitLayerLutV2(QuantLinearV2& layer, const LutFitOptions& options = {});

}  // namespace qatd::quant
