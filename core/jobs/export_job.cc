#include "core/jobs/export_job.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/common/atomic_file_writer.h"
#include "core/common/file_util.h"
#include "core/common/sha256.h"
#include "core/common/status_macros.h"
#include "core/common/torch_status.h"
#include "core/jobs/export_anemll.h"
#include "core/model/model_io.h"
#include "core/model/qwen3_config.h"
#include "core/model/safetensors.h"
#include "core/model/safetensors_stream.h"
#include "core/quant/quant_config.h"
#include "core/quant/quantize_model.h"
#include "core/train/student.h"

namespace qatd::jobs {
namespace fs = std::filesystem;
namespace {

// Files of a HF model folder that describe the tokenizer and generation, copied as they are.
constexpr const char* kTokenizerFiles[] = {"tokenizer.json",        "tokenizer_config.json", "generation_config.json",
                                           "special_tokens_map.json", "added_tokens.json",     "vocab.json",
                                           "merges.txt",             "chat_template.jinja",   "chat_template.json"};

absl::StatusOr<model::DType> SafetensorsDtype(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return model::DType::kF32;
    case at::kBFloat16: return model::DType::kBF16;
    case at::kHalf: return model::DType::kF16;
    default: break;
  }
  return absl::InvalidArgumentError(absl::StrCat("export dtype must be bf16, fp16 or fp32, got ", c10::toString(dtype)));
}

// One tensor of the folder: its header and how to make its values (a quantized projection's
// weight exists only once materialised).
struct PlannedTensor {
  model::TensorHeader header;
  std::function<at::Tensor()> make;
  bool materialised = false;
};

// Every parameter under its HF name, sorted: a projection as "<linear>.weight" from
// EffectiveWeight() (whatever the layer's parameters are called), the rest as stored.
std::vector<PlannedTensor> PlanTensors(model::Qwen3ModelImpl& m, model::DType dtype) {
  std::vector<PlannedTensor> out;
  const std::vector<std::string> linears = m.LinearNames();
  const std::set<std::string> linear_set(linears.begin(), linears.end());
  for (const std::string& name : linears) {
    std::shared_ptr<model::LinearLayer> layer = m.GetLinear(name);
    const bool dense = std::dynamic_pointer_cast<model::DenseLinear>(layer) != nullptr;
    out.push_back({{name + ".weight", dtype, {layer->out_features(), layer->in_features()}},
                   [layer] { return layer->EffectiveWeight(); },
                   !dense});
  }
  for (const auto& item : m.named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    bool in_linear = false;
    for (size_t pos = name.find('.'); pos != std::string::npos; pos = name.find('.', pos + 1)) {
      if (linear_set.count(name.substr(0, pos))) {
        in_linear = true;
        break;
      }
    }
    if (in_linear) continue;
    at::Tensor p = item.value();
    out.push_back({{name, dtype, p.sizes().vec()}, [p] { return p.detach(); }, false});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.header.name < b.header.name; });
  return out;
}

// Greedy split in name order, as save_pretrained does: a shard takes tensors until the next
// one would pass the bound; a tensor larger than the bound gets a shard of its own.
std::vector<std::vector<size_t>> PlanShards(const std::vector<PlannedTensor>& tensors, uint64_t max_bytes) {
  std::vector<std::vector<size_t>> shards;
  uint64_t used = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t n = tensors[i].header.nbytes();
    if (shards.empty() || (!shards.back().empty() && used + n > max_bytes)) {
      shards.emplace_back();
      used = 0;
    }
    shards.back().push_back(i);
    used += n;
  }
  if (shards.empty()) shards.emplace_back();
  return shards;
}

std::string ShardName(size_t index, size_t count) {
  if (count == 1) return "model.safetensors";
  return absl::StrFormat("model-%05d-of-%05d.safetensors", index + 1, count);
}

absl::StatusOr<std::string> ReadSmallFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path.string()));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Copies `src` to `dst` in 1 MiB pieces through the file seam.
absl::Status CopyFile(const fs::path& src, const fs::path& dst) {
  std::ifstream in(src, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", src.string()));
  QATD_ASSIGN_OR_RETURN(AtomicFileWriter out, AtomicFileWriter::Create(dst.string()));
  std::vector<char> buffer(1 << 20);
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    const std::streamsize got = in.gcount();
    if (got > 0) QATD_RETURN_IF_ERROR(out.Append(std::string_view(buffer.data(), static_cast<size_t>(got))));
  }
  if (in.bad()) return absl::InternalError(absl::StrCat("read error on ", src.string()));
  return out.Commit();
}


