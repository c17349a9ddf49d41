#include "core/train/gptq_init.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"
#include "core/common/torch_status.h"
#include "core/quant/quant_linear_v1.h"
#include "core/quant/quantize_model.h"

namespace qatd::train {
namespace {

// Passes x through `inner` and, when `hessian` is set, adds x^T x (fp32) to it first.
class HessianRecorder final : public model::LinearLayer {
 public:
  HessianRecorder(std::shared_ptr<model::LinearLayer> inner, at::Tensor hessian)
      : inner_(std::move(inner)), hessian_(std::move(hessian)) {}
  at::Tensor forward(const at::Tensor& x) override {
    if (hessian_.defined()) {
      const at::Tensor rows = x.detach().reshape({-1, x.size(-1)}).to(at::kFloat);
      hessian_.addmm_(rows.t(), rows);
    }
    return inner_->forward(x);
  }
  int64_t in_features() const override { return inner_->in_features(); }
  int64_t out_features() const override { return inner_->out_features(); }
  at::Tensor EffectiveWeight() override { return inner_->EffectiveWeight(); }

 private:
  std::shared_ptr<model::LinearLayer> inner_;
  at::Tensor hessian_;
};

// Layers reading the same input share one Hessian: q/k/v, gate/up.
std::string InputGroup(const std::string& name) {
  for (const char* p : {"k_proj", "v_proj"}) {
    if (absl::EndsWith(name, p)) return name.substr(0, name.size() - 6) + "q_proj";
  }
  if (absl::EndsWith(name, "up_proj")) return name.substr(0, name.size() - 7) + "gate_proj";
  return name;
}

struct V1Layer {
  std::string name;
  std::shared_ptr<quant::QuantLinearV1> layer;
};

void AddLayerReport(const quant::GptqLayerReport& r, const quant::QuantLinearV1& layer, GptqInitReport* report) {
  ++report->layers;
  report->error_nearest += r.error_nearest;
  report->error_gptq += r.error_gptq;
  report->weights += layer.weight.numel();
  report->indices_changed += r.indices_changed;
  report->index_mismatches += r.index_mismatches;
  report->dead_columns += r.dead_columns;
}

// Records the input Hessians of `layers` (all in decoder layer `index`) while running it over
// `xs` with their fake quant off (the unquantized layer), then rounds them. Returns the
// layer's outputs (through the rounded layers with quantized_inputs).
absl::StatusOr<std::vector<at::Tensor>> RoundDecoderLayer(model::Qwen3ModelImpl& model,
                                                          quant::LinearRegistry& registry, int64_t index,
                                                          const std::vector<V1Layer>& layers,
                                                          const std::vector<at::Tensor>& xs,
                                                          const GptqInitOptions& options, GptqInitReport* report) {
  std::map<std::string, at::Tensor> hessians;
  for (const V1Layer& l : layers) {
    const std::string group = InputGroup(l.name);
    at::Tensor h;
    if (!hessians.count(group)) {
      const int64_t in = l.layer->in_features();
      h = at::zeros({in, in}, l.layer->weight.options().dtype(at::kFloat));
      hessians[group] = h;
    }
    l.layer->set_fake_quant(false);
    QATD_RETURN_IF_ERROR(registry.ReplaceLinear(l.name, std::make_shared<HessianRecorder>(l.layer, h)));
  }
  std::vector<at::Tensor> ys;
  absl::Status ran = CatchTorch("GPTQ calibration forward", [&]() -> absl::Status {
    for (const at::Tensor& x : xs) ys.push_back(model.RunLayer(index, x));
    return absl::OkStatus();
  });
  for (const V1Layer& l : layers) {  // restore before anything can return
    l.layer->set_fake_quant(true);
    QATD_RETURN_IF_ERROR(registry.ReplaceLinear(l.name, l.layer));
  }
  QATD_RETURN_IF_ERROR(ran);
  for (const V1Layer& l : layers) {
    const at::Tensor h = hessians.at(InputGroup(l.name)) / static_cast<double>(report->tokens);
    auto r = quant::ApplyGptqRounding(*l.layer, h, options.gptq);
    if (!r.ok()) return absl::Status(r.status().code(), absl::StrCat(l.name, ": ", r.status().message()));
    AddLayerReport(*r, *l.layer, report);
  }
  hessians.clear();
  if (options.quantized_inputs) {
    QATD_RETURN_IF_ERROR(CatchTorch("GPTQ calibration forward", [&]() -> absl::Status {
      for (size_t b = 0; b < xs.size(); ++b) ys[b] = model.RunLayer(index, xs[b]);
      return absl::OkStatus();
    }));
  }
  return ys;
}

}  // namespace

std::vector<int64_t> CalibrationSequences(kd::KdSplit split, int64_t count) {
  const int64_t n = std::max<int64_t>(0, std::min(count, split.size()));
  std::vector<int64_t> ids;
  ids.reserve(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) ids.push_back(split.begin + k * split.size() / n);
  return ids;
}

absl::StatusOr<GptqInitReport> GptqInitialize(model::Qwen3ModelImpl& model, quant::LinearRegistry& registry,
                                              const kd::KdCacheReader& reader, kd::KdSplit split,
                                              const GptqInitOptions& options) {
  if (options.sequences < 1) {
    return absl::InvalidArgumentError(absl::StrCat("calibration_sequences must be >= 1, got ", options.sequences));
  }
  if (options.batch_size < 1) return absl::InvalidArgumentError("GPTQ calibration batch_size must be >= 1");
  if (split.size() < 1) return absl::InvalidArgumentError("GPTQ calibration: the training split is empty");
  at::NoGradGuard no_grad;
  GptqInitReport report;
  report.sequence_ids = CalibrationSequences(split, options.sequences);

  std::vector<V1Layer> v1;
  for (const auto& [name, layer] : quant::QuantizedLayers(registry)) {
    auto p = std::dynamic_pointer_cast<quant::QuantLinearV1>(layer);
    if (p == nullptr) continue;
    if (p->snapped_mode() != quant::SnapMode::kNone) {
      return absl::FailedPreconditionError(absl::StrCat("GPTQ: ", name, " is snapped"));
    }
    v1.push_back({name, p});
  }
  if (v1.empty()) return report;

  std::vector<at::Tensor> xs;  // the hidden states entering the current decoder layer
  const std::span<const int64_t> ids(report.sequence_ids);
  for (size_t b = 0; b < ids.size(); b += static_cast<size_t>(options.batch_size)) {
    QATD_ASSIGN_OR_RETURN(kd::KdBatch batch,
                          reader.Gather(ids.subspan(b, std::min<size_t>(options.batch_size, ids.size() - b))));
    QATD_RETURN_IF_ERROR(CatchTorch("GPTQ calibration embed", [&]() -> absl::Status {
      at::Tensor tokens = batch.input_ids.to(model.device(), at::kLong);
      report.tokens += tokens.numel();
      xs.push_back(model.Embed(tokens));
      return absl::OkStatus();
    }));
  }
  for (int64_t i = 0; i < model.num_layers(); ++i) {
    const std::string prefix = absl::StrCat("model.layers.", i, ".");
    std::vector<V1Layer> here;
    for (const V1Layer& l : v1) {
      if (absl::StartsWith(l.name, prefix)) here.push_back(l);
    }
    QATD_ASSIGN_OR_RETURN(xs, RoundDecoderLayer(model, registry, i, here, xs, options, &report));
  }
  for (const V1Layer& l : v1) {
    if (l.name != "lm_head") continue;
    at::Tensor h;
    QATD_RETURN_IF_ERROR(CatchTorch("GPTQ calibration lm_head", [&]() -> absl::Status {
      h = at::zeros({l.layer->in_features(), l.layer->in_features()}, l.layer->weight.options().dtype(at::kFloat));
      for (const at::Tensor& x : xs) {
        const at::Tensor rows = model.FinalNorm(x).reshape({-1, x.size(-1)}).to(at::kFloat);
        h.addmm_(rows.t(), rows);
      }
      h.div_(static_cast<double>(report.tokens));
      return absl::OkStatus();
    }));
    QATD_ASSIGN_OR_RETURN(quant::GptqLayerReport r, quant::ApplyGptqRounding(*l.layer, h, options.gptq));
    AddLayerReport(r, *l.layer, &report);
  }
  return report;
}

}  // namespace qatd::train
