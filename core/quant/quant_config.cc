#include "core/quant/quant_config.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <functional>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"

namespace qatd::quant {
namespace {

using json = nlohmann::json;

bool IsPowerOfTwo(int v) { return v > 0 && (v & (v - 1)) == 0; }

absl::Status CheckLutSize(const char* field, int v) {
  if (IsPowerOfTwo(v) && v >= 2 && v <= 256) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(field, " must be a power of two in [2, 256], got ", v));
}

absl::Status CheckGroupSize(const char* field, int v) {
  if (v >= 1) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(field, " must be >= 1, got ", v));
}

absl::Status CheckEps(const char* field, double v, bool allow_zero) {
  bool ok = std::isfinite(v) && (allow_zero ? v >= 0.0 : v > 0.0) && v < 1.0;
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(field, " must be finite and in ", allow_zero ? "[0, 1)" : "(0, 1)", ", got ", v));
}

// Attention overrides: 0 / -1 mean "use the MLP value".
absl::Status CheckAttnOverrides(int lut, int group, int rank) {
  if (lut != 0 && !(IsPowerOfTwo(lut) && lut >= 2 && lut <= 256)) {
    return absl::InvalidArgumentError(
        absl::StrCat("attn_lut_size must be 0 (use lut_size) or a power of two in [2, 256], got ", lut));
  }
  if (group != 0 && group < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("attn_group_size must be 0 (use group_size) or >= 1, got ", group));
  }
  if (rank < -1) {
    return absl::InvalidArgumentError(
        absl::StrCat("attn_scale_rank must be -1 (use scale_rank) or >= 0, got ", rank));
  }
  return absl::OkStatus();
}

std::string NormalizePresetName(std::string_view name) {
  std::string out;
  for (char c : name) {
    if (c == '_' || c == '-') continue;
    out.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  }
  return out;
}

struct PresetValues {
  int lut, rank, attn_lut, attn_rank;
};

absl::StatusOr<PresetValues> LookupPreset(std::string_view name) {
  static const std::map<std::string, PresetValues> kPresets = {
      {"Q4A4", {16, 4, 16, 4}},
      {"Q2A4", {4, 32, 16, 8}},
      {"Q4A4R32", {16, 32, 16, 32}},
      {"Q2A2", {4, 32, 4, 32}},
  };
  auto it = kPresets.find(NormalizePresetName(name));
  if (it == kPresets.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown quantization preset '", std::string(name), "'; expected Q4_A4, Q2_A4, Q4_A4_R32 or Q2_A2"));
  }
  return it->second;
}

// --- JSON helpers -------------------------------------------------------------------------

absl::Status TypeError(const std::string& key, const char* expected) {
  return absl::InvalidArgumentError(absl::StrCat("quant config: '", key, "' must be ", expected));
}

absl::Status ReadInt(const json& v, const std::string& key, int* out) {
  if (!v.is_number_integer()) return TypeError(key, "an integer");
  int64_t x = v.get<int64_t>();
  if (x < -(int64_t{1} << 30) || x > (int64_t{1} << 30)) return TypeError(key, "a small integer");
  *out = static_cast<int>(x);
  return absl::OkStatus();
}

absl::Status ReadBool(const json& v, const std::string& key, bool* out) {
  if (!v.is_boolean()) return TypeError(key, "true or false");
  *out = v.get<bool>();
  return absl::OkStatus();
}

absl::Status ReadDouble(const json& v, const std::string& key, double* out) {
  if (!v.is_number()) return TypeError(key, "a number");
  *out = v.get<double>();
  return absl::OkStatus();
}

absl::Status ReadPositiveMethod(const json& v, const std::string& key, PositiveScaleMethod* out) {
  if (v.is_string() && v.get<std::string>() == "abs") {
    *out = PositiveScaleMethod::kAbs;
  } else if (v.is_string() && v.get<std::string>() == "softplus") {
    *out = PositiveScaleMethod::kSoftplus;
  } else {
    return TypeError(key, "\"abs\" or \"softplus\"");
  }
  return absl::OkStatus();
}

