#pragma once
// The typed Qwen3 config read from a Hugging Face `config.json`.

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace qatd::model {

struct Qwen3Config {
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  int64_t vocab_size = 0;
  double rope_theta = 1e6;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = true;
  int64_t max_position_embeddings = 0;
  int64_t bos_token_id = -1;  // -1: unset
  int64_t eos_token_id = -1;
  std::string torch_dtype = "bfloat16";

  // Parses config.json text. Accepts model_type "qwen3" (or architectures containing
  // "Qwen3ForCausalLM"); rope_theta may also come as rope_parameters.rope_theta
  // (transformers 5). Errors are INVALID_ARGUMENT naming the field:
  // "config.json: missing field 'hidden_size'", "unsupported architecture 'LlamaForCausalLM'".
  static absl::StatusOr<Qwen3Config> FromJson(const std::string& json_text);
  // Reads `<dir>/config.json` (or the file itself when `path` ends in .json).
  static absl::StatusOr<Qwen3Config> FromFile(const std::string& path);

  // The HF config.json text for this config (used by `qat-model init` and exports).
  std::string ToJson() const;

  // Checks internal consistency (heads divide, positive sizes). Called by FromJson.
  absl::Status Validate() const;
};

}  // namespace qatd::model
