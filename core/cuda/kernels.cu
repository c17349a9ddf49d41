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

// Runs f(TypeTag<T>{}) for the element type `type` (the one dtype switch of this file).
template <typename T>
struct TypeTag {
  using type = T;
};

template <typename F>
const char* WithType(ElementType type, F&& f) {
  switch (type) {
    case ElementType::kFloat32:
      return f(TypeTag<float>{});
    case ElementType::kBFloat16:
      return f(TypeTag<__nv_bfloat16>{});
    case ElementType::kFloat16:
      return f(TypeTag<__half>{});
  }
  return "unsupported element type";
}

// The launch status: nullptr or the CUDA error string.
const char* LaunchStatus() {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

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

// Column tiles of the per-row kernels (CeGradKernel): one block per row and tile.
constexpr int kTileCols = 2048;

// The weight-matrix kernels (V1 LutKernel, V2 FrozenLutKernel) give each thread kWCols adjacent
// columns of kWRows rows; grid: x = tiles of kWThreads * kWCols columns, y = groups of kWRows
// rows. A block stages the LUT and its group's scale_A rows (k-major: one rank step reads the 8
// rows' values as two float4) in shared memory once, and each scale_B value is read once for
// the 8 rows. One row per block, as these kernels first had, spent more time on per-block set-up
// than on the 1024 weights of the row (3.9 ms per V1 pass over Qwen3-0.6B on an H100).
constexpr int kWRows = 8;
constexpr int kWCols = 2;
constexpr int kWThreads = 128;

// acc[c][j] = Σ_k a_cols[k][j] · sb[k * stride + c] for the thread's columns (sb offset to them).
template <typename T>
__device__ __forceinline__ void LowRankTile(const float (*a_cols)[kWRows], const T* sb, int64_t stride, int rank,
                                            int ncols, float (&acc)[kWCols][kWRows]) {
#pragma unroll
  for (int c = 0; c < kWCols; ++c) {
#pragma unroll
    for (int j = 0; j < kWRows; ++j) acc[c][j] = 0.0f;
  }
  for (int k = 0; k < rank; ++k) {
    float bv[kWCols];
#pragma unroll
    for (int c = 0; c < kWCols; ++c) bv[c] = c < ncols ? ToFloat(sb[k * stride + c]) : 0.0f;
    const float4 lo = *reinterpret_cast<const float4*>(&a_cols[k][0]);
    const float4 hi = *reinterpret_cast<const float4*>(&a_cols[k][4]);
    const float av[kWRows] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
#pragma unroll
    for (int c = 0; c < kWCols; ++c) {
#pragma unroll
      for (int j = 0; j < kWRows; ++j) acc[c][j] += av[j] * bv[c];
    }
  }
}

// Stages rows r0 .. r0 + nrows - 1 of scale_a [rows, rank] k-major (zeros past nrows).
template <typename T>
__device__ __forceinline__ void StageScaleA(const T* sa, int64_t stride, int64_t r0, int nrows, int rank,
                                            float (*a_cols)[kWRows]) {
  for (int e = threadIdx.x; e < kWRows * rank; e += blockDim.x) {
    const int j = e / rank, k = e % rank;
    a_cols[k][j] = j < nrows ? ToFloat(sa[(r0 + j) * stride + k]) : 0.0f;
  }
}

template <typename T, bool kGrad>
__global__ void __launch_bounds__(kWThreads) LutKernel(LutArgs a, float min_scale) {
  __shared__ LutShared sh;
  __shared__ __align__(16) float a_cols[kMaxFusedRank][kWRows];
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kWRows;
  const int nrows = a.rows - r0 < kWRows ? static_cast<int>(a.rows - r0) : kWRows;
  const bool fused_s = a.scale_a != nullptr;
  if (fused_s) StageScaleA(static_cast<const T*>(a.scale_a), a.scale_a_stride, r0, nrows, a.rank, a_cols);
  LoadLut<T>(a, sh);  // ends with __syncthreads()
  const int64_t c0 = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kWCols;
  if (c0 >= a.cols) return;
  const int ncols = a.cols - c0 < kWCols ? static_cast<int>(a.cols - c0) : kWCols;
  float acc[kWCols][kWRows];
  if (fused_s) LowRankTile(a_cols, static_cast<const T*>(a.scale_b) + c0, a.scale_b_stride, a.rank, ncols, acc);
  const T* w = static_cast<const T*>(a.weight);
  const T* s = static_cast<const T*>(a.scales);
  const T* g = static_cast<const T*>(a.grad);
  T* out = static_cast<T*>(a.out);
  const int nb = a.lut_size - 1;
#pragma unroll
  for (int j = 0; j < kWRows; ++j) {
    if (j >= nrows) break;
    const int64_t r = r0 + j;
#pragma unroll
    for (int c = 0; c < kWCols; ++c) {
      if (c >= ncols) break;
      const int64_t col = c0 + c;
      const float s_raw = fused_s ? ToFloat(FromFloat<T>(acc[c][j])) : ToFloat(s[r * a.scales_stride + col]);
      const float sc = ClampMin(s_raw, min_scale);
      const float u = ToFloat(w[r * a.weight_stride + col]) / sc;
      const float q = sh.lut[CountBelow(sh.bounds, nb, u)];
      if constexpr (kGrad) {
        // Two roundings, as ATen's mul (T) then where(): grad * q in T, masked where clamped.
        out[r * a.out_stride + col] =
            (s_raw >= min_scale) ? FromFloat<T>(ToFloat(g[r * a.grad_stride + col]) * q) : FromFloat<T>(0.0f);
      } else {
        out[r * a.out_stride + col] = FromFloat<T>(q * sc);
      }
    }
  }
}

// A scalar bound as a value of T: ATen casts clamp's scalars to the tensor dtype (fp16 even
// flushes 1e-8 to 0; bf16 rounds 65504 up to 65536).
template <typename T>
float RoundedTo(double v) {
  const float f = static_cast<float>(v);
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return __bfloat162float(__float2bfloat16_rn(f));
  if constexpr (std::is_same_v<T, __half>) return __half2float(__float2half_rn(f));
  return f;
}

const char* DispatchLut(const LutArgs& a, bool grad, void* stream) {
  if (a.rows <= 0 || a.cols <= 0) return nullptr;
  if (a.lut_size < 2 || a.lut_size > kMaxLut) return "lut_size must be in [2, 256]";
  if (a.scale_a != nullptr && (a.rank < 1 || a.rank > kMaxFusedRank)) return "fused scales need 1 <= rank <= 64";
  const int64_t groups = (a.rows + kWRows - 1) / kWRows;
  if (groups > 65535) return "too many rows for the LUT kernels";
  constexpr int64_t kTile = kWThreads * kWCols;
  const dim3 grid(static_cast<unsigned>((a.cols + kTile - 1) / kTile), static_cast<unsigned>(groups));
  auto st = static_cast<cudaStream_t>(stream);
  return WithType(a.type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const float min_scale = RoundedTo<T>(a.min_scale);
    if (grad) {
      LutKernel<T, true><<<grid, kWThreads, 0, st>>>(a, min_scale);
    } else {
      LutKernel<T, false><<<grid, kWThreads, 0, st>>>(a, min_scale);
    }
    return LaunchStatus();
  });
}

