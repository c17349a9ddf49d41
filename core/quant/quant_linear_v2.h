#pragma once
// V2 LUT linear with normalised low-rank scales and frozen indices (the reference's
// AnemllQATLinearV2, spec §4).
//
//   A' = pos(A), B' = pos(B)                  optional positivity (abs / softplus)
//   Â[:,k] = A'[:,k] / max(|A'[:,k]|, eps_n)  [O, r] unit directions
//   B̂[k,:] = B'[k,:] / max(|B'[k,:]|, eps_n)  [r, I]
//   ĝ = act(g) + eps_m                        [r]   (identity / abs / softplus)
//   S = (Â diag ĝ) B̂                          [O, I] never clamped; may be negative
//   Q = LUT[idx], idx frozen by FreezeQ()     [O, I]
//   y = Σ_k ĝ_k Â[:,k] ⊙ (Q (B̂[k,:] ⊙ x)) + bias      x: [..., I] -> y: [..., O]
//
// After a bake (snap for export / ANE) the raw A, B and g are used as Â, B̂ and ĝ; the state
// is persisted in the int8 buffer "_scales_baked_flag" (spec §17.6 fix).
//
// Forward kernels (all give the same y up to float reassociation; STE-fp16 rounding happens
// exactly where the reference puts it, golden README):
//   kLoop     r rank-1 steps: ste(b_k), ste(a_k), ste(x*b_k), ste(t Qᵀ); the sum is not rounded
//   kBatched  ste(B̂), ste((Â diag ĝ)ᵀ), X_r = ste(x ⊙ B̂) [..., r, I], Y_r = ste(X_r Qᵀ) [..., r, O]
//   kDense    y = x (Q ⊙ S)ᵀ: one [O, I] effective weight per call; no STE points, so only
//             used when use_ste_fp16 is off (it is the fast equivalent of the other two)
//   kAuto     use_ste_fp16 ? (r >= 16 ? kBatched : kLoop) : kDense
//
// The latent weight has no gradient path (spec §4.5); trainable sets are the scales
// (A, B, g) or g only, and optionally the LUT values (SetLutTrainable; the reference's
// `learnable_lut`, off in every V2 script): dL/dLUT[j] = Σ_{idx = j} dL/dQ on every forward path.
// Not thread-safe.

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "core/model/linear.h"
#include "core/quant/quant_config.h"

namespace qatd::quant {

// kDenseSte: the dense effective weight Q ⊙ (Â diag ĝ B̂) rounded to fp16 through the STE
// (what the ANE runs after the fp16 snap: one fp16 weight per layer), instead of rounding every
// per-rank intermediate as the reference's factored forward does. DELIBERATE DIFFERENCE used by
// qatd's V2 trainer by default: the factored STE forward materialises [tokens, rank, in]
// tensors (68 GiB peak for Qwen3-0.6B at 32x128 tokens, 12x slower); with a bf16 or fp32 model
// the two differ only by where fp16 rounding is applied. Select kBatched/kLoop for the
// reference's exact numerics.
enum class V2ForwardPath { kAuto, kLoop, kBatched, kDense, kDenseSte };

class QuantLinearV2 final : public model::LinearLayer {
 public:
  // SVD initialisation from the weight (spec §4.3): scale_A = U[:, :r], scale_B = Vh[:r, :I],
  // rank_magnitude = sigma[:r]. weight: [O, I] floating (copied); bias: [O] or undefined.
  // Indices are not frozen yet (call FreezeQ). All parameters start frozen.
  static absl::StatusOr<std::shared_ptr<QuantLinearV2>> Create(const at::Tensor& weight, const at::Tensor& bias,
                                                               const LayerQuantSpecV2& spec);
  // Explicit factors (conversions, loading); copied and cast to the weight's dtype/device.
  // scale_A: [O, r], scale_B: [r, I], rank_magnitude: [r], lut: [n] sorted ascending with
  // n == spec.lut_size.
  static absl::StatusOr<std::shared_ptr<QuantLinearV2>> FromFactors(const at::Tensor& weight, const at::Tensor& bias,
                                                                    const LayerQuantSpecV2& spec,
                                                                    const at::Tensor& scale_A,
                                                                    const at::Tensor& scale_B,
                                                                    const at::Tensor& rank_magnitude,
                                                                    const at::Tensor& lut);

  // x: [..., I] -> [..., O] in x's dtype.
  at::Tensor forward(const at::Tensor& x) override;
  int64_t in_features() const override { return weight.size(1); }
  int64_t out_features() const override { return weight.size(0); }
  // Q ⊙ S: [O, I] in the weight dtype, no graph (what freeze_for_inference caches).
  at::Tensor EffectiveWeight() override;

