#include "core/train/peft_adapter.h"

#include <unistd.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/common/file_util.h"
#include "core/common/status_macros.h"
#include "core/common/torch_status.h"
#include "core/train/json_file.h"

namespace qatd::train {
namespace fs = std::filesystem;

absl::Status WritePeftAdapter(const LoraAdapters& adapters, const std::string& dir,
                              const std::string& base_model_name_or_path, const nlohmann::json& qatd) {
  const LoraConfig& c = adapters.config();
  nlohmann::json info = qatd.is_object() ? qatd : nlohmann::json::object();
  info["dtype"] = c.dtype;
  info["seed"] = c.seed;
  info["format"] = "qatd_lora_v1";
  // PEFT's LoraConfig fields (peft 0.x save_pretrained); the defaults PEFT would write for
  // what qatd does not use.
  nlohmann::json config = {{"peft_type", "LORA"},
                           {"task_type", "CAUSAL_LM"},
                           {"base_model_name_or_path", base_model_name_or_path},
                           {"r", c.rank},
                           {"lora_alpha", c.alpha},
                           {"lora_dropout", c.dropout},
                           {"target_modules", c.target_modules},
                           {"bias", "none"},
                           {"fan_in_fan_out", false},
                           {"inference_mode", true},
                           {"init_lora_weights", true},
                           {"modules_to_save", nullptr},
                           {"layers_to_transform", nullptr},
                           {"layers_pattern", nullptr},
                           {"rank_pattern", nlohmann::json::object()},
                           {"alpha_pattern", nlohmann::json::object()},
                           {"use_rslora", false},
                           {"use_dora", false},
                           {"revision", nullptr},
                           {"qatd", info}};
  const std::string tmp = absl::StrCat(dir, ".tmp-", ::getpid());
  (void)RemoveTree(tmp);
  std::error_code ec;
  fs::create_directories(tmp, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", tmp, ": ", ec.message()));
  QATD_RETURN_IF_ERROR(WriteFileAtomically((fs::path(tmp) / "adapter_config.json").string(), config.dump(2) + "\n"));
  QATD_RETURN_IF_ERROR(quant::WriteTensorMap((fs::path(tmp) / "adapter_model.safetensors").string(),
                                             adapters.PeftTensors(), {{"format", "pt"}}));
  return ReplaceDirectory(tmp, dir);
}

absl::StatusOr<PeftAdapter> ReadPeftAdapter(const std::string& dir) {
  const std::string config_path = (fs::path(dir) / "adapter_config.json").string();
  QATD_ASSIGN_OR_RETURN(nlohmann::json j, ReadJson(config_path));
  auto bad = [&](const std::string& key, const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": \"", key, "\" ", why));
  };
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(config_path, " is not a JSON object"));
  if (j.value("peft_type", std::string()) != "LORA") return bad("peft_type", "must be \"LORA\"");
  if (!j.contains("r") || !j["r"].is_number_integer()) return bad("r", "must be an integer");
  if (!j.contains("lora_alpha") || !j["lora_alpha"].is_number()) return bad("lora_alpha", "must be a number");
  if (!j.contains("target_modules") || !j["target_modules"].is_array()) {
    return bad("target_modules", "must be a list of module names");
  }
  if (j.contains("bias") && j["bias"].is_string() && j["bias"].get<std::string>() != "none") {
    return bad("bias", "must be \"none\" (qatd adapters have no bias)");
  }
  if (j.value("use_dora", false)) return bad("use_dora", "is not supported");
  if (j.value("use_rslora", false)) return bad("use_rslora", "is not supported");
  for (const char* key : {"rank_pattern", "alpha_pattern"}) {
    if (j.contains(key) && j[key].is_object() && !j[key].empty()) return bad(key, "is not supported (must be empty)");
  }
  if (j.contains("modules_to_save") && !j["modules_to_save"].is_null()) return bad("modules_to_save", "is not supported");
  PeftAdapter out;
  out.adapter_config = j;
  out.config.rank = j["r"].get<int64_t>();
  out.config.alpha = j["lora_alpha"].get<double>();
  out.config.dropout = j.contains("lora_dropout") && j["lora_dropout"].is_number() ? j["lora_dropout"].get<double>() : 0.0;
  out.config.target_modules.clear();
  for (const auto& t : j["target_modules"]) {
    if (!t.is_string()) return bad("target_modules", "must be a list of strings");
    out.config.target_modules.push_back(t.get<std::string>());
  }
  if (j.contains("qatd") && j["qatd"].is_object()) {
    out.config.dtype = j["qatd"].value("dtype", std::string("fp32"));
    out.config.seed = j["qatd"].value("seed", uint64_t{0});
  }
  if (absl::Status v = out.config.Validate(); !v.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": ", v.message()));
  }
  QATD_ASSIGN_OR_RETURN(quant::LoadedTensors loaded,
                        quant::ReadTensorMap((fs::path(dir) / "adapter_model.safetensors").string()));
  out.tensors = std::move(loaded.tensors);
  return out;
}

absl::StatusOr<std::unique_ptr<LoraAdapters>> ApplyPeftAdapter(Student& student, const std::string& dir) {
  QATD_ASSIGN_OR_RETURN(PeftAdapter adapter, ReadPeftAdapter(dir));
  // The file's tensor dtype decides the adapters' dtype (PEFT files carry no qatd key).
  for (const auto& [name, t] : adapter.tensors) {
    adapter.config.dtype = t.scalar_type() == at::kBFloat16 ? "bf16" : "fp32";
    break;
  }
  QATD_ASSIGN_OR_RETURN(std::unique_ptr<LoraAdapters> adapters, LoraAdapters::Attach(student, adapter.config));
  if (absl::Status s = adapters->LoadPeftTensors(adapter.tensors); !s.ok()) {
    (void)adapters->Detach();
    return absl::InvalidArgumentError(absl::StrCat(dir, "/adapter_model.safetensors: ", s.message()));
  }
  adapters->FreezeAll();
  return adapters;
}

}  // namespace qatd::train
