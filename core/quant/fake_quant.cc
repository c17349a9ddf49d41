#include "core/quant/fake_quant.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <vector>

#include "core/cuda/fused_ops.h"
#include "core/quant/lut.h"
#include "core/quant/scale_init.h"
#include "core/quant/ste.h"

namespace qatd::quant {
namespace {

// Above this many weights the ATen index search runs over blocks of rows, so that its float32
// and int64 temporaries stay small (lm_head: 155M weights). The reference chunks at 50M too.
constexpr int64_t kChunkThreshold = 50'000'000;
constexpr int64_t kChunkRows = 1024;

// fn(first_row, rows) -> [rows, I] per block; the blocks concatenated along dim 0.
template <typename Fn>
at::Tensor ByRowBlocks(const at::Tensor& weight, Fn fn) {
  const int64_t rows = weight.size(0);
  if (weight.numel() <= kChunkThreshold) return fn(0, rows);
  std::vector<at::Tensor> parts;
  for (int64_t r = 0; r < rows; r += kChunkRows) parts.push_back(fn(r, std::min(kChunkRows, rows - r)));
  return at::cat(parts, 0);
}

// int64 LUT indices of weight[r : r + n] / s[r : r + n] (s undefined: weight itself).
at::Tensor BlockIndices(const at::Tensor& weight, const at::Tensor& s, const at::Tensor& boundaries, int64_t r,
                        int64_t n) {
  at::Tensor u = weight.narrow(0, r, n).to(at::kFloat);
  if (s.defined()) u = at::div(u, s.narrow(0, r, n));
  return NearestLutIndexWithBoundaries(u, boundaries);
}

// S[:, :I] (a view).
at::Tensor FirstColumns(const at::Tensor& scales, int64_t in) {
  return scales.size(1) > in ? scales.narrow(1, 0, in) : scales;
}


// The ATen path's pieces of one layer, kept for its backward: S (unclamped), LUT[idx], W_q.
struct AtenParts {
  at::Tensor s_raw, q, wq;
};

AtenParts ComputeAtenParts(const at::Tensor& weight, const at::Tensor& a, const at::Tensor& b, const at::Tensor& lut,
                           const at::Tensor& boundaries) {
  at::NoGradGuard no_grad;
  AtenParts p;
  p.s_raw = ScaleProduct(a.detach(), b.detach());
  const at::Tensor s = p.s_raw.clamp_min(kMinScale);
  p.q = LutValues(weight.detach(), s, lut, boundaries);
  p.wq = p.q.to(s.scalar_type()) * s;  // = LutFakeQuant's ATen path
  return p;
}

struct FakeQuantLinearFn : public torch::autograd::Function<FakeQuantLinearFn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor& a, const at::Tensor& b, const at::Tensor& lut,
                            const at::Tensor& boundaries) {
    // With the fused kernel, recomputing W_q (and S) in the backward costs one memory pass and
    // saves [O, I] per layer. The ATen path (CPU) would redo the index search, so it keeps S,
    // LUT[idx] and W_q, as plain autograd did.
    at::Tensor wq;
    if (cuda::FusedKernelsEnabled() && weight.is_cuda()) {
      wq = LutFakeQuantLowRank(weight, a, b, lut, boundaries);
      ctx->save_for_backward({x, weight, a, b, lut, boundaries, at::Tensor(), at::Tensor(), at::Tensor()});
    } else {
      AtenParts p = ComputeAtenParts(weight, a, b, lut, boundaries);
      wq = p.wq;
      ctx->save_for_backward({x, weight, a, b, lut, boundaries, p.wq, p.s_raw, p.q});
    }
    return at::linear(x, wq.scalar_type() == x.scalar_type() ? wq : wq.to(x.scalar_type()));
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &weight = saved[1], &a = saved[2], &b = saved[3];
    const at::Tensor &lut = saved[4], &boundaries = saved[5];
    const at::Tensor &saved_wq = saved[6], &saved_s_raw = saved[7], &saved_q = saved[8];
    const at::Tensor& gy = grads[0];
    const int64_t out = weight.size(0), in = weight.size(1);
    const bool need_w = ctx->needs_input_grad(1), need_a = ctx->needs_input_grad(2);
    const bool need_b = ctx->needs_input_grad(3);
    at::Tensor grad_x, grad_wq, grad_a, grad_b;
    if (ctx->needs_input_grad(0)) {
      at::Tensor wq = saved_wq.defined() ? saved_wq : LutFakeQuantLowRank(weight, a, b, lut, boundaries);
      grad_x = at::matmul(gy, wq.scalar_type() == gy.scalar_type() ? wq : wq.to(gy.scalar_type()));
    }
    const at::Tensor g2 = gy.reshape({-1, out});
    if (need_w || need_a || need_b) {
      grad_wq = g2.t().mm(x.reshape({-1, in}).to(g2.scalar_type())).to(weight.scalar_type());
    }
    if (need_a || need_b) {
      // = LutScaleGrad: grad * LUT[idx] where S >= 1e-8, else 0.
      at::Tensor gs = saved_q.defined()
                          ? at::where(saved_s_raw.ge(kMinScale), grad_wq * saved_q.to(grad_wq.scalar_type()),
                                      at::zeros({}, grad_wq.options()))
                          : LutScaleGradLowRank(weight, a, b, grad_wq, lut, boundaries);
      if (need_a) grad_a = ScaleProduct(gs, b.t());
      if (need_b) grad_b = ScaleProduct(a.t(), gs);
    }
    return {grad_x, need_w ? grad_wq : at::Tensor(), grad_a, grad_b, at::Tensor(), at::Tensor()};
  }
};

