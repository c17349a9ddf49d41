#include "core/train/student.h"

#include <torch/cuda.h>
#include <unistd.h>

#include <filesystem>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/common/file_util.h"
#include "core/common/status_macros.h"
#include "core/common/torch_status.h"
#include "core/model/model_io.h"
#include "core/model/torch_pt_writer.h"
#include "core/quant/export.h"
#include "core/quant/quant_linear_v1.h"
#include "core/quant/quant_linear_v2.h"
#include "core/quant/quantize_model.h"
#include "core/quant/tensor_io.h"
#include "core/train/gptq_init.h"
#include "core/train/held_out.h"
#include "core/train/seed_state.h"
#include "core/train/train_common.h"

namespace qatd::train {
namespace fs = std::filesystem;
namespace {

constexpr char kFormat[] = "qatd_checkpoint_v1";


}  // namespace

absl::StatusOr<at::Device> ResolveDevice(const std::string& name) {
  if (name.empty() || name == "auto") return torch::cuda::is_available() ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  if (name == "cpu") return at::Device(at::kCPU);
  if (name == "cuda" || name.rfind("cuda:", 0) == 0) {
    if (!torch::cuda::is_available()) {
      return absl::FailedPreconditionError(absl::StrCat("device ", name, " requested but CUDA is not available"));
    }
    return CatchTorchOr<at::Device>("device", [&]() -> absl::StatusOr<at::Device> { return at::Device(name); });
  }
  return absl::InvalidArgumentError(absl::StrCat("device must be auto, cpu, cuda or cuda:N; got \"", name, "\""));
}

namespace {

// "auto" is the job's choice (auto_dtype) on a GPU and fp32 on the CPU, where bf16 matmuls
// are several times slower than fp32 ones (issue #17: a CPU KD cache took 27 s in bf16, 4.6 s
// in fp32).
absl::StatusOr<at::ScalarType> ResolveDtype(const StudentOptions& o, const at::Device& device) {
  std::string name = o.dtype == "auto" || o.dtype.empty() ? (device.is_cuda() ? o.auto_dtype : "fp32") : o.dtype;
  if (name == "bf16" || name == "bfloat16") return at::kBFloat16;
  if (name == "fp16" || name == "float16") return at::kHalf;
  if (name == "fp32" || name == "float32") return at::kFloat;
  return absl::InvalidArgumentError(absl::StrCat("dtype must be one of auto, bf16, fp16, fp32; got \"", name, "\""));
}

// The seed's state_dict file for `path`: the file itself, or model_state_dict.pt /
// best_state_dict.pt inside a directory (spec §9.2 --init-state).
absl::StatusOr<std::string> SeedStateFile(const std::string& path) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return path;
  for (const char* name : {"model_state_dict.pt", "best_state_dict.pt"}) {
    fs::path p = fs::path(path) / name;
    if (fs::is_regular_file(p, ec)) return p.string();
  }
  return absl::NotFoundError(absl::StrCat("checkpoint ", path,
                                          " is neither a qatd checkpoint (config.json + model.safetensors) nor a "
                                          "seed file/directory (model_state_dict.pt or best_state_dict.pt)"));
}

std::string SnapModeName(quant::SnapMode mode) {
  switch (mode) {
    case quant::SnapMode::kLut: return "lut";
    case quant::SnapMode::kBakeScales: return "baked";
    default: return "";
  }
}

// Applies the seed's state_dict to the quantized layers: keys under each layer's prefix
// replace the layer's current state; keys the seed never writes (our _snapped_mode, a V2
// baked flag) keep their current values.
absl::Status LoadSeedState(Student& s, const std::string& path) {
  QATD_ASSIGN_OR_RETURN(quant::TensorMap seed, ReadSeedStateDict(path));  // the safe .pt reader
  QATD_RETURN_IF_ERROR(CheckSeedVersion(seed, s.version, path));  // V2 as V1 would drop rank_magnitude
  quant::TensorMap state = quant::QuantState(*s.registry);
  int64_t used = 0;
  for (auto& [key, value] : state) {
    auto it = seed.find(key);
    if (it != seed.end()) {
      value = it->second;
      ++used;
    }
  }
  // V2 frozen indices are optional in the layer state: take them when the seed has them.
  for (const auto& [name, layer] : quant::QuantizedLayers(*s.registry)) {
    for (const char* t : {"._Q", "._indices"}) {
      auto it = seed.find(name + t);
      if (it != seed.end()) state[name + t] = it->second, ++used;
    }
  }
  if (used == 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, " holds none of the quantized layers' tensors (expected keys like ",
                                                   state.empty() ? "<layer>.scale_A" : state.begin()->first, ")"));
  }
  return quant::LoadQuantState(*s.registry, state);
}

