#include "core/jobs/job_spec.h"

#include <filesystem>
#include <optional>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/common/status_macros.h"
#include "core/jobs/convert_options.h"
#include "core/jobs/eval_options.h"
#include "core/jobs/export_options.h"
#include "core/jobs/generate_options.h"
#include "core/jobs/kd_cache_options.h"
#include "core/jobs/layerwise_options.h"
#include "core/jobs/lora_options.h"
#include "core/jobs/qat_options.h"
#include "core/jobs/snap_options.h"
#include "core/jobs/spec_compat.h"
#include "core/kd/dataset.h"
#include "core/model/qwen3_config.h"

namespace qatd::jobs {
namespace {

// Accumulates the first failure; later checks are skipped once one failed.
class Checker {
 public:
  Checker(std::string prefix, const SpecCheckContext& context) : prefix_(std::move(prefix)), context_(context) {}

  Checker& Required(const char* field, const std::string& value) {
    if (ok() && value.empty() && !Fed(field)) Fail(field, "is required");
    return *this;
  }
  // An input path: must exist when set (and be set when required).
  Checker& Path(const char* field, const std::string& value, bool required) {
    if (!ok() || Fed(field)) return *this;
    if (value.empty()) {
      if (required) Fail(field, "is required");
      return *this;
    }
    std::error_code ec;
    if (context_.check_paths && !std::filesystem::exists(value, ec)) {
      Fail(field, absl::StrCat("names a path that does not exist: ", value));
      return *this;
    }
    if (context_.confine_paths && !context_.allowed_input_roots.empty() &&
        !UnderAny(value, context_.allowed_input_roots)) {
      Fail(field, absl::StrCat("names ", value, ", outside the directories this daemon may read (",
                               absl::StrJoin(context_.allowed_input_roots, ", "), ": qatd --allow-input-root)"));
    }
    return *this;
  }
  // The config.json of the model a field names, for limits that depend on it (positions,
  // vocabulary). Fails the field when the config exists but is unusable (absurd sizes included:
  // they must not reach the worker's allocator); nullopt, without failing, when there is no
  // config to read (a missing model is the worker's error, with the file named).
  std::optional<model::Qwen3Config> ModelConfig(const char* field, const std::string& path) {
    if (!ok() || path.empty() || Fed(field) || !context_.check_paths) return std::nullopt;
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::path file = fs::is_directory(path, ec) ? fs::path(path) / "config.json" : fs::path(path);
    if (file.extension() != ".json" || !fs::exists(file, ec)) return std::nullopt;
    if (!fs::is_regular_file(file, ec) || fs::file_size(file, ec) > (16u << 20)) {
      Fail(field, absl::StrCat("names a model whose ", file.string(), " is not a regular file of at most 16 MiB"));
      return std::nullopt;
    }
    absl::StatusOr<model::Qwen3Config> config = model::Qwen3Config::FromFile(path);
    if (!config.ok()) {
      Fail(field, absl::StrCat("names a model that cannot be used: ", std::string(config.status().message())));
      return std::nullopt;
    }
    return *config;
  }

