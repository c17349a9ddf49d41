#include "core/cuda/fused_ops.h"

#include <torch/version.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

#ifdef QATD_CUDA_KERNELS
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <chrono>

#include "core/cuda/kernels.h"
#endif

namespace qatd::cuda {
namespace {

bool EnabledFromEnvironment() {
  const char* v = std::getenv("QATD_FUSED_KERNELS");
  return v == nullptr || std::strcmp(v, "0") != 0;
}

std::atomic<bool>& EnabledFlag() {
  static std::atomic<bool> flag{EnabledFromEnvironment()};
  return flag;
}

}  // namespace

void SetAllocatorDefaults() {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
  ::setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True", /*overwrite=*/0);
#endif
}

bool CudaGraphsAllowedByEnvironment() {
  const char* v = std::getenv("QATD_CUDA_GRAPHS");
  return v == nullptr || std::strcmp(v, "0") != 0;
}

bool FusedKernelsCompiled() {
#ifdef QATD_CUDA_KERNELS
  return true;
#else
  return false;
#endif
}

bool FusedKernelsEnabled() { return FusedKernelsCompiled() && EnabledFlag().load(); }

void SetFusedKernelsEnabled(bool on) { EnabledFlag().store(on); }

#ifdef QATD_CUDA_KERNELS
namespace {

bool ElementTypeOf(at::ScalarType t, ElementType* out) {
  switch (t) {
    case at::kFloat:
      *out = ElementType::kFloat32;
      return true;
    case at::kBFloat16:
      *out = ElementType::kBFloat16;
      return true;
    case at::kHalf:
      *out = ElementType::kFloat16;
      return true;
    default:
      return false;
  }
}

bool Matrix(const at::Tensor& t, const at::Tensor& like, int64_t rows, int64_t min_cols) {
  return t.defined() && t.is_cuda() && t.device() == like.device() && t.scalar_type() == like.scalar_type() &&
         t.dim() == 2 && t.size(0) == rows && t.size(1) >= min_cols && t.stride(1) == 1 && t.stride(0) >= t.size(1);
}

void Check(const char* err, const char* what) { TORCH_CHECK(err == nullptr, what, ": CUDA error: ", err); }

// Fills the LUT part of the kernel arguments; false if the kernel does not apply. Scales come
// from `scales` [O, >= I] or, when it is undefined, from scale_a [O, r] @ scale_b [r, >= I].
bool LutProblem(const at::Tensor& weight, const at::Tensor& scales, const at::Tensor& scale_a,
                const at::Tensor& scale_b, const at::Tensor& lut, const at::Tensor& boundaries, double min_scale,
                LutArgs* a) {
  if (!FusedKernelsEnabled() || !weight.defined() || !weight.is_cuda() || weight.dim() != 2) return false;
  if (!ElementTypeOf(weight.scalar_type(), &a->type)) return false;
  const int64_t rows = weight.size(0), cols = weight.size(1);
  if (!Matrix(weight, weight, rows, cols)) return false;
  if (scales.defined()) {
    if (!Matrix(scales, weight, rows, cols)) return false;
    a->scales = scales.data_ptr();
    a->scales_stride = scales.stride(0);
  } else {
    if (!scale_a.defined() || scale_a.dim() != 2 || scale_a.size(1) < 1 || scale_a.size(1) > kMaxFusedRank) return false;
    const int64_t rank = scale_a.size(1);
    if (!Matrix(scale_a, weight, rows, rank) || !Matrix(scale_b, weight, rank, cols)) return false;
    a->scale_a = scale_a.data_ptr();
    a->scale_a_stride = scale_a.stride(0);
    a->scale_b = scale_b.data_ptr();
    a->scale_b_stride = scale_b.stride(0);
    a->rank = static_cast<int>(rank);
  }
  if (!lut.defined() || lut.device() != weight.device() || lut.scalar_type() != weight.scalar_type() ||
      lut.dim() != 1 || !lut.is_contiguous() || lut.numel() < 2 || lut.numel() > 256) {
    return false;
  }
  if (!boundaries.defined() || boundaries.device() != weight.device() || boundaries.scalar_type() != at::kFloat ||
      !boundaries.is_contiguous() || boundaries.numel() != lut.numel() - 1) {
    return false;
  }
  if (rows > kMaxKernelRows) return false;
  a->rows = rows;
  a->cols = cols;
  a->weight = weight.data_ptr();
  a->weight_stride = weight.stride(0);
  a->lut = lut.data_ptr();
  a->lut_size = static_cast<int>(lut.numel());
  a->boundaries = boundaries.data_ptr<float>();
  a->min_scale = min_scale;
  return true;
}

// Runs the fake-quant (grad undefined) or scale-gradient kernel of a prepared problem.
at::Tensor RunLut(LutArgs& a, const at::Tensor& weight, const at::Tensor& grad) {
  const c10::cuda::CUDAGuard guard(weight.device());
  at::Tensor result = at::empty({a.rows, a.cols}, weight.options());
  a.out = result.data_ptr();
  a.out_stride = a.cols;
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  if (grad.defined()) {
    a.grad = grad.data_ptr();
    a.grad_stride = grad.stride(0);
    Check(LutScaleGrad(a, stream), "LutScaleGrad");
  } else {
    Check(LutFakeQuant(a, stream), "LutFakeQuant");
  }
  return result;
}

}  // namespace

bool TryLutFakeQuant(const at::Tensor& weight, const at::Tensor& scales, const at::Tensor& lut,
                     const at::Tensor& boundaries, double min_scale, at::Tensor* out) {
  LutArgs a;
  if (!scales.defined() || !LutProblem(weight, scales, {}, {}, lut, boundaries, min_scale, &a)) return false;
  *out = RunLut(a, weight, {});
  return true;
}

bool TryLutFakeQuantLowRank(const at::Tensor& weight, const at::Tensor& scale_a, const at::Tensor& scale_b,
                            const at::Tensor& lut, const at::Tensor& boundaries, double min_scale, at::Tensor* out) {
  LutArgs a;
  if (!LutProblem(weight, {}, scale_a, scale_b, lut, boundaries, min_scale, &a)) return false;
  *out = RunLut(a, weight, {});
  return true;
}

bool TryLutScaleGrad(const at::Tensor& weight, const at::Tensor& scales, const at::Tensor& grad,
                     const at::Tensor& lut, const at::Tensor& boundaries, double min_scale, at::Tensor* out) {
  LutArgs a;
  if (!scales.defined() || !LutProblem(weight, scales, {}, {}, lut, boundaries, min_scale, &a)) return false;
  if (!Matrix(grad, weight, a.rows, a.cols)) return false;
  *out = RunLut(a, weight, grad);
  return true;
}

bool TryLutScaleGradLowRank(const at::Tensor& weight, const at::Tensor& scale_a, const at::Tensor& scale_b,
                            const at::Tensor& grad, const at::Tensor& lut, const at::Tensor& boundaries,
                            double min_scale, at::Tensor* out) {
  LutArgs a;
  if (!LutProblem(weight, {}, scale_a, scale_b, lut, boundaries, min_scale, &a)) return false;
  if (!Matrix(grad, weight, a.rows, a.cols)) return false;
  *out = RunLut(a, weight, grad);
  return true;
}

namespace {

// The shared checks of the frozen-LUT kernels: indices [O, I] uint8, lut [n] floating.
bool FrozenLutProblem(const at::Tensor& indices, const at::Tensor& lut, FrozenLutArgs* a) {
  if (!FusedKernelsEnabled() || !indices.defined() || !indices.is_cuda() || indices.dim() != 2 ||
      indices.scalar_type() != at::kByte || indices.stride(1) != 1 || indices.stride(0) < indices.size(1)) {
    return false;
  }
  if (!lut.defined() || lut.device() != indices.device() || !ElementTypeOf(lut.scalar_type(), &a->type) ||
      lut.dim() != 1 || !lut.is_contiguous() || lut.numel() < 2 || lut.numel() > 256) {
    return false;
  }
  if (indices.size(0) > kMaxKernelRows) return false;
  a->rows = indices.size(0);
  a->cols = indices.size(1);
  a->indices = indices.data_ptr<uint8_t>();
  a->indices_stride = indices.stride(0);
  a->lut = lut.data_ptr();
  a->lut_size = static_cast<int>(lut.numel());
  return true;
}

at::Tensor RunFrozenLut(FrozenLutArgs& a, const at::Tensor& lut, bool grad) {
  const c10::cuda::CUDAGuard guard(lut.device());
  at::Tensor result = at::empty({a.rows, a.cols}, lut.options());
  a.out = result.data_ptr();
  a.out_stride = a.cols;
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  if (grad) {
    Check(FrozenLutScaleGrad(a, stream), "FrozenLutScaleGrad");
  } else {
    Check(FrozenLutWeight(a, stream), "FrozenLutWeight");
  }
  return result;
}

}  // namespace

bool TryFrozenLutWeight(const at::Tensor& indices, const at::Tensor& lut, const at::Tensor& scale_a,
                        const at::Tensor& scale_b, bool round_fp16, at::Tensor* out) {
  FrozenLutArgs a;
  if (!FrozenLutProblem(indices, lut, &a)) return false;
  if (!scale_a.defined() || scale_a.dim() != 2 || scale_a.size(1) < 1 || scale_a.size(1) > kMaxFusedRank) return false;
  const int64_t rank = scale_a.size(1);
  if (!Matrix(scale_a, lut, a.rows, rank) || !Matrix(scale_b, lut, rank, a.cols)) return false;
  a.scale_a = scale_a.data_ptr();
  a.scale_a_stride = scale_a.stride(0);
  a.scale_b = scale_b.data_ptr();
  a.scale_b_stride = scale_b.stride(0);
  a.rank = static_cast<int>(rank);
  a.round_fp16 = round_fp16 && lut.scalar_type() != at::kHalf;  // Ste16 leaves fp16 values alone
  *out = RunFrozenLut(a, lut, /*grad=*/false);
  return true;
}

bool TryFrozenLutScaleGrad(const at::Tensor& indices, const at::Tensor& lut, const at::Tensor& grad, at::Tensor* out) {
  FrozenLutArgs a;
  if (!FrozenLutProblem(indices, lut, &a) || !Matrix(grad, lut, a.rows, a.cols)) return false;
  a.grad = grad.data_ptr();
  a.grad_stride = grad.stride(0);
  *out = RunFrozenLut(a, lut, /*grad=*/true);
  return true;
}

namespace {

bool V2FactorProblem(const at::Tensor& scale_a, const at::Tensor& scale_b, const at::Tensor& g, int positive,
                     int magnitude, double norm_eps, double magnitude_eps, V2FactorArgs* a) {
  if (!FusedKernelsEnabled() || !scale_a.defined() || !scale_a.is_cuda() || scale_a.dim() != 2) return false;
  if (!ElementTypeOf(scale_a.scalar_type(), &a->type) || positive < 0 || positive > 2 || magnitude < 0 ||
      magnitude > 2) {
    return false;
  }
  const int64_t out = scale_a.size(0), rank = scale_a.size(1);
  auto same = [&](const at::Tensor& t, std::initializer_list<int64_t> shape) {
    return t.defined() && t.device() == scale_a.device() && t.scalar_type() == scale_a.scalar_type() &&
           t.is_contiguous() && t.sizes() == at::IntArrayRef(shape);
  };
  if (rank < 1 || !scale_a.is_contiguous() || scale_b.dim() != 2 || !same(scale_b, {rank, scale_b.size(1)}) ||
      !same(g, {rank})) {
    return false;
  }
  a->out = out;
  a->in = scale_b.size(1);
  a->rank = static_cast<int>(rank);
  a->a = scale_a.data_ptr();
  a->b = scale_b.data_ptr();
  a->g = g.data_ptr();
  a->positive = static_cast<V2Activation>(positive);
  a->magnitude = static_cast<V2Activation>(magnitude);
  a->norm_eps = norm_eps;
  a->magnitude_eps = magnitude_eps;
  return true;
}

}  // namespace

bool TryV2Factors(const at::Tensor& scale_a, const at::Tensor& scale_b, const at::Tensor& g, int positive,
                  int magnitude, double norm_eps, double magnitude_eps, at::Tensor* ag, at::Tensor* b_dir) {
  V2FactorArgs a;
  if (!V2FactorProblem(scale_a, scale_b, g, positive, magnitude, norm_eps, magnitude_eps, &a)) return false;
  const c10::cuda::CUDAGuard guard(scale_a.device());
  at::Tensor ag_out = at::empty_like(scale_a), b_out = at::empty_like(scale_b);
  a.ag = ag_out.data_ptr();
  a.b_dir = b_out.data_ptr();
  Check(V2Factors(a, c10::cuda::getCurrentCUDAStream().stream()), "V2Factors");
  *ag = std::move(ag_out);
  *b_dir = std::move(b_out);
  return true;
}

bool TryV2FactorsBackward(const at::Tensor& scale_a, const at::Tensor& scale_b, const at::Tensor& g, int positive,
                          int magnitude, double norm_eps, double magnitude_eps, const at::Tensor& grad_ag,
                          const at::Tensor& grad_b_dir, at::Tensor* grad_a, at::Tensor* grad_b, at::Tensor* grad_g) {
  V2FactorArgs a;
  if (!V2FactorProblem(scale_a, scale_b, g, positive, magnitude, norm_eps, magnitude_eps, &a)) return false;
  auto usable = [&](const at::Tensor& t, const at::Tensor& like) {
    return !t.defined() || (t.device() == like.device() && t.scalar_type() == like.scalar_type() &&
                            t.is_contiguous() && t.sizes() == like.sizes());
  };
  if (!usable(grad_ag, scale_a) || !usable(grad_b_dir, scale_b)) return false;
  const c10::cuda::CUDAGuard guard(scale_a.device());
  if (grad_ag.defined()) a.grad_ag = grad_ag.data_ptr();
  if (grad_b_dir.defined()) a.grad_b_dir = grad_b_dir.data_ptr();
  if (grad_a != nullptr) {
    *grad_a = at::empty_like(scale_a);
    a.grad_a = grad_a->data_ptr();
  }
  if (grad_b != nullptr) {
    *grad_b = at::empty_like(scale_b);
    a.grad_b = grad_b->data_ptr();
  }
  if (grad_g != nullptr) {
    *grad_g = at::empty_like(g);
    a.grad_g = grad_g->data_ptr();
  }
  Check(V2FactorsBackward(a, c10::cuda::getCurrentCUDAStream().stream()), "V2FactorsBackward");
  return true;
}

bool MedianGraphReplayMs(const std::function<void()>& fn, int iters, double* median_ms) {
  if (iters < 1) return false;
  const c10::cuda::CUDAStream main = c10::cuda::getCurrentCUDAStream();
  const c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(false, main.device_index());
  auto wait = [](const c10::cuda::CUDAStream& waiter, const c10::cuda::CUDAStream& on) {
    at::cuda::CUDAEvent event;
    event.record(on);
    event.block(waiter);
  };
  at::cuda::CUDAGraph graph;
  try {
    wait(side, main);
    {
      const c10::cuda::CUDAStreamGuard guard(side);
      fn();  // warm-up: lazily created state (cuBLAS handles, workspaces) must exist first
      graph.capture_begin();
      fn();
      graph.capture_end();
    }
    wait(main, side);
  } catch (const std::exception&) {
    return false;
  }
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i) {
    main.synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    graph.replay();
    main.synchronize();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  *median_ms = ms[ms.size() / 2];
  return true;
}

bool TryRowBlockMax(const at::Tensor& z, int64_t block, at::Tensor* out) {
  ElementType type;
  if (!FusedKernelsEnabled() || !z.defined() || !z.is_cuda() || z.dim() != 2 || !ElementTypeOf(z.scalar_type(), &type) ||
      z.stride(1) != 1 || block < 1) {
    return false;
  }
  const int64_t elem = static_cast<int64_t>(z.element_size()), per_vec = 16 / elem;
  const int64_t lanes = block / per_vec;
  if (block % per_vec != 0 || lanes < 1 || lanes > 32 || (lanes & (lanes - 1)) != 0 || z.size(1) % block != 0 ||
      (z.stride(0) * elem) % 16 != 0 || reinterpret_cast<uintptr_t>(z.data_ptr()) % 16 != 0) {
    return false;
  }
  const c10::cuda::CUDAGuard guard(z.device());
  at::Tensor result = at::empty({z.size(0), z.size(1) / block}, z.options());
  Check(RowBlockMax(type, z.data_ptr(), z.size(0), z.size(1), z.stride(0), static_cast<int>(block), result.data_ptr(),
                    c10::cuda::getCurrentCUDAStream().stream()),
        "RowBlockMax");
  *out = std::move(result);
  return true;
}

bool TryApplyRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin_signed, bool transpose,
                  at::Tensor* out) {
  ElementType type;
  if (!FusedKernelsEnabled() || !x.defined() || !x.is_cuda() || x.dim() != 4 || !x.is_contiguous() ||
      !ElementTypeOf(x.scalar_type(), &type)) {
    return false;
  }
  const int64_t s = x.size(1), d = x.size(3);
  for (const at::Tensor* t : {&cos, &sin_signed}) {
    if (!t->defined() || t->device() != x.device() || t->scalar_type() != x.scalar_type() || !t->is_contiguous() ||
        t->numel() != s * d || t->size(-1) != d) {
      return false;
    }
  }
  if (d % 2 != 0) return false;
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor result = at::empty_like(x);
  Check(ApplyRope(type, x.data_ptr(), cos.data_ptr(), sin_signed.data_ptr(), x.size(0), s, x.size(2), d, transpose,
                  result.data_ptr(), c10::cuda::getCurrentCUDAStream().stream()),
        "ApplyRope");
  *out = std::move(result);
  return true;
}

