#pragma once
// Tensor-level entry points of the fused CUDA kernels (kernels.cu). Each Try* function checks
// that its kernel applies and returns false without touching anything when it does not, so the
// caller runs its ATen path instead:
//   - the kernels were not compiled (LibTorch without CUDA, no nvcc, QATD_CUDA_KERNELS=OFF) or
//     are switched off (SetFusedKernelsEnabled(false), or QATD_FUSED_KERNELS=0 in the
//     environment at start-up);
//   - a tensor is not on the same CUDA device, has another dtype than float32/bfloat16/float16
//     (or dtypes differ where they must match), or its last dimension is not contiguous.
// A CUDA launch failure throws c10::Error. The kernels run on the current CUDA stream.
// Tests compare every kernel against its ATen path (tests/core/cuda/fused_ops_test.cc).

#include <ATen/core/Tensor.h>

#include <functional>
#include <vector>

#include "core/cuda/allocator_defaults.h"

namespace qatd::cuda {

// False when QATD_CUDA_GRAPHS=0 is set: the trainer's micro-step (train/micro_step.h) and the
// KD teacher pass (kd/teacher.h) then run eagerly.
bool CudaGraphsAllowedByEnvironment();

// Benchmark helper: runs `fn` (CUDA work on the current device) once eagerly on a side stream,
// captures one call as a CUDA graph and returns the median milliseconds of `iters` replays,
// each synchronised; the GPU cost of `fn` without its host-side launch cost, as a training step
// replayed from a graph pays it. Returns false (and leaves *median_ms) when CUDA graphs are not
// built or the capture fails.
bool MedianGraphReplayMs(const std::function<void()>& fn, int iters, double* median_ms);

bool FusedKernelsCompiled();
bool FusedKernelsEnabled();
void SetFusedKernelsEnabled(bool on);

// V1 fake quant (kernels.h LutFakeQuant). weight [O, I], scales [O, >= I] (the unclamped
// A @ B; only its first I columns are read), lut [n] of the weight dtype, boundaries [n - 1]
// float32 on the same device. *out = LUT[idx] * clamp(S) as a new [O, I] tensor.
bool TryLutFakeQuant(const at::Tensor& weight, const at::Tensor& scales, const at::Tensor& lut,
                     const at::Tensor& boundaries, double min_scale, at::Tensor* out);

// The same with S = scale_a @ scale_b formed inside the kernel (scale_a [O, r], scale_b [r, >= I],
// r <= 64): no [O, I] scale matrix and no GEMM launch.
bool TryLutFakeQuantLowRank(const at::Tensor& weight, const at::Tensor& scale_a, const at::Tensor& scale_b,
                            const at::Tensor& lut, const at::Tensor& boundaries, double min_scale, at::Tensor* out);

// dL/dS (kernels.h LutScaleGrad) from grad = dL/dW_q [O, I]: a new [O, I] tensor.
bool TryLutScaleGrad(const at::Tensor& weight, const at::Tensor& scales, const at::Tensor& grad,
                     const at::Tensor& lut, const at::Tensor& boundaries, double min_scale, at::Tensor* out);

bool TryLutScaleGradLowRank(const at::Tensor& weight, const at::Tensor& scale_a, const at::Tensor& scale_b,
                            const at::Tensor& grad, const at::Tensor& lut, const at::Tensor& boundaries,
                            double min_scale, at::Tensor* out);

// V2's dense effective weight with frozen indices (kernels.h FrozenLutWeight): indices [O, I]
// uint8, lut [n] (n <= 256), scale_a [O, r] (r <= 64) and scale_b [r, >= I] of one floating
// dtype on the indices' device. *out = type(LUT[idx] * (scale_a @ scale_b)), with round_fp16
// (ignored for fp16) clamped and rounded to fp16 as Ste16's value: a new [O, I] tensor.
bool TryFrozenLutWeight(const at::Tensor& indices, const at::Tensor& lut, const at::Tensor& scale_a,
                        const at::Tensor& scale_b, bool round_fp16, at::Tensor* out);
// *out = grad * LUT[idx] ([O, I], grad's dtype = the LUT's): dL/dS of LUT[idx] ⊙ S.
bool TryFrozenLutScaleGrad(const at::Tensor& indices, const at::Tensor& lut, const at::Tensor& grad, at::Tensor* out);

// V2's normalised factors (kernels.h V2Factors): scale_a [O, r], scale_b [r, I], g [r] of one
// floating dtype on one CUDA device (contiguous). positive / magnitude: 0 identity, 1 abs,
// 2 softplus. *ag = Â diag ĝ [O, r], *b_dir = B̂ [r, I].
bool TryV2Factors(const at::Tensor& scale_a, const at::Tensor& scale_b, const at::Tensor& g, int positive,
                  int magnitude, double norm_eps, double magnitude_eps, at::Tensor* ag, at::Tensor* b_dir);
// The backward (kernels.h V2FactorsBackward): grad_ag [O, r] and grad_b_dir [r, I] (either may
// be undefined: zero). Fills the outputs whose pointer is non-null.
bool TryV2FactorsBackward(const at::Tensor& scale_a, const at::Tensor& scale_b, const at::Tensor& g, int positive,
                          int magnitude, double norm_eps, double magnitude_eps, const at::Tensor& grad_ag,
                          const at::Tensor& grad_b_dir, at::Tensor* grad_a, at::Tensor* grad_b, at::Tensor* grad_g);

// Full-vocabulary cross entropy on logits z [N, V] (float32/bf16/fp16, rows contiguous):
// *lse = float32 [N] log-sum-exp per row; *grad = z-typed [N, V]
// (softmax(z) - onehot(target)) * scale, target int64 [N].
bool TryRowLogSumExp(const at::Tensor& z, at::Tensor* lse);
bool TryCrossEntropyGrad(const at::Tensor& z, const at::Tensor& lse, const at::Tensor& target, double scale,
                         at::Tensor* grad);

// Block maxima of z [rows, cols] (kernels.h RowBlockMax): *out = [rows, cols / block], z's
// dtype; false when the block, width or alignment does not suit the kernel.
bool TryRowBlockMax(const at::Tensor& z, int64_t block, at::Tensor* out);

// Rotary embedding (kernels.h ApplyRope; no autograd here: model/qwen3_model.cc wraps it in a
// node whose backward is the transpose): x contiguous [B, S, H, D], cos and sin_signed
// contiguous with S * D elements ([S, 1, D]), one dtype. false when the shapes do not fit.
bool TryApplyRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin_signed, bool transpose,
                  at::Tensor* out);

// One fused AdamW update of every tensor (kernels.h AdamWStep), in one launch. The vectors are
// parallel; masters[i] is undefined for float32 parameters (updated in place) and the float32
// master of a bf16/fp16 parameter otherwise. decay_factor = 1 - lr * weight_decay,
// step_size = lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t).
struct AdamWScalars {
  double decay_factor, beta1, beta2, step_size, bc2_sqrt, eps;
};
bool TryAdamW(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
              const std::vector<at::Tensor>& masters, const std::vector<at::Tensor>& exp_avgs,
              const std::vector<at::Tensor>& exp_avg_sqs, const AdamWScalars& scalars);

}  // namespace qatd::cuda