// V2 frozen-index kernels, tiled like LutKernel (kWRows x kWCols per thread).
template <typename T, bool kGrad>
__global__ void __launch_bounds__(kWThreads) FrozenLutKernel(FrozenLutArgs a, float fp16_max) {
  __shared__ float lut[kMaxLut];
  __shared__ __align__(16) float a_cols[kMaxFusedRank][kWRows];
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kWRows;
  const int nrows = a.rows - r0 < kWRows ? static_cast<int>(a.rows - r0) : kWRows;
  const T* lut_in = static_cast<const T*>(a.lut);
  for (int j = threadIdx.x; j < a.lut_size; j += blockDim.x) lut[j] = ToFloat(lut_in[j]);
  if constexpr (!kGrad) StageScaleA(static_cast<const T*>(a.scale_a), a.scale_a_stride, r0, nrows, a.rank, a_cols);
  __syncthreads();
  const int64_t c0 = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kWCols;
  if (c0 >= a.cols) return;
  const int ncols = a.cols - c0 < kWCols ? static_cast<int>(a.cols - c0) : kWCols;
  T* out = static_cast<T*>(a.out);
  if constexpr (kGrad) {
    const T* g = static_cast<const T*>(a.grad);
    for (int j = 0; j < nrows; ++j) {
      const int64_t r = r0 + j;
      for (int c = 0; c < ncols; ++c) {
        const float q = lut[a.indices[r * a.indices_stride + c0 + c]];
        out[r * a.out_stride + c0 + c] = FromFloat<T>(ToFloat(g[r * a.grad_stride + c0 + c]) * q);
      }
    }
  } else {
    float acc[kWCols][kWRows];
    LowRankTile(a_cols, static_cast<const T*>(a.scale_b) + c0, a.scale_b_stride, a.rank, ncols, acc);
#pragma unroll
    for (int j = 0; j < kWRows; ++j) {
      if (j >= nrows) break;
      const int64_t r = r0 + j;
#pragma unroll
      for (int c = 0; c < kWCols; ++c) {
        if (c >= ncols) break;
        const float s = ToFloat(FromFloat<T>(acc[c][j]));
        const float q = lut[a.indices[r * a.indices_stride + c0 + c]];
        float p = ToFloat(FromFloat<T>(q * s));
        if (a.round_fp16) {
          // Ste16's value: clamp (NaN passes), then round to fp16 (overflow gives inf, as ATen).
          p = p < -fp16_max ? -fp16_max : (p > fp16_max ? fp16_max : p);
          p = __half2float(__float2half_rn(p));
        }
        out[r * a.out_stride + c0 + c] = FromFloat<T>(p);
      }
    }
  }
}