  // The directory a job writes (empty: the job's own folder). See SpecCheckContext.
  Checker& OutputDir(const char* field, const std::string& value, bool may_continue) {
    if (!ok() || value.empty() || !context_.confine_paths) return *this;
    namespace fs = std::filesystem;
    if (!context_.jobs_dir.empty() && PathIsUnder(value, context_.jobs_dir)) {
      Fail(field, absl::StrCat("names ", value, ", inside the daemon's job folders (", context_.jobs_dir,
                               "); leave it empty to write in the job's own folder"));
      return *this;
    }
    if (!UnderAny(value, context_.allowed_output_roots)) {
      Fail(field, context_.allowed_output_roots.empty()
                      ? absl::StrCat("names ", value, ", but this daemon writes only in its job folders (the "
                                     "operator allows other places with qatd --allow-output-root DIR); leave it "
                                     "empty to write in the job's own folder")
                      : absl::StrCat("names ", value, ", outside the directories this daemon may write (",
                                     absl::StrJoin(context_.allowed_output_roots, ", "),
                                     ": qatd --allow-output-root); leave it empty to write in the job's own folder"));
      return *this;
    }
    std::error_code ec;
    if (fs::exists(value, ec) && !fs::is_directory(value, ec)) {
      Fail(field, absl::StrCat("names ", value, ", which is not a directory"));
    } else if (!may_continue && fs::exists(value, ec) && !fs::is_empty(value, ec)) {
      Fail(field, absl::StrCat("names ", value, ", an existing directory that is not empty: a job writes only into "
                               "a new or empty directory, so it never replaces files it did not create"));
    }
    return *this;
  }
  Checker& Range(const char* field, bool present, int64_t value, int64_t lo, int64_t hi) {
    if (ok() && present && (value < lo || value > hi)) {
      Fail(field, absl::StrCat("must be in [", lo, ", ", hi, "], got ", value));
    }
    return *this;
  }
  Checker& Positive(const char* field, bool present, double value) {
    if (ok() && present && !(value > 0)) Fail(field, absl::StrCat("must be > 0, got ", value));
    return *this;
  }
  Checker& NonNegative(const char* field, bool present, double value) {
    if (ok() && present && !(value >= 0)) Fail(field, absl::StrCat("must be >= 0, got ", value));
    return *this;
  }
  Checker& Between(const char* field, bool present, double value, double lo, double hi) {
    if (ok() && present && !(value >= lo && value <= hi)) {
      Fail(field, absl::StrCat("must be in [", lo, ", ", hi, "], got ", value));
    }
    return *this;
  }
  Checker& PowerOfTwo(const char* field, bool present, int64_t value, int64_t lo, int64_t hi) {
    if (ok() && present && (value < lo || value > hi || (value & (value - 1)) != 0)) {
      Fail(field, absl::StrCat("must be a power of two in [", lo, ", ", hi, "], got ", value));
    }
    return *this;
  }
  Checker& Enum(const char* field, bool valid, int value) {
    if (ok() && !valid) Fail(field, absl::StrCat("has no enum value ", value));
    return *this;
  }
  Checker& Require(bool condition, const char* field, const std::string& message) {
    if (ok() && !condition) Fail(field, message);
    return *this;
  }
  // Whether two input paths can be compared (spec_compat.h): both set, neither filled in later
  // by a pipeline input, and paths are checked on this host.
  bool Comparable(const char* field, const std::string& value, const char* other, const std::string& other_value) const {
    return ok() && context_.check_paths && !value.empty() && !other_value.empty() && !Fed(field) && !Fed(other);
  }
  // Fails `field` with the message of a failed compatibility check.
  Checker& Compatible(const char* field, const absl::Status& check) {
    if (ok() && !check.ok()) Fail(field, std::string(check.message()));
    return *this;
  }
  // The model against the KD cache it reads and the checkpoint it starts from.
  Checker& ModelMatches(const std::string& model, const char* cache_field, const std::string& cache,
                        const std::vector<std::pair<const char*, std::string>>& checkpoints) {
    if (Comparable(cache_field, cache, "model", model)) Compatible(cache_field, CheckModelMatchesCache(model, cache));
    for (const auto& [field, checkpoint] : checkpoints) {
      if (!Comparable(field, checkpoint, "model", model)) continue;
      Compatible(field, CheckCheckpointMatchesModel(checkpoint, model, [this](const std::string& base) {
                   return !context_.confine_paths || context_.allowed_input_roots.empty() ||
                          UnderAny(base, context_.allowed_input_roots);
                 }));
    }
    return *this;
  }

  std::string Name(const char* field) const { return absl::StrCat(prefix_, ".", field); }
  bool ok() const { return status_.ok(); }
  absl::Status status() const { return status_; }

 private:
  static bool UnderAny(const std::string& path, const std::vector<std::string>& roots) {
    for (const std::string& root : roots) {
      if (PathIsUnder(path, root)) return true;
    }
    return false;
  }
  bool Fed(const char* field) const { return context_.fed_fields.count(field) > 0; }
  void Fail(const char* field, const std::string& message) {
    status_ = absl::InvalidArgumentError(absl::StrCat(Name(field), " ", message));
  }

