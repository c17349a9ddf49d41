#include "core/quant/export.h"

#include <ATen/core/grad_mode.h>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/common/status_macros.h"
#include "core/common/torch_status.h"
#include "core/quant/lut.h"
#include "core/quant/quant_linear_v1.h"
#include "core/quant/quant_linear_v2.h"

namespace qatd::quant {
namespace {

constexpr char kFormat[] = "qatd.lut_artifact.v1";
constexpr char kPackingRule[] =
    "little-endian bit order: row-major index n occupies bits [(n*bits)%8, (n*bits)%8+bits) of byte "
    "floor(n*bits/8), low bits first; unused high bits of the last byte are zero";

std::string Key(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : absl::StrCat(prefix, ".", name);
}

// Everything one layer contributes to an artifact.
struct LayerExport {
  std::string version;
  std::string formula;
  at::Tensor indices;  // [O, I] uint8
  at::Tensor lut, scale_a, scale_b, scales, bias;
};

absl::StatusOr<LayerExport> CollectLayer(model::LinearLayer& layer) {
  LayerExport e;
  at::NoGradGuard no_grad;
  if (auto* v1 = dynamic_cast<QuantLinearV1*>(&layer)) {
    e.version = "v1";
    e.indices = v1->ComputeIndices();
    e.lut = v1->lut.detach();
    const int64_t in = v1->in_features();
    if (v1->low_rank()) {
      e.formula = "clamp_min(scale_A @ scale_B, 1e-8)";
      e.scale_a = v1->scale_A.detach();
      e.scale_b = v1->scale_B.detach().narrow(1, 0, in);
    } else {
      e.formula = "clamp_min(scales, 1e-8)";
      e.scales = v1->full_scales.detach().narrow(1, 0, in);
    }
    if (v1->bias.defined()) e.bias = v1->bias.detach();
    return e;
  }
  if (auto* v2 = dynamic_cast<QuantLinearV2*>(&layer)) {
    e.version = "v2";
    e.formula = "scale_A @ scale_B";
    e.indices = v2->Indices();
    e.lut = v2->lut.detach();
    QuantLinearV2::Factors f = v2->ComputeFactors();
    e.scale_a = (f.a_dir * f.g_hat.unsqueeze(0)).detach();
    e.scale_b = f.b_dir.detach();
    if (v2->bias.defined()) e.bias = v2->bias.detach();
    return e;
  }
  return absl::InvalidArgumentError("only QuantLinearV1 / QuantLinearV2 layers can be exported");
}

absl::StatusOr<std::vector<int64_t>> ParseShape(const std::string& text) {
  std::vector<int64_t> shape;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(part, &v) || v < 0) return absl::InvalidArgumentError(absl::StrCat("bad shape '", text, "'"));
    shape.push_back(v);
  }
  return shape;
}

}  // namespace

int PackedBitsForLutSize(int64_t lut_size) {
  if (lut_size <= 4) return 2;
  if (lut_size <= 16) return 4;
  return 8;
}

absl::StatusOr<at::Tensor> PackIndices(const at::Tensor& indices, int bits) {
  if (bits != 2 && bits != 4 && bits != 8) {
    return absl::InvalidArgumentError(absl::StrCat("bits must be 2, 4 or 8, got ", bits));
  }
  if (!indices.defined() || at::isFloatingType(indices.scalar_type())) {
    return absl::InvalidArgumentError("indices must be an integer tensor");
  }
  at::Tensor flat = indices.detach().to(at::kCPU, at::kLong).reshape({-1}).contiguous();
  const int64_t n = flat.numel();
  const int64_t limit = int64_t{1} << bits;
  const int64_t* in = flat.data_ptr<int64_t>();
  at::Tensor packed = at::zeros({(n * bits + 7) / 8}, at::kByte);
  uint8_t* out = packed.data_ptr<uint8_t>();
  for (int64_t i = 0; i < n; ++i) {
    if (in[i] < 0 || in[i] >= limit) {
      return absl::InvalidArgumentError(absl::StrCat("index ", in[i], " at position ", i, " does not fit in ", bits, " bits"));
    }
    const int64_t bit = i * bits;
    out[bit / 8] |= static_cast<uint8_t>(in[i] << (bit % 8));
  }
  return packed;
}

