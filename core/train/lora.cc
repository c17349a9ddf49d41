#include "core/train/lora.h"

#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/common/status_macros.h"
#include "core/common/torch_status.h"
#include "core/kd/packing.h"
#include "core/train/optimizer.h"
#include "core/train/peft_adapter.h"

namespace qatd::train {
namespace fs = std::filesystem;
namespace {

uint64_t Fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

// The last component of a module name: "model.layers.0.self_attn.q_proj" -> "q_proj".
std::string LastComponent(const std::string& name) {
  const size_t dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(dot + 1);
}

}  // namespace

LoraLinear::LoraLinear(std::shared_ptr<model::LinearLayer> base, const LoraConfig& config, uint64_t init_seed,
                       at::ScalarType dtype)
    : base_(std::move(base)), scaling_(config.scaling()), dropout_(config.dropout), init_seed_(init_seed) {
  register_module("base", base_);
  const int64_t in = base_->in_features();
  const int64_t out = base_->out_features();
  const at::Tensor probe = base_->EffectiveWeight();
  // PEFT: nn.init.kaiming_uniform_(lora_A, a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)); lora_B = 0.
  at::Generator gen = at::detail::createCPUGenerator(init_seed);
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  at::Tensor a = at::empty({config.rank, in}, at::kFloat).uniform_(-bound, bound, gen);
  lora_A = register_parameter("lora_A", a.to(probe.device(), dtype));
  lora_B = register_parameter("lora_B", at::zeros({out, config.rank}, at::TensorOptions(dtype).device(probe.device())));
  // bf16 adapters (the seed's --dtype bf16) keep their AdamW moments in bf16 and no fp32
  // master: a third of fp32-master state, half of fp32 adapters' (lora_options.h).
  if (dtype != at::kFloat) {
    SetAdamStateDtype(lora_A, AdamStateDtype::kParameterDtype);
    SetAdamStateDtype(lora_B, AdamStateDtype::kParameterDtype);
  }
}

at::Tensor LoraLinear::forward(const at::Tensor& x) {
  at::Tensor y = base_->forward(x);
  at::Tensor h = x.to(lora_A.scalar_type());
  if (dropout_ > 0 && at::GradMode::is_enabled()) {
    // A counter-seeded mask: the same masks after a resume (dropout_calls is resume state).
    // A private generator of the device's kind (a clone of its default one, re-seeded): the
    // global generators are left alone.
    at::Generator gen;
    {
      at::Generator global = at::globalContext().defaultGenerator(h.device());
      std::lock_guard<std::mutex> lock(global.mutex());
      gen = global.clone();
    }
    gen.set_current_seed(kd::MixSeed(init_seed_, static_cast<uint64_t>(dropout_calls)));
    at::Tensor keep = at::empty_like(h).bernoulli_(1.0 - dropout_, gen);
    ++dropout_calls;
    h = h * keep / (1.0 - dropout_);
  }
  h = at::matmul(at::matmul(h, lora_A.t()), lora_B.t()) * scaling_;
  return y + h.to(y.scalar_type());
}

at::Tensor LoraLinear::EffectiveWeight() {
  at::NoGradGuard no_grad;
  at::Tensor w = base_->EffectiveWeight();
  at::Tensor delta = at::matmul(lora_B.to(at::kFloat), lora_A.to(at::kFloat)) * scaling_;
  return (w.to(at::kFloat) + delta.to(w.device())).to(w.scalar_type());
}

absl::StatusOr<std::unique_ptr<LoraAdapters>> LoraAdapters::Attach(Student& student, const LoraConfig& config) {
  QATD_RETURN_IF_ERROR(config.Validate());
  std::unique_ptr<LoraAdapters> out(new LoraAdapters(student, config));
  out->attached_ = true;
  const at::ScalarType dtype = config.dtype == "bf16" ? at::kBFloat16 : at::kFloat;
  for (const std::string& name : student.registry->LinearNames()) {
    if (name.rfind("model.layers.", 0) != 0) continue;  // lm_head never
    const std::string last = LastComponent(name);
    if (std::find(config.target_modules.begin(), config.target_modules.end(), last) == config.target_modules.end()) {
      continue;
    }
    std::shared_ptr<model::LinearLayer> base = student.registry->GetLinear(name);
    if (std::dynamic_pointer_cast<LoraLinear>(base) != nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(name, " already has a LoRA adapter"));
    }
    std::shared_ptr<LoraLinear> layer;
    absl::Status made = CatchTorch("LoRA adapter init", [&] {
      layer = std::make_shared<LoraLinear>(base, config, kd::MixSeed(config.seed, Fnv1a(name)), dtype);
      return absl::OkStatus();
    });
    if (made.ok()) made = student.registry->ReplaceLinear(name, layer);
    if (!made.ok()) {
      (void)out->Detach();  // the model is left as it was
      return absl::Status(made.code(), absl::StrCat(name, ": ", made.message()));
    }
    out->layers_.emplace_back(name, std::move(layer));
  }
  if (out->layers_.empty()) {  // nothing was replaced: nothing to detach
    return absl::InvalidArgumentError(absl::StrCat("target_modules (", absl::StrJoin(config.target_modules, " "),
                                                   ") match no projection of the model"));
  }
  return out;
}