  std::string prefix_;
  const SpecCheckContext& context_;
  absl::Status status_;
};

constexpr int64_t kMaxInt32 = std::numeric_limits<int32_t>::max();

absl::Status CheckPreset(const std::string& prefix, const std::string& preset) {
  if (preset.empty()) return absl::OkStatus();
  std::string key;
  for (char c : preset) {
    if (c != '_' && c != '-') key.push_back(static_cast<char>(absl::ascii_toupper(static_cast<unsigned char>(c))));
  }
  if (key == "Q4A4" || key == "Q2A4" || key == "Q4A4R32" || key == "Q2A2") return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(prefix, ".preset must be one of Q4_A4, Q2_A4, Q4_A4_R32, Q2_A2; got '", preset, "'"));
}

absl::Status CheckQuant(const std::string& prefix, const v1::QuantSettings& q, const SpecCheckContext& context) {
  if (absl::Status s = CheckPreset(prefix, q.preset()); !s.ok()) return s;
  Checker c(prefix, context);
  c.PowerOfTwo("lut_size", q.has_lut_size(), q.lut_size(), 2, 256)
      .Range("group_size", q.has_group_size(), q.group_size(), 1, kMaxInt32)
      .Range("scale_rank", q.has_scale_rank(), q.scale_rank(), 0, kMaxInt32)
      .PowerOfTwo("attn_lut_size", q.attn_lut_size() != 0, q.attn_lut_size(), 2, 256)
      .Range("attn_group_size", true, q.attn_group_size(), 0, kMaxInt32)
      .Range("attn_scale_rank", q.has_attn_scale_rank(), q.attn_scale_rank(), -1, kMaxInt32);
  return c.status();
}

absl::Status CheckQuantV2(const std::string& prefix, const v1::QuantSettingsV2& q, const SpecCheckContext& context) {
  if (absl::Status s = CheckPreset(prefix, q.preset()); !s.ok()) return s;
  Checker c(prefix, context);
  c.PowerOfTwo("lut_size", q.has_lut_size(), q.lut_size(), 2, 256)
      .Range("scale_rank", q.has_scale_rank(), q.scale_rank(), 1, kMaxInt32)
      .PowerOfTwo("attn_lut_size", q.has_attn_lut_size(), q.attn_lut_size(), 2, 256)
      .Range("attn_scale_rank", q.has_attn_scale_rank(), q.attn_scale_rank(), 1, kMaxInt32)
      .Range("group_size", q.has_group_size(), q.group_size(), 1, kMaxInt32)
      .Enum("magnitude_activation", v1::MagnitudeActivation_IsValid(q.magnitude_activation()),
            q.magnitude_activation())
      .Positive("magnitude_eps", q.has_magnitude_eps(), q.magnitude_eps())
      .Positive("norm_eps", q.has_norm_eps(), q.norm_eps());
  return c.status();
}

// The dataset's format (detected when the spec says auto) and a sample of its records read
// with it (issue #17): a wrong format fails here, named, instead of in the worker after the
// teacher is loaded. A directory without data files is left to the worker (NOT_FOUND).
void CheckDatasetRecords(Checker& c, const v1::KdCacheSpec& s, kd::DatasetOptions dataset) {
  const absl::StatusOr<KdCacheOptions> options = KdCacheOptions::FromProto(s);
  if (!options.ok()) return;  // pass 2 reports it
  dataset.text_unit = options->text_unit;
  if (s.dataset_format() == v1::DATASET_FORMAT_AUTO) {
    const absl::StatusOr<kd::DatasetFormat> detected = kd::DetectDatasetFormat(dataset);
    if (!detected.ok() && detected.status().code() == absl::StatusCode::kNotFound) return;
    c.Require(detected.ok(), "dataset_format",
              absl::StrCat("cannot be detected from the dataset: ", detected.status().message(),
                           "; set it to plain, alpaca_chat or sharegpt"));
    if (!detected.ok()) return;
    dataset.format = *detected;
  } else {
    dataset.format = options->dataset_format;
  }
  const absl::Status sample = kd::CheckDatasetSample(dataset);
  if (sample.code() == absl::StatusCode::kNotFound) return;
  c.Require(sample.ok(), "dataset_format",
            absl::StrCat(kd::DatasetFormatName(dataset.format), " does not fit the dataset: ", sample.message()));
}

// EVAL / GENERATE `version` (issue #17, item 5): a qatd checkpoint's config.json decides the
// layers the worker builds, so V2 must agree with it. A seed .pt file is loaded as V2 only
// where the job reads `version` for it (`seed_v2`: EVAL; its worker refuses a file that is not
// a V2 state_dict); elsewhere it loads as V1, so V2 is refused rather than silently run as V1.
void CheckVersion(Checker& c, v1::QatVersion version, const std::string& checkpoint, const SpecCheckContext& ctx,
                  bool seed_v2 = false) {
  if (!c.ok() || version != v1::QAT_VERSION_V2 || ctx.fed_fields.count("checkpoint") || !ctx.check_paths) return;
  if (checkpoint.empty()) {
    c.Require(false, "version", "V2 needs a V2 checkpoint (without one the unquantized model runs)");
    return;
  }
  const std::optional<nlohmann::json> config = QatdCheckpointConfig(checkpoint);
  if (!config.has_value() && seed_v2) return;
  if (!config.has_value()) {
    c.Require(false, "version",
              absl::StrCat("V2 is not supported with ", checkpoint,
                           ", which is not a qatd checkpoint: seed .pt files load as V1 (make a V2 qatd checkpoint "
                           "with a CONVERT v1-to-v2 job, qat convert v1-to-v2)"));
    return;
  }
  const int recorded = config->contains("version") && (*config)["version"].is_number_integer()
                           ? (*config)["version"].get<int>()
                           : 1;
  c.Require(recorded == 2, "version",
            absl::StrCat("is V2, but checkpoint ", checkpoint, " holds V", recorded, " layers (config.json version ",
                         recorded, ")"));
}

// SNAP's lut_bits / attn_lut_bits / scale_rank / attn_scale_rank (issue #17, item 5): the snap
// keeps the checkpoint's LUTs and ranks, so a value that disagrees with them is refused (with
// both) instead of being silently ignored. A seed .pt checkpoint loads as Q2_A4 (2, 4, 32, 8).
void CheckSnapSettings(Checker& c, const v1::SnapSpec& s) {
  const std::optional<nlohmann::json> config = QatdCheckpointConfig(s.checkpoint());
  auto recorded = [&](const char* key, int seed_value) -> std::optional<int> {
    if (!config.has_value()) return seed_value;
    if (!config->contains(key) || !(*config)[key].is_number_integer()) return std::nullopt;
    return (*config)[key].get<int>();
  };
  const struct {
    const char* field;
    bool has;
    int value;
    int seed_value;
  } fields[] = {{"lut_bits", s.has_lut_bits(), s.lut_bits(), 2},
                {"attn_lut_bits", s.has_attn_lut_bits(), s.attn_lut_bits(), 4},
                {"scale_rank", s.has_scale_rank(), s.scale_rank(), 32},
                {"attn_scale_rank", s.has_attn_scale_rank(), s.attn_scale_rank(), 8}};
  for (const auto& f : fields) {
    const std::optional<int> want = recorded(f.field, f.seed_value);
    if (!f.has || !want.has_value()) continue;
    c.Require(f.value == *want, f.field,
              absl::StrCat("is ", f.value, ", but checkpoint ", s.checkpoint(), " has ", f.field, " ", *want,
                           config.has_value() ? " (config.json)" : " (a seed .pt file loads as Q2_A4)",
                           ": the snap keeps the checkpoint's LUTs and ranks; leave it unset or convert the "
                           "checkpoint first"));
  }
}

absl::Status CheckKdCache(const std::string& p, const v1::KdCacheSpec& s, const SpecCheckContext& ctx) {
  Checker c(p, ctx);
  c.Path("teacher_model", s.teacher_model(), true)
      .Path("tokenizer", s.tokenizer(), false)
      .Path("dataset", s.dataset(), true)
      .Require(s.dataset_config_name().empty(), "dataset_config_name",
               "is not supported: datasets are local files or directories")
      .Require(!s.has_dataset_split() || s.dataset_split() == "train", "dataset_split",
               "must be 'train' (local datasets have one split)")
      .Enum("dataset_format", v1::DatasetFormat_IsValid(s.dataset_format()), s.dataset_format())
      .Require(!s.has_dataset_text_field() || !s.dataset_text_field().empty(), "dataset_text_field",
               "must not be empty")
      .Enum("enable_thinking", v1::ThinkingMode_IsValid(s.enable_thinking()), s.enable_thinking())
      .Enum("text_unit", v1::TextUnit_IsValid(s.text_unit()), s.text_unit())
      .Require(!s.streaming(), "streaming", "is not supported for local datasets")
      .Range("shuffle_buffer", true, s.shuffle_buffer(), 0, 0)
      .Range("max_length", s.has_max_length(), s.max_length(), 2, 1 << 20)
      .Range("topk", s.has_topk(), s.topk(), 1, 1 << 16)
      .Range("rand_neg", true, s.rand_neg(), 0, 1 << 20)
      .Range("num_sequences", s.has_num_sequences(), s.num_sequences(), 1, int64_t{1} << 40)
      .Range("batch_size", s.has_batch_size(), s.batch_size(), 1, 1 << 16)
      .Range("shard_size", s.has_shard_size(), s.shard_size(), 1, 1 << 24)
      .Range("logits_chunk_rows", s.has_logits_chunk_rows(), s.logits_chunk_rows(), 0, int64_t{1} << 30)
      .Enum("dtype", v1::Dtype_IsValid(s.dtype()), s.dtype())
      .Require(!(s.resume() && s.overwrite()), "resume", "and overwrite are mutually exclusive");
  c.OutputDir("output_dir", s.output_dir(), s.resume() || s.overwrite());
  bool check_records = false;
  if (c.ok() && ctx.check_paths && !ctx.fed_fields.count("dataset")) {
    // A device (/dev/zero), a FIFO or a dataset past the size bound is refused here, unread;
    // the worker's reader checks again (the path may change before the job starts).
    kd::DatasetOptions dataset;
    dataset.path = s.dataset();
    const absl::Status readable = kd::CheckDatasetPath(dataset);
    c.Require(readable.ok() || readable.code() == absl::StatusCode::kNotFound, "dataset",
              absl::StrCat("names a path that cannot be a dataset: ", readable.message()));
    if (c.ok() && readable.ok()) check_records = true;
  }
  if (std::optional<model::Qwen3Config> m = c.ModelConfig("teacher_model", s.teacher_model())) {
    const int64_t topk = s.has_topk() ? s.topk() : KdCacheOptions().topk;
    const int64_t max_length = s.has_max_length() ? s.max_length() : KdCacheOptions().max_length;
    c.Range("max_length", true, max_length, 2, m->max_position_embeddings)
        .Range("topk", true, topk, 1, m->vocab_size - 1)
        .Range("rand_neg", true, s.rand_neg(), 0, m->vocab_size - topk);
  }
  if (check_records && c.ok()) {
    kd::DatasetOptions dataset;
    dataset.path = s.dataset();
    if (s.has_dataset_text_field()) dataset.text_field = s.dataset_text_field();
    CheckDatasetRecords(c, s, dataset);
  }
  return c.status();
}

absl::Status CheckLayerwise(const std::string& p, const v1::LayerwiseSpec& s, const SpecCheckContext& ctx) {
  Checker c(p, ctx);
  c.Path("model", s.model(), true)
      .Path("kd_cache_dir", s.kd_cache_dir(), true)
      .Path("init_state", s.init_state(), false)
      .Enum("dtype", v1::Dtype_IsValid(s.dtype()), s.dtype())
      .Require(s.train_weights() || !s.has_train_scales() || s.train_scales(), "train_scales",
               "or train_weights must be set")
      .Positive("lr", s.has_lr(), s.lr())
      .Range("batch_size", s.has_batch_size(), s.batch_size(), 1, 1 << 20)
      .Range("epochs_per_layer", s.has_epochs_per_layer(), s.epochs_per_layer(), 1, 1000)
      .Range("steps_per_layer", true, s.steps_per_layer(), 0, kMaxInt32)
      .Range("grad_accum", s.has_grad_accum(), s.grad_accum(), 1, 1 << 16)
      .Positive("temperature", s.has_temperature(), s.temperature())
      .NonNegative("local_weight", s.has_local_weight(), s.local_weight())
      .NonNegative("global_weight", s.has_global_weight(), s.global_weight())
      .Range("local_tokens", s.has_local_tokens(), s.local_tokens(), 1, kMaxInt32)
      .NonNegative("hard_top1_weight", true, s.hard_top1_weight())
      .NonNegative("hard_full_weight", true, s.hard_full_weight())
      .Range("eval_samples", s.has_eval_samples(), s.eval_samples(), 1, kMaxInt32);
  for (int i = 0; i < s.layers_size() && c.ok(); ++i) {
    c.Range("layers", true, s.layers(i), 0, 4096);
  }
  (void)c.ModelConfig("model", s.model());
  c.ModelMatches(s.model(), "kd_cache_dir", s.kd_cache_dir(), {{"init_state", s.init_state()}});
  c.OutputDir("output_dir", s.output_dir(), false);
  if (!c.ok()) return c.status();
  return CheckQuant(p + ".quant", s.quant(), ctx);
}

// The trainer settings QatSpec and LoraSpec share (same field names, same ranges).
template <typename Spec>
Checker& CheckTrainerFields(Checker& c, const Spec& s) {
  return c.Range("max_steps", s.has_max_steps(), s.max_steps(), 1, kMaxInt32)
      .Range("batch_size", s.has_batch_size(), s.batch_size(), 1, 1 << 20)
      .Positive("lr", s.has_lr(), s.lr())
      .Positive("temperature", s.has_temperature(), s.temperature())
      .NonNegative("hard_top1_weight", s.has_hard_top1_weight(), s.hard_top1_weight())
      .NonNegative("hard_full_weight", s.has_hard_full_weight(), s.hard_full_weight())
      .Range("logging_steps", s.has_logging_steps(), s.logging_steps(), 1, kMaxInt32)
      .Range("eval_steps", s.has_eval_steps(), s.eval_steps(), 1, kMaxInt32)
      .Range("eval_samples", s.has_eval_samples(), s.eval_samples(), 1, kMaxInt32)
      .Range("save_steps", true, s.save_steps(), 0, kMaxInt32)
      .Range("warmup_steps", s.has_warmup_steps(), s.warmup_steps(), 0, kMaxInt32)
      .Between("min_lr_ratio", s.has_min_lr_ratio(), s.min_lr_ratio(), 0.0, 1.0)
      .NonNegative("clip_grad_norm", true, s.clip_grad_norm());
}

absl::Status CheckQat(const std::string& p, const v1::QatSpec& s, const SpecCheckContext& ctx) {
  const bool v2 = s.version() == v1::QAT_VERSION_V2;
  Checker c(p, ctx);
  c.Enum("version", v1::QatVersion_IsValid(s.version()), s.version())
      .Path("model", s.model(), true)
      .Path("kd_cache_dir", s.kd_cache_dir(), !s.skip_training())
      .Path("init_state", s.init_state(), false)
      .Enum("v2_init", v1::V2Init_IsValid(s.v2_init()), s.v2_init())
      .Enum("dtype", v1::Dtype_IsValid(s.dtype()), s.dtype())
      .Require(v2 || s.skip_training() || s.train_weights() || s.train_scales(), "train_weights",
               "or train_scales is required unless skip_training is set");
  CheckTrainerFields(c, s)
      .Require(!s.snap_bake_scales() || s.snap_weights(), "snap_bake_scales", "requires snap_weights")
      .Require(!s.use_fp16(), "use_fp16",
               "is not supported: qatd has no fp16 grad scaler; set dtype fp16 (fp16 weights with fp32 AdamW masters) "
               "or bf16 instead");
  if (v2) {
    c.Path("v1_checkpoint", s.v1_checkpoint(), s.v2_init() == v1::V2_INIT_FROM_V1)
        .Path("v2_checkpoint", s.v2_checkpoint(), s.v2_init() == v1::V2_INIT_FROM_V2);
  }
  (void)c.ModelConfig("model", s.model());
  c.ModelMatches(s.model(), "kd_cache_dir", s.kd_cache_dir(),
                 {{"init_state", s.init_state()},
                  {"v1_checkpoint", v2 ? s.v1_checkpoint() : ""},
                  {"v2_checkpoint", v2 ? s.v2_checkpoint() : ""}});
  c.OutputDir("output_dir", s.output_dir(), false);
  if (!c.ok()) return c.status();
  if (absl::Status q = CheckQuant(p + ".quant", s.quant(), ctx); !q.ok()) return q;
  return CheckQuantV2(p + ".quant_v2", s.quant_v2(), ctx);
}

absl::Status CheckConvert(const std::string& p, const v1::ConvertSpec& s, const SpecCheckContext& ctx) {
  Checker c(p, ctx);
  c.Enum("mode", v1::ConvertMode_IsValid(s.mode()), s.mode())
      .Path("model", s.model(), true)
      .Path("checkpoint", s.checkpoint(), true)
      .Range("q4_rank", s.has_q4_rank(), s.q4_rank(), 1, kMaxInt32)
      .Range("q2_mlp_rank", s.has_q2_mlp_rank(), s.q2_mlp_rank(), 1, kMaxInt32)
      .Range("q2_attn_rank", s.has_q2_attn_rank(), s.q2_attn_rank(), 1, kMaxInt32)
      .PowerOfTwo("q2_mlp_lut_size", s.has_q2_mlp_lut_size(), s.q2_mlp_lut_size(), 2, 256)
      .PowerOfTwo("q2_attn_lut_size", s.has_q2_attn_lut_size(), s.q2_attn_lut_size(), 2, 256)
      .Path("kd_cache_dir", s.kd_cache_dir(), s.eval() || s.rounding() == "gptq")
      .Range("eval_samples", s.has_eval_samples(), s.eval_samples(), 1, kMaxInt32)
      .Range("calibration_sequences", s.has_calibration_sequences(), s.calibration_sequences(), 1, kMaxInt32);
  c.Require(s.rounding().empty() || s.rounding() == "nearest" || s.rounding() == "gptq", "rounding",
            absl::StrCat("must be 'nearest' or 'gptq', got '", s.rounding(), "'"));
  c.Require(s.lut_init().empty() || s.lut_init() == "values" || s.lut_init() == "kmeans", "lut_init",
            absl::StrCat("must be 'values' or 'kmeans', got '", s.lut_init(), "'"));
  const bool reads_cache = s.eval() || s.rounding() == "gptq";
  (void)c.ModelConfig("model", s.model());
  c.ModelMatches(s.model(), "kd_cache_dir", reads_cache ? s.kd_cache_dir() : "", {{"checkpoint", s.checkpoint()}});
  c.OutputDir("output_dir", s.output_dir(), false);
  if (!c.ok()) return c.status();
  return CheckQuant(p + ".source_quant", s.source_quant(), ctx);
}

absl::Status CheckSnap(const std::string& p, const v1::SnapSpec& s, const SpecCheckContext& ctx) {
  Checker c(p, ctx);
  c.Path("model", s.model(), true)
      .Path("checkpoint", s.checkpoint(), true)
      .Range("lut_bits", s.has_lut_bits(), s.lut_bits(), 1, 8)
      .Range("attn_lut_bits", s.has_attn_lut_bits(), s.attn_lut_bits(), 1, 8)
      .Range("scale_rank", s.has_scale_rank(), s.scale_rank(), 1, kMaxInt32)
      .Range("attn_scale_rank", s.has_attn_scale_rank(), s.attn_scale_rank(), 1, kMaxInt32);
  (void)c.ModelConfig("model", s.model());
  c.ModelMatches(s.model(), "kd_cache_dir", "", {{"checkpoint", s.checkpoint()}});
  c.OutputDir("output_dir", s.output_dir(), false);
  if (c.ok() && ctx.check_paths && !ctx.fed_fields.count("checkpoint")) CheckSnapSettings(c, s);
  return c.status();
}

absl::Status CheckEval(const std::string& p, const v1::EvalSpec& s, const SpecCheckContext& ctx) {
  Checker c(p, ctx);
  c.Path("model", s.model(), true)
      .Path("checkpoint", s.checkpoint(), false)
      .Path("adapter", s.adapter(), false)
      .Path("kd_cache_dir", s.kd_cache_dir(), true)
      .Enum("version", v1::QatVersion_IsValid(s.version()), s.version())
      .Range("eval_samples", s.has_eval_samples(), s.eval_samples(), 1, kMaxInt32)
      .Positive("temperature", s.has_temperature(), s.temperature())
      .Range("batch_size", s.has_batch_size(), s.batch_size(), 1, 1 << 20)
      .Enum("dtype", v1::Dtype_IsValid(s.dtype()), s.dtype());
  (void)c.ModelConfig("model", s.model());
  c.ModelMatches(s.model(), "kd_cache_dir", s.kd_cache_dir(), {{"checkpoint", s.checkpoint()}});
  CheckVersion(c, s.version(), s.checkpoint(), ctx, /*seed_v2=*/true);
  return c.status();
}

absl::Status CheckGenerate(const std::string& p, const v1::GenerateSpec& s, const SpecCheckContext& ctx) {
  Checker c(p, ctx);
  c.Path("model", s.model(), true)
      .Path("checkpoint", s.checkpoint(), false)
      .Path("adapter", s.adapter(), false)
      .Path("tokenizer", s.tokenizer(), false);
  // A session's user messages come while it runs (SessionInput), never in the spec.
  if (!s.session()) c.Required("prompt", s.prompt());
  if (c.ok() && s.session() && !s.prompt().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(c.Name("prompt"), " must be empty in a session (its turns carry the user's messages)"));
  }
  c.Range("max_new_tokens", s.has_max_new_tokens(), s.max_new_tokens(), 1, 1 << 20)
      .Positive("temperature", s.has_temperature(), s.temperature())
      .Between("top_p", s.has_top_p(), s.top_p(), 1e-9, 1.0)
      .Positive("repetition_penalty", s.has_repetition_penalty(), s.repetition_penalty())
      .Enum("version", v1::QatVersion_IsValid(s.version()), s.version())
      .Enum("dtype", v1::Dtype_IsValid(s.dtype()), s.dtype());
  if (std::optional<model::Qwen3Config> m = c.ModelConfig("model", s.model())) {
    c.Range("max_new_tokens", s.has_max_new_tokens(), s.max_new_tokens(), 1, m->max_position_embeddings);
  }
  c.ModelMatches(s.model(), "kd_cache_dir", "", {{"checkpoint", s.checkpoint()}});
  CheckVersion(c, s.version(), s.checkpoint(), ctx);
  return c.status();
}