const char* DispatchFrozenLut(const FrozenLutArgs& a, bool grad, void* stream) {
  if (a.rows <= 0 || a.cols <= 0) return nullptr;
  if (a.lut_size < 2 || a.lut_size > kMaxLut) return "lut_size must be in [2, 256]";
  if (!grad && (a.rank < 1 || a.rank > kMaxFusedRank)) return "frozen-LUT weight needs 1 <= rank <= 64";
  const int64_t groups = (a.rows + kWRows - 1) / kWRows;
  if (groups > 65535) return "too many rows for the frozen-LUT kernels";
  constexpr int64_t kTile = kWThreads * kWCols;
  const dim3 grid(static_cast<unsigned>((a.cols + kTile - 1) / kTile), static_cast<unsigned>(groups));
  auto st = static_cast<cudaStream_t>(stream);
  return WithType(a.type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (grad) {
      FrozenLutKernel<T, true><<<grid, kWThreads, 0, st>>>(a, 0.0f);
    } else {
      FrozenLutKernel<T, false><<<grid, kWThreads, 0, st>>>(a, RoundedTo<T>(65504.0));
    }
    return LaunchStatus();
  });
}

// ---- V2 factors ----

__device__ __forceinline__ float Activate(V2Activation mode, float x) {
  if (mode == V2Activation::kAbs) return fabsf(x);
  if (mode == V2Activation::kSoftplus) return x > 20.0f ? x : log1pf(expf(x));
  return x;
}

__device__ __forceinline__ float ActivationGrad(V2Activation mode, float x) {
  if (mode == V2Activation::kAbs) return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f);
  if (mode == V2Activation::kSoftplus) {
    if (x > 20.0f) return 1.0f;
    const float z = expf(x);
    return z / (z + 1.0f);
  }
  return 1.0f;
}

template <typename T>
__device__ __forceinline__ float Round(float v) {
  return ToFloat(FromFloat<T>(v));
}

// Sum over the block (every thread gets the result). Uses `scratch` [32].
__device__ __forceinline__ float BlockSum(float v, float* scratch) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) total += scratch[w];
  return total;
}

