#pragma once
// The one place where LibTorch 1.13 (Debian, CPU) and LibTorch 2.x (pip, CUDA) differ for
// the model code (STYLE.md "LibTorch"). Everything version-specific is gated here on
// TORCH_VERSION_MAJOR/MINOR; callers never test the version themselves.

#include <ATen/ATen.h>
#include <torch/version.h>

#include <cstdint>
#include <limits>

#define QATD_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) ||       \
   (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

// at::scaled_dot_product_attention is public from 2.0, takes `scale` from 2.1 and
// `enable_gqa` from 2.5.
#define QATD_HAS_SDPA QATD_TORCH_AT_LEAST(2, 1)
#define QATD_HAS_SDPA_GQA QATD_TORCH_AT_LEAST(2, 5)
// at::rms_norm is public from 2.4 (a fused CUDA kernel in recent releases).
#define QATD_HAS_RMS_NORM QATD_TORCH_AT_LEAST(2, 4)

namespace qatd::model {

// RMSNorm over the last dimension: weight * x / sqrt(mean(x^2) + eps), normalised in fp32
// and returned in x's dtype. x: [..., D], weight: [D].
// 1.13: HF Qwen3RMSNorm step by step (normalise in fp32, cast to x's dtype, then multiply by
// the weight). 2.4+: at::rms_norm, one fused kernel on CUDA (a forward of Qwen3-0.6B issues
// 4 norms per layer, and the unfused path cost ~45% of a layer's GPU time). It multiplies the
// weight before the final cast, so bf16/fp16 results can differ from HF by one rounding
// (an ulp); fp32 results agree to float rounding.
inline at::Tensor RmsNormalize(const at::Tensor& x, const at::Tensor& weight, double eps) {
#if QATD_HAS_RMS_NORM
  return at::rms_norm(x, {weight.size(0)}, weight, eps);
#else
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor inv_rms = at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true).add_(eps));
  return weight * (xf * inv_rms).to(x.scalar_type());
#endif
}

// Boolean mask [S, T] on `device`, true where query i (absolute position q_offset + i) may
// attend key j (absolute position j): j <= q_offset + i. Bottom-right aligned when
// T == q_offset + S, which is what a KV cache with S new tokens appended needs.
inline at::Tensor CausalKeepMask(int64_t s, int64_t t, int64_t q_offset, const at::Device& device) {
  auto opts = at::TensorOptions().dtype(at::kLong).device(device);
  at::Tensor rows = at::arange(q_offset, q_offset + s, opts).unsqueeze(1);  // [S, 1]
  at::Tensor cols = at::arange(t, opts).unsqueeze(0);                       // [1, T]
  return cols.le(rows);
}

// Scaled dot-product attention with grouped-query heads.
//   q: [B, Hq, S, D], k and v: [B, Hkv, T, D], Hq a multiple of Hkv; query head h uses
//   key/value head h / (Hq / Hkv) (the HF `repeat_kv` layout). Any strides.
//   causal: query i sits at absolute position q_offset + i, key j at position j, and sees
//   keys j <= q_offset + i. q_offset = 0 and T = S is ordinary causal self-attention;
//   q_offset = T - S is a chunk of S new tokens appended to a cache of T - S.
//   scale: multiplies q k^T (Qwen3: 1 / sqrt(D)).
// Returns [B, Hq, S, D] in q's dtype. Differentiable. bf16/fp16 softmax runs in fp32 on
// the explicit path, as HF's eager attention does.
inline at::Tensor Attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            bool causal, int64_t q_offset, double scale) {
  [[maybe_unused]] const int64_t b = q.size(0), hq = q.size(1), s = q.size(2), d = q.size(3);
  const int64_t hkv = k.size(1), t = k.size(2);
  TORCH_CHECK(hkv > 0 && hq % hkv == 0, "Attention: ", hq, " query heads not a multiple of ", hkv,
              " kv heads");
  const int64_t groups = hq / hkv;
  // One query against every cached key needs no mask.
  const bool needs_mask = causal && !(s == 1 && q_offset + 1 >= t);
#if QATD_HAS_SDPA
  const bool plain_causal = needs_mask && q_offset == 0 && s == t;
  at::Tensor mask;  // bool, true = attend
  if (needs_mask && !plain_causal) mask = CausalKeepMask(s, t, q_offset, q.device());
  // The optional mask argument is c10::optional before 2.4 and std::optional after: pass
  // either a Tensor or {} so that its type is never spelled here.
  auto sdpa = [&](const at::Tensor& kk, const at::Tensor& vv, bool gqa) {
#if QATD_HAS_SDPA_GQA
    if (mask.defined()) return at::scaled_dot_product_attention(q, kk, vv, mask, 0.0, false, scale, gqa);
    return at::scaled_dot_product_attention(q, kk, vv, {}, 0.0, plain_causal, scale, gqa);
#else
    (void)gqa;
    if (mask.defined()) return at::scaled_dot_product_attention(q, kk, vv, mask, 0.0, false, scale);
    return at::scaled_dot_product_attention(q, kk, vv, {}, 0.0, plain_causal, scale);
#endif
  };
  if (groups == 1) return sdpa(k, v, false);
#if QATD_HAS_SDPA_GQA
  return sdpa(k, v, true);
#else
  auto expand = [&](const at::Tensor& x) {
    return x.unsqueeze(2).expand({b, hkv, groups, t, d}).reshape({b, hq, t, d});
  };
  return sdpa(expand(k), expand(v), false);
#endif
#else
  // Explicit path. The query heads that share a kv head are folded into the row dimension,
  // so k and v are never repeated: [B, Hkv, G*S, D] x [B, Hkv, D, T].
  at::Tensor qg = (q * scale).reshape({b, hkv, groups * s, d});
  at::Tensor scores = at::matmul(qg, k.transpose(-2, -1));  // [B, Hkv, G*S, T]
  if (needs_mask) {
    at::Tensor keep = CausalKeepMask(s, t, q_offset, q.device());
    scores.view({b, hkv, groups, s, t})
        .masked_fill_(keep.logical_not(), -std::numeric_limits<double>::infinity());
  }
  at::Tensor probs = q.scalar_type() == at::kFloat || q.scalar_type() == at::kDouble
                         ? at::softmax(scores, -1)
                         : at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
  return at::matmul(probs, v).view({b, hq, s, d});
#endif
}

}  // namespace qatd::model