absl::Status ReadMagnitudeActivation(const json& v, const std::string& key, MagnitudeActivation* out) {
  std::string s = v.is_string() ? v.get<std::string>() : "";
  if (s == "identity") {
    *out = MagnitudeActivation::kIdentity;
  } else if (s == "abs") {
    *out = MagnitudeActivation::kAbs;
  } else if (s == "softplus") {
    *out = MagnitudeActivation::kSoftplus;
  } else {
    return TypeError(key, "\"identity\", \"abs\" or \"softplus\"");
  }
  return absl::OkStatus();
}

using FieldReader = std::function<absl::Status(const json&, const std::string&)>;

absl::Status ReadFields(const json& j, const std::map<std::string, FieldReader>& readers) {
  if (!j.is_object()) return absl::InvalidArgumentError("quant config: expected a JSON object");
  for (const auto& [key, value] : j.items()) {
    auto it = readers.find(key);
    if (it == readers.end()) {
      return absl::InvalidArgumentError(absl::StrCat("quant config: unknown field '", key, "'"));
    }
    QATD_RETURN_IF_ERROR(it->second(value, key));
  }
  return absl::OkStatus();
}

// The reference's learnable LUT is never used by a script (spec §2.1); accept only `false`.
absl::Status ReadLearnableLut(const json& v, const std::string& key) {
  bool b = false;
  QATD_RETURN_IF_ERROR(ReadBool(v, key, &b));
  if (b) return absl::InvalidArgumentError("learnable_lut=true is not supported (no reference script uses it)");
  return absl::OkStatus();
}

// Fields shared by V1 and V2 configs.
template <typename Config>
std::map<std::string, FieldReader> CommonReaders(Config* c) {
  return {
      {"lut_size", [c](const json& v, const std::string& k) { return ReadInt(v, k, &c->lut_size); }},
      {"group_size", [c](const json& v, const std::string& k) { return ReadInt(v, k, &c->group_size); }},
      {"scale_rank", [c](const json& v, const std::string& k) { return ReadInt(v, k, &c->scale_rank); }},
      {"lut_include_zero",
       [c](const json& v, const std::string& k) { return ReadBool(v, k, &c->lut_include_zero); }},
      {"quantize_attn", [c](const json& v, const std::string& k) { return ReadBool(v, k, &c->quantize_attn); }},
      {"attn_lut_size", [c](const json& v, const std::string& k) { return ReadInt(v, k, &c->attn_lut_size); }},
      {"attn_group_size",
       [c](const json& v, const std::string& k) { return ReadInt(v, k, &c->attn_group_size); }},
      {"attn_scale_rank",
       [c](const json& v, const std::string& k) { return ReadInt(v, k, &c->attn_scale_rank); }},
      {"quantize_lm_head",
       [c](const json& v, const std::string& k) { return ReadBool(v, k, &c->quantize_lm_head); }},
      {"learnable_lut", ReadLearnableLut},
  };
}

template <typename Config>
void WriteCommon(const Config& c, json* j) {
  (*j)["lut_size"] = c.lut_size;
  (*j)["group_size"] = c.group_size;
  (*j)["scale_rank"] = c.scale_rank;
  (*j)["lut_include_zero"] = c.lut_include_zero;
  (*j)["quantize_attn"] = c.quantize_attn;
  (*j)["attn_lut_size"] = c.attn_lut_size;
  (*j)["attn_group_size"] = c.attn_group_size;
  (*j)["attn_scale_rank"] = c.attn_scale_rank;
  (*j)["quantize_lm_head"] = c.quantize_lm_head;
}