absl::Status CheckExport(const std::string& p, const v1::ExportSpec& s, const SpecCheckContext& ctx) {
  Checker c(p, ctx);
  c.Path("model", s.model(), true)
      .Path("checkpoint", s.checkpoint(), true)
      .Enum("format", v1::ExportFormat_IsValid(s.format()), s.format())
      .Enum("dtype", v1::Dtype_IsValid(s.dtype()), s.dtype())
      .Range("max_shard_bytes", s.has_max_shard_bytes(), s.max_shard_bytes(), 1, std::numeric_limits<int64_t>::max());
  (void)c.ModelConfig("model", s.model());
  c.ModelMatches(s.model(), "kd_cache_dir", "", {{"checkpoint", s.checkpoint()}});
  c.OutputDir("output_dir", s.output_dir(), false);
  return c.status();
}

absl::Status CheckLora(const std::string& p, const v1::LoraSpec& s, const SpecCheckContext& ctx) {
  Checker c(p, ctx);
  c.Path("model", s.model(), true)
      .Path("checkpoint", s.checkpoint(), true)
      .Path("kd_cache_dir", s.kd_cache_dir(), true)
      .Range("rank", s.has_rank(), s.rank(), 1, 4096)
      .Positive("alpha", s.has_alpha(), s.alpha())
      .Between("dropout", s.has_dropout(), s.dropout(), 0.0, 0.999999)
      .Enum("adapter_dtype", v1::Dtype_IsValid(s.adapter_dtype()), s.adapter_dtype())
      .Enum("dtype", v1::Dtype_IsValid(s.dtype()), s.dtype())
      .Enum("merged_dtype", v1::Dtype_IsValid(s.merged_dtype()), s.merged_dtype());
  CheckTrainerFields(c, s);
  (void)c.ModelConfig("model", s.model());
  c.ModelMatches(s.model(), "kd_cache_dir", s.kd_cache_dir(), {{"checkpoint", s.checkpoint()}});
  c.OutputDir("output_dir", s.output_dir(), false);
  return c.status();
}

