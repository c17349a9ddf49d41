#pragma once
// LoRA adapters on a snapped student (issue #19; the seed's train_recovery_lora_multi.py):
// which projections get adapters, their rank, scale, dropout and parameter dtype.
// LibTorch-free (qatd_core_base): the daemon validates a LORA job's settings at submit time;
// core/train/lora.h builds the adapters.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace qatd::train {

struct LoraConfig {
  int64_t rank = 16;           // r, in [1, 4096]
  double alpha = 32;           // scaling = alpha / rank (PEFT's lora_alpha); > 0
  double dropout = 0.0;        // PEFT's lora_dropout on the adapter's input, in [0, 1); training only
  // Module suffixes (PEFT's target_modules): any of q_proj k_proj v_proj o_proj gate_proj
  // up_proj down_proj. Every decoder layer's projection of that name gets an adapter.
  std::vector<std::string> target_modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  // The adapters' parameter dtype (the seed's --dtype): "fp32" (the adapter path runs in fp32
  // whatever the model's dtype: the seed's fp32 master weights + bf16 autocast; AdamW keeps
  // fp32 moments, 8 bytes per adapter element) or "bf16" (the adapter path in bf16; AdamW keeps
  // bf16 moments and no fp32 master, 4 bytes per element: half the optimizer state and half
  // the adapter weights; AdamStateDtype::kParameterDtype, optimizer.h).
  std::string dtype = "fp32";
  uint64_t seed = 0;           // initialisation (lora_A) and dropout masks

  double scaling() const { return alpha / static_cast<double>(rank); }
  absl::Status Validate() const;  // INVALID_ARGUMENT naming the field
};

// The target names LoraConfig accepts, in model order.
const std::vector<std::string>& LoraTargetNames();

}  // namespace qatd::train