// rounding gptq (gptq_init.h) on the training split of options.calibration_cache.
absl::StatusOr<nlohmann::json> GptqRoundStudent(Student& s, const StudentOptions& options) {
  if (options.calibration_cache.empty()) {
    return absl::FailedPreconditionError(
        "quant.rounding gptq needs a KD cache to calibrate on (kd_cache_dir), and this job has none");
  }
  QATD_ASSIGN_OR_RETURN(auto reader,
                        kd::KdCacheReader::Open(options.calibration_cache, {.model_vocab_size = s.config.vocab_size}));
  QATD_ASSIGN_OR_RETURN(kd::KdSplits splits, HeldOutSplits(*reader, options.calibration_held_out));
  GptqInitOptions o;
  o.sequences = s.quant_v1.calibration_sequences;
  QATD_ASSIGN_OR_RETURN(GptqInitReport r, GptqInitialize(*s.model, *s.registry, *reader, splits.train, o));
  return nlohmann::json{{"rounding", "gptq"},
                        {"sequences", r.sequence_ids.size()},
                        {"tokens", r.tokens},
                        {"layers", r.layers},
                        {"output_error_nearest", r.error_nearest},
                        {"output_error_gptq", r.error_gptq},
                        {"indices_changed", r.weights > 0 ? static_cast<double>(r.indices_changed) / r.weights : 0.0},
                        {"index_mismatches", r.index_mismatches},
                        {"dead_columns", r.dead_columns}};
}

}  // namespace

bool IsQatdCheckpoint(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(fs::path(path) / "config.json", ec)) return false;
  auto j = ReadJson((fs::path(path) / "config.json").string());
  return j.ok() && j->is_object() && j->value("format", "") == kFormat;
}