absl::Status LoraAdapters::Detach() {
  if (!attached_) return absl::OkStatus();
  for (auto& [name, layer] : layers_) QATD_RETURN_IF_ERROR(student_.registry->ReplaceLinear(name, layer->base()));
  attached_ = false;
  return absl::OkStatus();
}

std::vector<std::string> LoraAdapters::modules() const {
  std::vector<std::string> out;
  for (const auto& [name, layer] : layers_) out.push_back(name);
  return out;
}

std::string LoraAdapters::PeftName(const std::string& module, const char* which) {
  return absl::StrCat("base_model.model.", module, ".", which, ".weight");
}

quant::TensorMap LoraAdapters::PeftTensors() const {
  quant::TensorMap out;
  for (const auto& [name, layer] : layers_) {
    out[PeftName(name, "lora_A")] = layer->lora_A.detach();
    out[PeftName(name, "lora_B")] = layer->lora_B.detach();
  }
  return out;
}

absl::Status LoraAdapters::LoadPeftTensors(const quant::TensorMap& tensors) {
  quant::TensorMap mine = PeftTensors();
  for (const auto& [key, t] : tensors) {
    if (!mine.count(key)) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", key, " names no adapter of this model and config"));
    }
  }
  for (const auto& [key, dst] : mine) {
    auto it = tensors.find(key);
    if (it == tensors.end()) return absl::InvalidArgumentError(absl::StrCat("tensor ", key, " is missing"));
    if (it->second.sizes() != dst.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", key, " has shape [", absl::StrJoin(it->second.sizes(), ", "),
                                                     "], expected [", absl::StrJoin(dst.sizes(), ", "), "]"));
    }
  }
  return CatchTorch("LoRA adapter load", [&] {
    at::NoGradGuard no_grad;
    for (auto& [key, dst] : mine) dst.copy_(tensors.at(key).to(dst.device(), dst.scalar_type()));
    return absl::OkStatus();
  });
}

void LoraAdapters::FreezeAll() {
  for (auto& [name, layer] : layers_) {
    layer->lora_A.set_requires_grad(false);
    layer->lora_B.set_requires_grad(false);
  }
}

std::vector<std::pair<std::string, at::Tensor>> LoraAdapters::Parameters() {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (auto& [name, layer] : layers_) {
    layer->lora_A.set_requires_grad(true);
    layer->lora_B.set_requires_grad(true);
    out.emplace_back(PeftName(name, "lora_A"), layer->lora_A);
    out.emplace_back(PeftName(name, "lora_B"), layer->lora_B);
  }
  return out;
}

quant::TensorMap LoraAdapters::State() {
  quant::TensorMap out = PeftTensors();
  std::vector<int64_t> calls;
  for (const auto& [name, layer] : layers_) calls.push_back(layer->dropout_calls);
  out["dropout_calls"] = at::tensor(calls, at::kLong);
  return out;
}

absl::Status LoraAdapters::LoadState(const quant::TensorMap& state) {
  quant::TensorMap tensors = state;
  auto it = tensors.find("dropout_calls");
  if (it == tensors.end() || it->second.numel() != static_cast<int64_t>(layers_.size())) {
    return absl::DataLossError(absl::StrCat("adapter state: \"dropout_calls\" must hold ", layers_.size(), " counters"));
  }
  const at::Tensor calls = it->second.to(at::kLong).contiguous();
  for (size_t i = 0; i < layers_.size(); ++i) layers_[i].second->dropout_calls = calls[static_cast<int64_t>(i)].item<int64_t>();
  tensors.erase(it);
  return LoadPeftTensors(tensors);
}

absl::Status LoraAdapters::SaveBest(Student& student, const std::string& dir, const nlohmann::json& extra) {
  nlohmann::json info = extra.is_object() ? extra : nlohmann::json::object();
  if (!student.source.empty()) info["checkpoint_config"] = student.source.value("job", nlohmann::json::object());
  return WritePeftAdapter(*this, dir, student.base_model, info);
}

absl::Status LoraAdapters::LoadBest(const std::string& dir) {
  QATD_ASSIGN_OR_RETURN(PeftAdapter adapter, ReadPeftAdapter(dir));
  return LoadPeftTensors(adapter.tensors);
}

nlohmann::json LoraAdapters::Fingerprint() const {
  return {{"kind", "lora"},
          {"rank", config_.rank},
          {"alpha", config_.alpha},
          {"dropout", config_.dropout},
          {"target_modules", config_.target_modules},
          {"dtype", config_.dtype},
          {"seed", config_.seed}};
}

}  // namespace qatd::train