// One direction vector: `count` elements of `raw` at stride `stride`, positivity applied and
// rounded to T; returns its clamped norm n = max(T(‖·‖), eps) and the unclamped T(‖·‖).
template <typename T>
__device__ void DirectionNorm(const T* raw, int64_t count, int64_t stride, V2Activation pos, float eps,
                              float* scratch, float* norm_t, float* clamped) {
  float ss = 0.0f;
  for (int64_t j = threadIdx.x; j < count; j += blockDim.x) {
    const float v = Round<T>(Activate(pos, ToFloat(raw[j * stride])));
    ss += v * v;
  }
  ss = BlockSum(ss, scratch);
  *norm_t = Round<T>(sqrtf(ss));
  *clamped = ClampMin(*norm_t, eps);
}

// Grid (rank, 2): block (k, 0) handles column k of A (and g_k), block (k, 1) row k of B.
constexpr int kFactorThreads = 512;

template <typename T>
__global__ void __launch_bounds__(kFactorThreads) V2FactorsKernel(V2FactorArgs a, float norm_eps, float mag_eps) {
  __shared__ float scratch[32];
  const int k = blockIdx.x;
  if (blockIdx.y == 0) {
    const T* A = static_cast<const T*>(a.a) + k;  // column k, stride rank
    float na, nca;
    DirectionNorm<T>(A, a.out, a.rank, a.positive, norm_eps, scratch, &na, &nca);
    const float g_hat = Round<T>(Round<T>(Activate(a.magnitude, ToFloat(static_cast<const T*>(a.g)[k]))) + mag_eps);
    T* ag = static_cast<T*>(a.ag) + k;
    for (int64_t o = threadIdx.x; o < a.out; o += blockDim.x) {
      const float ap = Round<T>(Activate(a.positive, ToFloat(A[o * a.rank])));
      ag[o * a.rank] = FromFloat<T>(Round<T>(ap / nca) * g_hat);
    }
  } else {
    const T* B = static_cast<const T*>(a.b) + k * a.in;  // row k
    float nb, ncb;
    DirectionNorm<T>(B, a.in, 1, a.positive, norm_eps, scratch, &nb, &ncb);
    T* bd = static_cast<T*>(a.b_dir) + k * a.in;
    for (int64_t i = threadIdx.x; i < a.in; i += blockDim.x) {
      bd[i] = FromFloat<T>(Round<T>(Activate(a.positive, ToFloat(B[i]))) / ncb);
    }
  }
}

// The backward of one direction x̂ = T(x' / n) with x' = T(pos(x)), n = max(T(‖x'‖), eps),
// given dL/dx̂ = grad_hat(j) (already rounded to T): writes dL/dx.
template <typename T, typename GradHat>
__device__ void DirectionBackward(const T* raw, int64_t count, int64_t stride, V2Activation pos, float eps,
                                  float norm_t, float clamped, GradHat grad_hat, T* grad_out, float* scratch) {
  // dL/dn (through the division; ATen sums the broadcast gradient in float, then rounds)
  float acc = 0.0f;
  for (int64_t j = threadIdx.x; j < count; j += blockDim.x) {
    const float xp = Round<T>(Activate(pos, ToFloat(raw[j * stride])));
    acc += -grad_hat(j) * xp / (clamped * clamped);
  }
  const float dn_clamped = Round<T>(BlockSum(acc, scratch));
  const float dn = norm_t >= eps ? dn_clamped : 0.0f;  // clamp_min's mask
  if (grad_out == nullptr) return;
  for (int64_t j = threadIdx.x; j < count; j += blockDim.x) {
    const float x = ToFloat(raw[j * stride]);
    const float xp = Round<T>(Activate(pos, x));
    const float through_div = Round<T>(grad_hat(j) / clamped);
    const float through_norm = norm_t > 0.0f ? Round<T>(xp * (dn / norm_t)) : 0.0f;
    float d = Round<T>(through_div + through_norm);
    if (pos != V2Activation::kIdentity) d = Round<T>(d * ActivationGrad(pos, x));
    grad_out[j * stride] = FromFloat<T>(d);
  }
}

