#pragma once
// LUT (codebook) values and weight -> index mapping, shared by V1 and V2 (spec §2).
//
// LUT values are pinned explicitly rather than taken from whatever linspace the LibTorch
// version provides (torch 1.13 and 2.x differ in the last bit, spec §11):
//   Linspace(start, end, n): s = f32((end - start) / (n - 1));
//     v[j] = f32(start + s*j)           for j <  n/2   (one rounding: exact product and sum)
//     v[j] = f32(end - s*(n - 1 - j))   for j >= n/2
//   which is the torch 2.x float32 CPU kernel bit for bit (symmetric for symmetric ends).
//   Uniform LUT (spec §2.1): Linspace(-1, 1, n).
//   Zero-containing LUT (lut_include_zero): Linspace(-1, 0, n/2 + 1) without its last entry,
//   then Linspace(0, 1, n/2).
//
// Index mapping (spec §2.2, HEAD's fix): idx = argmin_j |u - LUT[j]| with ties to the lower
// index, for a LUT sorted ascending. Computed exactly in float32: the boundary between entries
// j and j+1 is the largest float32 <= the exact midpoint, and idx = #{boundaries < u}. Values
// outside [LUT[0], LUT[n-1]] map to the ends (the reference's clamp); NaN maps into [0, n-1].

#include <ATen/ATen.h>

#include <vector>

#include "absl/status/statusor.h"

namespace qatd::quant {

// Pinned float32 linspace (see above). steps >= 1.
std::vector<float> PinnedLinspace(float start, float end, int steps);

// LUT values for `lut_size` entries (power of two in [2, 256]); sorted ascending.
absl::StatusOr<std::vector<float>> MakeLutValues(int lut_size, bool include_zero);

// The same as a [n] tensor of `dtype` (values rounded from the pinned float32 values).
absl::StatusOr<at::Tensor> MakeLut(int lut_size, bool include_zero, at::ScalarType dtype = at::kFloat);

// OK when `lut` is a 1-D floating tensor with 2..256 finite entries sorted ascending (any
// order with require_sorted false: a V2 LUT trained with frozen indices, QuantLinearV2::SortLut).
absl::Status CheckLut(const at::Tensor& lut, bool require_sorted = true);

// Decision boundaries of a sorted LUT: [n-1] float32 on lut's device (see header comment).
at::Tensor LutBoundaries(const at::Tensor& lut);

// u: any shape, floating (converted to float32, exact for bf16/fp16). Returns int64 indices
// of the nearest LUT entry, same shape and device as u. No autograd graph.
at::Tensor NearestLutIndex(const at::Tensor& u, const at::Tensor& lut);

// The same with boundaries precomputed by LutBoundaries (saves a host round trip per call).
at::Tensor NearestLutIndexWithBoundaries(const at::Tensor& u, const at::Tensor& boundaries);

}  // namespace qatd::quant