absl::Status CheckProbe(const std::string& p, const v1::ProbeSpec& s, const SpecCheckContext& ctx) {
  Checker c(p, ctx);
  c.Range("steps", s.has_steps(), s.steps(), 0, 1000000).Range("step_ms", true, s.step_ms(), 0, 600000);
  c.OutputDir("output_dir", s.output_dir(), false);
  return c.status();
}

// Pass 2: the kind's own FromProto + Validate, with "<prefix>." before the field it names.
template <typename Options, typename Spec>
absl::Status CheckOptions(const std::string& prefix, const Spec& spec, const SpecCheckContext& ctx) {
  if (!ctx.fed_fields.empty()) return absl::OkStatus();
  absl::StatusOr<Options> options = Options::FromProto(spec);
  absl::Status status = options.ok() ? options->Validate() : options.status();
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(prefix, ".", std::string(status.message())));
}

// Both passes for one kind: the spec's fields, then its options.
template <typename Options, typename Spec>
absl::Status CheckKind(absl::Status (*fields)(const std::string&, const Spec&, const SpecCheckContext&),
                       const std::string& prefix, const Spec& spec, const SpecCheckContext& context) {
  QATD_RETURN_IF_ERROR(fields(prefix, spec, context));
  return CheckOptions<Options>(prefix, spec, context);
}

}  // namespace

