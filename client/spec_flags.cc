#include "client/spec_flags.h"

#include <cctype>
#include <filesystem>

namespace qatd::client {
namespace {

// "Alpaca-Chat" -> "alpaca_chat": flags accept either separator and any case.
std::string EnumKey(const std::string& text) {
  std::string key;
  for (char c : text) key.push_back(c == '-' ? '_' : static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  return key;
}

}  // namespace

std::string JoinEnumNames(const std::vector<EnumName>& allowed) {
  std::string out;
  for (const EnumName& e : allowed) {
    if (!out.empty()) out += "|";
    out += e.name;
  }
  return out;
}

CLI::Option* SpecFlags::Flag(const std::string& names, const std::string& help, std::function<void(bool)> set) {
  auto value = std::make_shared<bool>(false);
  CLI::Option* option = app_->add_flag(names, *value, help);
  setters_.push_back([option, value, set = std::move(set)] {
    if (option->count() > 0) set(*value);
  });
  return option;
}

std::string AbsolutePath(const std::string& path) {
  if (path.empty() || std::filesystem::path(path).is_absolute()) return path;
  std::error_code ec;
  const std::filesystem::path absolute = std::filesystem::absolute(path, ec);
  return ec ? path : absolute.lexically_normal().string();
}

CLI::Option* SpecFlags::Path(const std::string& names, const std::string& help,
                             std::function<void(const std::string&)> set) {
  return Value<std::string>(names, help, [set = std::move(set)](const std::string& v) { set(AbsolutePath(v)); });
}

CLI::Option* SpecFlags::Enum(const std::string& names, const std::string& help, const std::vector<EnumName>& allowed,
                             std::function<void(int)> set) {
  auto value = std::make_shared<std::string>();
  CLI::Option* option = app_->add_option(names, *value, help + " (" + JoinEnumNames(allowed) + ")");
  option->type_name("NAME");
  option->check(CLI::Validator(
      [allowed](std::string& text) -> std::string {
        const std::string key = EnumKey(text);
        for (const EnumName& e : allowed) {
          if (EnumKey(e.name) == key) return "";
        }
        return "unknown value '" + text + "'; expected one of " + JoinEnumNames(allowed);
      },
      "", "enum name"));
  setters_.push_back([option, value, allowed, set = std::move(set)] {
    if (option->count() == 0) return;
    const std::string key = EnumKey(*value);
    for (const EnumName& e : allowed) {
      if (EnumKey(e.name) == key) set(e.value);
    }
  });
  return option;
}

void AddJobFlags(SpecFlags& flags, v1::JobSpec* spec) {
  flags.Value<int>("--priority", "Queue priority: higher runs first, FIFO within a priority (default 0)",
                   [spec](const int& v) { spec->set_priority(v); });
  flags.Value<int>("--devices", "GPUs the job needs (Resources.device_count; 0 = CPU only; default 1)",
                   [spec](const int& v) { spec->mutable_resources()->set_device_count(v); });
  flags.Value<int>("--nodes",
                   "Nodes the job runs on, --devices ranks on each (Resources.nodes; the data-parallel kinds QAT, LBL, "
                   "cache, eval and lora on a qatd --executor slurm; default 1)",
                   [spec](const int& v) { spec->mutable_resources()->set_nodes(v); });
  flags.Value<std::string>("--name", "A free-form label shown by `qat jobs`",
                           [spec](const std::string& v) { spec->set_name(v); });
}

void AddQuantFlags(SpecFlags& flags, std::function<v1::QuantSettings*()> target) {
  flags.Value<std::string>("--preset",
                           "Named LUT preset: Q4_A4, Q2_A4, Q4_A4_R32 or Q2_A2 (explicit flags override it)",
                           [target](const std::string& v) { target()->set_preset(v); });
  flags.Value<int>("--lut-size", "LUT entries (16 = 4-bit, 4 = 2-bit; default 16)",
                   [target](const int& v) { target()->set_lut_size(v); });
  flags.Value<int>("--group-size", "Weights per scale group (default: lbl 128, train 32)",
                   [target](const int& v) { target()->set_group_size(v); });
  flags.Value<int>("--scale-rank", "Rank of the low-rank scales (0 = full per-weight scales; default 4)",
                   [target](const int& v) { target()->set_scale_rank(v); });
  flags.Flag("--lut-include-zero", "Put an exact 0 into the LUT",
             [target](bool v) { target()->set_lut_include_zero(v); });
  flags.Value<std::string>("--lut-init",
                           "How each layer's LUT starts: uniform (the reference's grid) or kmeans (fitted to the "
                           "layer's own weights; lowers the round-to-nearest error, most at 2 bits; the default of "
                           "`qat pipeline run q4`)",
                           [target](const std::string& v) { target()->set_lut_init(v); });
  flags.Value<std::string>("--rounding",
                           "How a fresh student's weights are rounded onto the LUT before training: nearest (round "
                           "W / S to the nearest entry) or gptq (GPTQ error feedback with each layer's input Hessian "
                           "from the KD cache's training split; lowers the PTQ error)",
                           [target](const std::string& v) { target()->set_rounding(v); });
  flags.Value<int>("--calibration-sequences", "Sequences GPTQ calibrates on with --rounding gptq (default 128)",
                   [target](const int& v) { target()->set_calibration_sequences(v); });
  flags.Flag("--quantize-attn", "Also quantize the attention projections (off in the seed scripts)",
             [target](bool v) { target()->set_quantize_attn(v); });
  flags.Value<int>("--attn-lut-size", "Attention LUT entries (default: --lut-size)",
                   [target](const int& v) { target()->set_attn_lut_size(v); });
  flags.Value<int>("--attn-group-size", "Attention group size (default: --group-size)",
                   [target](const int& v) { target()->set_attn_group_size(v); });
  flags.Value<int>("--attn-scale-rank", "Attention scale rank (default -1 = --scale-rank)",
                   [target](const int& v) { target()->set_attn_scale_rank(v); });
  flags.Flag("--quantize-lm-head", "Also quantize lm_head", [target](bool v) { target()->set_quantize_lm_head(v); });
}

}  // namespace qatd::client