template <typename T>
__global__ void __launch_bounds__(kFactorThreads)
    V2FactorsBackwardKernel(V2FactorArgs a, float norm_eps, float mag_eps) {
  __shared__ float scratch[32];
  const int k = blockIdx.x;
  if (blockIdx.y == 0) {
    const T* A = static_cast<const T*>(a.a) + k;
    const T* gag = a.grad_ag != nullptr ? static_cast<const T*>(a.grad_ag) + k : nullptr;
    float na, nca;
    DirectionNorm<T>(A, a.out, a.rank, a.positive, norm_eps, scratch, &na, &nca);
    const float g = ToFloat(static_cast<const T*>(a.g)[k]);
    const float g_hat = Round<T>(Round<T>(Activate(a.magnitude, g)) + mag_eps);
    // ag = â · ĝ: dL/dâ = T(dL/dag · ĝ), dL/dĝ = T(Σ_o dL/dag · â).
    float dg = 0.0f;
    if (gag != nullptr) {
      for (int64_t o = threadIdx.x; o < a.out; o += blockDim.x) {
        const float ahat = Round<T>(Round<T>(Activate(a.positive, ToFloat(A[o * a.rank]))) / nca);
        dg += ToFloat(gag[o * a.rank]) * ahat;
      }
    }
    dg = Round<T>(BlockSum(dg, scratch));
    if (a.grad_g != nullptr && threadIdx.x == 0) {
      float d = dg;
      if (a.magnitude != V2Activation::kIdentity) d = Round<T>(d * ActivationGrad(a.magnitude, g));
      static_cast<T*>(a.grad_g)[k] = FromFloat<T>(d);
    }
    T* grad_a = a.grad_a != nullptr ? static_cast<T*>(a.grad_a) + k : nullptr;
    DirectionBackward<T>(
        A, a.out, a.rank, a.positive, norm_eps, na, nca,
        [&](int64_t o) { return gag != nullptr ? Round<T>(ToFloat(gag[o * a.rank]) * g_hat) : 0.0f; }, grad_a,
        scratch);
  } else {
    const T* B = static_cast<const T*>(a.b) + k * a.in;
    const T* gbd = a.grad_b_dir != nullptr ? static_cast<const T*>(a.grad_b_dir) + k * a.in : nullptr;
    float nb, ncb;
    DirectionNorm<T>(B, a.in, 1, a.positive, norm_eps, scratch, &nb, &ncb);
    T* grad_b = a.grad_b != nullptr ? static_cast<T*>(a.grad_b) + k * a.in : nullptr;
    DirectionBackward<T>(
        B, a.in, 1, a.positive, norm_eps, nb, ncb, [&](int64_t i) { return gbd != nullptr ? ToFloat(gbd[i]) : 0.0f; },
        grad_b, scratch);
  }
}

const char* DispatchV2Factors(const V2FactorArgs& a, bool backward, void* stream) {
  if (a.rank <= 0 || a.out <= 0 || a.in <= 0) return nullptr;
  if (a.rank > 0x7fffffff) return "rank too large";
  auto st = static_cast<cudaStream_t>(stream);
  return WithType(a.type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const float norm_eps = RoundedTo<T>(a.norm_eps);
    const float mag_eps = static_cast<float>(a.magnitude_eps);
    const dim3 grid(static_cast<unsigned>(a.rank), 2);
    if (backward) {
      V2FactorsBackwardKernel<T><<<grid, kFactorThreads, 0, st>>>(a, norm_eps, mag_eps);
    } else {
      V2FactorsKernel<T><<<grid, kFactorThreads, 0, st>>>(a, norm_eps, mag_eps);
    }
    return LaunchStatus();
  });
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

// ---- KD teacher: block maxima, rotary embedding ----

// NaN-propagating max, as ATen's max reduction.
__device__ __forceinline__ float MaxNan(float a, float b) { return (a != a || a > b) ? a : b; }