bool TryRowLogSumExp(const at::Tensor& z, at::Tensor* lse) {
  ElementType type;
  if (!FusedKernelsEnabled() || !z.defined() || !z.is_cuda() || z.dim() != 2 || z.size(1) < 1 ||
      !ElementTypeOf(z.scalar_type(), &type) || !Matrix(z, z, z.size(0), z.size(1))) {
    return false;
  }
  const c10::cuda::CUDAGuard guard(z.device());
  at::Tensor out = at::empty({z.size(0)}, z.options().dtype(at::kFloat));
  Check(RowLogSumExp(type, z.data_ptr(), z.size(0), z.size(1), z.stride(0), out.data_ptr<float>(),
                     c10::cuda::getCurrentCUDAStream().stream()),
        "RowLogSumExp");
  *lse = std::move(out);
  return true;
}

bool TryCrossEntropyGrad(const at::Tensor& z, const at::Tensor& lse, const at::Tensor& target, double scale,
                         at::Tensor* grad) {
  ElementType type;
  if (!FusedKernelsEnabled() || !z.defined() || !z.is_cuda() || z.dim() != 2 || z.size(1) < 1 ||
      !ElementTypeOf(z.scalar_type(), &type) || !Matrix(z, z, z.size(0), z.size(1))) {
    return false;
  }
  const int64_t rows = z.size(0);
  if (!lse.defined() || lse.device() != z.device() || lse.scalar_type() != at::kFloat || !lse.is_contiguous() ||
      lse.numel() != rows) {
    return false;
  }
  if (!target.defined() || target.device() != z.device() || target.scalar_type() != at::kLong ||
      !target.is_contiguous() || target.numel() != rows) {
    return false;
  }
  const c10::cuda::CUDAGuard guard(z.device());
  at::Tensor out = at::empty({rows, z.size(1)}, z.options());
  Check(CrossEntropyGrad(type, z.data_ptr(), rows, z.size(1), z.stride(0), lse.data_ptr<float>(),
                         target.data_ptr<int64_t>(), static_cast<float>(scale), out.data_ptr(),
                         c10::cuda::getCurrentCUDAStream().stream()),
        "CrossEntropyGrad");
  *grad = std::move(out);
  return true;
}