template <typename Config, typename Spec>
void ResolveKind(const Config& c, LinearKind kind, Spec* s) {
  s->lut_size = c.lut_size;
  s->group_size = c.group_size;
  s->scale_rank = c.scale_rank;
  s->lut_include_zero = c.lut_include_zero;
  if (kind == LinearKind::kAttention) {
    if (c.attn_lut_size > 0) s->lut_size = c.attn_lut_size;
    if (c.attn_group_size > 0) s->group_size = c.attn_group_size;
    if (c.attn_scale_rank >= 0) s->scale_rank = c.attn_scale_rank;
  }
}

}  // namespace

GroupPadding ComputeGroupPadding(int64_t in_features, int64_t group_size) {
  GroupPadding p;
  int64_t gs = std::max<int64_t>(group_size, 1);
  p.pad = (gs - in_features % gs) % gs;
  p.padded_in = in_features + p.pad;
  p.num_groups = p.padded_in / gs;
  return p;
}

// --- LayerQuantSpec -------------------------------------------------------------------------

absl::Status LayerQuantSpec::Validate() const {
  QATD_RETURN_IF_ERROR(CheckLutSize("lut_size", lut_size));
  QATD_RETURN_IF_ERROR(CheckGroupSize("group_size", group_size));
  if (scale_rank < 0) return absl::InvalidArgumentError(absl::StrCat("scale_rank must be >= 0, got ", scale_rank));
  return absl::OkStatus();
}

absl::Status LayerQuantSpec::ValidateForShape(int64_t out_features, int64_t in_features) const {
  QATD_RETURN_IF_ERROR(Validate());
  if (out_features < 1 || in_features < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer shape must be positive, got ", out_features, "x", in_features));
  }
  int64_t max_rank = std::min(out_features, ComputeGroupPadding(in_features, group_size).padded_in);
  if (scale_rank > max_rank) {
    return absl::InvalidArgumentError(absl::StrCat("scale_rank must be in [0, ", max_rank, "] for a ", out_features,
                                                   "x", in_features, " layer (min(out, padded_in)), got ",
                                                   scale_rank));
  }
  return absl::OkStatus();
}

bool LayerQuantSpec::LowRank(int64_t out_features, int64_t in_features) const {
  int64_t max_rank = std::min(out_features, ComputeGroupPadding(in_features, group_size).padded_in);
  return scale_rank > 0 && scale_rank < max_rank;
}

absl::Status LayerQuantSpecV2::Validate() const {
  QATD_RETURN_IF_ERROR(CheckLutSize("lut_size", lut_size));
  QATD_RETURN_IF_ERROR(CheckGroupSize("group_size", group_size));
  if (scale_rank < 1) {
    return absl::InvalidArgumentError(absl::StrCat("scale_rank must be >= 1 for V2 layers, got ", scale_rank));
  }
  QATD_RETURN_IF_ERROR(CheckEps("magnitude_eps", magnitude_eps, /*allow_zero=*/true));
  QATD_RETURN_IF_ERROR(CheckEps("norm_eps", norm_eps, /*allow_zero=*/false));
  return absl::OkStatus();
}

absl::Status LayerQuantSpecV2::ValidateForShape(int64_t out_features, int64_t in_features) const {
  QATD_RETURN_IF_ERROR(Validate());
  if (out_features < 1 || in_features < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer shape must be positive, got ", out_features, "x", in_features));
  }
  int64_t max_rank = std::min(out_features, in_features);
  if (scale_rank > max_rank) {
    return absl::InvalidArgumentError(absl::StrCat("scale_rank must be in [1, ", max_rank, "] for a ", out_features,
                                                   "x", in_features, " layer (min(out, in)), got ", scale_rank));
  }
  return absl::OkStatus();
}

// --- QuantConfig (V1) ------------------------------------------------------------------------

LayerQuantSpec QuantConfig::ForKind(LinearKind kind) const {
  LayerQuantSpec s;
  ResolveKind(*this, kind, &s);
  s.lut_init = lut_init;
  return s;
}

std::string_view LutInitName(LutInit init) { return init == LutInit::kKMeans ? "kmeans" : "uniform"; }

