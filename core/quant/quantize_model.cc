#include "core/quant/quantize_model.h"

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"
#include "core/common/torch_status.h"
#include "core/model/qwen3_model.h"
#include "core/quant/convert.h"
#include "core/quant/export.h"
#include "core/quant/lut_fit.h"
#include "core/quant/quant_linear_v1.h"
#include "core/quant/quant_linear_v2.h"

namespace qatd::quant {
namespace {

bool IsQuantized(const model::LinearLayer* layer) {
  return dynamic_cast<const QuantLinearV1*>(layer) != nullptr || dynamic_cast<const QuantLinearV2*>(layer) != nullptr;
}

at::Tensor BiasOf(model::LinearLayer& layer) {
  const at::Tensor* b = layer.named_parameters(/*recurse=*/false).find("bias");
  return b != nullptr && b->defined() ? b->detach() : at::Tensor();
}

absl::Status WithName(const std::string& name, absl::Status s) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(name, ": ", s.message()));
}

uint64_t Fnv1a(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  return h;
}

// Shared replacement loop; make(weight, bias, kind) builds the new layer.
template <typename Make>
absl::StatusOr<QuantizeReport> ReplaceSelected(LinearRegistry& model, bool attn, bool lm_head, Make make) {
  model.FreezeAllParameters();
  QuantizeReport report;
  for (const QuantTarget& t : SelectQuantTargets(model.LinearNames(), attn, lm_head)) {
    std::shared_ptr<model::LinearLayer> dense = model.GetLinear(t.name);
    if (!dense) return absl::NotFoundError(absl::StrCat("no linear layer named '", t.name, "'"));
    if (IsQuantized(dense.get())) {
      report.already_quantized.push_back(t.name);
      continue;
    }
    absl::StatusOr<std::shared_ptr<model::LinearLayer>> layer = CatchTorchOr<std::shared_ptr<model::LinearLayer>>(
        "quantize", [&]() { return make(dense->EffectiveWeight(), BiasOf(*dense), t.kind); });
    if (!layer.ok()) return WithName(t.name, layer.status());
    QATD_RETURN_IF_ERROR(WithName(t.name, model.ReplaceLinear(t.name, *layer)));
    report.replaced.push_back(t.name);
  }
  return report;
}

template <typename Layer, typename Fn>
absl::StatusOr<std::vector<SnapStats>> SnapEach(LinearRegistry& model, Fn fn) {
  std::vector<SnapStats> out;
  for (auto& [name, layer] : QuantizedLayers(model)) {
    auto* typed = dynamic_cast<Layer*>(layer.get());
    if (typed == nullptr) continue;
    absl::StatusOr<SnapStats> st = fn(*typed);
    if (!st.ok()) return WithName(name, st.status());
    st->name = name;
    out.push_back(*st);
  }
  return out;
}

// The adapter from the Qwen3 model to the registry interface.
class Qwen3Registry final : public LinearRegistry {
 public:
  explicit Qwen3Registry(model::Qwen3ModelImpl& model) : model_(model) {}

  std::vector<std::string> LinearNames() const override { return model_.LinearNames(); }
  std::shared_ptr<model::LinearLayer> GetLinear(const std::string& name) override { return model_.GetLinear(name); }
  absl::Status ReplaceLinear(const std::string& name, std::shared_ptr<model::LinearLayer> layer) override {
    std::shared_ptr<model::LinearLayer> old = model_.GetLinear(name);
    if (!old) return absl::NotFoundError(absl::StrCat("no linear layer named '", name, "'"));
    if (!layer || layer->in_features() != old->in_features() || layer->out_features() != old->out_features()) {
      return absl::InvalidArgumentError(absl::StrCat("replacement for '", name, "' must be ", old->out_features(),
                                                     "x", old->in_features()));
    }
    return CatchTorch("replace linear", [&]() {
      model_.ReplaceLinear(name, std::move(layer));
      return absl::OkStatus();
    });
  }
  void FreezeAllParameters() override {
    for (at::Tensor& p : model_.parameters(/*recurse=*/true)) p.requires_grad_(false);
  }

