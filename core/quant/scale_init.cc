#include "core/quant/scale_init.h"

#include <ATen/core/grad_mode.h>
#include <cmath>
#include <tuple>

#include "core/quant/quant_config.h"

namespace qatd::quant {
namespace {

// Deterministic filler for the directions of zero singular values (splitmix64 -> [-1, 1)).
at::Tensor DeterministicFill(int64_t rows, int64_t cols, uint64_t seed) {
  at::Tensor t = at::empty({rows, cols}, at::kDouble);
  double* p = t.data_ptr<double>();
  uint64_t s = seed;
  for (int64_t i = 0; i < rows * cols; ++i) {
    s += 0x9E3779B97F4A7C15ull;
    uint64_t z = s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    p[i] = static_cast<double>(z >> 11) * (2.0 / 9007199254740992.0) - 1.0;
  }
  return t;
}

// Columns orthonormal to `basis` ([n, k], orthonormal columns): returns [n, extra].
at::Tensor CompleteBasis(const at::Tensor& basis, int64_t extra, uint64_t seed) {
  const int64_t n = basis.size(0);
  const int64_t k = basis.size(1);
  at::Tensor x = at::cat({basis, DeterministicFill(n, extra, seed)}, 1);
  at::Tensor q = std::get<0>(at::linalg_qr(x, "reduced"));
  return q.narrow(1, k, extra);
}

}  // namespace

at::Tensor ScaleProduct(const at::Tensor& a, const at::Tensor& b) {
  if (a.is_cpu() && a.scalar_type() == at::kHalf) {
    return at::matmul(a.to(at::kFloat), b.to(at::kFloat)).to(at::kHalf);
  }
  return at::matmul(a, b);
}

at::Tensor GroupAbsMax(const at::Tensor& weight, int64_t group_size) {
  at::NoGradGuard no_grad;
  const int64_t out = weight.size(0);
  const int64_t in = weight.size(1);
  const GroupPadding pad = ComputeGroupPadding(in, group_size);
  at::Tensor w = weight.detach().to(at::kCPU, at::kFloat);
  if (pad.pad > 0) w = at::constant_pad_nd(w, {0, pad.pad}, 0.0);
  return w.reshape({out, pad.num_groups, group_size}).abs().amax({-1}).clamp_min(1e-8);
}

at::Tensor ExpandGroupScales(const at::Tensor& group_max, int64_t group_size) {
  return group_max.to(at::kFloat).repeat_interleave(group_size, 1).contiguous();
}

SvdFactors FactorGroupScales(const at::Tensor& group_max, int64_t group_size, int64_t rank) {
  at::NoGradGuard no_grad;
  const int64_t out = group_max.size(0);
  const int64_t groups = group_max.size(1);
  const int64_t padded = groups * group_size;
  const double root = std::sqrt(static_cast<double>(group_size));

  at::Tensor m = group_max.to(at::kCPU, at::kDouble) * root;
  auto [um, sm, wmh] = at::linalg_svd(m, /*full_matrices=*/false);
  // Rows of Wᵀ E / sqrt(gs): each group's weight repeated over its gs columns.
  at::Tensor vh_full = wmh.repeat_interleave(group_size, 1) / root;  // [k, P]
  const int64_t k = sm.size(0);

  SvdFactors f;
  if (rank <= k) {
    f.u = um.narrow(1, 0, rank);
    f.sigma = sm.narrow(0, 0, rank);
    f.vh = vh_full.narrow(0, 0, rank);
  } else {
    const int64_t extra = rank - k;
    const uint64_t seed = 0x5157A1ull ^ (static_cast<uint64_t>(out) << 32) ^ static_cast<uint64_t>(padded);
    f.u = at::cat({um, CompleteBasis(um, extra, seed)}, 1);
    f.sigma = at::cat({sm, at::zeros({extra}, at::kDouble)});
    f.vh = at::cat({vh_full, CompleteBasis(vh_full.t().contiguous(), extra, seed + 1).t()}, 0);
  }
  f.u = f.u.to(at::kFloat).contiguous();
  f.sigma = f.sigma.to(at::kFloat).contiguous();
  f.vh = f.vh.to(at::kFloat).contiguous();
  return f;
}

}  // namespace qatd::quant
