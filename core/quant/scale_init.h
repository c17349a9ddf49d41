#pragma once
// Scale initialisation from a layer's own weights (spec §3.3, §4.3).
//
//   M[o, g]  = max(1e-8, max_i |W[o, g*gs + i]|)        group abs-max, W zero-padded to P
//   S0[o, i] = M[o, floor(i / gs)]                       [O, P], P = padded_in
//   S0 = U diag(sigma) Vh (thin SVD), truncated to rank r
//
// S0 = M E with E the [G, P] block-indicator matrix, whose rows are orthogonal with norm
// sqrt(gs). So the SVD of S0 follows from the SVD of the small matrix M*sqrt(gs) = U Σ Wᵀ:
// Vh = Wᵀ E / sqrt(gs). This is exact (not an approximation) and avoids an SVD of an
// [O, P] matrix per layer. S0 has rank <= min(O, G); when r exceeds that, the extra
// components have sigma = 0 and deterministic orthonormal directions (the reference gets
// numerical noise with arbitrary directions there, see golden README).
//
// Everything is computed in float64 on the CPU and returned as float32 CPU tensors.

#include <ATen/ATen.h>

#include <cstdint>

namespace qatd::quant {

// weight: [O, I] any floating dtype/device. Returns M: [O, G] float32 CPU.
at::Tensor GroupAbsMax(const at::Tensor& weight, int64_t group_size);

// group_max: [O, G] -> S0: [O, G * group_size] float32 CPU.
at::Tensor ExpandGroupScales(const at::Tensor& group_max, int64_t group_size);

struct SvdFactors {
  at::Tensor u;      // [O, r] orthonormal columns
  at::Tensor sigma;  // [r] descending, >= 0
  at::Tensor vh;     // [r, P] orthonormal rows
};

// scale_A @ scale_B. LibTorch 1.13 has no fp16 matmul on the CPU: there the product is formed
// in float32 and rounded to fp16 once (what an fp16 device accumulating in fp32 produces).
at::Tensor ScaleProduct(const at::Tensor& a, const at::Tensor& b);

// Rank-`rank` truncated SVD of S0 = ExpandGroupScales(group_max, group_size); rank must be
// <= min(O, G * group_size).
SvdFactors FactorGroupScales(const at::Tensor& group_max, int64_t group_size, int64_t rank);

}  // namespace qatd::quant