 private:
  model::Qwen3ModelImpl& model_;
};

}  // namespace

std::unique_ptr<LinearRegistry> MakeQwen3Registry(model::Qwen3ModelImpl& model) {
  return std::make_unique<Qwen3Registry>(model);
}

std::optional<LinearKind> ClassifyLinear(std::string_view name) {
  for (const char* s : {".mlp.gate_proj", ".mlp.up_proj", ".mlp.down_proj"}) {
    if (name.ends_with(s)) return LinearKind::kMlp;
  }
  for (const char* s : {".self_attn.q_proj", ".self_attn.k_proj", ".self_attn.v_proj", ".self_attn.o_proj"}) {
    if (name.ends_with(s)) return LinearKind::kAttention;
  }
  if (name == "lm_head") return LinearKind::kLmHead;
  return std::nullopt;
}

std::vector<QuantTarget> SelectQuantTargets(const std::vector<std::string>& names, bool quantize_attn,
                                            bool quantize_lm_head) {
  std::vector<QuantTarget> out;
  for (const std::string& name : names) {
    std::optional<LinearKind> kind = ClassifyLinear(name);
    if (!kind) continue;
    if (*kind == LinearKind::kAttention && !quantize_attn) continue;
    if (*kind == LinearKind::kLmHead && !quantize_lm_head) continue;
    out.push_back({name, *kind});
  }
  return out;
}

absl::StatusOr<QuantizeReport> QuantizeLinears(LinearRegistry& model, const QuantConfig& config) {
  QATD_RETURN_IF_ERROR(config.Validate());
  return ReplaceSelected(model, config.quantize_attn, config.quantize_lm_head,
                         [&](const at::Tensor& w, const at::Tensor& b,
                             LinearKind kind) -> absl::StatusOr<std::shared_ptr<model::LinearLayer>> {
                           // lm_head uses the MLP settings (spec §1).
                           LinearKind k = kind == LinearKind::kAttention ? kind : LinearKind::kMlp;
                           const LayerQuantSpec spec = config.ForKind(k);
                           QATD_ASSIGN_OR_RETURN(auto layer, QuantLinearV1::Create(w, b, spec));
                           if (spec.lut_init == LutInit::kKMeans) {
                             QATD_ASSIGN_OR_RETURN(LutFit fit, FitLayerLut(*layer));
                             (void)fit;
                           }
                           return std::shared_ptr<model::LinearLayer>(layer);
                         });
}

absl::StatusOr<QuantizeReport> QuantizeLinearsV2(LinearRegistry& model, const QuantConfigV2& config, bool freeze_q) {
  QATD_RETURN_IF_ERROR(config.Validate());
  return ReplaceSelected(model, config.quantize_attn, config.quantize_lm_head,
                         [&](const at::Tensor& w, const at::Tensor& b,
                             LinearKind kind) -> absl::StatusOr<std::shared_ptr<model::LinearLayer>> {
                           LinearKind k = kind == LinearKind::kAttention ? kind : LinearKind::kMlp;
                           QATD_ASSIGN_OR_RETURN(auto layer, QuantLinearV2::Create(w, b, config.ForKind(k)));
                           if (freeze_q) layer->FreezeQ();
                           return std::shared_ptr<model::LinearLayer>(layer);
                         });
}

std::vector<std::pair<std::string, std::shared_ptr<model::LinearLayer>>> QuantizedLayers(LinearRegistry& model) {
  std::vector<std::pair<std::string, std::shared_ptr<model::LinearLayer>>> out;
  for (const std::string& name : model.LinearNames()) {
    std::shared_ptr<model::LinearLayer> layer = model.GetLinear(name);
    if (layer && IsQuantized(layer.get())) out.emplace_back(name, layer);
  }
  return out;
}