absl::StatusOr<LutInit> ParseLutInit(std::string_view name) {
  if (name == "uniform") return LutInit::kUniform;
  if (name == "kmeans") return LutInit::kKMeans;
  return absl::InvalidArgumentError(absl::StrCat("lut_init must be 'uniform' or 'kmeans', got '", std::string(name), "'"));
}

std::string_view RoundingName(Rounding rounding) { return rounding == Rounding::kGptq ? "gptq" : "nearest"; }

absl::StatusOr<Rounding> ParseRounding(std::string_view name) {
  if (name == "nearest") return Rounding::kNearest;
  if (name == "gptq") return Rounding::kGptq;
  return absl::InvalidArgumentError(absl::StrCat("rounding must be 'nearest' or 'gptq', got '", std::string(name), "'"));
}

absl::Status QuantConfig::Validate() const {
  QATD_RETURN_IF_ERROR(CheckAttnOverrides(attn_lut_size, attn_group_size, attn_scale_rank));
  if (calibration_sequences < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("calibration_sequences must be >= 1, got ", calibration_sequences));
  }
  QATD_RETURN_IF_ERROR(ForKind(LinearKind::kMlp).Validate());
  return ForKind(LinearKind::kAttention).Validate();
}

absl::StatusOr<QuantConfig> QuantConfig::FromPreset(std::string_view name) {
  QATD_ASSIGN_OR_RETURN(PresetValues p, LookupPreset(name));
  QuantConfig c;
  c.lut_size = p.lut;
  c.scale_rank = p.rank;
  c.group_size = 32;
  c.quantize_attn = true;
  c.attn_lut_size = p.attn_lut;
  c.attn_scale_rank = p.attn_rank;
  return c;
}

// --- QuantConfigV2 ---------------------------------------------------------------------------

LayerQuantSpecV2 QuantConfigV2::ForKind(LinearKind kind) const {
  LayerQuantSpecV2 s;
  ResolveKind(*this, kind, &s);
  s.force_positive_scales = force_positive_scales;
  s.positive_scale_method = positive_scale_method;
  s.magnitude_activation = magnitude_activation;
  s.magnitude_eps = magnitude_eps;
  s.norm_eps = norm_eps;
  s.use_ste_fp16 = use_ste_fp16;
  return s;
}

absl::Status QuantConfigV2::Validate() const {
  QATD_RETURN_IF_ERROR(CheckAttnOverrides(attn_lut_size, attn_group_size, attn_scale_rank));
  if (attn_scale_rank == 0) {
    return absl::InvalidArgumentError("attn_scale_rank must be -1 (use scale_rank) or >= 1 for V2, got 0");
  }
  QATD_RETURN_IF_ERROR(ForKind(LinearKind::kMlp).Validate());
  return ForKind(LinearKind::kAttention).Validate();
}

absl::StatusOr<QuantConfigV2> QuantConfigV2::FromPreset(std::string_view name) {
  QATD_ASSIGN_OR_RETURN(PresetValues p, LookupPreset(name));
  QuantConfigV2 c;
  c.lut_size = p.lut;
  c.scale_rank = p.rank;
  c.group_size = 32;
  c.quantize_attn = true;
  c.attn_lut_size = p.attn_lut;
  c.attn_scale_rank = p.attn_rank;
  c.force_positive_scales = false;
  c.magnitude_activation = MagnitudeActivation::kIdentity;
  c.use_ste_fp16 = true;
  return c;
}

std::string_view PositiveScaleMethodName(PositiveScaleMethod m) {
  return m == PositiveScaleMethod::kAbs ? "abs" : "softplus";
}

std::string_view MagnitudeActivationName(MagnitudeActivation a) {
  switch (a) {
    case MagnitudeActivation::kIdentity:
      return "identity";
    case MagnitudeActivation::kAbs:
      return "abs";
    case MagnitudeActivation::kSoftplus:
      return "softplus";
  }
  return "identity";
}

// --- JSON ------------------------------------------------------------------------------------

