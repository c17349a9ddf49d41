// Fused CUDA kernels of qatd (see kernels.h). Plain CUDA: no LibTorch headers, so this file
// compiles in seconds and nvcc never sees ATen.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math_constants.h>

#include <cstdint>
#include <type_traits>

#include "core/cuda/kernels.h"

namespace qatd::cuda {
namespace {

constexpr int kMaxLut = 256;
constexpr int kThreads = 256;

template <typename T>
__device__ __forceinline__ float ToFloat(T v);
template <>
__device__ __forceinline__ float ToFloat<float>(float v) { return v; }
template <>
__device__ __forceinline__ float ToFloat<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <>
__device__ __forceinline__ float ToFloat<__half>(__half v) { return __half2float(v); }

// Round to nearest even, as c10::BFloat16 / c10::Half conversions do.
template <typename T>
__device__ __forceinline__ T FromFloat(float v);
template <>
__device__ __forceinline__ float FromFloat<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <>
__device__ __forceinline__ __half FromFloat<__half>(float v) { return __float2half_rn(v); }

struct LutShared {
  float lut[kMaxLut];
  float bounds[kMaxLut];
};

template <typename T>
__device__ __forceinline__ void LoadLut(const LutArgs& a, LutShared& sh) {
  const T* lut = static_cast<const T*>(a.lut);
  for (int j = threadIdx.x; j < a.lut_size; j += blockDim.x) {
    sh.lut[j] = ToFloat(lut[j]);
    if (j + 1 < a.lut_size) sh.bounds[j] = a.boundaries[j];
  }
  __syncthreads();
}

// #{ bounds < u } by binary search (bounds sorted ascending). NaN u gives 0.
__device__ __forceinline__ int CountBelow(const float* bounds, int n, float u) {
  int lo = 0, hi = n;
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (bounds[mid] < u) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// clamp_min as ATen evaluates it on `T`: NaN stays NaN.
__device__ __forceinline__ float ClampMin(float s, float min_scale) { return (s < min_scale) ? min_scale : s; }

// Grid: x = row, y = tile of kTileCols columns. Each block stages the LUT, its boundaries and
// the row's scale_A entries in shared memory; threads walk the tile's columns with coalesced
// loads.
constexpr int kTileCols = 2048;

template <typename T, bool kGrad>
__global__ void LutKernel(LutArgs a, float min_scale) {
  __shared__ LutShared sh;
  __shared__ float a_row[kMaxFusedRank];
  const int64_t r = blockIdx.x;
  const bool fused_s = a.scale_a != nullptr;
  if (fused_s) {
    const T* sa = static_cast<const T*>(a.scale_a) + r * a.scale_a_stride;
    for (int k = threadIdx.x; k < a.rank; k += blockDim.x) a_row[k] = ToFloat(sa[k]);
  }
  LoadLut<T>(a, sh);  // ends with __syncthreads()
  const T* w = static_cast<const T*>(a.weight) + r * a.weight_stride;
  const T* s = fused_s ? nullptr : static_cast<const T*>(a.scales) + r * a.scales_stride;
  const T* sb = static_cast<const T*>(a.scale_b);
  const T* g = kGrad ? static_cast<const T*>(a.grad) + r * a.grad_stride : nullptr;
  T* out = static_cast<T*>(a.out) + r * a.out_stride;
  const int nb = a.lut_size - 1;
  const int64_t begin = static_cast<int64_t>(blockIdx.y) * kTileCols;
  const int64_t end = begin + kTileCols < a.cols ? begin + kTileCols : a.cols;
  for (int64_t c = begin + threadIdx.x; c < end; c += blockDim.x) {
    float s_raw;
    if (fused_s) {
      float acc = 0.0f;
      for (int k = 0; k < a.rank; ++k) acc += a_row[k] * ToFloat(sb[k * a.scale_b_stride + c]);
      s_raw = ToFloat(FromFloat<T>(acc));
    } else {
      s_raw = ToFloat(s[c]);
    }
    const float sc = ClampMin(s_raw, min_scale);
    const float u = ToFloat(w[c]) / sc;
    const float q = sh.lut[CountBelow(sh.bounds, nb, u)];
    if constexpr (kGrad) {
      // Two roundings, as ATen's mul (T) then where(): grad * q in T, masked where clamped.
      out[c] = (s_raw >= min_scale) ? FromFloat<T>(ToFloat(g[c]) * q) : FromFloat<T>(0.0f);
    } else {
      out[c] = FromFloat<T>(q * sc);
    }
  }
}

// The clamp bound as a value of T: ATen casts clamp_min's scalar to the tensor dtype (fp16
// even flushes 1e-8 to 0).
template <typename T>
float MinScaleOf(double v) {
  const float f = static_cast<float>(v);
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return __bfloat162float(__float2bfloat16_rn(f));
  if constexpr (std::is_same_v<T, __half>) return __half2float(__float2half_rn(f));
  return f;
}

template <typename T>
const char* LaunchLut(const LutArgs& a, bool grad, void* stream) {
  if (a.rows <= 0 || a.cols <= 0) return nullptr;
  if (a.lut_size < 2 || a.lut_size > kMaxLut) return "lut_size must be in [2, 256]";
  const float min_scale = MinScaleOf<T>(a.min_scale);
  if (a.scale_a != nullptr && (a.rank < 1 || a.rank > kMaxFusedRank)) return "fused scales need 1 <= rank <= 64";
  if (a.rows > 0x7fffffffLL) return "too many rows";
  const dim3 grid(static_cast<unsigned>(a.rows), static_cast<unsigned>((a.cols + kTileCols - 1) / kTileCols));
  auto st = static_cast<cudaStream_t>(stream);
  if (grad) {
    LutKernel<T, true><<<grid, kThreads, 0, st>>>(a, min_scale);
  } else {
    LutKernel<T, false><<<grid, kThreads, 0, st>>>(a, min_scale);
  }
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

const char* DispatchLut(const LutArgs& a, bool grad, void* stream) {
  switch (a.type) {
    case ElementType::kFloat32:
      return LaunchLut<float>(a, grad, stream);
    case ElementType::kBFloat16:
      return LaunchLut<__nv_bfloat16>(a, grad, stream);
    case ElementType::kFloat16:
      return LaunchLut<__half>(a, grad, stream);
  }
  return "unsupported element type";
}

// Block-wide reduction of (max, sum of exp relative to max) pairs.
__device__ __forceinline__ void MergeLse(float& m, float& s, float m2, float s2) {
  if (m2 == -INFINITY) return;
  if (m == -INFINITY) {
    m = m2;
    s = s2;
    return;
  }
  if (m2 > m) {
    s = s * expf(m - m2) + s2;
    m = m2;
  } else {
    s = s + s2 * expf(m2 - m);
  }
}

template <typename T>
__global__ void RowLseKernel(const T* z, int64_t cols, int64_t stride, float* lse) {
  const T* row = z + static_cast<int64_t>(blockIdx.x) * stride;
  float m = -INFINITY, s = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float v = ToFloat(row[c]);
    if (v == -INFINITY) continue;
    if (v > m) {
      s = (m == -INFINITY ? 0.0f : s * expf(m - v)) + 1.0f;
      m = v;
    } else {
      s += expf(v - m);
    }
  }
  for (int off = 16; off > 0; off >>= 1) {
    const float m2 = __shfl_down_sync(0xffffffffu, m, off);
    const float s2 = __shfl_down_sync(0xffffffffu, s, off);
    MergeLse(m, s, m2, s2);
  }
  __shared__ float sm[kThreads / 32], ss[kThreads / 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    sm[warp] = m;
    ss[warp] = s;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float mm = sm[0], st = ss[0];
    for (int w = 1; w < kThreads / 32; ++w) MergeLse(mm, st, sm[w], ss[w]);
    lse[blockIdx.x] = mm + logf(st);
  }
}

template <typename T>
__global__ void CeGradKernel(const T* z, int64_t cols, int64_t stride, const float* lse, const int64_t* target,
                             float scale, T* out) {
  const int64_t r = blockIdx.x;
  const T* row = z + r * stride;
  T* dst = out + r * cols;
  const float l = lse[r];
  const int64_t t = target[r];
  const int64_t begin = static_cast<int64_t>(blockIdx.y) * kTileCols;
  const int64_t end = begin + kTileCols < cols ? begin + kTileCols : cols;
  for (int64_t c = begin + threadIdx.x; c < end; c += blockDim.x) {
    const float p = expf(ToFloat(row[c]) - l);
    dst[c] = FromFloat<T>((p - (c == t ? 1.0f : 0.0f)) * scale);
  }
}

template <typename T>
__global__ void AdamWKernel(const AdamWTensor* tensors, const int64_t* chunk_begin, int count, AdamWHyper h) {
  // The tensor of this block's chunk: the last t with chunk_begin[t] <= blockIdx.x.
  const int64_t chunk = blockIdx.x;
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (chunk_begin[mid] <= chunk) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  const AdamWTensor t = tensors[lo];
  const int64_t begin = (chunk - chunk_begin[lo]) * kAdamWChunk;
  int64_t end = begin + kAdamWChunk;
  if (end > t.numel) end = t.numel;
  const float decay = static_cast<float>(h.decay_factor);
  const float b1 = static_cast<float>(h.beta1), b2 = static_cast<float>(h.beta2);
  const float a1 = static_cast<float>(1.0 - h.beta1), a2 = static_cast<float>(1.0 - h.beta2);
  const float bc2 = static_cast<float>(h.bc2_sqrt), eps = static_cast<float>(h.eps);
  const float neg_step = static_cast<float>(-h.step_size);
  const T* grad = static_cast<const T*>(t.grad);
  T* param = static_cast<T*>(t.param);
  const bool write_param = static_cast<void*>(t.master) != t.param;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const float g = ToFloat(grad[i]);
    float w = t.master[i];
    if (h.decay_factor != 1.0) w = w * decay;
    float m = t.exp_avg[i] * b1;
    m = m + a1 * g;
    float v = t.exp_avg_sq[i] * b2;
    v = v + a2 * (g * g);
    float denom = sqrtf(v) / bc2;
    denom = denom + eps;
    w = w + neg_step * (m / denom);
    t.exp_avg[i] = m;
    t.exp_avg_sq[i] = v;
    t.master[i] = w;
    if (write_param) param[i] = FromFloat<T>(w);
  }
}

}  // namespace

const char* LutFakeQuant(const LutArgs& args, void* stream) { return DispatchLut(args, /*grad=*/false, stream); }

const char* LutScaleGrad(const LutArgs& args, void* stream) { return DispatchLut(args, /*grad=*/true, stream); }

const char* RowLogSumExp(ElementType type, const void* z, int64_t rows, int64_t cols, int64_t stride, float* lse,
                         void* stream) {
  if (rows <= 0 || cols <= 0) return nullptr;
  auto st = static_cast<cudaStream_t>(stream);
  const unsigned blocks = static_cast<unsigned>(rows);
  switch (type) {
    case ElementType::kFloat32:
      RowLseKernel<float><<<blocks, kThreads, 0, st>>>(static_cast<const float*>(z), cols, stride, lse);
      break;
    case ElementType::kBFloat16:
      RowLseKernel<__nv_bfloat16><<<blocks, kThreads, 0, st>>>(static_cast<const __nv_bfloat16*>(z), cols, stride, lse);
      break;
    case ElementType::kFloat16:
      RowLseKernel<__half><<<blocks, kThreads, 0, st>>>(static_cast<const __half*>(z), cols, stride, lse);
      break;
  }
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

const char* CrossEntropyGrad(ElementType type, const void* z, int64_t rows, int64_t cols, int64_t stride,
                             const float* lse, const int64_t* target, float scale, void* out, void* stream) {
  if (rows <= 0 || cols <= 0) return nullptr;
  auto st = static_cast<cudaStream_t>(stream);
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>((cols + kTileCols - 1) / kTileCols));
  switch (type) {
    case ElementType::kFloat32:
      CeGradKernel<float><<<grid, kThreads, 0, st>>>(static_cast<const float*>(z), cols, stride, lse, target, scale,
                                                      static_cast<float*>(out));
      break;
    case ElementType::kBFloat16:
      CeGradKernel<__nv_bfloat16><<<grid, kThreads, 0, st>>>(static_cast<const __nv_bfloat16*>(z), cols, stride, lse,
                                                              target, scale, static_cast<__nv_bfloat16*>(out));
      break;
    case ElementType::kFloat16:
      CeGradKernel<__half><<<grid, kThreads, 0, st>>>(static_cast<const __half*>(z), cols, stride, lse, target, scale,
                                                       static_cast<__half*>(out));
      break;
  }
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

const char* AdamWStep(ElementType type, const AdamWTensor* tensors, const int64_t* chunk_begin, int count,
                      int64_t total_chunks, const AdamWHyper& hyper, void* stream) {
  if (count <= 0 || total_chunks <= 0) return nullptr;
  if (total_chunks > 0x7fffffffLL) return "too many AdamW chunks";
  auto st = static_cast<cudaStream_t>(stream);
  const unsigned blocks = static_cast<unsigned>(total_chunks);
  switch (type) {
    case ElementType::kFloat32:
      AdamWKernel<float><<<blocks, kThreads, 0, st>>>(tensors, chunk_begin, count, hyper);
      break;
    case ElementType::kBFloat16:
      AdamWKernel<__nv_bfloat16><<<blocks, kThreads, 0, st>>>(tensors, chunk_begin, count, hyper);
      break;
    case ElementType::kFloat16:
      AdamWKernel<__half><<<blocks, kThreads, 0, st>>>(tensors, chunk_begin, count, hyper);
      break;
  }
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace qatd::cuda