absl::StatusOr<at::Tensor> UnpackIndices(const at::Tensor& packed, int bits, const std::vector<int64_t>& shape) {
  if (bits != 2 && bits != 4 && bits != 8) {
    return absl::InvalidArgumentError(absl::StrCat("bits must be 2, 4 or 8, got ", bits));
  }
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  at::Tensor p = packed.detach().to(at::kCPU, at::kByte).reshape({-1}).contiguous();
  if (p.numel() != (n * bits + 7) / 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("packed indices have ", p.numel(), " bytes, expected ", (n * bits + 7) / 8));
  }
  at::Tensor out = at::empty({n}, at::kByte);
  const uint8_t* in = p.data_ptr<uint8_t>();
  uint8_t* o = out.data_ptr<uint8_t>();
  const int mask = (1 << bits) - 1;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t bit = i * bits;
    o[i] = static_cast<uint8_t>((in[bit / 8] >> (bit % 8)) & mask);
  }
  return out.reshape(shape);
}

absl::Status ExportQuantizedArtifact(
    const std::string& path, const std::vector<std::pair<std::string, std::shared_ptr<model::LinearLayer>>>& layers,
    const ExportOptions& options) {
  TensorMap tensors;
  std::map<std::string, std::string> meta = {{"format", kFormat}, {"index_packing", kPackingRule}};
  for (const auto& [name, layer] : layers) {
    if (!layer) return absl::InvalidArgumentError(absl::StrCat("layer '", name, "' is null"));
    QATD_RETURN_IF_ERROR(CatchTorch("export", [&]() -> absl::Status {
      QATD_ASSIGN_OR_RETURN(LayerExport e, CollectLayer(*layer));
      const int bits = PackedBitsForLutSize(e.lut.numel());
      QATD_ASSIGN_OR_RETURN(at::Tensor packed, PackIndices(e.indices, bits));
      tensors[name + ".indices"] = packed;
      tensors[name + ".lut"] = e.lut.to(options.dtype);
      if (e.scale_a.defined()) {
        tensors[name + ".scale_A"] = e.scale_a.to(options.dtype);
        tensors[name + ".scale_B"] = e.scale_b.to(options.dtype);
      } else {
        tensors[name + ".scales"] = e.scales.to(options.dtype);
      }
      if (e.bias.defined()) tensors[name + ".bias"] = e.bias.to(options.dtype);
      meta[name + ".bits"] = std::to_string(bits);
      meta[name + ".shape"] = absl::StrCat(layer->out_features(), ",", layer->in_features());
      meta[name + ".lut_size"] = std::to_string(e.lut.numel());
      meta[name + ".version"] = e.version;
      meta[name + ".scale_formula"] = e.formula;
      return absl::OkStatus();
    }));
  }
  return WriteTensorMap(path, tensors, meta);
}

