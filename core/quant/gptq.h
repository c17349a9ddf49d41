#pragma once
// Calibration-aware rounding of a V1 layer (issue #18, GPTQ: Frantar et al. 2022, "OBQ" error
// feedback). Round-to-nearest picks idx = nearest(W / S) weight by weight; GPTQ rounds the
// columns of W left to right and pushes each column's rounding error onto the columns not yet
// rounded, weighted by the inverse of the layer's input Hessian H = X^T X, so that the layer's
// *output* error ||X W^T - X Q^T||^2 = tr((W - Q) H (W - Q)^T) falls, not just ||W - Q||^2.
//
// Over a LUT with fixed per-weight scales (V1: S = A @ B as initialised, the layer's LUT,
// uniform or k-means) the quantizer of column j is q_j = S_j * LUT[nearest(w_j / S_j)] with the
// layer's own index rule (lut.h: nearest entry, ties to the lower), so the result is a set of
// V1 indices. The algorithm is the paper's (blocked, lazy batch updates):
//   H += damp * mean(diag H) * I; U = upper Cholesky factor of H^-1;
//   for each block of `block_size` columns, for each column j in it:
//     q_j = quantize(w_j); e = (w_j - q_j) / U_jj; w_k -= e * U_jk for the block's k > j;
//   then the block's errors update every column right of the block in one matmul.
// Differences from the paper, on purpose:
//   - dead columns (diag H = 0: an input that never fired during calibration) keep their
//     weights and get plain nearest rounding (the paper zeroes them first); their row and
//     column of H are 0, so no error flows into or out of them;
//   - if the Cholesky fails, the damping is multiplied by 10 (up to 4 times) before giving up.
// act_order (off by default here; GptqInitialize turns it on) rounds the columns in descending
// diag(H) order (the GPTQ code's "act-order" heuristic); with per-weight scales nothing else
// changes (no group boundaries to keep).
//
// Everything runs in float32 on the weight's device; deterministic for a given device.

#include <ATen/ATen.h>

#include <cstdint>

#include "absl/status/statusor.h"

namespace qatd::quant {

class QuantLinearV1;
class QuantLinearV2;

struct GptqOptions {
  double damp = 0.01;        // fraction of mean(diag H) added to the diagonal; > 0
  int64_t block_size = 128;  // columns per lazy batch update; >= 1
  bool act_order = false;    // descending diag(H) column order
  // V2 scales (A diag g) B are signed: divide by S as it is, only moving |S| < kMinScale out
  // to +-kMinScale (keeping the sign; 0 becomes +kMinScale) so that nothing divides by zero.
  // Off (V1): S is clamped to >= kMinScale as the V1 layer does.
  bool signed_scales = false;
};

struct GptqResult {
  at::Tensor q;                // [O, I] float32: S * LUT[indices]
  at::Tensor indices;          // [O, I] int64 LUT indices
  double error_nearest = 0;    // tr((W - Q_rtn) H (W - Q_rtn)^T) with the undamped H
  double error_gptq = 0;       // the same for GPTQ's Q
  int64_t dead_columns = 0;    // columns with diag(H) == 0
  double damp = 0;             // the damping added to the diagonal (absolute)
};

// weight: [O, I] floating; scales: [O, >= I] (the first I columns are used, clamped to
// kMinScale as the layer does); lut: [n] sorted ascending (CheckLut); hessian: [I, I] symmetric
// positive semi-definite, finite. INVALID_ARGUMENT for bad shapes or options, non-finite H;
// FAILED_PRECONDITION when H stays indefinite after the extra damping.
absl::StatusOr<GptqResult> GptqRound(const at::Tensor& weight, const at::Tensor& scales, const at::Tensor& lut,
                                     const at::Tensor& hessian, const GptqOptions& options = {});

struct GptqLayerReport {
  double error_nearest = 0;       // as GptqResult, in float32 of the layer's state
  double error_gptq = 0;
  int64_t dead_columns = 0;
  int64_t indices_changed = 0;    // weights whose index differs from round-to-nearest's
  int64_t index_mismatches = 0;   // ComputeIndices() after the update != GPTQ's (expected 0)
};

// Runs GptqRound on `layer` (not snapped) with its current S = EffectiveScales() and LUT, then
// sets its latent weight to Q = S * LUT[idx] (in the weight dtype), so that the layer's own
// nearest rounding of W / S lands on GPTQ's indices; index_mismatches counts where it does not
// (a value that the weight dtype rounds across a boundary). Scales, LUT and bias are unchanged.
absl::StatusOr<GptqLayerReport> ApplyGptqRounding(QuantLinearV1& layer, const at::Tensor& hessian,
                                                  const GptqOptions& options = {});

// V2 (the Q4 -> Q2 conversion's rounding): GptqRound of the layer's latent weight with its
// signed S = (A diag g) B (options.signed_scales is forced on) and its LUT, then the result
// becomes the layer's frozen indices (SetFrozenIndices: _Q = LUT[idx]); weight, scales, LUT
// and bias are unchanged. indices_changed counts against the layer's nearest indices (frozen
// ones, or those FreezeQ would compute); index_mismatches is 0 by construction. Not for a
// baked (snapped) layer.
absl::StatusOr<GptqLayerReport> ApplyGptqRoundingV2(QuantLinearV2& layer, const at::Tensor& hessian,
                                                    GptqOptions options = {});

}  // namespace qatd::quant