// One warp reads 32 consecutive 16-byte vectors of a row (fully coalesced); groups of
// `lanes` lanes (one block of columns) combine their maxima with shuffles.
template <typename T>
__global__ void RowBlockMaxKernel(const T* z, int64_t rows, int64_t stride, int64_t vecs_per_row, int lanes,
                                  int64_t blocks_per_row, T* out) {
  constexpr int kPerVec = 16 / sizeof(T);
  const int64_t warps_per_row = (vecs_per_row + 31) / 32;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= rows * warps_per_row) return;  // whole warps exit together
  const int64_t r = warp / warps_per_row;
  const int64_t v = (warp % warps_per_row) * 32 + lane;
  float m = -INFINITY;
  if (v < vecs_per_row) {
    const uint4 raw = reinterpret_cast<const uint4*>(z + r * stride)[v];
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int i = 0; i < kPerVec; ++i) m = MaxNan(ToFloat(e[i]), m);
  }
  for (int off = lanes / 2; off > 0; off >>= 1) m = MaxNan(m, __shfl_xor_sync(0xffffffffu, m, off));
  if (v < vecs_per_row && lane % lanes == 0) out[r * blocks_per_row + v / lanes] = FromFloat<T>(m);
}

// Block: kRopePairs x kRopeRows threads; thread (p, y) owns the pair (d, d + D/2) of row
// blockIdx.x * kRopeRows + y (a row = one (b, s, h)), which read each other's x: one load of
// each, 32-bit index arithmetic (rows < 2^31 checked by the launcher).
constexpr int kRopeRows = 4;

template <typename T, bool kTranspose>
__global__ void RopeKernel(const T* x, const T* cos, const T* sin_signed, int rows, int seq, int heads, int dim,
                           T* out) {
  const int row = blockIdx.x * kRopeRows + threadIdx.y;
  const int half = dim / 2;
  if (row >= rows) return;
  const int s = (row / heads) % seq;
  const T* xr = x + static_cast<int64_t>(row) * dim;
  T* o = out + static_cast<int64_t>(row) * dim;
  const T* c = cos + static_cast<int64_t>(s) * dim;
  const T* sn = sin_signed + static_cast<int64_t>(s) * dim;
  for (int d = threadIdx.x; d < half; d += blockDim.x) {
    const float lo = ToFloat(xr[d]), hi = ToFloat(xr[d + half]);
    // x * cos rounded (ATen's mul), then addcmul's opmath a + x_rolled * sin, rounded once;
    // explicit _rn intrinsics: no contraction into an FMA.
    const float a_lo = ToFloat(FromFloat<T>(__fmul_rn(lo, ToFloat(c[d]))));
    const float a_hi = ToFloat(FromFloat<T>(__fmul_rn(hi, ToFloat(c[d + half]))));
    // Forward: out[d] pairs x[d + h] with sin[d]; transpose (the backward) with sin[d + h].
    const float s_lo = ToFloat(sn[kTranspose ? d + half : d]), s_hi = ToFloat(sn[kTranspose ? d : d + half]);
    o[d] = FromFloat<T>(__fadd_rn(a_lo, __fmul_rn(hi, s_lo)));
    o[d + half] = FromFloat<T>(__fadd_rn(a_hi, __fmul_rn(lo, s_hi)));
  }
}

const char* RowBlockMax(ElementType type, const void* z, int64_t rows, int64_t cols, int64_t stride, int block,
                        void* out, void* stream) {
  if (rows <= 0 || cols <= 0) return nullptr;
  auto st = static_cast<cudaStream_t>(stream);
  return WithType(type, [&](auto tag) -> const char* {
    using T = typename decltype(tag)::type;
    constexpr int kPerVec = 16 / sizeof(T);
    const int lanes = block / kPerVec;
    if (block % kPerVec != 0 || lanes < 1 || lanes > 32 || (lanes & (lanes - 1)) != 0 || cols % block != 0 ||
        (stride * static_cast<int64_t>(sizeof(T))) % 16 != 0 || reinterpret_cast<uintptr_t>(z) % 16 != 0) {
      return "RowBlockMax: unsupported block, width or alignment";
    }
    const int64_t vecs = cols / kPerVec;
    const int64_t threads_total = rows * ((vecs + 31) / 32) * 32;
    const int64_t grid = (threads_total + kThreads - 1) / kThreads;
    if (grid > 0x7fffffffLL) return "RowBlockMax: too large";
    RowBlockMaxKernel<T><<<static_cast<unsigned>(grid), kThreads, 0, st>>>(
        static_cast<const T*>(z), rows, stride, vecs, lanes, cols / block, static_cast<T*>(out));
    return LaunchStatus();
  });
}