nlohmann::json ToJson(const QuantConfig& config) {
  json j = json::object();
  j["version"] = "v1";
  WriteCommon(config, &j);
  if (config.lut_init != LutInit::kUniform) j["lut_init"] = std::string(LutInitName(config.lut_init));
  if (config.rounding != Rounding::kNearest) {
    j["rounding"] = std::string(RoundingName(config.rounding));
    j["calibration_sequences"] = config.calibration_sequences;
  }
  return j;
}

nlohmann::json ToJson(const QuantConfigV2& config) {
  json j = json::object();
  j["version"] = "v2";
  WriteCommon(config, &j);
  j["force_positive_scales"] = config.force_positive_scales;
  j["positive_scale_method"] = std::string(PositiveScaleMethodName(config.positive_scale_method));
  j["magnitude_activation"] = std::string(MagnitudeActivationName(config.magnitude_activation));
  j["magnitude_eps"] = config.magnitude_eps;
  j["norm_eps"] = config.norm_eps;
  j["use_ste_fp16"] = config.use_ste_fp16;
  return j;
}

namespace {

FieldReader VersionReader(const char* expected) {
  return [expected](const json& v, const std::string& k) -> absl::Status {
    if (!v.is_string() || v.get<std::string>() != expected) {
      return TypeError(k, absl::StrCat("\"", expected, "\"").c_str());
    }
    return absl::OkStatus();
  };
}

}  // namespace

absl::StatusOr<QuantConfig> QuantConfigFromJson(const nlohmann::json& j) {
  QuantConfig c;
  auto readers = CommonReaders(&c);
  readers["version"] = VersionReader("v1");
  readers["lut_init"] = [&c](const json& v, const std::string& k) -> absl::Status {
    absl::StatusOr<LutInit> init = ParseLutInit(v.is_string() ? v.get<std::string>() : "");
    if (!init.ok()) return TypeError(k, "\"uniform\" or \"kmeans\"");
    c.lut_init = *init;
    return absl::OkStatus();
  };
  readers["rounding"] = [&c](const json& v, const std::string& k) -> absl::Status {
    absl::StatusOr<Rounding> rounding = ParseRounding(v.is_string() ? v.get<std::string>() : "");
    if (!rounding.ok()) return TypeError(k, "\"nearest\" or \"gptq\"");
    c.rounding = *rounding;
    return absl::OkStatus();
  };
  readers["calibration_sequences"] = [&c](const json& v, const std::string& k) {
    return ReadInt(v, k, &c.calibration_sequences);
  };
  QATD_RETURN_IF_ERROR(ReadFields(j, readers));
  QATD_RETURN_IF_ERROR(c.Validate());
  return c;
}

absl::StatusOr<QuantConfigV2> QuantConfigV2FromJson(const nlohmann::json& j) {
  QuantConfigV2 c;
  auto readers = CommonReaders(&c);
  readers["version"] = VersionReader("v2");
  readers["force_positive_scales"] = [&c](const json& v, const std::string& k) {
    return ReadBool(v, k, &c.force_positive_scales);
  };
  readers["positive_scale_method"] = [&c](const json& v, const std::string& k) {
    return ReadPositiveMethod(v, k, &c.positive_scale_method);
  };
  readers["magnitude_activation"] = [&c](const json& v, const std::string& k) {
    return ReadMagnitudeActivation(v, k, &c.magnitude_activation);
  };
  readers["magnitude_eps"] = [&c](const json& v, const std::string& k) { return ReadDouble(v, k, &c.magnitude_eps); };
  readers["norm_eps"] = [&c](const json& v, const std::string& k) { return ReadDouble(v, k, &c.norm_eps); };
  readers["use_ste_fp16"] = [&c](const json& v, const std::string& k) { return ReadBool(v, k, &c.use_ste_fp16); };
  QATD_RETURN_IF_ERROR(ReadFields(j, readers));
  QATD_RETURN_IF_ERROR(c.Validate());
  return c;
}

}  // namespace qatd::quant
