#pragma once
// V1 LUT fake quant as operations (spec §3.5), shared by QuantLinearV1, snapping and the tests:
//
//   s   = clamp(S, 1e-8)         S: [O, >= I] (A @ B or full scales; only the first I columns)
//   idx = nearest LUT entry of float32(W) / float32(s)   (ties to the lower index, spec §2.2)
//   W_q = LUT[idx] * s           [O, I] in W's dtype
//
// On CUDA, with the fused kernels built (core/cuda), each op is one kernel; otherwise (and with
// FakeQuantBackend::kAten) the ATen path, which row-blocks the index search of very large
// matrices (lm_head) to bound its float32/int64 temporaries. Both give identical values (a test
// compares them bit for bit).

#include <ATen/core/Tensor.h>

namespace qatd::quant {

inline constexpr double kMinScale = 1e-8;  // spec §3.4

enum class FakeQuantBackend { kAuto, kAten };

// W_q, no autograd graph. weight [O, I], scales [O, >= I], lut [n] (W's dtype), boundaries
// [n - 1] float32 (lut.h LutBoundaries) on W's device.
at::Tensor LutFakeQuant(const at::Tensor& weight, const at::Tensor& scales, const at::Tensor& lut,
                        const at::Tensor& boundaries, FakeQuantBackend backend = FakeQuantBackend::kAuto);

// The same with S = scale_a @ scale_b (scale_a [O, r], scale_b [r, >= I]); on CUDA the kernel
// forms S itself for r <= 64 (its float32 sum of r exact products, rounded once to W's dtype, can
// differ from cuBLAS's in the last bit of S in rare cases; tests bound how rare).
at::Tensor LutFakeQuantLowRank(const at::Tensor& weight, const at::Tensor& scale_a, const at::Tensor& scale_b,
                               const at::Tensor& lut, const at::Tensor& boundaries,
                               FakeQuantBackend backend = FakeQuantBackend::kAuto);

// dL/dS (unclamped, [O, I]) from grad = dL/dW_q [O, I]: grad * LUT[idx] where S >= 1e-8, else 0
// (the backward of LUT[idx] * clamp_min(S, 1e-8); the index carries no gradient).
at::Tensor LutScaleGrad(const at::Tensor& weight, const at::Tensor& scales, const at::Tensor& grad,
                        const at::Tensor& lut, const at::Tensor& boundaries,
                        FakeQuantBackend backend = FakeQuantBackend::kAuto);

at::Tensor LutScaleGradLowRank(const at::Tensor& weight, const at::Tensor& scale_a, const at::Tensor& scale_b,
                               const at::Tensor& grad, const at::Tensor& lut, const at::Tensor& boundaries,
                               FakeQuantBackend backend = FakeQuantBackend::kAuto);

// LUT[idx] [O, I] in the LUT dtype for weight / s, where s [O, >= I] is already clamped (the
// ATen path's index search, row-blocked for very large matrices). No autograd.
at::Tensor LutValues(const at::Tensor& weight, const at::Tensor& s, const at::Tensor& lut,
                     const at::Tensor& boundaries);

// LUT indices [O, I] of `index_type` (kLong or kByte) of weight / clamp(scales); scales
// undefined: of the weight itself (a 'lut'-snapped layer). No autograd.
at::Tensor LutIndices(const at::Tensor& weight, const at::Tensor& scales, const at::Tensor& boundaries,
                      at::ScalarType index_type);

// y = x W_qᵀ + bias with W_q = LutFakeQuant(weight, scale_a @ scale_b): x [..., I] -> [..., O]
// in x's dtype. One autograd node (spec §3.5 with the §17.1 fix): dL/dweight = dL/dW_q
// (straight-through), dL/dA and dL/dB through S (LutScaleGrad), dL/dx = dL/dy W_q. With the
// fused CUDA kernel W_q and S are recomputed in the backward instead of being saved (a bf16
// Qwen3-0.6B saves 0.9 GB); the ATen path (CPU) saves W_q, whose recomputation costs more there.
// scale_b [r, I] (narrow a padded B first); bias [O] or undefined.
at::Tensor FakeQuantLinear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale_a,
                           const at::Tensor& scale_b, const at::Tensor& bias, const at::Tensor& lut,
                           const at::Tensor& boundaries);

// ---- V2 with frozen indices (quant_linear_v2.h, dense paths) ----
//
//   W = LUT[idx] ⊙ (a @ b)     a = Â diag ĝ [O, r], b = B̂ [r, I], idx frozen (spec §4.5)
//   W = Ste16(W) with round_fp16 (kDenseSte: the fp16 weight the ANE runs, quant_linear_v2.h)
//
// q [O, I] holds LUT[idx] in the LUT's dtype (the layer's "_Q"), indices [O, I] uint8 the same
// as indices (the CUDA kernel reads one byte per weight instead of the values). No autograd.
at::Tensor FrozenLutWeight(const at::Tensor& q, const at::Tensor& indices, const at::Tensor& lut, const at::Tensor& a,
                           const at::Tensor& b, bool round_fp16, FakeQuantBackend backend = FakeQuantBackend::kAuto);
// dL/dS = grad ⊙ LUT[idx] (the fp16 rounding passes the gradient straight through).
at::Tensor FrozenLutScaleGrad(const at::Tensor& q, const at::Tensor& indices, const at::Tensor& lut,
                              const at::Tensor& grad, FakeQuantBackend backend = FakeQuantBackend::kAuto);

// y = x Wᵀ + bias with W = FrozenLutWeight(...): one autograd node in place of the ~15 small
// ops of the composition (quant_linear_v2.cc). dL/da = (dL/dW ⊙ Q) bᵀ, dL/db = aᵀ (dL/dW ⊙ Q),
// dL/dx = dL/dy W; q carries no gradient (pass LUT[idx] detached), the LUT does when it requires
// grad: dL/dLUT[j] = Σ_{idx = j} (dL/dW ⊙ (a @ b)). W is saved for the backward (V2 keeps no
// latent-weight optimizer state, so memory is not its limit). x, q, lut, a and b share one
// floating dtype; bias [O] or undefined.
at::Tensor FrozenLutLinear(const at::Tensor& x, const at::Tensor& q, const at::Tensor& indices, const at::Tensor& lut,
                           const at::Tensor& a, const at::Tensor& b, const at::Tensor& bias, bool round_fp16);

}  // namespace qatd::quant