absl::StatusOr<std::vector<QuantizedLayerRecord>> ReadQuantizedArtifact(const std::string& path) {
  QATD_ASSIGN_OR_RETURN(LoadedTensors file, ReadTensorMap(path));
  auto fmt = file.metadata.find("format");
  if (fmt == file.metadata.end() || fmt->second != kFormat) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a ", kFormat, " artifact"));
  }
  std::vector<QuantizedLayerRecord> out;
  const std::string suffix = ".indices";
  for (const auto& [key, packed] : file.tensors) {
    if (key.size() <= suffix.size() || key.compare(key.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    QuantizedLayerRecord r;
    r.name = key.substr(0, key.size() - suffix.size());
    auto meta = [&](const char* item) -> absl::StatusOr<std::string> {
      auto it = file.metadata.find(r.name + item);
      if (it == file.metadata.end()) return absl::InvalidArgumentError(absl::StrCat("missing metadata ", r.name, item));
      return it->second;
    };
    auto tensor = [&](const char* item) -> at::Tensor {
      auto it = file.tensors.find(r.name + item);
      return it == file.tensors.end() ? at::Tensor() : it->second;
    };
    QATD_ASSIGN_OR_RETURN(std::string bits_text, meta(".bits"));
    QATD_ASSIGN_OR_RETURN(std::string shape_text, meta(".shape"));
    QATD_ASSIGN_OR_RETURN(r.version, meta(".version"));
    QATD_ASSIGN_OR_RETURN(r.scale_formula, meta(".scale_formula"));
    if (!absl::SimpleAtoi(bits_text, &r.bits)) return absl::InvalidArgumentError(absl::StrCat("bad bits for ", r.name));
    QATD_ASSIGN_OR_RETURN(std::vector<int64_t> shape, ParseShape(shape_text));
    if (shape.size() != 2) return absl::InvalidArgumentError(absl::StrCat("bad shape for ", r.name));
    r.out_features = shape[0];
    r.in_features = shape[1];
    QATD_ASSIGN_OR_RETURN(r.indices, UnpackIndices(packed, r.bits, shape));
    r.lut = tensor(".lut");
    r.scale_A = tensor(".scale_A");
    r.scale_B = tensor(".scale_B");
    r.scales = tensor(".scales");
    r.bias = tensor(".bias");
    if (!r.lut.defined() || (!r.scales.defined() && !(r.scale_A.defined() && r.scale_B.defined()))) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", r.name, " lacks its LUT or scales"));
    }
    out.push_back(std::move(r));
  }
  return out;
}

at::Tensor DequantizeRecord(const QuantizedLayerRecord& record) {
  at::NoGradGuard no_grad;
  at::Tensor idx = record.indices.to(at::kLong);
  at::Tensor values = record.lut.to(at::kFloat).index_select(0, idx.reshape({-1})).reshape(idx.sizes());
  at::Tensor s = record.scales.defined() ? record.scales.to(at::kFloat)
                                         : at::matmul(record.scale_A.to(at::kFloat), record.scale_B.to(at::kFloat));
  if (record.scale_formula.rfind("clamp_min", 0) == 0) s = s.clamp_min(1e-8);
  return values * s;
}

TensorMap LayerState(torch::nn::Module& layer, const std::string& prefix) {
  TensorMap out;
  for (const auto& item : layer.named_parameters(/*recurse=*/false)) {
    if (item.value().defined()) out[Key(prefix, item.key())] = item.value().detach();
  }
  for (const auto& item : layer.named_buffers(/*recurse=*/false)) {
    if (item.key() == "_cached_weight_q") continue;
    if (item.value().defined() && item.value().numel() > 0) out[Key(prefix, item.key())] = item.value().detach();
  }
  // While a V2 LUT trains, the "_Q" buffer lags the LUT (QuantLinearV2::QValues): save LUT[idx].
  if (auto* v2 = dynamic_cast<QuantLinearV2*>(&layer); v2 != nullptr && v2->lut_trainable() && v2->q_frozen()) {
    at::NoGradGuard no_grad;
    out[Key(prefix, "_Q")] = v2->QValues().detach();
  }
  return out;
}