bool TryAdamW(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
              const std::vector<at::Tensor>& masters, const std::vector<at::Tensor>& exp_avgs,
              const std::vector<at::Tensor>& exp_avg_sqs, const AdamWScalars& scalars) {
  const size_t n = params.size();
  if (!FusedKernelsEnabled() || n == 0 || grads.size() != n || masters.size() != n || exp_avgs.size() != n ||
      exp_avg_sqs.size() != n) {
    return false;
  }
  ElementType type;
  if (!params[0].is_cuda() || !ElementTypeOf(params[0].scalar_type(), &type)) return false;
  const at::Device device = params[0].device();
  const at::ScalarType dtype = params[0].scalar_type();
  auto state_ok = [&](const at::Tensor& t, int64_t numel) {
    return t.defined() && t.device() == device && t.scalar_type() == at::kFloat && t.is_contiguous() &&
           t.numel() == numel;
  };
  // Table layout: AdamWTensor[n] then int64 chunk_begin[n + 1].
  std::vector<uint8_t> table(n * sizeof(AdamWTensor) + (n + 1) * sizeof(int64_t));
  auto* entries = reinterpret_cast<AdamWTensor*>(table.data());
  auto* chunk_begin = reinterpret_cast<int64_t*>(table.data() + n * sizeof(AdamWTensor));
  int64_t chunks = 0;
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = params[i];
    const at::Tensor& g = grads[i];
    const int64_t numel = p.numel();
    if (p.device() != device || p.scalar_type() != dtype || !p.is_contiguous()) return false;
    if (!g.defined() || g.device() != device || g.scalar_type() != dtype || !g.is_contiguous() || g.numel() != numel) {
      return false;
    }
    const bool fp32 = dtype == at::kFloat;
    if (fp32 == masters[i].defined()) return false;
    if (!fp32 && !state_ok(masters[i], numel)) return false;
    if (!state_ok(exp_avgs[i], numel) || !state_ok(exp_avg_sqs[i], numel)) return false;
    entries[i].param = p.data_ptr();
    entries[i].grad = g.data_ptr();
    entries[i].master = fp32 ? p.data_ptr<float>() : masters[i].data_ptr<float>();
    entries[i].exp_avg = exp_avgs[i].data_ptr<float>();
    entries[i].exp_avg_sq = exp_avg_sqs[i].data_ptr<float>();
    entries[i].numel = numel;
    chunk_begin[i] = chunks;
    chunks += (numel + kAdamWChunk - 1) / kAdamWChunk;
  }
  chunk_begin[n] = chunks;
  if (chunks == 0) return true;
  const c10::cuda::CUDAGuard guard(device);
  // Pinned staging + an asynchronous copy on the current stream: no host sync per step. The
  // caching host allocator keeps the staging buffer until the copy has run.
  at::Tensor host = at::empty({static_cast<int64_t>(table.size())}, at::TensorOptions().dtype(at::kByte).pinned_memory(true));
  std::memcpy(host.data_ptr(), table.data(), table.size());
  at::Tensor dev = host.to(device, /*non_blocking=*/true);
  const auto* dev_entries = reinterpret_cast<const AdamWTensor*>(dev.data_ptr());
  const auto* dev_begin = reinterpret_cast<const int64_t*>(static_cast<uint8_t*>(dev.data_ptr()) + n * sizeof(AdamWTensor));
  const AdamWHyper hyper{scalars.decay_factor, scalars.beta1, scalars.beta2, scalars.step_size, scalars.bc2_sqrt,
                         scalars.eps};
  Check(AdamWStep(type, dev_entries, dev_begin, static_cast<int>(n), chunks, hyper,
                  c10::cuda::getCurrentCUDAStream().stream()),
        "AdamWStep");
  return true;
}

