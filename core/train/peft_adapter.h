#pragma once
// LoRA adapters as PEFT saves them (issue #19), so PEFT / transformers load qatd's adapters:
//
//   <dir>/adapter_config.json        {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r",
//                                     "lora_alpha", "lora_dropout", "target_modules",
//                                     "base_model_name_or_path", "bias": "none",
//                                     "fan_in_fan_out": false, "inference_mode": true, ... }
//                                     plus "qatd": {"checkpoint", "dtype", "seed", ...}
//   <dir>/adapter_model.safetensors  "base_model.model.<module>.lora_A.weight" [r, in] and
//                                     ".lora_B.weight" [out, r], in the adapters' dtype
//
// The directory is written atomically (a temporary directory renamed over <dir>).

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "core/quant/tensor_io.h"
#include "core/train/lora.h"
#include "core/train/lora_options.h"
#include "core/train/student.h"

namespace qatd::train {

// `base_model_name_or_path` goes into adapter_config.json; `qatd` (an object) under "qatd".
absl::Status WritePeftAdapter(const LoraAdapters& adapters, const std::string& dir,
                              const std::string& base_model_name_or_path, const nlohmann::json& qatd = {});

struct PeftAdapter {
  LoraConfig config;          // r, lora_alpha, lora_dropout, target_modules (+ dtype, seed from "qatd")
  quant::TensorMap tensors;   // PEFT names
  nlohmann::json adapter_config;
};

// Reads an adapter directory. NOT_FOUND naming a missing file; INVALID_ARGUMENT naming the
// adapter_config.json key that is missing or unsupported (peft_type other than LORA, bias
// other than "none", use_dora, rank_pattern / alpha_pattern, modules_to_save).
absl::StatusOr<PeftAdapter> ReadPeftAdapter(const std::string& dir);

// ReadPeftAdapter + LoraAdapters::Attach + LoadPeftTensors: `student` computes with the
// adapters applied (for EVAL, GENERATE and the merged export). Every module of the file must
// be a projection of the student; every adapter the config implies must be in the file.
absl::StatusOr<std::unique_ptr<LoraAdapters>> ApplyPeftAdapter(Student& student, const std::string& dir);

}  // namespace qatd::train