bool PathIsUnder(const std::string& path, const std::string& root) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path p = fs::weakly_canonical(fs::absolute(path, ec), ec);
  if (ec) return false;
  const fs::path r = fs::weakly_canonical(fs::absolute(root, ec), ec);
  if (ec) return false;
  const fs::path rel = p.lexically_relative(r);
  if (rel.empty()) return false;
  const std::string first = rel.begin()->string();
  return first != "..";
}

std::string SpecOutputDir(const v1::JobSpec& spec) {
  const google::protobuf::OneofDescriptor* oneof = v1::JobSpec::descriptor()->FindOneofByName("kind");
  const google::protobuf::FieldDescriptor* kind = spec.GetReflection()->GetOneofFieldDescriptor(spec, oneof);
  if (kind == nullptr) return "";
  const google::protobuf::Message& message = spec.GetReflection()->GetMessage(spec, kind);
  const google::protobuf::FieldDescriptor* field = message.GetDescriptor()->FindFieldByName("output_dir");
  if (field == nullptr || field->type() != google::protobuf::FieldDescriptor::TYPE_STRING) return "";
  return message.GetReflection()->GetString(message, field);
}

absl::Status CheckOutputDirAtStart(const v1::WorkerTask& task) {
  if (task.attempt() > 1) return absl::OkStatus();  // a re-run continues its own files
  const v1::JobSpec& spec = task.spec();
  const std::string dir = SpecOutputDir(spec);
  if (dir.empty()) return absl::OkStatus();
  const google::protobuf::OneofDescriptor* oneof = v1::JobSpec::descriptor()->FindOneofByName("kind");
  const google::protobuf::FieldDescriptor* kind = spec.GetReflection()->GetOneofFieldDescriptor(spec, oneof);
  if (spec.has_kd_cache() && (spec.kd_cache().resume() || spec.kd_cache().overwrite())) return absl::OkStatus();
  std::error_code ec;
  if (std::filesystem::exists(dir, ec) && !std::filesystem::is_empty(dir, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat(kind->name(), ".output_dir ", dir,
                     " is not empty: a job writes only into a new or empty directory, so it never replaces files "
                     "it did not create"));
  }
  return absl::OkStatus();
}