absl::StatusOr<Student> LoadStudent(const StudentOptions& options) {
  if (options.model_dir.empty()) return absl::InvalidArgumentError("model is required");
  QATD_ASSIGN_OR_RETURN(const at::Device device, ResolveDevice(options.device));
  QATD_ASSIGN_OR_RETURN(at::ScalarType dtype, ResolveDtype(options, device));
  Student s;
  s.base_model = options.model_dir;
  s.version = options.version;
  s.quant_v1 = options.quant_v1;
  s.quant_v2 = options.quant_v2;
  quant::TensorMap state;
  bool have_state = false;
  std::string seed_file;
  if (!options.checkpoint.empty()) {
    if (IsQatdCheckpoint(options.checkpoint)) {
      QATD_ASSIGN_OR_RETURN(s.source, ReadJson((fs::path(options.checkpoint) / "config.json").string()));
      s.version = s.source.value("version", 1);
      if (s.version == 1) {
        QATD_ASSIGN_OR_RETURN(s.quant_v1, quant::QuantConfigFromJson(s.source.value("quant_config", nlohmann::json::object())));
      } else if (s.version == 2) {
        QATD_ASSIGN_OR_RETURN(s.quant_v2,
                              quant::QuantConfigV2FromJson(s.source.value("quant_config_v2", nlohmann::json::object())));
      } else {
        return absl::InvalidArgumentError(absl::StrCat(options.checkpoint, "/config.json: version must be 1 or 2"));
      }
      if (s.source.contains("snapped_mode") && s.source["snapped_mode"].is_string()) {
        s.snapped_mode = s.source["snapped_mode"].get<std::string>();
      }
      QATD_ASSIGN_OR_RETURN(quant::LoadedTensors loaded,
                            quant::ReadTensorMap((fs::path(options.checkpoint) / "model.safetensors").string()));
      state = std::move(loaded.tensors);
      have_state = true;
    } else {
      QATD_ASSIGN_OR_RETURN(seed_file, SeedStateFile(options.checkpoint));
    }
  }
  if (options.quantize && s.version == 1) {
    QATD_RETURN_IF_ERROR(s.quant_v1.Validate());
  } else if (options.quantize) {
    QATD_RETURN_IF_ERROR(s.quant_v2.Validate());
  }

  model::LoadOptions load;
  load.dtype = dtype;
  load.device = device;
  QATD_ASSIGN_OR_RETURN(model::LoadedModel loaded, model::LoadQwen3(options.model_dir, load));
  s.config = loaded.config;
  s.model = loaded.model;
  s.registry = quant::MakeQwen3Registry(*s.model);
  if (!options.quantize) {
    if (!options.checkpoint.empty()) return absl::InvalidArgumentError("a checkpoint needs a quantized student");
    s.version = 0;
    s.registry->FreezeAllParameters();
    return s;
  }
  if (s.version == 1) {
    // A loaded state brings its own LUTs: fitting fresh ones (lut_init kmeans) would be wasted.
    quant::QuantConfig fresh = s.quant_v1;
    if (have_state || !seed_file.empty()) fresh.lut_init = quant::LutInit::kUniform;
    QATD_RETURN_IF_ERROR(quant::QuantizeLinears(*s.registry, fresh).status());
    if (!have_state && seed_file.empty() && s.quant_v1.rounding == quant::Rounding::kGptq) {
      QATD_ASSIGN_OR_RETURN(s.init, GptqRoundStudent(s, options));
    }
  } else {
    // A V2 checkpoint carries its frozen indices; a fresh or seed init freezes them here.
    QATD_RETURN_IF_ERROR(quant::QuantizeLinearsV2(*s.registry, s.quant_v2, /*freeze_q=*/false).status());
  }
  if (have_state) {
    QATD_RETURN_IF_ERROR(quant::LoadQuantState(*s.registry, state));
  } else if (!seed_file.empty()) {
    QATD_RETURN_IF_ERROR(LoadSeedState(s, seed_file));
  }
  if (s.version == 2 && options.freeze_q) QATD_RETURN_IF_ERROR(quant::FreezeAllQ(*s.registry));
  s.registry->FreezeAllParameters();
  return s;
}

nlohmann::json StudentConfigJson(const Student& s) {
  nlohmann::json j;
  j["format"] = kFormat;
  j["version"] = s.version;
  j["base_model"] = s.base_model;
  j["model_id"] = s.base_model;  // seed key
  j["snapped_mode"] = s.snapped_mode.empty() ? nlohmann::json() : nlohmann::json(s.snapped_mode);
  j["snapped"] = !s.snapped_mode.empty();
  auto bits = [](int lut) {
    int b = 0;
    while ((1 << b) < lut) ++b;
    return b;
  };
  if (s.version == 1) {
    const auto& q = s.quant_v1;
    j["quant_config"] = quant::ToJson(q);
    j["lut_size"] = q.lut_size;
    j["group_size"] = q.group_size;
    j["scale_rank"] = q.scale_rank;
    j["quantize_attn"] = q.quantize_attn;
    j["attn_lut_size"] = q.attn_lut_size > 0 ? q.attn_lut_size : q.lut_size;
    j["attn_group_size"] = q.attn_group_size > 0 ? q.attn_group_size : q.group_size;
    j["attn_scale_rank"] = q.attn_scale_rank >= 0 ? q.attn_scale_rank : q.scale_rank;
    j["lut_bits"] = bits(q.lut_size);
    j["attn_lut_bits"] = bits(j["attn_lut_size"].get<int>());
  } else {
    const auto& q = s.quant_v2;
    j["quant_config_v2"] = quant::ToJson(q);
    j["lut_size"] = q.lut_size;
    j["scale_rank"] = q.scale_rank;
    j["quantize_attn"] = q.quantize_attn;
    j["attn_lut_size"] = q.attn_lut_size > 0 ? q.attn_lut_size : q.lut_size;
    j["attn_scale_rank"] = q.attn_scale_rank >= 0 ? q.attn_scale_rank : q.scale_rank;
    j["lut_bits"] = bits(q.lut_size);
    j["attn_lut_bits"] = bits(j["attn_lut_size"].get<int>());
  }
  return j;
}