// Reads the folder back: the same tensors, dtypes, shapes and bytes (SHA-256) as written.
absl::Status VerifyFolder(const fs::path& dir, const std::vector<PlannedTensor>& tensors,
                          const std::map<std::string, std::string>& sha256) {
  QATD_ASSIGN_OR_RETURN(model::Checkpoint ckpt, model::Checkpoint::Open(dir.string()));
  const std::vector<std::string> names = ckpt.Names();
  if (names.size() != tensors.size()) {
    return absl::DataLossError(absl::StrCat("export check: ", names.size(), " tensors read back, ", tensors.size(), " written"));
  }
  for (const PlannedTensor& t : tensors) {
    const std::string& name = t.header.name;
    absl::StatusOr<model::TensorView> view = ckpt.Get(name);
    if (!view.ok()) return absl::DataLossError(absl::StrCat("export check: tensor '", name, "' is missing"));
    if (view->info->dtype != t.header.dtype || view->info->shape != t.header.shape) {
      return absl::DataLossError(absl::StrCat("export check: tensor '", name, "' reads back with another dtype or shape"));
    }
    Sha256 hash;
    hash.Update(view->data, view->info->nbytes());
    auto it = sha256.find(name);
    if (it == sha256.end() || hash.FinishHex() != it->second) {
      return absl::DataLossError(absl::StrCat("export check: the bytes of tensor '", name, "' differ from those written"));
    }
  }
  QATD_ASSIGN_OR_RETURN(model::Qwen3Config config, model::Qwen3Config::FromFile(dir.string()));
  (void)config;
  return absl::OkStatus();
}

// Writes every shard, tensor by tensor. Fills `sha256` (tensor -> hex) and `weight_map`.
absl::Status WriteShards(const fs::path& tmp, const std::vector<PlannedTensor>& tensors,
                         const std::vector<std::vector<size_t>>& shards, at::ScalarType dtype,
                         std::map<std::string, std::string>& sha256, nlohmann::json& weight_map, Reporter* reporter,
                         CancelToken* cancel) {
  const auto start = std::chrono::steady_clock::now();
  int64_t done = 0;
  const int64_t total = static_cast<int64_t>(tensors.size());
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file = ShardName(s, shards.size());
    std::vector<model::TensorHeader> headers;
    for (size_t i : shards[s]) headers.push_back(tensors[i].header);
    QATD_ASSIGN_OR_RETURN(model::SafetensorsStreamWriter writer,
                          model::SafetensorsStreamWriter::Create((tmp / file).string(), headers, {{"format", "pt"}}));
    for (size_t i : shards[s]) {
      if (cancel != nullptr && cancel->cancelled()) return absl::CancelledError("export cancelled");
      const PlannedTensor& t = tensors[i];
      // Materialise (a quantized projection: LUT[idx] ⊙ S in the model's dtype), convert,
      // write, free: one tensor of the export exists at a time.
      at::Tensor values;
      QATD_RETURN_IF_ERROR(CatchTorch("export: materialise", [&]() -> absl::Status {
        at::NoGradGuard no_grad;
        values = t.make().to(at::kCPU, dtype).contiguous();
        return absl::OkStatus();
      }));
      if (values.sizes().vec() != t.header.shape) {
        return absl::InternalError(absl::StrCat("export: tensor '", t.header.name, "' changed shape"));
      }
      QATD_RETURN_IF_ERROR(writer.Append(t.header.name, values.data_ptr(), static_cast<size_t>(values.nbytes())));
      weight_map[t.header.name] = file;
      ++done;
      if (reporter != nullptr) {
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        const double rate = secs > 0 ? done / secs : 0;
        reporter->Progress(done, total, "tensors", rate, rate > 0 ? (total - done) / rate : -1);
      }
    }
    QATD_RETURN_IF_ERROR(writer.Commit());
    for (const auto& [name, hex] : writer.tensor_sha256()) sha256[name] = hex;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<nlohmann::json> BaseHfConfig(const std::string& base_model_dir, at::ScalarType dtype) {
  const fs::path base = fs::is_directory(base_model_dir) ? fs::path(base_model_dir) / "config.json" : fs::path(base_model_dir);
  QATD_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(base));
  nlohmann::json config = nlohmann::json::parse(text, nullptr, false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(base.string(), ": not a JSON object"));
  }
  config["torch_dtype"] = model::TorchDtypeName(dtype);
  config.erase("quantization_config");  // the weights are dense now
  return config;
}

