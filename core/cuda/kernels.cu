// Fused CUDA kernels of qatd (see kernels.h). Plain CUDA: no LibTorch headers, so this file
// compiles in seconds and nvcc never sees ATen.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

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

template <typename T, bool kGrad>
__global__ void LutKernel(LutArgs a, float min_scale) {
  __shared__ LutShared sh;
  LoadLut<T>(a, sh);
  const T* w = static_cast<const T*>(a.weight);
  const T* s = static_cast<const T*>(a.scales);
  const T* g = static_cast<const T*>(a.grad);
  T* out = static_cast<T*>(a.out);
  const int nb = a.lut_size - 1;
  const int64_t total = a.rows * a.cols;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = e / a.cols;
    const int64_t c = e - r * a.cols;
    const float s_raw = ToFloat(s[r * a.scales_stride + c]);
    const float sc = ClampMin(s_raw, min_scale);
    const float u = ToFloat(w[r * a.weight_stride + c]) / sc;
    const float q = sh.lut[CountBelow(sh.bounds, nb, u)];
    if constexpr (kGrad) {
      const float gv = ToFloat(g[r * a.grad_stride + c]);
      // Two roundings, as ATen's mul (T) then where(): grad * q in T, masked where clamped.
      out[r * a.out_stride + c] = (s_raw >= min_scale) ? FromFloat<T>(gv * q) : FromFloat<T>(0.0f);
    } else {
      out[r * a.out_stride + c] = FromFloat<T>(q * sc);
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
  const int64_t total = a.rows * a.cols;
  const int64_t blocks64 = (total + kThreads - 1) / kThreads;
  const int blocks = static_cast<int>(blocks64 < 65535 * 32 ? blocks64 : 65535 * 32);
  auto st = static_cast<cudaStream_t>(stream);
  if (grad) {
    LutKernel<T, true><<<blocks, kThreads, 0, st>>>(a, min_scale);
  } else {
    LutKernel<T, false><<<blocks, kThreads, 0, st>>>(a, min_scale);
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