absl::Status ApplyTrainableSet(LinearRegistry& model, const TrainableSet& set) {
  auto layers = QuantizedLayers(model);
  for (auto& [name, layer] : layers) {  // validate before touching anything
    if (dynamic_cast<QuantLinearV2*>(layer.get()) && set.weights) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": V2 layers have no weight gradient path (spec §4.5); train scales or g only"));
    }
    if (dynamic_cast<QuantLinearV1*>(layer.get()) && set.g_only) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": g-only training needs V2 layers (V1 has no magnitudes)"));
    }
  }
  model.FreezeAllParameters();
  for (auto& [name, layer] : layers) {
    if (set.mlp_only && ClassifyLinear(name) == LinearKind::kAttention) continue;
    if (auto* v1 = dynamic_cast<QuantLinearV1*>(layer.get())) v1->SetTrainable(set.weights, set.scales);
    if (auto* v2 = dynamic_cast<QuantLinearV2*>(layer.get())) v2->SetTrainable(set.scales || set.g_only, set.g_only);
  }
  return absl::OkStatus();
}

absl::Status FreezeAllQ(LinearRegistry& model) {
  for (auto& [name, layer] : QuantizedLayers(model)) {
    if (auto* v2 = dynamic_cast<QuantLinearV2*>(layer.get()); v2 && !v2->q_frozen()) {
      QATD_RETURN_IF_ERROR(WithName(name, CatchTorch("freeze_Q", [&] {
                                      v2->FreezeQ();
                                      return absl::OkStatus();
                                    })));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<SnapStats>> SnapAllV1(LinearRegistry& model, SnapMode mode) {
  return SnapEach<QuantLinearV1>(model, [mode](QuantLinearV1& l) { return SnapV1(l, mode); });
}

absl::StatusOr<std::vector<SnapStats>> SnapAllV2ForExport(LinearRegistry& model) {
  return SnapEach<QuantLinearV2>(model, [](QuantLinearV2& l) { return SnapV2ForExport(l); });
}

absl::StatusOr<std::vector<SnapStats>> SnapAllV2ForAne(LinearRegistry& model, const AneSnapOptions& options) {
  return SnapEach<QuantLinearV2>(model, [&options](QuantLinearV2& l) { return SnapV2ForAne(l, options); });
}

absl::Status ConvertAllLutAndRank(LinearRegistry& model, const QuantConfigV2& target, uint64_t seed) {
  QATD_RETURN_IF_ERROR(target.Validate());
  for (auto& [name, layer] : QuantizedLayers(model)) {
    auto* v2 = dynamic_cast<QuantLinearV2*>(layer.get());
    if (v2 == nullptr) continue;
    LinearKind kind = ClassifyLinear(name) == LinearKind::kAttention ? LinearKind::kAttention : LinearKind::kMlp;
    auto converted = ConvertLutAndRank(*v2, target.ForKind(kind), seed ^ Fnv1a(name));
    if (!converted.ok()) return WithName(name, converted.status());
    QATD_RETURN_IF_ERROR(WithName(name, model.ReplaceLinear(name, *converted)));
  }
  return absl::OkStatus();
}

absl::Status ConvertAllV1ToV2(LinearRegistry& model, const QuantConfigV2& target) {
  QATD_RETURN_IF_ERROR(target.Validate());
  for (auto& [name, layer] : QuantizedLayers(model)) {
    auto* v1 = dynamic_cast<QuantLinearV1*>(layer.get());
    if (v1 == nullptr) continue;
    LinearKind kind = ClassifyLinear(name) == LinearKind::kAttention ? LinearKind::kAttention : LinearKind::kMlp;
    auto converted = ConvertV1ToV2(*v1, target.ForKind(kind));
    if (!converted.ok()) return WithName(name, converted.status());
    QATD_RETURN_IF_ERROR(WithName(name, model.ReplaceLinear(name, *converted)));
  }
  return absl::OkStatus();
}

TensorMap QuantState(LinearRegistry& model) {
  TensorMap out;
  for (auto& [name, layer] : QuantizedLayers(model)) {
    TensorMap one = LayerState(*layer, name);
    out.insert(one.begin(), one.end());
  }
  return out;
}

absl::Status LoadQuantState(LinearRegistry& model, const TensorMap& state) {
  for (auto& [name, layer] : QuantizedLayers(model)) {
    QATD_RETURN_IF_ERROR(WithName(name, LoadLayerState(*layer, state, name)));
  }
  return absl::OkStatus();
}

}  // namespace qatd::quant