struct FrozenLutLinearFn : public torch::autograd::Function<FrozenLutLinearFn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& a,
                            const at::Tensor& b, const at::Tensor& q, const at::Tensor& indices, const at::Tensor& lut,
                            bool round_fp16) {
    // W is saved, not recomputed: V2 trains no latent weights, so its step has the memory
    // (Qwen3-0.6B Q2_A4: +0.9 GB on ~9 GB), and the rank-32 recomputation cost 3.7 ms of a
    // 65 ms H100 step.
    at::Tensor w = FrozenLutWeight(q, indices, lut, a, b, round_fp16);
    ctx->save_for_backward({x, a, b, q, indices, lut, w});
    return at::linear(x, w);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &a = saved[1], &b = saved[2], &q = saved[3], &indices = saved[4];
    const at::Tensor &lut = saved[5], &saved_w = saved[6];
    const at::Tensor& gy = grads[0];
    const int64_t out = q.size(0), in = q.size(1);
    const bool need_a = ctx->needs_input_grad(1), need_b = ctx->needs_input_grad(2);
    const bool need_lut = ctx->needs_input_grad(5);
    at::Tensor grad_x, grad_a, grad_b, grad_lut;
    if (ctx->needs_input_grad(0)) grad_x = at::matmul(gy, saved_w);
    if (need_a || need_b || need_lut) {
      // dL/dW (the STE passes it through the fp16 rounding), then through Q ⊙ S and S = a @ b
      // as autograd's mul and matmul backwards would.
      const at::Tensor gw = gy.reshape({-1, out}).t().mm(x.reshape({-1, in}));
      if (need_a || need_b) {
        const at::Tensor gs = FrozenLutScaleGrad(q, indices, lut, gw);
        if (need_a) grad_a = gs.mm(b.t());
        if (need_b) grad_b = a.t().mm(gs);
      }
      if (need_lut) {
        // A trained LUT (QuantLinearV2::SetLutTrainable): dL/dLUT[j] = Σ_{idx = j} dL/dW ⊙ S,
        // summed in float32 (S recomputed: rank r, cheap next to gw). Up to 16 entries (every
        // preset), one masked sum per entry: deterministic on CUDA, where index_add_'s atomics
        // would make a resumed run differ in the last bits.
        const at::Tensor gq = gw.to(at::kFloat) * at::matmul(a, b).to(at::kFloat);
        const int64_t n = lut.numel();
        if (n <= 16) {
          std::vector<at::Tensor> sums;
          const at::Tensor zero = at::zeros({}, gq.options());
          for (int64_t j = 0; j < n; ++j) sums.push_back(at::where(indices.eq(j), gq, zero).sum());
          grad_lut = at::stack(sums).to(lut.scalar_type());
        } else {
          grad_lut = at::zeros({n}, gq.options())
                         .index_add_(0, indices.reshape({-1}).to(at::kLong), gq.reshape({-1}))
                         .to(lut.scalar_type());
        }
      }
    }
    return {grad_x, grad_a, grad_b, at::Tensor(), at::Tensor(), grad_lut, at::Tensor()};
  }
};

}  // namespace

at::Tensor LutFakeQuant(const at::Tensor& weight, const at::Tensor& scales, const at::Tensor& lut,
                        const at::Tensor& boundaries, FakeQuantBackend backend) {
  at::NoGradGuard no_grad;
  at::Tensor out;
  if (backend == FakeQuantBackend::kAuto && cuda::TryLutFakeQuant(weight, scales, lut, boundaries, kMinScale, &out)) {
    return out;  // the kernel reads only the first I columns of `scales`
  }
  const at::Tensor w = weight.detach();
  const at::Tensor s = FirstColumns(scales.detach(), w.size(1)).clamp_min(kMinScale);
  // LUT[idx] * S in the parameter dtype: for bf16/fp16 parameters the product of two such
  // values is exact in float32, so this equals the reference's float32 product rounded once.
  return LutValues(w, s, lut, boundaries).to(s.scalar_type()) * s;
}

