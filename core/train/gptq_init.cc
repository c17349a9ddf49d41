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
#include "core/quant/quant_linear_v2.h"
#include "core/quant/quantize_model.h"

namespace qatd::train {
namespace {

// Passes x through `inner` (or, with a `latent` weight, through the unquantized x W^T + b:
// how a V2 layer, which has no fake-quant switch, runs unquantized) and, when `hessian` is set,
// adds x^T x (fp32) to it first.
class HessianRecorder final : public model::LinearLayer {
 public:
  HessianRecorder(std::shared_ptr<model::LinearLayer> inner, at::Tensor hessian, at::Tensor latent = {},
                  at::Tensor bias = {})
      : inner_(std::move(inner)), hessian_(std::move(hessian)), latent_(std::move(latent)), bias_(std::move(bias)) {}
  at::Tensor forward(const at::Tensor& x) override {
    if (hessian_.defined()) {
      const at::Tensor rows = x.detach().reshape({-1, x.size(-1)}).to(at::kFloat);
      hessian_.addmm_(rows.t(), rows);
    }
    if (latent_.defined()) {
      return at::linear(x, latent_.to(x.scalar_type()), bias_.defined() ? bias_.to(x.scalar_type()) : bias_);
    }
    return inner_->forward(x);
  }
  int64_t in_features() const override { return inner_->in_features(); }
  int64_t out_features() const override { return inner_->out_features(); }
  at::Tensor EffectiveWeight() override { return inner_->EffectiveWeight(); }

 private:
  std::shared_ptr<model::LinearLayer> inner_;
  at::Tensor hessian_;
  at::Tensor latent_;
  at::Tensor bias_;
};

// Layers reading the same input share one Hessian: q/k/v, gate/up.
std::string InputGroup(const std::string& name) {
  for (const char* p : {"k_proj", "v_proj"}) {
    if (absl::EndsWith(name, p)) return name.substr(0, name.size() - 6) + "q_proj";
  }
  if (absl::EndsWith(name, "up_proj")) return name.substr(0, name.size() - 7) + "gate_proj";
  return name;
}

// A V1 layer (GPTQ sets its latent weight) or a V2 layer (GPTQ sets its frozen indices).
struct QLayer {
  std::string name;
  std::shared_ptr<quant::QuantLinearV1> v1;
  std::shared_ptr<quant::QuantLinearV2> v2;
  std::shared_ptr<model::LinearLayer> base() const {
    return v1 ? std::static_pointer_cast<model::LinearLayer>(v1) : std::static_pointer_cast<model::LinearLayer>(v2);
  }
  const at::Tensor& weight() const { return v1 ? v1->weight : v2->weight; }
};

void AddLayerReport(const quant::GptqLayerReport& r, const QLayer& layer, GptqInitReport* report) {
  ++report->layers;
  report->error_nearest += r.error_nearest;
  report->error_gptq += r.error_gptq;
  report->weights += layer.weight().numel();
  report->indices_changed += r.indices_changed;
  report->index_mismatches += r.index_mismatches;
  report->dead_columns += r.dead_columns;
}

// Records the input Hessians of `layers` (all in decoder layer `index`) while running it over
// `xs` with their fake quant off (the unquantized layer), then rounds them. Returns the
// layer's outputs (through the rounded layers with quantized_inputs).
absl::StatusOr<std::vector<at::Tensor>> RoundDecoderLayer(model::Qwen3ModelImpl& model,
                                                          quant::LinearRegistry& registry, int64_t index,
                                                          const std::vector<QLayer>& layers,
                                                          const std::vector<at::Tensor>& xs,
                                                          const GptqInitOptions& options, GptqInitReport* report) {
  std::map<std::string, at::Tensor> hessians;
  for (const QLayer& l : layers) {
    const std::string group = InputGroup(l.name);
    at::Tensor h;
    if (!hessians.count(group)) {
      const int64_t in = l.base()->in_features();
      h = at::zeros({in, in}, l.weight().options().dtype(at::kFloat));
      hessians[group] = h;
    }
    std::shared_ptr<HessianRecorder> recorder;
    if (l.v1) {
      l.v1->set_fake_quant(false);
      recorder = std::make_shared<HessianRecorder>(l.v1, h);
    } else {
      recorder = std::make_shared<HessianRecorder>(l.v2, h, l.v2->weight, l.v2->bias);
    }
    QATD_RETURN_IF_ERROR(registry.ReplaceLinear(l.name, recorder));
  }
  std::vector<at::Tensor> ys;
  absl::Status ran = CatchTorch("GPTQ calibration forward", [&]() -> absl::Status {
    for (const at::Tensor& x : xs) ys.push_back(model.RunLayer(index, x));
    return absl::OkStatus();
  });
  for (const QLayer& l : layers) {  // restore before anything can return
    if (l.v1) l.v1->set_fake_quant(true);
    QATD_RETURN_IF_ERROR(registry.ReplaceLinear(l.name, l.base()));
  }
  QATD_RETURN_IF_ERROR(ran);
  for (const QLayer& l : layers) {
    const at::Tensor h = hessians.at(InputGroup(l.name)) / static_cast<double>(report->tokens);
    auto r = l.v1 ? quant::ApplyGptqRounding(*l.v1, h, options.gptq) : quant::ApplyGptqRoundingV2(*l.v2, h, options.gptq);
    if (!r.ok()) return absl::Status(r.status().code(), absl::StrCat(l.name, ": ", r.status().message()));
    AddLayerReport(*r, l, report);
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

  std::vector<QLayer> all;
  for (const auto& [name, layer] : quant::QuantizedLayers(registry)) {
    QLayer l{name, std::dynamic_pointer_cast<quant::QuantLinearV1>(layer),
             std::dynamic_pointer_cast<quant::QuantLinearV2>(layer)};
    if (l.v1 == nullptr && l.v2 == nullptr) continue;
    if ((l.v1 && l.v1->snapped_mode() != quant::SnapMode::kNone) || (l.v2 && l.v2->scales_baked())) {
      return absl::FailedPreconditionError(absl::StrCat("GPTQ: ", name, " is snapped"));
    }
    all.push_back(std::move(l));
  }
  if (all.empty()) return report;

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
    std::vector<QLayer> here;
    for (const QLayer& l : all) {
      if (absl::StartsWith(l.name, prefix)) here.push_back(l);
    }
    QATD_ASSIGN_OR_RETURN(xs, RoundDecoderLayer(model, registry, i, here, xs, options, &report));
  }
  for (const QLayer& l : all) {
    if (l.name != "lm_head") continue;
    at::Tensor h;
    QATD_RETURN_IF_ERROR(CatchTorch("GPTQ calibration lm_head", [&]() -> absl::Status {
      const int64_t in = l.base()->in_features();
      h = at::zeros({in, in}, l.weight().options().dtype(at::kFloat));
      for (const at::Tensor& x : xs) {
        const at::Tensor rows = model.FinalNorm(x).reshape({-1, x.size(-1)}).to(at::kFloat);
        h.addmm_(rows.t(), rows);
      }
      h.div_(static_cast<double>(report.tokens));
      return absl::OkStatus();
    }));
    QATD_ASSIGN_OR_RETURN(quant::GptqLayerReport r, l.v1 ? quant::ApplyGptqRounding(*l.v1, h, options.gptq)
                                                         : quant::ApplyGptqRoundingV2(*l.v2, h, options.gptq));
    AddLayerReport(r, l, &report);
  }
  return report;
}

}  // namespace qatd::train
