#pragma once
// Straight-through estimators (custom autograd functions with identity backward).

#include <ATen/ATen.h>

namespace qatd::quant {

// ste16(v) (spec §4.6): the forward value is v rounded to fp16 (saturated to ±65504 first, as
// at HEAD, so large values do not become inf) and returned in v's dtype; the backward is the
// identity. A no-op (returns v) when v is already fp16. Any shape.
at::Tensor Ste16(const at::Tensor& v);

// Forward value `value`; backward passes the incoming gradient unchanged to BOTH `value`
// (and through it to whatever produced it, e.g. the scales) and `latent` (identity STE).
// Shapes and dtypes of value and latent must match ([O, I] effective vs latent weight).
// This is the V1 rule of spec §3.5 without the reference bug §17.1: when the weight and the
// scales are both trainable, both get gradients.
at::Tensor StraightThrough(const at::Tensor& value, const at::Tensor& latent);

}  // namespace qatd::quant