absl::Status CopyTokenizerFiles(const std::string& base_model_dir, const std::string& dir) {
  const fs::path base_dir =
      fs::is_directory(base_model_dir) ? fs::path(base_model_dir) : fs::path(base_model_dir).parent_path();
  for (const char* name : kTokenizerFiles) {
    std::error_code ec;
    if (fs::is_regular_file(base_dir / name, ec)) QATD_RETURN_IF_ERROR(CopyFile(base_dir / name, fs::path(dir) / name));
  }
  return absl::OkStatus();
}

std::vector<int64_t> ReferenceTokenIds(int64_t vocab_size, int64_t length) {
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < length; ++i) ids.push_back((1 + 7919 * i) % std::max<int64_t>(1, vocab_size));
  return ids;
}

absl::StatusOr<HfFolderSummary> WriteHfFolder(model::Qwen3Model& model, const std::string& dir,
                                              const HfFolderOptions& options, Reporter* reporter, CancelToken* cancel) {
  QATD_ASSIGN_OR_RETURN(model::DType st_dtype, SafetensorsDtype(options.dtype));
  if (options.max_shard_bytes < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_shard_bytes must be >= 1, got ", options.max_shard_bytes));
  }
  if (options.base_model_dir.empty()) return absl::InvalidArgumentError("base_model_dir is required");
  const fs::path final_dir(dir);
  const fs::path tmp(absl::StrCat(dir, ".tmp-", ::getpid()));
  QATD_RETURN_IF_ERROR(RemoveTree(tmp.string()));  // a leftover of a killed attempt
  std::error_code ec;
  fs::create_directories(tmp, ec);
  if (ec) return FileErrorStatus(ec.value(), "create directory", tmp.string());
  auto result = [&]() -> absl::StatusOr<HfFolderSummary> {
    QATD_ASSIGN_OR_RETURN(nlohmann::json config, BaseHfConfig(options.base_model_dir, options.dtype));
    QATD_RETURN_IF_ERROR(WriteFileAtomically((tmp / "config.json").string(), config.dump(2) + "\n"));
    QATD_RETURN_IF_ERROR(CopyTokenizerFiles(options.base_model_dir, tmp.string()));
    const std::vector<PlannedTensor> tensors = PlanTensors(*model, st_dtype);
    const auto shards = PlanShards(tensors, static_cast<uint64_t>(options.max_shard_bytes));
    std::map<std::string, std::string> sha256;
    nlohmann::json weight_map = nlohmann::json::object();
    QATD_RETURN_IF_ERROR(WriteShards(tmp, tensors, shards, options.dtype, sha256, weight_map, reporter, cancel));
    HfFolderSummary summary;
    summary.tensors = static_cast<int64_t>(tensors.size());
    summary.shards = static_cast<int64_t>(shards.size());
    nlohmann::json layers = nlohmann::json::array();
    for (const PlannedTensor& t : tensors) {
      summary.weight_bytes += t.header.nbytes();
      if (t.materialised) {
        ++summary.materialised;
        layers.push_back(t.header.name);
      }
    }
    if (shards.size() > 1) {
      nlohmann::json index = {{"metadata", {{"total_size", summary.weight_bytes}}}, {"weight_map", weight_map}};
      QATD_RETURN_IF_ERROR(WriteFileAtomically((tmp / "model.safetensors.index.json").string(), index.dump(2) + "\n"));
    }
    nlohmann::json provenance = options.provenance;
    provenance["format"] = "qatd.hf_export.v1";
    provenance["base_model"] = options.base_model_dir;
    provenance["torch_dtype"] = model::TorchDtypeName(options.dtype);
    provenance["materialised"] = {{"formula", "LUT[indices] * scales (the layer's effective weight)"},
                                  {"tensors", layers}};
    provenance["tensor_sha256"] = sha256;
    QATD_RETURN_IF_ERROR(WriteFileAtomically((tmp / "qatd_export.json").string(), provenance.dump(2) + "\n"));
    QATD_RETURN_IF_ERROR(VerifyFolder(tmp, tensors, sha256));
    return summary;
  }();
  if (!result.ok()) {
    (void)RemoveTree(tmp.string());
    return result.status();
  }
  QATD_RETURN_IF_ERROR(ReplaceDirectory(tmp.string(), final_dir.string()));
  return result;
}

