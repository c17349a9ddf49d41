#include "core/jobs/export_anemll.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <optional>
#include <filesystem>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/common/atomic_file_writer.h"
#include "core/common/file_util.h"
#include "core/common/sha256.h"
#include "core/common/status_macros.h"
#include "core/common/torch_status.h"
#include "core/jobs/export_job.h"
#include "core/model/model_io.h"
#include "core/model/qwen3_config.h"
#include "core/model/safetensors.h"
#include "core/model/safetensors_stream.h"
#include "core/quant/export.h"
#include "core/quant/quant_linear_v1.h"
#include "core/quant/quant_linear_v2.h"
#include "core/quant/quantize_model.h"

namespace qatd::jobs {
namespace fs = std::filesystem;
namespace {

constexpr char kFormat[] = "qatd.anemll_export";
constexpr char kManifest[] = "anemll_manifest.json";
constexpr char kQuantizedFile[] = "quantized.safetensors";
constexpr char kSnappedFile[] = "snapped.safetensors";
constexpr char kDenseFile[] = "model.safetensors";
constexpr char kPackingRule[] =
    "row-major over the [out, in] weight; index n occupies bits [(n*bits) % 8, (n*bits) % 8 + bits) of byte "
    "floor(n*bits / 8), low bits first; unused high bits of the last byte are zero";

absl::StatusOr<model::DType> FileDtype(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return model::DType::kF32;
    case at::kBFloat16: return model::DType::kBF16;
    case at::kHalf: return model::DType::kF16;
    default: break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("anemll export dtype must be fp16, bf16 or fp32, got ", c10::toString(dtype)));
}

std::optional<at::ScalarType> TorchDtype(model::DType dtype) {
  switch (dtype) {
    case model::DType::kF32: return at::kFloat;
    case model::DType::kBF16: return at::kBFloat16;
    case model::DType::kF16: return at::kHalf;
    case model::DType::kU8: return at::kByte;
    default: return std::nullopt;
  }
}

const char* KindName(quant::LinearKind kind) {
  switch (kind) {
    case quant::LinearKind::kMlp: return "mlp";
    case quant::LinearKind::kAttention: return "attention";
    case quant::LinearKind::kLmHead: return "lm_head";
  }
  return "?";
}

// ceil(log2(n)): the seed's lut_bits (config.json).
int LutBits(int64_t n) {
  int b = 0;
  while ((int64_t{1} << b) < n) ++b;
  return b;
}

// One quantized projection: what the manifest says about it and where its values come from.
struct LayerPlan {
  std::string name;
  std::shared_ptr<model::LinearLayer> layer;
  quant::QuantLinearV1* v1 = nullptr;
  quant::QuantLinearV2* v2 = nullptr;
  quant::LinearKind kind = quant::LinearKind::kMlp;
  int64_t out = 0, in = 0, lut_size = 0, rank = 0;
  int bits = 0;
  bool low_rank = true, bias = false;
  std::string formula;
};

absl::StatusOr<std::vector<LayerPlan>> PlanLayers(train::Student& s) {
  std::vector<LayerPlan> plans;
  for (const auto& [name, layer] : quant::QuantizedLayers(*s.registry)) {
    LayerPlan p;
    p.name = name;
    p.layer = layer;
    p.kind = quant::ClassifyLinear(name).value_or(quant::LinearKind::kMlp);
    p.out = layer->out_features();
    p.in = layer->in_features();
    if ((p.v1 = dynamic_cast<quant::QuantLinearV1*>(layer.get()))) {
      p.lut_size = p.v1->lut.numel();
      p.low_rank = p.v1->low_rank();
      p.rank = p.v1->rank();
      p.bias = p.v1->bias.defined();
      p.formula = p.low_rank ? "clamp_min(scale_A @ scale_B, 1e-8)" : "clamp_min(scales, 1e-8)";
    } else if ((p.v2 = dynamic_cast<quant::QuantLinearV2*>(layer.get()))) {
      p.lut_size = p.v2->lut.numel();
      p.rank = p.v2->rank();
      p.bias = p.v2->bias.defined();
      p.formula = "scale_A @ scale_B";
    } else {
      return absl::InvalidArgumentError(absl::StrCat("layer ", name, " is neither a V1 nor a V2 quantized layer"));
    }
    p.bits = quant::PackedBitsForLutSize(p.lut_size);
    plans.push_back(std::move(p));
  }
  if (plans.empty()) return absl::InvalidArgumentError("the checkpoint has no quantized layers to export");
  std::sort(plans.begin(), plans.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return plans;
}

std::vector<model::TensorHeader> QuantizedHeaders(const std::vector<LayerPlan>& plans, model::DType dt) {
  std::vector<model::TensorHeader> h;
  for (const LayerPlan& p : plans) {
    h.push_back({p.name + ".indices", model::DType::kU8, {(p.out * p.in * p.bits + 7) / 8}});
    h.push_back({p.name + ".lut", dt, {p.lut_size}});
    if (p.low_rank) {
      h.push_back({p.name + ".scale_A", dt, {p.out, p.rank}});
      h.push_back({p.name + ".scale_B", dt, {p.rank, p.in}});
    } else {
      h.push_back({p.name + ".scales", dt, {p.out, p.in}});
    }
    if (p.bias) h.push_back({p.name + ".bias", dt, {p.out}});
  }
  return h;
}

// The values of one layer's tensors, in QuantizedHeaders' order, then its snapped weight:
// CPU, contiguous, the export dtype (indices packed U8).
absl::StatusOr<std::vector<at::Tensor>> MakeLayerTensors(const LayerPlan& p, at::ScalarType dtype, at::Tensor* snapped) {
  std::vector<at::Tensor> out;
  QATD_RETURN_IF_ERROR(CatchTorch("anemll export: layer", [&]() -> absl::Status {
    at::NoGradGuard no_grad;
    at::Tensor idx, lut, a, b, full, bias;
    if (p.v1 != nullptr) {
      idx = p.v1->ComputeIndices();  // right in every snapped mode (spec §17.4 fixed)
      lut = p.v1->lut;
      if (p.low_rank) {
        a = p.v1->scale_A;
        b = p.v1->scale_B.narrow(1, 0, p.in);  // padding columns only scale zero padding
      } else {
        full = p.v1->full_scales.narrow(1, 0, p.in);
      }
      bias = p.v1->bias;
    } else {
      idx = p.v2->Indices();
      lut = p.v2->lut;
      // S = (Â diag ĝ) B̂ exactly as QuantLinearV2::EffectiveScales forms it (spec §4.4).
      quant::QuantLinearV2::Factors f = p.v2->ComputeFactors();
      a = f.a_dir * f.g_hat.unsqueeze(0);
      b = f.b_dir;
      bias = p.v2->bias;
    }
    auto cpu = [&](const at::Tensor& t) { return t.detach().to(at::kCPU, dtype).contiguous(); };
    const at::Tensor idx64 = idx.to(at::kCPU, at::kLong);
    QATD_ASSIGN_OR_RETURN(at::Tensor packed, quant::PackIndices(idx64, p.bits));
    out.push_back(packed);
    const at::Tensor lut_out = cpu(lut);
    out.push_back(lut_out);
    if (p.low_rank) {
      out.push_back(cpu(a));
      out.push_back(cpu(b));
    } else {
      out.push_back(cpu(full));
    }
    if (p.bias) out.push_back(cpu(bias));
    *snapped = lut_out.index_select(0, idx64.reshape({-1})).reshape({p.out, p.in}).contiguous();
    return absl::OkStatus();
  }));
  return out;
}

// The seed's quantization keys for config.json (spec §12; what the AQ1 loaders read).
nlohmann::json SeedConfigKeys(const train::Student& s, const std::vector<LayerPlan>& plans) {
  const LayerPlan* mlp = nullptr;
  const LayerPlan* attn = nullptr;
  for (const LayerPlan& p : plans) {
    if (p.kind == quant::LinearKind::kMlp && mlp == nullptr) mlp = &p;
    if (p.kind == quant::LinearKind::kAttention && attn == nullptr) attn = &p;
  }
  if (mlp == nullptr) mlp = &plans.front();
  if (attn == nullptr) attn = mlp;
  nlohmann::json j;
  j["model_id"] = s.base_model;
  j["version"] = s.version == 2 ? "v2" : "v1";
  j["snapped"] = true;
  j["snapped_mode"] = "lut";  // weight (snapped.safetensors) = LUT values; scales applied at run time
  j["lut_size"] = mlp->lut_size;
  j["lut_bits"] = LutBits(mlp->lut_size);
  j["scale_rank"] = mlp->rank;
  j["quantize_attn"] = attn->kind == quant::LinearKind::kAttention;
  j["attn_lut_size"] = attn->lut_size;
  j["attn_lut_bits"] = LutBits(attn->lut_size);
  j["attn_scale_rank"] = attn->rank;
  if (mlp->v1 != nullptr) j["group_size"] = mlp->v1->spec().group_size;
  j["anemll_export"] = {{"manifest", kManifest}, {"format_version", kAnemllExportFormatVersion}};
  return j;
}

nlohmann::json LayerJson(const LayerPlan& p) {
  nlohmann::json t = {{"indices", p.name + ".indices"}, {"lut", p.name + ".lut"}, {"weight", p.name + ".weight"}};
  if (p.low_rank) {
    t["scale_A"] = p.name + ".scale_A";
    t["scale_B"] = p.name + ".scale_B";
  } else {
    t["scales"] = p.name + ".scales";
  }
  if (p.bias) t["bias"] = p.name + ".bias";
  return {{"name", p.name},           {"kind", KindName(p.kind)}, {"layer_version", p.v1 != nullptr ? 1 : 2},
          {"shape", {p.out, p.in}},   {"lut_size", p.lut_size},   {"bits", p.bits},
          {"rank", p.rank},           {"scales", p.low_rank ? "low_rank" : "full"},
          {"scale_formula", p.formula}, {"bias", p.bias},          {"tensors", t}};
}

}  // namespace

absl::StatusOr<AnemllFolderSummary> WriteAnemllFolder(train::Student& s, const std::string& dir,
                                                      const AnemllFolderOptions& options, Reporter* reporter,
                                                      CancelToken* cancel) {
  QATD_ASSIGN_OR_RETURN(const model::DType dt, FileDtype(options.dtype));
  if (options.base_model_dir.empty()) return absl::InvalidArgumentError("base_model_dir is required");
  QATD_ASSIGN_OR_RETURN(std::vector<LayerPlan> plans, PlanLayers(s));
  const fs::path tmp(absl::StrCat(dir, ".tmp-", ::getpid()));
  QATD_RETURN_IF_ERROR(RemoveTree(tmp.string()));  // a leftover of a killed attempt
  std::error_code ec;
  fs::create_directories(tmp, ec);
  if (ec) return FileErrorStatus(ec.value(), "create directory", tmp.string());
  auto result = [&]() -> absl::StatusOr<AnemllFolderSummary> {
    QATD_ASSIGN_OR_RETURN(nlohmann::json config, BaseHfConfig(options.base_model_dir, options.dtype));
    config.update(SeedConfigKeys(s, plans));
    QATD_RETURN_IF_ERROR(WriteFileAtomically((tmp / "config.json").string(), config.dump(2) + "\n"));
    QATD_RETURN_IF_ERROR(CopyTokenizerFiles(options.base_model_dir, tmp.string()));

    // Every parameter outside the quantized projections, by HF name.
    std::set<std::string> quantized;
    for (const LayerPlan& p : plans) quantized.insert(p.name);
    std::vector<std::pair<std::string, at::Tensor>> dense;
    for (const auto& item : s.model->named_parameters(/*recurse=*/true)) {
      const std::string& name = item.key();
      const size_t dot = name.rfind('.');
      if (dot != std::string::npos && quantized.count(name.substr(0, dot))) continue;
      dense.emplace_back(name, item.value());
    }
    std::sort(dense.begin(), dense.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<model::TensorHeader> dense_headers, snapped_headers;
    for (const auto& [name, t] : dense) dense_headers.push_back({name, dt, t.sizes().vec()});
    for (const LayerPlan& p : plans) snapped_headers.push_back({p.name + ".weight", dt, {p.out, p.in}});
    const std::map<std::string, std::string> meta = {{"format", kFormat}};
    QATD_ASSIGN_OR_RETURN(model::SafetensorsStreamWriter qw, model::SafetensorsStreamWriter::Create(
                                                                 (tmp / kQuantizedFile).string(), QuantizedHeaders(plans, dt), meta));
    QATD_ASSIGN_OR_RETURN(model::SafetensorsStreamWriter sw,
                          model::SafetensorsStreamWriter::Create((tmp / kSnappedFile).string(), snapped_headers, meta));
    QATD_ASSIGN_OR_RETURN(model::SafetensorsStreamWriter dw,
                          model::SafetensorsStreamWriter::Create((tmp / kDenseFile).string(), dense_headers, meta));
    const auto start = std::chrono::steady_clock::now();
    const int64_t total = static_cast<int64_t>(plans.size() + dense.size());
    int64_t done = 0;
    auto progress = [&] {
      ++done;
      if (reporter == nullptr) return;
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double rate = secs > 0 ? done / secs : 0;
      reporter->Progress(done, total, "tensors", rate, rate > 0 ? (total - done) / rate : -1);
    };
    // One layer at a time: its tensors exist only while they are appended.
    for (const LayerPlan& p : plans) {
      if (cancel != nullptr && cancel->cancelled()) return absl::CancelledError("export cancelled");
      at::Tensor snapped;
      QATD_ASSIGN_OR_RETURN(std::vector<at::Tensor> tensors, MakeLayerTensors(p, options.dtype, &snapped));
      size_t next = 0;
      for (const model::TensorHeader& h : QuantizedHeaders({p}, dt)) {
        const at::Tensor& t = tensors[next++];
        QATD_RETURN_IF_ERROR(qw.Append(h.name, t.data_ptr(), static_cast<size_t>(t.nbytes())));
      }
      QATD_RETURN_IF_ERROR(sw.Append(p.name + ".weight", snapped.data_ptr(), static_cast<size_t>(snapped.nbytes())));
      progress();
    }
    for (const auto& [name, param] : dense) {
      if (cancel != nullptr && cancel->cancelled()) return absl::CancelledError("export cancelled");
      at::Tensor t;
      QATD_RETURN_IF_ERROR(CatchTorch("anemll export: tensor", [&]() -> absl::Status {
        t = param.detach().to(at::kCPU, options.dtype).contiguous();
        return absl::OkStatus();
      }));
      QATD_RETURN_IF_ERROR(dw.Append(name, t.data_ptr(), static_cast<size_t>(t.nbytes())));
      progress();
    }
    QATD_RETURN_IF_ERROR(qw.Commit());
    QATD_RETURN_IF_ERROR(sw.Commit());
    QATD_RETURN_IF_ERROR(dw.Commit());

    AnemllFolderSummary summary;
    summary.quantized_layers = static_cast<int64_t>(plans.size());
    summary.dense_tensors = static_cast<int64_t>(dense.size());
    const std::map<std::string, const model::SafetensorsStreamWriter*> writers = {
        {kQuantizedFile, &qw}, {kSnappedFile, &sw}, {kDenseFile, &dw}};
    nlohmann::json files = nlohmann::json::array();
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(tmp)) names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    for (const std::string& name : names) {
      QATD_ASSIGN_OR_RETURN(std::string sha, Sha256File((tmp / name).string()));
      const uint64_t bytes = fs::file_size(tmp / name);
      summary.bytes += bytes;
      nlohmann::json f = {{"name", name}, {"bytes", bytes}, {"sha256", sha}};
      if (auto w = writers.find(name); w != writers.end()) f["tensor_sha256"] = w->second->tensor_sha256();
      files.push_back(f);
    }
    nlohmann::json layers = nlohmann::json::array();
    for (const LayerPlan& p : plans) layers.push_back(LayerJson(p));
    nlohmann::json dense_names = nlohmann::json::array();
    for (const auto& [name, t] : dense) dense_names.push_back(name);
    nlohmann::json manifest = options.provenance;
    manifest.update({{"format", kFormat},
                     {"format_version", kAnemllExportFormatVersion},
                     {"base_model", options.base_model_dir},
                     {"layer_version", s.version},
                     {"dtype", model::TorchDtypeName(options.dtype)},
                     {"weight_formula", "W = lut[indices] * S (S per the layer's scale_formula), shape [out, in]"},
                     {"index_packing", kPackingRule},
                     {"files", {{"quantized", kQuantizedFile}, {"snapped", kSnappedFile}, {"dense", kDenseFile}}},
                     {"layers", layers},
                     {"dense_tensors", dense_names},
                     {"checksums", files}});
    QATD_RETURN_IF_ERROR(WriteFileAtomically((tmp / kManifest).string(), manifest.dump(2) + "\n"));
    QATD_RETURN_IF_ERROR(VerifyAnemllFolder(tmp.string()));
    return summary;
  }();
  if (!result.ok()) {
    (void)RemoveTree(tmp.string());
    return result.status();
  }
  QATD_RETURN_IF_ERROR(ReplaceDirectory(tmp.string(), dir));
  return result;
}

absl::Status VerifyAnemllFolder(const std::string& dir) {
  const fs::path root(dir);
  std::error_code ec;
  if (!fs::is_regular_file(root / kManifest, ec)) {
    return absl::NotFoundError(absl::StrCat(dir, " has no ", kManifest));
  }
  nlohmann::json m;
  {
    std::ifstream in(root / kManifest);
    m = nlohmann::json::parse(in, nullptr, false);
  }
  auto loss = [&](const std::string& what) { return absl::DataLossError(absl::StrCat("anemll export check (", dir, "): ", what)); };
  if (m.is_discarded() || !m.is_object() || m.value("format", "") != kFormat) return loss(absl::StrCat(kManifest, " is not a ", kFormat, " manifest"));
  if (m.value("format_version", 0) != kAnemllExportFormatVersion) return loss("unknown format_version");
  if (!m.contains("checksums") || !m["checksums"].is_array() || !m.contains("layers") || !m["layers"].is_array()) {
    return loss(absl::StrCat(kManifest, " lacks checksums or layers"));
  }
  // Files: size, SHA-256, and each safetensors tensor's SHA-256.
  std::map<std::string, std::shared_ptr<model::SafetensorsFile>> opened;
  for (const nlohmann::json& f : m["checksums"]) {
    const std::string name = f.value("name", "");
    const fs::path path = root / name;
    if (name.empty() || name.find('/') != std::string::npos || !fs::is_regular_file(path, ec)) {
      return loss(absl::StrCat("file '", name, "' is missing"));
    }
    if (fs::file_size(path, ec) != f.value("bytes", uint64_t{0})) return loss(absl::StrCat("file ", name, " has another size"));
    QATD_ASSIGN_OR_RETURN(std::string sha, Sha256File(path.string()));
    if (sha != f.value("sha256", "")) return loss(absl::StrCat("file ", name, ": SHA-256 differs from the manifest"));
    if (!f.contains("tensor_sha256")) continue;
    absl::StatusOr<std::shared_ptr<model::SafetensorsFile>> file = model::SafetensorsFile::Open(path.string());
    if (!file.ok()) return loss(absl::StrCat("file ", name, ": ", file.status().message()));
    const nlohmann::json& want = f["tensor_sha256"];
    if ((*file)->tensors().size() != want.size()) return loss(absl::StrCat("file ", name, " holds another set of tensors"));
    for (const auto& [tensor, hex] : want.items()) {
      absl::StatusOr<model::TensorView> view = (*file)->Get(tensor);
      if (!view.ok()) return loss(absl::StrCat("tensor ", tensor, " is missing from ", name));
      Sha256 hash;
      hash.Update(view->data, view->info->nbytes());
      if (hash.FinishHex() != hex.get<std::string>()) return loss(absl::StrCat("the bytes of tensor ", tensor, " in ", name, " differ"));
    }
    opened[name] = *file;
  }
  const nlohmann::json files = m.value("files", nlohmann::json::object());
  auto file_of = [&](const char* role) -> std::shared_ptr<model::SafetensorsFile> {
    auto it = opened.find(files.value(role, ""));
    return it == opened.end() ? nullptr : it->second;
  };
  const auto quantized = file_of("quantized");
  const auto snapped = file_of("snapped");
  if (quantized == nullptr || snapped == nullptr || file_of("dense") == nullptr) {
    return loss("the manifest's quantized / snapped / dense files are not all checksummed safetensors files");
  }
  // Layers: shapes as listed, indices inside the LUT, snapped weight == lut[indices].
  for (const nlohmann::json& l : m["layers"]) {
    const std::string name = l.value("name", "");
    const auto shape = l.value("shape", std::vector<int64_t>{});
    const int64_t n = l.value("lut_size", int64_t{0}), rank = l.value("rank", int64_t{0});
    const int bits = l.value("bits", 0);
    if (shape.size() != 2 || n < 1 || (bits != 2 && bits != 4 && bits != 8) || n > (int64_t{1} << bits)) {
      return loss(absl::StrCat("layer ", name, ": bad shape, lut_size or bits in the manifest"));
    }
    auto get = [&](const std::shared_ptr<model::SafetensorsFile>& file, const std::string& key,
                   const std::vector<int64_t>& want) -> absl::StatusOr<at::Tensor> {
      absl::StatusOr<model::TensorView> v = file->Get(key);
      if (!v.ok()) return loss(absl::StrCat("layer ", name, ": tensor ", key, " is missing"));
      const std::optional<at::ScalarType> t = TorchDtype(v->info->dtype);
      if (!t || v->info->shape != want) return loss(absl::StrCat("layer ", name, ": tensor ", key, " has another dtype or shape"));
      return at::from_blob(const_cast<void*>(v->data), want, *t);
    };
    const int64_t count = shape[0] * shape[1];
    QATD_ASSIGN_OR_RETURN(at::Tensor packed, get(quantized, name + ".indices", {(count * bits + 7) / 8}));
    QATD_ASSIGN_OR_RETURN(at::Tensor lut, get(quantized, name + ".lut", {n}));
    QATD_ASSIGN_OR_RETURN(at::Tensor weight, get(snapped, name + ".weight", shape));
    if (l.value("scales", "") == "full") {
      QATD_RETURN_IF_ERROR(get(quantized, name + ".scales", shape).status());
    } else {
      QATD_RETURN_IF_ERROR(get(quantized, name + ".scale_A", {shape[0], rank}).status());
      QATD_RETURN_IF_ERROR(get(quantized, name + ".scale_B", {rank, shape[1]}).status());
    }
    if (l.value("bias", false)) QATD_RETURN_IF_ERROR(get(quantized, name + ".bias", {shape[0]}).status());
    QATD_RETURN_IF_ERROR(CatchTorch("anemll export check", [&]() -> absl::Status {
      QATD_ASSIGN_OR_RETURN(at::Tensor idx, quant::UnpackIndices(packed, bits, shape));
      if (idx.numel() > 0 && idx.max().item<int64_t>() >= n) return loss(absl::StrCat("layer ", name, ": an index is outside the LUT"));
      if (lut.scalar_type() != weight.scalar_type() ||
          !at::equal(lut.index_select(0, idx.to(at::kLong).reshape({-1})).reshape(shape), weight)) {
        return loss(absl::StrCat("layer ", name, ": snapped weight != lut[indices]"));
      }
      return absl::OkStatus();
    }));
  }
  QATD_RETURN_IF_ERROR(model::Qwen3Config::FromFile(dir).status());
  return absl::OkStatus();
}

absl::StatusOr<std::string> ExportAnemll(const ExportOptions& o, train::Student& s, Reporter& reporter,
                                         CancelToken& cancel) {
  AnemllFolderOptions fo;
  fo.base_model_dir = o.model;
  switch (o.dtype) {
    case Dtype::kFp32: fo.dtype = at::kFloat; break;
    case Dtype::kBf16: fo.dtype = at::kBFloat16; break;
    default: fo.dtype = at::kHalf; break;
  }
  fo.provenance = {{"checkpoint", o.checkpoint},
                   {"snapped_mode", s.snapped_mode},
                   {"quant_config", s.version == 2 ? quant::ToJson(s.quant_v2) : quant::ToJson(s.quant_v1)}};
  const std::string dir = (fs::path(o.output_dir) / "anemll").string();
  QATD_ASSIGN_OR_RETURN(AnemllFolderSummary summary, WriteAnemllFolder(s, dir, fo, &reporter, &cancel));
  reporter.Log(LogLevel::kInfo,
               absl::StrFormat("wrote %s: %d quantized layers (packed indices, LUTs, low-rank scales, snapped weights) "
                               "and %d other tensors, %.1f MiB %s, read back and checked",
                               dir, summary.quantized_layers, summary.dense_tensors, summary.bytes / 1048576.0,
                               model::TorchDtypeName(fo.dtype)));
  reporter.Metric("export/quantized_layers", 0, static_cast<double>(summary.quantized_layers));
  reporter.Metric("export/tensors", 0, static_cast<double>(summary.dense_tensors));
  reporter.Metric("export/bytes", 0, static_cast<double>(summary.bytes));
  return dir;
}

}  // namespace qatd::jobs