std::vector<v1::JobKind> AvailableJobKinds() {
  return {v1::JOB_KIND_KD_CACHE, v1::JOB_KIND_LAYERWISE, v1::JOB_KIND_QAT,      v1::JOB_KIND_CONVERT,
          v1::JOB_KIND_SNAP,     v1::JOB_KIND_EVAL,      v1::JOB_KIND_GENERATE, v1::JOB_KIND_PROBE,
          v1::JOB_KIND_EXPORT,   v1::JOB_KIND_LORA};
}

absl::Status ValidateJobSpec(const v1::JobSpec& spec, const SpecCheckContext& context) {
  const std::string& p = context.prefix;
  Checker top(p, context);
  top.Range("resources.device_count", spec.resources().has_device_count(), spec.resources().device_count(), 0, 64)
      .Require(spec.name().size() <= 256, "name", "must be at most 256 bytes")
      .Require(spec.resources().device_count() <= 1 || spec.has_qat() || spec.has_kd_cache() || spec.has_eval() ||
                   spec.has_layerwise() || spec.has_lora(),
               "resources.device_count",
               absl::StrCat("is ", spec.resources().device_count(),
                            ", but only QAT, LAYERWISE, KD_CACHE, EVAL and LORA jobs run on several devices (data parallel); "
                            "this kind runs on one: ask for 1 (or 0 for the CPU)"));
  if (!top.ok()) return top.status();
  const int nodes = spec.resources().has_nodes() ? spec.resources().nodes() : 1;
  if (nodes < 1) return absl::InvalidArgumentError(absl::StrCat(p, ".resources.nodes must be >= 1, got ", nodes));
  if (nodes > 1 && context.max_nodes <= 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        p, ".resources.nodes is ", nodes,
        ", but this daemon runs jobs as local processes on one host: multi-node jobs need qatd --executor slurm"));
  }
  if (nodes > context.max_nodes) {
    return absl::InvalidArgumentError(
        absl::StrCat(p, ".resources.nodes is ", nodes, ", more than the ", context.max_nodes, " this daemon allows"));
  }
  if (nodes > 1 && !(spec.has_qat() || spec.has_kd_cache() || spec.has_eval() || spec.has_layerwise() || spec.has_lora())) {
    return absl::InvalidArgumentError(
        absl::StrCat(p, ".resources.nodes is ", nodes,
                     ", but only QAT, LAYERWISE, KD_CACHE, EVAL and LORA jobs run on several nodes (data parallel)"));
  }
  switch (spec.kind_case()) {
    case v1::JobSpec::kKdCache:
      return CheckKind<KdCacheOptions>(CheckKdCache, p + ".kd_cache", spec.kd_cache(), context);
    case v1::JobSpec::kLayerwise:
      return CheckKind<LayerwiseOptions>(CheckLayerwise, p + ".layerwise", spec.layerwise(), context);
    case v1::JobSpec::kQat:
      return CheckKind<QatOptions>(CheckQat, p + ".qat", spec.qat(), context);
    case v1::JobSpec::kConvert:
      return CheckKind<ConvertOptions>(CheckConvert, p + ".convert", spec.convert(), context);
    case v1::JobSpec::kSnap:
      return CheckKind<SnapOptions>(CheckSnap, p + ".snap", spec.snap(), context);
    case v1::JobSpec::kEval:
      return CheckKind<EvalJobOptions>(CheckEval, p + ".eval", spec.eval(), context);
    case v1::JobSpec::kGenerate:
      return CheckKind<GenerateJobOptions>(CheckGenerate, p + ".generate", spec.generate(), context);
    case v1::JobSpec::kProbe: return CheckProbe(p + ".probe", spec.probe(), context);
    case v1::JobSpec::kExport:
      return CheckKind<ExportOptions>(CheckExport, p + ".export", spec.export_(), context);
    case v1::JobSpec::kLora:
      return CheckKind<LoraJobOptions>(CheckLora, p + ".lora", spec.lora(), context);
    case v1::JobSpec::KIND_NOT_SET: break;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      p, " must set one of kd_cache, layerwise, qat, convert, snap, eval, generate, probe, export, lora"));
}

}  // namespace qatd::jobs