absl::Status RunExport(const ExportOptions& o, Reporter& reporter, CancelToken& cancel) {
  QATD_RETURN_IF_ERROR(o.Validate());
  train::StudentOptions so;
  so.model_dir = o.model;
  so.checkpoint = o.checkpoint;
  so.device = o.device;
  // Materialise in fp32: LUT[idx] ⊙ S is formed exactly as qatd's fp32 forward does, and
  // rounded once, to the export dtype.
  so.dtype = "fp32";
  so.version = 2;  // a seed .pt checkpoint: SNAP's reading (a qatd checkpoint's config.json decides)
  so.quant_v2 = *quant::QuantConfigV2::FromPreset("Q2_A4");
  so.quant_v2.quantize_attn = true;
  QATD_ASSIGN_OR_RETURN(train::Student s, train::LoadStudent(so));
  if (cancel.cancelled()) return absl::CancelledError("cancelled");
  const size_t quantized = quant::QuantizedLayers(*s.registry).size();
  reporter.Log(LogLevel::kInfo, absl::StrFormat("loaded V%d checkpoint %s (%d quantized layers%s)", s.version, o.checkpoint,
                                                quantized, s.snapped_mode.empty() ? "" : ", snapped " + s.snapped_mode));
  std::error_code ec;
  fs::create_directories(o.output_dir, ec);
  if (ec) return FileErrorStatus(ec.value(), "create directory", o.output_dir);
  std::string artifact;
  if (o.format == ExportFormat::kAnemll) {
    QATD_ASSIGN_OR_RETURN(artifact, ExportAnemll(o, s, reporter, cancel));
  } else {
    QATD_ASSIGN_OR_RETURN(artifact, ExportHf(o, s, reporter, cancel));
  }
  // The quantized model's own logits on a fixed sequence, for the transformers / numpy checks.
  const std::string ref_path = (fs::path(o.output_dir) / "reference_logits.safetensors").string();
  QATD_RETURN_IF_ERROR(CatchTorch("export: reference logits", [&]() -> absl::Status {
    at::NoGradGuard no_grad;
    s.model->eval();
    const std::vector<int64_t> ids = ReferenceTokenIds(s.config.vocab_size);
    at::Tensor input = at::tensor(ids, at::kLong).unsqueeze(0);
    at::Tensor logits = s.model->ForwardLogits(input.to(s.model->device())).to(at::kCPU, at::kFloat).contiguous();
    return model::WriteSafetensors(
        ref_path,
        {{"input_ids", model::DType::kI64, input.sizes().vec(), input.data_ptr(), static_cast<size_t>(input.nbytes())},
         {"logits", model::DType::kF32, logits.sizes().vec(), logits.data_ptr(), static_cast<size_t>(logits.nbytes())}},
        {{"format", "pt"}, {"checkpoint", o.checkpoint}, {"dtype", "float32"}});
  }));
  reporter.Artifact(artifact, "export");
  return absl::OkStatus();
}

absl::StatusOr<std::string> ExportHf(const ExportOptions& o, train::Student& s, Reporter& reporter, CancelToken& cancel) {
  HfFolderOptions fo;
  fo.base_model_dir = o.model;
  fo.max_shard_bytes = o.max_shard_bytes;
  switch (o.dtype) {
    case Dtype::kFp32: fo.dtype = at::kFloat; break;
    case Dtype::kFp16: fo.dtype = at::kHalf; break;
    default: fo.dtype = at::kBFloat16; break;
  }
  fo.provenance = {{"checkpoint", o.checkpoint}, {"version", s.version}, {"snapped_mode", s.snapped_mode}};
  const std::string hf_dir = (fs::path(o.output_dir) / "hf").string();
  QATD_ASSIGN_OR_RETURN(HfFolderSummary summary, WriteHfFolder(s.model, hf_dir, fo, &reporter, &cancel));
  reporter.Log(LogLevel::kInfo,
               absl::StrFormat("wrote %s: %d tensors (%d materialised from LUT x scales) in %d safetensors file(s), %.1f MiB %s, "
                               "read back and checked",
                               hf_dir, summary.tensors, summary.materialised, summary.shards,
                               summary.weight_bytes / 1048576.0, model::TorchDtypeName(fo.dtype)));
  reporter.Metric("export/tensors", 0, static_cast<double>(summary.tensors));
  reporter.Metric("export/materialised_tensors", 0, static_cast<double>(summary.materialised));
  reporter.Metric("export/bytes", 0, static_cast<double>(summary.weight_bytes));
  return hf_dir;
}

}  // namespace qatd::jobs