// torch.save's format (model/torch_pt_writer.h), not torch::jit::pickle_save: the latter tags
// typed dicts with torch.jit._pickle.restore_type_tag, which torch.load(weights_only=True)
// rejects (issue #17 item 4).
absl::Status WriteStateDictPt(Student& s, const std::string& path) {
  model::NamedTensors state;
  for (const auto& item : s.model->named_parameters(/*recurse=*/true)) state.emplace_back(item.key(), item.value());
  for (const auto& item : s.model->named_buffers(/*recurse=*/true)) {
    if (absl::EndsWith(item.key(), "_cached_weight_q") || item.value().numel() == 0) continue;
    state.emplace_back(item.key(), item.value());
  }
  return model::WriteTorchPt(path, state);
}

namespace {

absl::Status WriteIndicesPt(Student& s, const std::string& path) {
  model::NamedTensors indices;
  QATD_RETURN_IF_ERROR(CatchTorch("compute indices", [&]() -> absl::Status {
    for (const auto& [name, layer] : quant::QuantizedLayers(*s.registry)) {
      if (auto* v1 = dynamic_cast<quant::QuantLinearV1*>(layer.get())) indices.emplace_back(name, v1->ComputeIndices());
    }
    return absl::OkStatus();
  }));
  return model::WriteTorchPt(path, indices);
}

}  // namespace

absl::Status SaveStudent(Student& s, const std::string& dir, const nlohmann::json& extra, bool seed_files,
                         const std::function<absl::Status(const std::string& tmp_dir)>& add_files) {
  const std::string tmp = absl::StrCat(dir, ".tmp-", ::getpid());
  (void)RemoveTree(tmp);
  std::error_code ec;
  fs::create_directories(tmp, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", tmp, ": ", ec.message()));
  nlohmann::json config = StudentConfigJson(s);
  if (extra.is_object()) config.update(extra);
  QATD_RETURN_IF_ERROR(WriteFileAtomically((fs::path(tmp) / "config.json").string(), config.dump(2) + "\n"));
  QATD_RETURN_IF_ERROR(quant::WriteTensorMap((fs::path(tmp) / "model.safetensors").string(), quant::QuantState(*s.registry),
                                             {{"format", kFormat}, {"version", std::to_string(s.version)}}));
  if (seed_files) {
    QATD_RETURN_IF_ERROR(WriteStateDictPt(s, (fs::path(tmp) / "model_state_dict.pt").string()));
    if (s.version == 1) QATD_RETURN_IF_ERROR(WriteIndicesPt(s, (fs::path(tmp) / "indices.pt").string()));
  }
  if (add_files) QATD_RETURN_IF_ERROR(add_files(tmp));
  return ReplaceDirectory(tmp, dir);
}

ModelSize MeasureModelSize(Student& s) {
  ModelSize size;
  std::set<const void*> counted;
  for (const auto& item : s.model->named_parameters(/*recurse=*/true)) {
    const at::Tensor& t = item.value();
    size.dense_bytes += t.numel() * 2;  // the dense model in fp16/bf16
  }
  // Quantized: every non-quantized parameter at 2 bytes, every quantized layer as packed
  // indices + fp16 LUT + fp16 low-rank scales (+ bias).
  int64_t quant_dense = 0, quant_packed = 0;
  for (const auto& [name, layer] : quant::QuantizedLayers(*s.registry)) {
    const int64_t o = layer->out_features(), i = layer->in_features();
    quant_dense += o * i * 2;
    if (auto* v1 = dynamic_cast<quant::QuantLinearV1*>(layer.get())) {
      const int bits = quant::PackedBitsForLutSize(v1->lut.numel());
      int64_t scales = v1->low_rank() ? (v1->scale_A.numel() + v1->scale_B.numel()) : v1->full_scales.numel();
      quant_packed += (o * i * bits + 7) / 8 + v1->lut.numel() * 2 + scales * 2;
    } else if (auto* v2 = dynamic_cast<quant::QuantLinearV2*>(layer.get())) {
      const int bits = quant::PackedBitsForLutSize(v2->lut.numel());
      quant_packed += (o * i * bits + 7) / 8 + v2->lut.numel() * 2 + (v2->scale_A.numel() + v2->scale_B.numel()) * 2;
    }
  }
  size.quantized_bytes = size.dense_bytes - quant_dense + quant_packed;
  (void)counted;
  return size;
}

}  // namespace qatd::train