absl::Status LoadLayerState(torch::nn::Module& layer, const TensorMap& state, const std::string& prefix) {
  // Optional entries: the frozen-index pair, and the flags that reference checkpoints lack.
  static const std::set<std::string> kOptional = {"_Q", "_indices", "_snapped_mode", "_scales_baked_flag"};
  std::set<std::string> known = {"_cached_weight_q"};
  // name -> handle of the registered tensor (set_data on a handle updates the module's tensor).
  std::map<std::string, at::Tensor> targets;
  for (const auto& item : layer.named_parameters(false)) targets[item.key()] = item.value();
  for (const auto& item : layer.named_buffers(false)) targets[item.key()] = item.value();
  for (const auto& [name, t] : targets) known.insert(name);

  // Unknown keys under the prefix.
  const std::string dotted = prefix.empty() ? "" : prefix + ".";
  for (const auto& [key, t] : state) {
    if (!dotted.empty() && key.rfind(dotted, 0) != 0) continue;
    std::string name = key.substr(dotted.size());
    if (!known.count(name)) return absl::InvalidArgumentError(absl::StrCat("unexpected state entry '", key, "'"));
  }

  auto* v2 = dynamic_cast<QuantLinearV2*>(&layer);
  auto* v1 = dynamic_cast<QuantLinearV1*>(&layer);
  const int64_t out_f = v1 ? v1->out_features() : v2 ? v2->out_features() : -1;
  const int64_t in_f = v1 ? v1->in_features() : v2 ? v2->in_features() : -1;

  return CatchTorch("load layer state", [&]() -> absl::Status {
    at::NoGradGuard no_grad;
    // Validate everything before changing anything.
    std::map<std::string, at::Tensor> staged;
    for (const auto& [name, target] : targets) {
      if (name == "_cached_weight_q") continue;
      auto it = state.find(Key(prefix, name));
      if (it == state.end()) {
        if (kOptional.count(name)) continue;
        return absl::InvalidArgumentError(absl::StrCat("state lacks '", Key(prefix, name), "'"));
      }
      at::Tensor t = it->second;
      if (name == "_Q" || name == "_indices") {
        if (t.dim() != 2 || t.size(0) != out_f || t.size(1) != in_f) {
          return absl::InvalidArgumentError(absl::StrCat("'", Key(prefix, name), "' must be [", out_f, ", ", in_f, "]"));
        }
      } else if (name == "_snapped_mode" || name == "_scales_baked_flag") {
        if (t.numel() != 1) return absl::InvalidArgumentError(absl::StrCat("'", Key(prefix, name), "' must hold one value"));
        t = t.reshape({1}).to(at::kChar);
      } else if (t.sizes() != target.sizes()) {
        return absl::InvalidArgumentError(absl::StrCat("'", Key(prefix, name), "' has shape ", c10::str(t.sizes()),
                                                       ", the layer expects ", c10::str(target.sizes())));
      }
      staged[name] = t;
    }
    if (staged.count("lut")) {
      // A V2 LUT trained with frozen indices may be unsorted (QuantLinearV2::SetLutTrainable);
      // it loads as it is so that a resume is exact; the snaps sort it.
      const bool frozen_v2 = v2 != nullptr && staged.count("_indices") && staged["_indices"].numel() > 0;
      QATD_RETURN_IF_ERROR(CheckLut(staged["lut"], /*require_sorted=*/!frozen_v2));
    }
    if (staged.count("_indices")) {
      at::Tensor idx = staged["_indices"];
      if (at::isFloatingType(idx.scalar_type())) return absl::InvalidArgumentError("_indices must be integer");
      const int64_t n = staged.count("lut") ? staged["lut"].numel() : targets["lut"].numel();
      if (idx.numel() > 0 && (idx.min().item<int64_t>() < 0 || idx.max().item<int64_t>() >= n)) {
        return absl::InvalidArgumentError(absl::StrCat("_indices out of range [0, ", n, ")"));
      }
    }

    const at::Device device = targets.count("weight") ? targets["weight"].device() : at::Device(at::kCPU);
    for (auto& [name, t] : staged) {
      if (name == "_Q" || name == "_indices") continue;  // handled below
      targets[name].set_data(t.to(device).clone());
    }
    if (v1) v1->SyncFromBuffers();
    if (v2) {
      v2->SyncFromBuffers();
      // Frozen indices: from _indices, else from _Q (HEAD's loader handles both).
      if (staged.count("_indices")) {
        v2->SetFrozenIndices(staged["_indices"]);
      } else if (staged.count("_Q")) {
        v2->SetFrozenIndices(NearestLutIndex(staged["_Q"].to(device), v2->lut));
      } else {
        v2->q.set_data(at::empty({0}, v2->weight.options()));
        v2->indices.set_data(at::empty({0}, v2->weight.options().dtype(at::kByte)));
      }
      v2->ClearCache();
    } else if (v1) {
      v1->ClearCache();
    }
    return absl::OkStatus();
  });
}

}  // namespace qatd::quant
