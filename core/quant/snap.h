#pragma once
// Snapping: turning a trained fake-quant layer into its deployable form (spec §10, §4.7).
//
//   V1 kLut:        weight <- LUT[idx]           forward: weight ⊙ S[:, :I]
//   V1 kBakeScales: weight <- LUT[idx] ⊙ S       forward: weight     (rounded to weight dtype)
//   V2 export:      scale_A <- Â diag(ĝ), scale_B <- B̂, g <- 1, baked flag set
//   V2 ANE (fp16):  the export bake in fp16 (products formed in float32, rounded once), LUT,
//                   _Q, weight and bias in fp16, optional index recomputation from
//                   fp16(weight) / fp16(S) — without the reference's clamp of negative
//                   scales (spec §17.7) and with the baked flag persisted (spec §17.6).
//
// Each snap returns statistics comparing the layer before and after.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/quant/quant_linear_v1.h"
#include "core/quant/quant_linear_v2.h"

namespace qatd::quant {

struct SnapStats {
  std::string name;               // set by model-level helpers
  double rel_error = 0.0;         // mean|W_after - W_latent| / mean|W_latent| (spec §10.1 metric)
  double effective_change = 0.0;  // mean|W_after - W_before| / mean|W_before|: the snap gap
  double indices_changed = 0.0;   // fraction of LUT indices that differ before vs after
  // How many weights map to each LUT entry after the snap (size: the layer's LUT size): a LUT
  // whose entries go unused wastes bits (qatd_job_lut_entry_usage_ratio, server/metrics.h).
  std::vector<int64_t> lut_counts;
};

// Histogram of `indices` (any integer dtype) over [0, lut_size).
std::vector<int64_t> LutEntryCounts(const at::Tensor& indices, int64_t lut_size);

// mode must be kLut or kBakeScales. Re-snapping a snapped layer is allowed (indices are read
// correctly in every mode). The cache is cleared.
absl::StatusOr<SnapStats> SnapV1(QuantLinearV1& layer, SnapMode mode);

// Bakes Â diag(ĝ) into scale_A (spec §4.7 snap_for_export). Freezes Q first if needed.
// A no-op on a layer that is already baked.
absl::StatusOr<SnapStats> SnapV2ForExport(QuantLinearV2& layer);

struct AneSnapOptions {
  // false (HEAD default): keep the trained indices; true (505b9fe): recompute them from
  // fp16(weight) / fp16(S) against the fp16 LUT.
  bool recompute_indices = false;
};
// FP16 snap for ANE (spec §4.7, §10.2). Afterwards every floating tensor of the layer is fp16.
absl::StatusOr<SnapStats> SnapV2ForAne(QuantLinearV2& layer, const AneSnapOptions& options = {});

}  // namespace qatd::quant