  // Module::to(dtype) casts floating parameters and buffers only: indices and flags keep
  // their integer types (LibTorch's default would cast them too). Other overloads unchanged.
  using torch::nn::Module::to;
  void to(torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;

  struct Factors {
    at::Tensor a_dir;  // [O, r]
    at::Tensor b_dir;  // [r, I]
    at::Tensor g_hat;  // [r]
  };
  // spec §4.4 from the current parameters (graph when they require grad); raw when baked.
  Factors ComputeFactors();
  // (Â diag ĝ) B̂: [O, I] in the parameter dtype.
  at::Tensor EffectiveScales();

  // spec §4.5: indices from weight / S (S in float32, unclamped) and the nearest LUT entry;
  // stores "_indices" (uint8) and "_Q" = LUT[idx] (weight dtype); freezes the weight.
  void FreezeQ();
  bool q_frozen() const { return indices.numel() > 0; }
  // Sets frozen indices directly ([O, I] integer, values < lut_size); _Q = LUT[idx].
  void SetFrozenIndices(const at::Tensor& idx);
  // [O, I] uint8: the frozen indices, or those FreezeQ would compute now.
  at::Tensor Indices();
  // [O, I] LUT values in the weight dtype: _Q, or computed as FreezeQ would. While the LUT
  // trains, LUT[_indices] (with a graph to the LUT in grad mode): _Q is then stale until
  // SetLutTrainable(false) or a state load refreshes it.
  at::Tensor QValues();

  // scales: A, B and g; g_only: only g (spec §4.4 "g-only"). The weight stays frozen. The
  // LUT's own flag (SetLutTrainable) is left as it is.
  void SetTrainable(bool scales, bool g_only);
  // Trains the LUT values too: the "lut" buffer requires grad (it stays a buffer, so checkpoint
  // names, dtypes and shapes are unchanged; train::TrainableParameters picks it up). Training
  // may leave the LUT unsorted: off again, _Q = LUT[idx] is refreshed (SortLut re-sorts).
  void SetLutTrainable(bool on);
  bool lut_trainable() const { return lut.requires_grad(); }
  // Sorts the LUT ascending (stable) and remaps the frozen indices to match, so LUT[idx], and
  // every output, is unchanged bit for bit; refreshes _Q and the boundaries. What the nearest
  // search (FreezeQ, the ANE snap's recompute_indices) and CheckLut need after LUT training;
  // the snaps call it. No-op for a sorted LUT. The LUT must not be training.
  void SortLut();

  bool scales_baked() const { return baked_; }
  // Marks the raw (A, B, g) as already baked (snap.cc). Persisted in "_scales_baked_flag".
  void SetScalesBaked(bool baked);

  void set_forward_path(V2ForwardPath path) { path_ = path; }
  V2ForwardPath forward_path() const { return path_; }
  // The kernel kAuto resolves to for the current settings.
  V2ForwardPath ResolvedPath() const;
  void set_use_ste_fp16(bool on) { spec_.use_ste_fp16 = on; }
  const LayerQuantSpecV2& spec() const { return spec_; }
  int64_t rank() const { return scale_A.size(1); }

  // Inference cache of EffectiveWeight(); forward is then one matmul. ClearCache() drops it.
  void CacheEffectiveWeight();
  void ClearCache();
  bool cached() const { return cached_weight_.numel() > 0; }

  // Re-reads derived state after buffers were replaced (state load, snap).
  void SyncFromBuffers();

  at::Tensor weight;             // [O, I] parameter (latent, frozen after FreezeQ)
  at::Tensor bias;               // [O] parameter, or undefined
  at::Tensor scale_A;            // [O, r] parameter
  at::Tensor scale_B;            // [r, I] parameter
  at::Tensor rank_magnitude;     // [r] parameter g
  at::Tensor lut;                // [n] buffer "lut" (requires grad while it trains)
  at::Tensor q;                  // [O, I] buffer "_Q" (weight dtype); [0] until frozen
  at::Tensor indices;            // [O, I] buffer "_indices" (uint8); [0] until frozen
  at::Tensor scales_baked_flag;  // [1] int8 buffer "_scales_baked_flag"

 private:
  QuantLinearV2(const at::Tensor& weight, const at::Tensor& bias, const LayerQuantSpecV2& spec,
                const at::Tensor& scale_A, const at::Tensor& scale_B, const at::Tensor& rank_magnitude,
                const at::Tensor& lut);
  Factors FactorsOf(const at::Tensor& a, const at::Tensor& b, const at::Tensor& g) const;
  at::Tensor ComputeIndicesNow();  // int64 [O, I]
  at::Tensor ForwardLoop(const at::Tensor& x, const at::Tensor& qv, const Factors& f) const;
  at::Tensor ForwardBatched(const at::Tensor& x, const at::Tensor& qv, const Factors& f) const;
  const at::Tensor& Boundaries();

  LayerQuantSpecV2 spec_;
  V2ForwardPath path_ = V2ForwardPath::kAuto;
  bool baked_ = false;        // mirrors scales_baked_flag
  at::Tensor cached_weight_;  // [O, I] buffer "_cached_weight_q", [0] when unset
  at::Tensor boundaries_;     // [n-1] float32
};

}  // namespace qatd::quant