#else  // !QATD_CUDA_KERNELS

bool TryLutFakeQuant(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, double, at::Tensor*) {
  return false;
}

bool TryLutFakeQuantLowRank(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                            const at::Tensor&, double, at::Tensor*) {
  return false;
}

bool TryLutScaleGrad(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                     double, at::Tensor*) {
  return false;
}

bool TryLutScaleGradLowRank(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                            const at::Tensor&, const at::Tensor&, double, at::Tensor*) {
  return false;
}

bool TryFrozenLutWeight(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, bool,
                        at::Tensor*) {
  return false;
}

bool TryFrozenLutScaleGrad(const at::Tensor&, const at::Tensor&, const at::Tensor&, at::Tensor*) { return false; }

bool TryV2Factors(const at::Tensor&, const at::Tensor&, const at::Tensor&, int, int, double, double, at::Tensor*,
                  at::Tensor*) {
  return false;
}

bool TryV2FactorsBackward(const at::Tensor&, const at::Tensor&, const at::Tensor&, int, int, double, double,
                          const at::Tensor&, const at::Tensor&, at::Tensor*, at::Tensor*, at::Tensor*) {
  return false;
}

bool MedianGraphReplayMs(const std::function<void()>&, int, double*) { return false; }

bool TryRowBlockMax(const at::Tensor&, int64_t, at::Tensor*) { return false; }

bool TryApplyRope(const at::Tensor&, const at::Tensor&, const at::Tensor&, bool, at::Tensor*) { return false; }

bool TryRowLogSumExp(const at::Tensor&, at::Tensor*) { return false; }

bool TryCrossEntropyGrad(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, at::Tensor*) {
  return false;
}

bool TryAdamW(const std::vector<at::Tensor>&, const std::vector<at::Tensor>&, const std::vector<at::Tensor>&,
              const std::vector<at::Tensor>&, const std::vector<at::Tensor>&, const AdamWScalars&) {
  return false;
}

#endif  // QATD_CUDA_KERNELS

}  // namespace qatd::cuda
