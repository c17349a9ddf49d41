#pragma once
// LoRA adapters on a (snapped) quantized student (issue #19; the seed's
// train_recovery_lora_multi.py): each targeted projection is wrapped in a LoraLinear that adds
// a trainable low-rank path to the frozen layer it wraps:
//
//   y = base(x) + scaling * B (A dropout(x)),  A: [r, in], B: [out, r], scaling = alpha / r
//
// as PEFT's LoRA computes it (A initialised like PEFT: kaiming-uniform(a = sqrt(5)), i.e.
// U(-1/sqrt(in), 1/sqrt(in)), from a seeded CPU generator; B = 0, so a fresh adapter does not
// change the model). The base layer (LUT, indices, scales) is never written.
//
// Names follow PEFT's saved layout: "base_model.model.<module>.lora_A.weight" /
// ".lora_B.weight" (e.g. base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight), so
// adapter files (core/train/peft_adapter.h) load in PEFT.
//
// While attached, the registry's projections are LoraLinear wrappers: quant::QuantizedLayers
// and QuantState do not see the quantized layers behind them. Detach() puts them back.
// Not thread-safe; one forward at a time (the model's own contract).

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/linear.h"
#include "core/quant/tensor_io.h"
#include "core/train/lora_options.h"
#include "core/train/student.h"
#include "core/train/trainable.h"

namespace qatd::train {

class LoraLinear : public model::LinearLayer {
 public:
  // lora_A/lora_B in `dtype` (kFloat or kBFloat16) on the base's device; `init_seed` draws A.
  LoraLinear(std::shared_ptr<model::LinearLayer> base, const LoraConfig& config, uint64_t init_seed,
             at::ScalarType dtype);
  // x: [..., in] in the model's dtype -> [..., out] in the base's output dtype. Dropout runs
  // only with grad mode on (a training step), from a clone of the device's default generator
  // seeded with MixSeed(init_seed, dropout_calls), so masks replay after a resume.
  at::Tensor forward(const at::Tensor& x) override;
  int64_t in_features() const override { return base_->in_features(); }
  int64_t out_features() const override { return base_->out_features(); }
  // The merged weight base + scaling * B A (formed in fp32, returned in the base weight's dtype).
  at::Tensor EffectiveWeight() override;

  const std::shared_ptr<model::LinearLayer>& base() const { return base_; }
  at::Tensor lora_A;              // [r, in] parameter
  at::Tensor lora_B;              // [out, r] parameter
  int64_t dropout_calls = 0;      // training forwards with dropout so far (resume state)

 private:
  std::shared_ptr<model::LinearLayer> base_;
  double scaling_;
  double dropout_;
  uint64_t init_seed_;
};

// The adapters attached to one student. Implements ExternalTrainable so the end-to-end
// trainer (core/train/e2e_trainer.h) trains them: best/ holds the PEFT adapter files.
class LoraAdapters : public ExternalTrainable {
 public:
  // Wraps every projection of `student` whose last name component is in
  // config.target_modules (decoder layers only; lm_head never). `student` must outlive the
  // result. INVALID_ARGUMENT for a bad config or when nothing matches.
  static absl::StatusOr<std::unique_ptr<LoraAdapters>> Attach(Student& student, const LoraConfig& config);
  // Puts the wrapped layers back (idempotent). The destructor does not detach.
  absl::Status Detach();

  const LoraConfig& config() const { return config_; }
  // HF module names with adapters, in model order.
  std::vector<std::string> modules() const;
  // "base_model.model.<module>.lora_{A,B}.weight" -> the parameter (live, not copies).
  quant::TensorMap PeftTensors() const;
  // Copies every adapter tensor from `tensors` (PEFT names; converted to the parameters' dtype
  // and device). INVALID_ARGUMENT naming a missing or mis-shaped tensor or an unknown name.
  absl::Status LoadPeftTensors(const quant::TensorMap& tensors);
  static std::string PeftName(const std::string& module, const char* which);  // which: "lora_A" / "lora_B"
  // requires_grad = false on every adapter (inference); Attach leaves them trainable.
  void FreezeAll();

  // ExternalTrainable.
  std::vector<std::pair<std::string, at::Tensor>> Parameters() override;
  quant::TensorMap State() override;  // PeftTensors + "dropout_calls" I64 [n]
  absl::Status LoadState(const quant::TensorMap& state) override;
  absl::Status SaveBest(Student& student, const std::string& dir, const nlohmann::json& extra) override;
  absl::Status LoadBest(const std::string& dir) override;
  nlohmann::json Fingerprint() const override;

 private:
  LoraAdapters(Student& student, LoraConfig config) : student_(student), config_(std::move(config)) {}
  Student& student_;
  LoraConfig config_;
  std::vector<std::pair<std::string, std::shared_ptr<LoraLinear>>> layers_;
  bool attached_ = false;
};

}  // namespace qatd::train