const char* ApplyRope(ElementType type, const void* x, const void* cos, const void* sin_signed, int64_t batch,
                      int64_t seq, int64_t heads, int64_t dim, bool transpose, void* out, void* stream) {
  const int64_t rows = batch * seq * heads;
  if (rows <= 0 || dim <= 0) return nullptr;
  if (dim % 2 != 0) return "ApplyRope: odd head dimension";
  if (rows > 0x7fffffffLL - kRopeRows || seq > 0x7fffffffLL || dim > 0x7fffffffLL) return "ApplyRope: too large";
  const int half = static_cast<int>(dim / 2);
  const dim3 block(half < 64 ? static_cast<unsigned>(half) : 64u, kRopeRows);
  const unsigned grid = static_cast<unsigned>((rows + kRopeRows - 1) / kRopeRows);
  auto st = static_cast<cudaStream_t>(stream);
  return WithType(type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    auto kernel = transpose ? RopeKernel<T, true> : RopeKernel<T, false>;
    kernel<<<grid, block, 0, st>>>(static_cast<const T*>(x), static_cast<const T*>(cos),
                                   static_cast<const T*>(sin_signed), static_cast<int>(rows), static_cast<int>(seq),
                                   static_cast<int>(heads), static_cast<int>(dim), static_cast<T*>(out));
    return LaunchStatus();
  });
}

const char* FrozenLutWeight(const FrozenLutArgs& args, void* stream) {
  return DispatchFrozenLut(args, /*grad=*/false, stream);
}

const char* FrozenLutScaleGrad(const FrozenLutArgs& args, void* stream) {
  return DispatchFrozenLut(args, /*grad=*/true, stream);
}

const char* V2Factors(const V2FactorArgs& args, void* stream) { return DispatchV2Factors(args, false, stream); }

const char* V2FactorsBackward(const V2FactorArgs& args, void* stream) {
  return DispatchV2Factors(args, true, stream);
}

const char* RowLogSumExp(ElementType type, const void* z, int64_t rows, int64_t cols, int64_t stride, float* lse,
                         void* stream) {
  if (rows <= 0 || cols <= 0) return nullptr;
  auto st = static_cast<cudaStream_t>(stream);
  return WithType(type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    RowLseKernel<T><<<static_cast<unsigned>(rows), kThreads, 0, st>>>(static_cast<const T*>(z), cols, stride, lse);
    return LaunchStatus();
  });
}

const char* CrossEntropyGrad(ElementType type, const void* z, int64_t rows, int64_t cols, int64_t stride,
                             const float* lse, const int64_t* target, float scale, void* out, void* stream) {
  if (rows <= 0 || cols <= 0) return nullptr;
  auto st = static_cast<cudaStream_t>(stream);
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>((cols + kTileCols - 1) / kTileCols));
  return WithType(type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    CeGradKernel<T><<<grid, kThreads, 0, st>>>(static_cast<const T*>(z), cols, stride, lse, target, scale,
                                               static_cast<T*>(out));
    return LaunchStatus();
  });
}

const char* AdamWStep(ElementType type, const AdamWTensor* tensors, const int64_t* chunk_begin, int count,
                      int64_t total_chunks, const AdamWHyper& hyper, void* stream) {
  if (count <= 0 || total_chunks <= 0) return nullptr;
  if (total_chunks > 0x7fffffffLL) return "too many AdamW chunks";
  auto st = static_cast<cudaStream_t>(stream);
  return WithType(type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    AdamWKernel<T><<<static_cast<unsigned>(total_chunks), kThreads, 0, st>>>(tensors, chunk_begin, count, hyper);
    return LaunchStatus();
  });
}

}  // namespace qatd::cuda
