#include "core/jobs/spec_compat.h"

#include <filesystem>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/common/input_file.h"
#include "core/common/sha256.h"
#include "core/model/qwen3_config.h"

namespace qatd::jobs {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr int64_t kMaxJsonBytes = int64_t{16} << 20;

// A small JSON file, or nullopt when it is missing, too large or not JSON (the worker's to
// report with its own reader).
std::optional<json> ReadSmallJson(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return std::nullopt;
  absl::StatusOr<InputFile> in = InputFile::Open(path.string());
  if (!in.ok()) return std::nullopt;
  absl::StatusOr<std::string> text = in->ReadAll(kMaxJsonBytes);
  if (!text.ok()) return std::nullopt;
  try {
    return json::parse(*text);
  } catch (const json::exception&) {
    return std::nullopt;
  }
}

std::optional<model::Qwen3Config> ModelConfigOf(const std::string& model) {
  std::error_code ec;
  const fs::path file = fs::is_directory(model, ec) ? fs::path(model) / "config.json" : fs::path(model);
  if (!fs::is_regular_file(file, ec) || fs::file_size(file, ec) > static_cast<uintmax_t>(kMaxJsonBytes)) {
    return std::nullopt;
  }
  absl::StatusOr<model::Qwen3Config> config = model::Qwen3Config::FromFile(model);
  if (!config.ok()) return std::nullopt;
  return *config;
}

std::string Short(const std::string& sha) { return sha.substr(0, 12); }

bool SamePath(const std::string& a, const std::string& b) {
  std::error_code ec;
  return fs::weakly_canonical(fs::absolute(a), ec) == fs::weakly_canonical(fs::absolute(b), ec);
}

}  // namespace

absl::Status CheckModelMatchesCache(const std::string& model, const std::string& kd_cache_dir) {
  const std::optional<json> meta = ReadSmallJson(fs::path(kd_cache_dir) / "meta.json");
  if (!meta.has_value() || !meta->is_object()) return absl::OkStatus();
  const std::string teacher =
      meta->contains("teacher_model") && (*meta)["teacher_model"].is_string() ? (*meta)["teacher_model"].get<std::string>()
                                                                             : "?";
  const std::optional<model::Qwen3Config> config = ModelConfigOf(model);
  if (config.has_value() && meta->contains("vocab_size") && (*meta)["vocab_size"].is_number_integer()) {
    const int64_t cache_vocab = (*meta)["vocab_size"].get<int64_t>();
    if (cache_vocab != config->vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          kd_cache_dir, " was made by teacher ", teacher, " with vocab_size ", cache_vocab, " (meta.json), but model ",
          model, " has vocab_size ", config->vocab_size, " (config.json): a student must share its teacher's vocabulary"));
    }
  }
  const std::string cache_sha = meta->contains("tokenizer_sha256") && (*meta)["tokenizer_sha256"].is_string()
                                    ? (*meta)["tokenizer_sha256"].get<std::string>()
                                    : "";
  std::error_code ec;
  const fs::path tokenizer = fs::path(model) / "tokenizer.json";
  if (cache_sha.empty() || !fs::is_regular_file(tokenizer, ec)) return absl::OkStatus();
  absl::StatusOr<std::string> model_sha = Sha256File(tokenizer.string());
  if (!model_sha.ok() || *model_sha == cache_sha) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      kd_cache_dir, " was made by teacher ", teacher, " with a tokenizer of sha256 ", Short(cache_sha),
      "... (meta.json), but model ", model, " has a tokenizer.json of sha256 ", Short(*model_sha),
      "...: a student must share its teacher's tokenizer"));
}

std::optional<json> QatdCheckpointConfig(const std::string& checkpoint) {
  std::error_code ec;
  if (!fs::is_directory(checkpoint, ec)) return std::nullopt;
  std::optional<json> config = ReadSmallJson(fs::path(checkpoint) / "config.json");
  if (!config.has_value() || !config->is_object() || !config->contains("format") ||
      (*config)["format"] != "qatd_checkpoint_v1") {
    return std::nullopt;
  }
  return config;
}

absl::Status CheckCheckpointMatchesModel(const std::string& checkpoint, const std::string& model,
                                         const std::function<bool(const std::string&)>& may_read) {
  const std::optional<json> config = QatdCheckpointConfig(checkpoint);
  if (!config.has_value() || !config->contains("base_model") || !(*config)["base_model"].is_string()) {
    return absl::OkStatus();
  }
  const std::string base = (*config)["base_model"].get<std::string>();
  if (base.empty() || SamePath(base, model) || (may_read && !may_read(base))) return absl::OkStatus();
  const std::optional<model::Qwen3Config> a = ModelConfigOf(base);
  const std::optional<model::Qwen3Config> b = ModelConfigOf(model);
  if (!a.has_value() || !b.has_value()) return absl::OkStatus();
  const std::vector<std::pair<const char*, std::pair<int64_t, int64_t>>> fields = {
      {"vocab_size", {a->vocab_size, b->vocab_size}},
      {"hidden_size", {a->hidden_size, b->hidden_size}},
      {"intermediate_size", {a->intermediate_size, b->intermediate_size}},
      {"num_hidden_layers", {a->num_hidden_layers, b->num_hidden_layers}},
      {"num_attention_heads", {a->num_attention_heads, b->num_attention_heads}},
      {"num_key_value_heads", {a->num_key_value_heads, b->num_key_value_heads}},
      {"head_dim", {a->head_dim, b->head_dim}}};
  std::string differences;
  for (const auto& [name, values] : fields) {
    if (values.first == values.second) continue;
    absl::StrAppend(&differences, differences.empty() ? "" : ", ", name, " ", values.first, " vs ", values.second);
  }
  if (differences.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(checkpoint, " was made on base model ", base, " (config.json), but model ",
                                                 model, " is another architecture: ", differences,
                                                 " (checkpoint's base vs model)"));
}

}  // namespace qatd::jobs
