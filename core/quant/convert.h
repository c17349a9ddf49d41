#pragma once
// Layer conversions: Q4 -> Q2 progressive conversion (spec §11) and V1 -> V2 (spec §5).

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "core/quant/quant_config.h"
#include "core/quant/quant_linear_v1.h"
#include "core/quant/quant_linear_v2.h"

namespace qatd::quant {

// 1-D k-means of LUT *values* (spec §11), pinned down:
//   * sort the values; initial centre j (j = 1..k) is sorted[floor(j*(n-1)/(k+1))] (integer
//     arithmetic; for n = 16, k = 4 the indices 3, 6, 9, 12);
//   * `iterations` Lloyd steps in float64: each value goes to the centre with the smallest
//     |v - c| (an exact float64 tie goes to the lower centre index), each centre becomes the
//     mean of its cluster in sorted order (an empty cluster keeps its centre);
//   * the centres are sorted and rounded to float32.
// Deterministic for given input bits. For the pinned uniform LUT16 it gives the symmetric
// [-0.8, -0.2667, 0.2667, 0.8] (the torch 2.x golden), not the torch 1.13 accident.
// INVALID_ARGUMENT unless 1 <= k <= values.size().
absl::StatusOr<std::vector<float>> KMeansLut(const std::vector<float>& values, int k, int iterations = 20);

// Q4 -> Q2 for one V2 layer (spec §11): weight and bias copied; LUT reduced by KMeansLut when
// target.lut_size is smaller (copied when equal); rank expanded: the old columns of scale_A,
// rows of scale_B and entries of rank_magnitude are copied, new ones are 0.01·N(0, 1)
// (A, B; seeded with `seed`) and 0.01 (g). Then the indices are recomputed against the
// actual new LUT by nearest value (spec §17.5 fix) and frozen. `target` supplies the remaining
// V2 settings. INVALID_ARGUMENT if the target rank is smaller or the LUT larger than the source's.
absl::StatusOr<std::shared_ptr<QuantLinearV2>> ConvertLutAndRank(QuantLinearV2& source,
                                                                 const LayerQuantSpecV2& target, uint64_t seed);

// V1 -> V2 (spec §5): B trimmed to the first I columns; a_k = max(|A[:,k]|, norm_floor),
// b_k = max(|B[k,:]|, norm_floor); V2 A = A / a, B = B / b, g = a·b; weight, bias, LUT copied;
// indices frozen from the converted scales. target.scale_rank must equal the V1 rank and
// target.lut_size the V1 LUT size. A V1 layer snapped in 'lut' mode contributes
// weight ⊙ S as its latent weight (so weight / S gives back its LUT values).
// FAILED_PRECONDITION for full-scale V1 layers (no factors to convert).
absl::StatusOr<std::shared_ptr<QuantLinearV2>> ConvertV1ToV2(QuantLinearV1& source, const LayerQuantSpecV2& target,
                                                             double norm_floor = 1e-8);

}  // namespace qatd::quant