at::Tensor LutScaleGrad(const at::Tensor& weight, const at::Tensor& scales, const at::Tensor& grad,
                        const at::Tensor& lut, const at::Tensor& boundaries, FakeQuantBackend backend) {
  at::NoGradGuard no_grad;
  at::Tensor out;
  if (backend == FakeQuantBackend::kAuto &&
      cuda::TryLutScaleGrad(weight, scales, grad, lut, boundaries, kMinScale, &out)) {
    return out;
  }
  const at::Tensor w = weight.detach();
  const at::Tensor s_raw = FirstColumns(scales.detach(), w.size(1));
  const at::Tensor q = LutValues(w, s_raw.clamp_min(kMinScale), lut, boundaries);
  const at::Tensor gq = grad * q.to(grad.scalar_type());
  return at::where(s_raw.ge(kMinScale), gq, at::zeros({}, gq.options()));
}

at::Tensor LutFakeQuantLowRank(const at::Tensor& weight, const at::Tensor& scale_a, const at::Tensor& scale_b,
                               const at::Tensor& lut, const at::Tensor& boundaries, FakeQuantBackend backend) {
  at::NoGradGuard no_grad;
  at::Tensor out;
  if (backend == FakeQuantBackend::kAuto &&
      cuda::TryLutFakeQuantLowRank(weight, scale_a, scale_b, lut, boundaries, kMinScale, &out)) {
    return out;
  }
  return LutFakeQuant(weight, ScaleProduct(scale_a.detach(), scale_b.detach()), lut, boundaries, backend);
}

at::Tensor LutScaleGradLowRank(const at::Tensor& weight, const at::Tensor& scale_a, const at::Tensor& scale_b,
                               const at::Tensor& grad, const at::Tensor& lut, const at::Tensor& boundaries,
                               FakeQuantBackend backend) {
  at::NoGradGuard no_grad;
  at::Tensor out;
  if (backend == FakeQuantBackend::kAuto &&
      cuda::TryLutScaleGradLowRank(weight, scale_a, scale_b, grad, lut, boundaries, kMinScale, &out)) {
    return out;
  }
  return LutScaleGrad(weight, ScaleProduct(scale_a.detach(), scale_b.detach()), grad, lut, boundaries, backend);
}

at::Tensor LutValues(const at::Tensor& weight, const at::Tensor& s, const at::Tensor& lut,
                     const at::Tensor& boundaries) {
  at::NoGradGuard no_grad;
  return ByRowBlocks(weight, [&](int64_t r, int64_t n) {
    at::Tensor idx = BlockIndices(weight, s, boundaries, r, n);
    return lut.index_select(0, idx.reshape({-1})).reshape(idx.sizes());
  });
}

at::Tensor LutIndices(const at::Tensor& weight, const at::Tensor& scales, const at::Tensor& boundaries,
                      at::ScalarType index_type) {
  at::NoGradGuard no_grad;
  const at::Tensor w = weight.detach();
  const at::Tensor s = scales.defined() ? FirstColumns(scales.detach(), w.size(1)).clamp_min(kMinScale) : at::Tensor();
  return ByRowBlocks(w, [&](int64_t r, int64_t n) { return BlockIndices(w, s, boundaries, r, n).to(index_type); });
}

at::Tensor FakeQuantLinear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale_a,
                           const at::Tensor& scale_b, const at::Tensor& bias, const at::Tensor& lut,
                           const at::Tensor& boundaries) {
  // The bias stays outside the node: LibTorch 1.13's custom functions reject undefined inputs.
  at::Tensor y = FakeQuantLinearFn::apply(x, weight, scale_a, scale_b, lut, boundaries);
  return bias.defined() ? y + bias.to(y.scalar_type()) : y;
}

at::Tensor FrozenLutWeight(const at::Tensor& q, const at::Tensor& indices, const at::Tensor& lut, const at::Tensor& a,
                           const at::Tensor& b, bool round_fp16, FakeQuantBackend backend) {
  at::NoGradGuard no_grad;
  at::Tensor out;
  if (backend == FakeQuantBackend::kAuto &&
      cuda::TryFrozenLutWeight(indices, lut, a.detach(), b.detach(), round_fp16, &out)) {
    return out;
  }
  // What quant_linear_v2.cc's dense forward composes: Q ⊙ (a @ b), then Ste16's value.
  at::Tensor w = q * at::matmul(a.detach(), b.detach());
  return round_fp16 ? Ste16(w) : w;
}

at::Tensor FrozenLutScaleGrad(const at::Tensor& q, const at::Tensor& indices, const at::Tensor& lut,
                              const at::Tensor& grad, FakeQuantBackend backend) {
  at::NoGradGuard no_grad;
  at::Tensor out;
  if (backend == FakeQuantBackend::kAuto && cuda::TryFrozenLutScaleGrad(indices, lut, grad, &out)) return out;
  return grad * q;
}

at::Tensor FrozenLutLinear(const at::Tensor& x, const at::Tensor& q, const at::Tensor& indices, const at::Tensor& lut,
                           const at::Tensor& a, const at::Tensor& b, const at::Tensor& bias, bool round_fp16) {
  at::Tensor y = FrozenLutLinearFn::apply(x, a, b, q, indices, lut, round_fp16);
  return bias.defined() ? y + bias.to(y.scalar_type()) : y;
}

}  // namespace qatd::quant
