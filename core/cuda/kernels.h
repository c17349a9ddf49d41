#pragma once
// Fused CUDA kernels (kernels.cu), callable without LibTorch or CUDA headers: raw device
// pointers, a cudaStream_t passed as void*. Built only when CMake finds nvcc and a CUDA LibTorch
// (QATD_CUDA_KERNELS); core/cuda/fused_ops.h is the tensor-level entry point with the checks.
//
// Each launcher returns nullptr on success, else the CUDA error string of the launch.

#include <cstdint>

namespace qatd::cuda {

enum class ElementType : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

// One V1 LUT fake-quant problem over a [rows, cols] matrix (spec §3.5):
//   S   = scales, or type(Σ_k scale_a[r, k] · scale_b[k, c]) (float32 sum, rounded once to
//         `type` as a GEMM writing `type` does) when scale_a is set (rank <= kMaxFusedRank)
//   s   = max(S, min_scale)                   (min_scale rounded to `type`, as ATen's clamp_min)
//   u   = float(weight) / float(s)            float32
//   idx = #{ boundaries < u }                 nearest LUT entry, ties to the lower index
//   q   = lut[idx]
// All matrices are row-major with their own row strides (elements); `grad` is used by the
// backward only. `lut` holds lut_size (2..256) values of `type`; `boundaries` lut_size - 1
// sorted float32 midpoints (quant/lut.h LutBoundaries). Every pointer is device memory.
struct LutArgs {
  ElementType type = ElementType::kFloat32;
  int64_t rows = 0, cols = 0;
  const void* weight = nullptr;
  int64_t weight_stride = 0;
  const void* scales = nullptr;
  int64_t scales_stride = 0;
  const void* scale_a = nullptr;  // [rows, rank], or nullptr: read `scales`
  int64_t scale_a_stride = 0;
  const void* scale_b = nullptr;  // [rank, >= cols]
  int64_t scale_b_stride = 0;
  int rank = 0;
  const void* grad = nullptr;
  int64_t grad_stride = 0;
  const void* lut = nullptr;
  int lut_size = 0;
  const float* boundaries = nullptr;
  double min_scale = 1e-8;
  void* out = nullptr;
  int64_t out_stride = 0;
};

inline constexpr int kMaxFusedRank = 64;
// Rows the weight-matrix kernels (LutFakeQuant, LutScaleGrad, FrozenLut*) take: 65535 groups
// of 8 (the grid's y extent).
inline constexpr int64_t kMaxKernelRows = 65535LL * 8;

// out = type(float(q) * float(s)): the fake-quantized weight LUT[idx] * clamp(S).
const char* LutFakeQuant(const LutArgs& args, void* stream);

// out = scales >= min_scale ? type(float(grad) * float(q)) : 0: dL/dS_raw from dL/dW_q, i.e.
// the backward of `q * clamp_min(S, min_scale)` w.r.t. the unclamped S.
const char* LutScaleGrad(const LutArgs& args, void* stream);

// V2's dense effective weight with frozen LUT indices (quant/fake_quant.h FrozenLutLinear):
//   S   = type(Σ_k scale_a[r, k] · scale_b[k, c])   float32 sum of the rank products, rounded once
//   q   = lut[indices[r, c]]
//   FrozenLutWeight:    out = type(q · S); with round_fp16 the result is then clamped to ±65504
//                       (the bound rounded to `type`, as ATen's clamp does), rounded to fp16 and
//                       back to `type`: the value of quant/ste.h Ste16
//   FrozenLutScaleGrad: out = type(float(grad) · q), dL/dS of Q ⊙ S (scale_a/scale_b unused)
// Row-major matrices with their own row strides; every pointer is device memory.
struct FrozenLutArgs {
  ElementType type = ElementType::kFloat32;
  int64_t rows = 0, cols = 0;
  const uint8_t* indices = nullptr;  // [rows, cols]
  int64_t indices_stride = 0;
  const void* lut = nullptr;  // lut_size (2..256) values of `type`
  int lut_size = 0;
  const void* scale_a = nullptr;  // [rows, rank], rank <= kMaxFusedRank
  int64_t scale_a_stride = 0;
  const void* scale_b = nullptr;  // [rank, >= cols]
  int64_t scale_b_stride = 0;
  int rank = 0;
  const void* grad = nullptr;  // [rows, cols]
  int64_t grad_stride = 0;
  bool round_fp16 = false;
  void* out = nullptr;
  int64_t out_stride = 0;
};

const char* FrozenLutWeight(const FrozenLutArgs& args, void* stream);
const char* FrozenLutScaleGrad(const FrozenLutArgs& args, void* stream);

// V2's normalised scale factors (spec §4.4; quant/quant_linear_v2.h), one block per rank k:
//   a' = pos(A), b' = pos(B)             pos: identity, or abs / softplus (force_positive_scales)
//   n_k = max(T(‖a'[:, k]‖), T(norm_eps)), m_k = max(T(‖b'[k, :]‖), T(norm_eps))
//   â = T(a' / n_k), b̂ = T(b' / m_k), ĝ = T(act(g) + magnitude_eps)    act: identity / abs / softplus
//   V2Factors:         ag = T(â · ĝ) [O, r], b_dir = b̂ [r, I]
//   V2FactorsBackward: dL/dA, dL/dB, dL/dg from dL/dag and dL/db_dir (either may be null: zero),
//                      the chain rule of the same composition (clamp_min passes the norm's
//                      gradient where ‖·‖ >= eps; softplus: beta 1, threshold 20, as ATen)
// T = `type`; values are rounded to T where the ATen composition rounds them, so the two agree
// up to the order of the float32 sums. A, B, g and every output are contiguous device arrays.
enum class V2Activation : int { kIdentity = 0, kAbs = 1, kSoftplus = 2 };

struct V2FactorArgs {
  ElementType type = ElementType::kFloat32;
  int64_t out = 0, in = 0;
  int rank = 0;
  const void* a = nullptr;  // [out, rank]
  const void* b = nullptr;  // [rank, in]
  const void* g = nullptr;  // [rank]
  V2Activation positive = V2Activation::kIdentity;
  V2Activation magnitude = V2Activation::kIdentity;
  double norm_eps = 1e-6, magnitude_eps = 1e-6;
  void* ag = nullptr;     // forward: [out, rank]
  void* b_dir = nullptr;  // forward: [rank, in]
  const void* grad_ag = nullptr;     // backward inputs
  const void* grad_b_dir = nullptr;
  void* grad_a = nullptr;  // backward outputs (each may be null: not computed)
  void* grad_b = nullptr;
  void* grad_g = nullptr;
};

const char* V2Factors(const V2FactorArgs& args, void* stream);
const char* V2FactorsBackward(const V2FactorArgs& args, void* stream);

// Full-vocabulary cross entropy over rows of logits z [rows, cols] (`type`, row stride):
//   RowLogSumExp: lse[r] = log Σ_c exp(z[r, c]) in float32 (online max, one read of z).
//   CrossEntropyGrad: out[r, c] = type((exp(z[r, c] - lse[r]) - [c == target[r]]) * scale),
//   the gradient of scale * (lse - z[target]) w.r.t. z. target: int64 [rows]; lse float32.
const char* RowLogSumExp(ElementType type, const void* z, int64_t rows, int64_t cols, int64_t stride, float* lse,
                         void* stream);
const char* CrossEntropyGrad(ElementType type, const void* z, int64_t rows, int64_t cols, int64_t stride,
                             const float* lse, const int64_t* target, float scale, void* out, void* stream);

// Maxima of consecutive blocks of `block` columns: out[r, j] = max(z[r, j*block .. (j+1)*block))
// (NaN propagates), for the KD teacher's exact top-K prefilter (kd/teacher.h BlockTopK).
// Requires block * sizeof(type) to be a multiple of 16 and block / (16 / sizeof(type)) to be a
// power of two <= 32 (bf16/fp16: block 8..256; fp32: 4..128), cols % block == 0, and 16-byte
// aligned rows (stride * sizeof(type) % 16 == 0, z aligned). out is [rows, cols / block].
const char* RowBlockMax(ElementType type, const void* z, int64_t rows, int64_t cols, int64_t stride, int block,
                        void* out, void* stream);

// Rotary embedding (model/qwen3_model.cc ApplyRope):
//   forward:   out[.., d] = type(type(x[d]·cos[s, d]) + x[(d + D/2) % D] · sin_signed[s, d])
//   transpose: out[.., d] = type(type(x[d]·cos[s, d]) + x[(d + D/2) % D] · sin_signed[s, (d + D/2) % D])
// (transpose is the backward: dL/dx from dL/dout in x). x and out contiguous
// [batch, seq, heads, dim] (dim even); cos and sin_signed contiguous [seq, dim], all of `type`.
const char* ApplyRope(ElementType type, const void* x, const void* cos, const void* sin_signed, int64_t batch,
                      int64_t seq, int64_t heads, int64_t dim, bool transpose, void* out, void* stream);

// One tensor of a fused AdamW step (param and grad of `type`; float32 state). For float32
// parameters `master` is the parameter itself; otherwise the float32 master copy, and the
// parameter receives its rounded value.
struct AdamWTensor {
  void* param = nullptr;
  const void* grad = nullptr;
  float* master = nullptr;
  float* exp_avg = nullptr;
  float* exp_avg_sq = nullptr;
  int64_t numel = 0;
};

struct AdamWHyper {
  double decay_factor = 1.0;  // 1 - lr * weight_decay
  double beta1 = 0.9, beta2 = 0.999;
  double step_size = 0;  // lr / (1 - beta1^t)
  double bc2_sqrt = 1;   // sqrt(1 - beta2^t)
  double eps = 1e-8;
};

// Elements per block-chunk of AdamWStep: tensor t covers chunks
// [chunk_begin[t], chunk_begin[t + 1]) with chunk_begin[t + 1] - chunk_begin[t] =
// ceil(numel / kAdamWChunk).
constexpr int64_t kAdamWChunk = 4096;

// One launch for `count` tensors. `tensors` [count] and `chunk_begin` [count + 1] are DEVICE
// arrays (the caller uploads them); the arithmetic is train/optimizer.h's, op for op in float32.
const char* AdamWStep(ElementType type, const AdamWTensor* tensors, const int64_t* chunk_begin, int count,
                      int64_t total_chunks, const AdamWHyper& hyper, void* stream);

}  // namespace qatd::cuda
