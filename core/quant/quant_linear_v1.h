#pragma once
// V1 LUT fake-quant linear (the reference's AnemllQATLinear, spec §3).
//
//   S = clamp(A @ B, 1e-8)               [O, P]  (or clamp(full_scales, 1e-8) when rank is 0/max)
//   u = W / S[:, :I]                     [O, I]  float32, no autograd
//   idx = nearest LUT entry of u         (spec §2.2 HEAD fix; ties to the lower index)
//   W_q = LUT[idx] * S[:, :I]            [O, I]  in the parameter dtype
//   y = x W_qᵀ + bias                    x: [..., I] -> y: [..., O]
//
// Gradients (spec §3.5 with the §17.1 bug fixed): the latent weight gets the identity
// (straight-through) gradient dL/dW_q; the scales get the gradient through S
// (dL/dS = dL/dW_q * LUT[idx], zero where A@B < 1e-8). With both trainable, BOTH get their
// gradient (the reference gives the scales none).
//
// All parameters share the weight's dtype and device; the LUT buffer holds the pinned values
// rounded to that dtype (as the reference's module.to(dtype) does). Not thread-safe.

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "core/model/linear.h"
#include "core/quant/quant_config.h"

namespace qatd::quant {

// V1 snapped mode (spec §10.1); persisted as the int8 buffer "_snapped_mode".
enum class SnapMode : int8_t {
  kNone = 0,        // latent weight + fake quant
  kLut = 1,         // weight holds LUT[idx] (normalised); forward uses weight * S
  kBakeScales = 2,  // weight holds LUT[idx] * S; forward uses weight directly
};

class QuantLinearV1 final : public model::LinearLayer {
 public:
  // weight: [O, I] floating (copied; the layer keeps its dtype and device); bias: [O] or
  // undefined. Initialises the scales per spec §3.3. INVALID_ARGUMENT on bad shapes/spec.
  // Every parameter starts frozen (requires_grad false); see SetTrainable.
  static absl::StatusOr<std::shared_ptr<QuantLinearV1>> Create(const at::Tensor& weight, const at::Tensor& bias,
                                                               const LayerQuantSpec& spec);

  // x: [..., I] -> [..., O] in x's dtype.
  at::Tensor forward(const at::Tensor& x) override;
  int64_t in_features() const override { return weight.size(1); }
  int64_t out_features() const override { return weight.size(0); }
  // [O, I] in the weight dtype, no graph: what forward multiplies with.
  at::Tensor EffectiveWeight() override;

  // Module::to(dtype) casts floating parameters and buffers only: indices and flags keep
  // their integer types (LibTorch's default would cast them too). Other overloads unchanged.
  using torch::nn::Module::to;
  void to(torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;

  const LayerQuantSpec& spec() const { return spec_; }
  bool low_rank() const { return low_rank_; }
  int64_t padded_in() const { return padded_in_; }
  int64_t rank() const { return low_rank_ ? scale_A.size(1) : 0; }

  // S = clamp(A@B, 1e-8) or clamp(full_scales, 1e-8): [O, P] in the parameter dtype, with an
  // autograd graph when the scales require grad.
  at::Tensor EffectiveScales();
  // [O, I] uint8 LUT indices of the current state, correct in every snapped mode (in 'lut'
  // mode the weight already holds LUT values and is not divided by S again: spec §17.4 fix).
  at::Tensor ComputeIndices();

  // Trainable sets (spec §3.6): weights -> `weight`; scales -> scale_A/scale_B, or
  // full_scales for full-scale layers (the reference never trains those, spec §17.3).
  void SetTrainable(bool weights, bool scales);

  SnapMode snapped_mode() const { return mode_; }
  // Replaces the weight values and sets the mode (used by snap.cc). new_weight: [O, I].
  void SetSnapped(SnapMode mode, const at::Tensor& new_weight);

  // With fake quant off and no snap, forward uses the raw weight (spec §3.5 priority 5).
  void set_fake_quant(bool on) { fake_quant_ = on; }
  bool fake_quant() const { return fake_quant_; }

  // Inference cache (spec §3.7): caches EffectiveWeight() so forward is one matmul. Any
  // parameter change after caching is ignored until ClearCache().
  void CacheEffectiveWeight();
  void ClearCache();
  bool cached() const { return cached_weight_.numel() > 0; }

  // Re-reads derived state from the buffers after they were replaced (state load, conversion):
  // the LUT's index boundaries and the snapped mode.
  void SyncFromBuffers();

  at::Tensor weight;       // [O, I] parameter
  at::Tensor bias;         // [O] parameter, or undefined
  at::Tensor scale_A;      // [O, r] parameter (low rank), else undefined
  at::Tensor scale_B;      // [r, P] parameter (low rank), else undefined
  at::Tensor full_scales;  // [O, P] parameter (full scales), else undefined
  at::Tensor lut;          // [n] buffer "lut"

 private:
  QuantLinearV1(const at::Tensor& weight, const at::Tensor& bias, const LayerQuantSpec& spec, bool low_rank,
                int64_t padded_in);
  at::Tensor CurrentWeight();
  at::Tensor FakeQuantWeight();
  at::Tensor ScalesForInput();  // S[:, :I]
  const at::Tensor& Boundaries();

  LayerQuantSpec spec_;
  bool low_rank_ = true;
  int64_t padded_in_ = 0;
  bool fake_quant_ = true;
  SnapMode mode_ = SnapMode::kNone;  // mirrors snapped_mode_ (no device sync per forward)
  at::Tensor snapped_mode_;   // int8 [1] buffer "_snapped_mode"
  at::Tensor cached_weight_;  // [O, I] buffer "_cached_weight_q", [0] when unset
  at::Tensor boundaries_;     // [n-1] float32, follows lut's device
};

}  // namespace qatd::quant
