#include "core/model/qwen3_config.h"

#include <map>

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/common/input_file.h"
#include "core/common/status_macros.h"
#include "nlohmann/json.hpp"

namespace qatd::model {
namespace {

using json = nlohmann::json;

absl::Status Bad(absl::string_view what) { return absl::InvalidArgumentError(absl::StrCat("config.json: ", what)); }

absl::StatusOr<int64_t> RequireInt(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return Bad(absl::StrCat("missing field '", key, "'"));
  if (!it->is_number_integer()) return Bad(absl::StrCat("field '", key, "' must be an integer"));
  return it->get<int64_t>();
}

absl::StatusOr<double> RequireNumber(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return Bad(absl::StrCat("missing field '", key, "'"));
  if (!it->is_number()) return Bad(absl::StrCat("field '", key, "' must be a number"));
  return it->get<double>();
}

// eos_token_id may be an int or a list of ints (first one is used).
int64_t OptionalTokenId(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end()) return -1;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_array() && !it->empty() && (*it)[0].is_number_integer()) return (*it)[0].get<int64_t>();
  return -1;
}

}  // namespace

absl::StatusOr<Qwen3Config> Qwen3Config::FromJson(const std::string& json_text) {
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Bad("not a JSON object");

  std::string arch;
  if (auto a = j.find("architectures"); a != j.end() && a->is_array() && !a->empty() && (*a)[0].is_string())
    arch = (*a)[0].get<std::string>();
  // Read by hand: json::value() throws on a non-string (and the daemon reads this at submit).
  std::string model_type;
  if (auto t = j.find("model_type"); t != j.end() && !t->is_null()) {
    if (!t->is_string()) return Bad(absl::StrCat("field 'model_type' must be a string, got ", t->type_name()));
    model_type = t->get<std::string>();
  }
  const bool is_qwen3 = model_type == "qwen3" || arch == "Qwen3ForCausalLM";
  if (!is_qwen3) {
    return Bad(absl::StrCat("unsupported architecture '", arch.empty() ? model_type : arch,
                            "' (model_type '", model_type, "'); qatd supports Qwen3ForCausalLM (model_type 'qwen3')"));
  }
  Qwen3Config c;
  QATD_ASSIGN_OR_RETURN(c.hidden_size, RequireInt(j, "hidden_size"));
  QATD_ASSIGN_OR_RETURN(c.intermediate_size, RequireInt(j, "intermediate_size"));
  QATD_ASSIGN_OR_RETURN(c.num_hidden_layers, RequireInt(j, "num_hidden_layers"));
  QATD_ASSIGN_OR_RETURN(c.num_attention_heads, RequireInt(j, "num_attention_heads"));
  QATD_ASSIGN_OR_RETURN(c.num_key_value_heads, RequireInt(j, "num_key_value_heads"));
  QATD_ASSIGN_OR_RETURN(c.vocab_size, RequireInt(j, "vocab_size"));
  QATD_ASSIGN_OR_RETURN(c.max_position_embeddings, RequireInt(j, "max_position_embeddings"));
  QATD_ASSIGN_OR_RETURN(c.rms_norm_eps, RequireNumber(j, "rms_norm_eps"));
  // head_dim is optional in older configs: hidden / heads.
  if (j.contains("head_dim") && !j["head_dim"].is_null()) {
    QATD_ASSIGN_OR_RETURN(c.head_dim, RequireInt(j, "head_dim"));
  } else {
    if (c.num_attention_heads <= 0) return Bad("num_attention_heads must be positive");
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  // rope_theta: top level (transformers 4) or rope_parameters.rope_theta (transformers 5).
  if (j.contains("rope_theta") && !j["rope_theta"].is_null()) {
    QATD_ASSIGN_OR_RETURN(c.rope_theta, RequireNumber(j, "rope_theta"));
  } else if (j.contains("rope_parameters") && j["rope_parameters"].is_object() &&
             j["rope_parameters"].contains("rope_theta")) {
    QATD_ASSIGN_OR_RETURN(c.rope_theta, RequireNumber(j["rope_parameters"], "rope_theta"));
  } else {
    return Bad("missing field 'rope_theta' (or 'rope_parameters.rope_theta')");
  }
  if (auto rs = j.find("rope_scaling"); rs != j.end() && !rs->is_null()) {
    return Bad("field 'rope_scaling' is set; qatd implements default RoPE only");
  }
  auto tie = j.find("tie_word_embeddings");
  if (tie == j.end()) return Bad("missing field 'tie_word_embeddings'");
  if (!tie->is_boolean()) return Bad("field 'tie_word_embeddings' must be a boolean");
  c.tie_word_embeddings = tie->get<bool>();
  c.bos_token_id = OptionalTokenId(j, "bos_token_id");
  c.eos_token_id = OptionalTokenId(j, "eos_token_id");
  if (auto d = j.find("torch_dtype"); d != j.end() && d->is_string()) c.torch_dtype = d->get<std::string>();
  else if (auto d2 = j.find("dtype"); d2 != j.end() && d2->is_string()) c.torch_dtype = d2->get<std::string>();
  QATD_RETURN_IF_ERROR(c.Validate());
  return c;
}

absl::StatusOr<Qwen3Config> Qwen3Config::FromFile(const std::string& path) {
  std::filesystem::path p(path);
  if (!absl::EndsWith(path, ".json")) p /= "config.json";
  // The bound the daemon checks at submit (core/jobs/job_spec.cc); a device is refused unread.
  constexpr int64_t kMaxConfigBytes = int64_t{16} << 20;
  QATD_ASSIGN_OR_RETURN(InputFile in, InputFile::Open(p.string()));
  QATD_ASSIGN_OR_RETURN(const std::string text, in.ReadAll(kMaxConfigBytes));
  auto c = FromJson(text);
  if (!c.ok()) return absl::Status(c.status().code(), absl::StrCat(p.string(), ": ", c.status().message()));
  return c;
}

absl::Status Qwen3Config::Validate() const {
  // Positive, and below bounds no Qwen3 comes near (the largest has 94 layers, hidden 8192,
  // a 151,936-token vocabulary and 128k positions): an absurd config must fail here, not by
  // the OOM killer when the model is allocated.
  auto positive = [](int64_t v, const char* name) -> absl::Status {
    if (v <= 0) return Bad(absl::StrCat("field '", name, "' must be positive, got ", v));
    static const std::map<std::string, int64_t> kMax = {
        {"hidden_size", 65536},         {"intermediate_size", 262144}, {"num_hidden_layers", 1024},
        {"num_attention_heads", 1024},  {"num_key_value_heads", 1024}, {"head_dim", 4096},
        {"vocab_size", 4194304},        {"max_position_embeddings", 16777216}};
    auto it = kMax.find(name);
    if (it != kMax.end() && v > it->second) {
      return Bad(absl::StrCat("field '", name, "' is ", v, ", above the largest this build accepts (", it->second, ")"));
    }
    return absl::OkStatus();
  };
  QATD_RETURN_IF_ERROR(positive(hidden_size, "hidden_size"));
  QATD_RETURN_IF_ERROR(positive(intermediate_size, "intermediate_size"));
  QATD_RETURN_IF_ERROR(positive(num_hidden_layers, "num_hidden_layers"));
  QATD_RETURN_IF_ERROR(positive(num_attention_heads, "num_attention_heads"));
  QATD_RETURN_IF_ERROR(positive(num_key_value_heads, "num_key_value_heads"));
  QATD_RETURN_IF_ERROR(positive(head_dim, "head_dim"));
  QATD_RETURN_IF_ERROR(positive(vocab_size, "vocab_size"));
  QATD_RETURN_IF_ERROR(positive(max_position_embeddings, "max_position_embeddings"));
  if (head_dim % 2 != 0) return Bad(absl::StrCat("field 'head_dim' must be even for RoPE, got ", head_dim));
  if (num_attention_heads % num_key_value_heads != 0)
    return Bad(absl::StrCat("num_attention_heads (", num_attention_heads, ") must be a multiple of num_key_value_heads (",
                            num_key_value_heads, ")"));
  if (!(rms_norm_eps > 0)) return Bad("field 'rms_norm_eps' must be positive");
  if (!(rope_theta > 0)) return Bad("field 'rope_theta' must be positive");
  return absl::OkStatus();
}

std::string Qwen3Config::ToJson() const {
  json j = {
      {"architectures", {"Qwen3ForCausalLM"}},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"head_dim", head_dim},
      {"hidden_act", "silu"},
      {"hidden_size", hidden_size},
      {"initializer_range", 0.02},
      {"intermediate_size", intermediate_size},
      {"max_position_embeddings", max_position_embeddings},
      {"max_window_layers", num_hidden_layers},
      {"model_type", "qwen3"},
      {"num_attention_heads", num_attention_heads},
      {"num_hidden_layers", num_hidden_layers},
      {"num_key_value_heads", num_key_value_heads},
      {"rms_norm_eps", rms_norm_eps},
      {"rope_scaling", nullptr},
      {"rope_theta", rope_theta},
      {"sliding_window", nullptr},
      {"tie_word_embeddings", tie_word_embeddings},
      {"torch_dtype", torch_dtype},
      {"use_cache", true},
      {"use_sliding_window", false},
      {"vocab_size", vocab_size},
  };
  if (bos_token_id >= 0) j["bos_token_id"] = bos_token_id;
  if (eos_token_id >= 0) j["eos_token_id"] = eos_token_id;
  return j.dump(2);
}

}  // namespace qatd::model
