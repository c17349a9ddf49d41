#pragma once
// Flags -> JobSpec binding for the `qat` subcommands.
//
// Specs leave an `optional` proto field unset unless the user passed its flag, so the
// defaults written in specs.proto (and applied by the daemon/core) stay the only defaults.
// SpecFlags records, for every option, a setter that runs in Apply() only when the option was
// given on the command line; setters run after parsing, so they may depend on other flags
// (e.g. `qat train --v2` sends --lut-size to quant_v2 instead of quant).
//
// Enum-valued flags (--dtype, --dataset-format, ...) are checked while parsing: an unknown
// name fails with a message naming the flag and the allowed names.

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "qatd/v1/job.pb.h"
#include "qatd/v1/specs.pb.h"

namespace qatd::client {

// One allowed name of an enum-valued flag and the proto enum value it maps to.
struct EnumName {
  const char* name;
  int value;
};

inline const std::vector<EnumName> kDtypeNames = {
    {"auto", v1::DTYPE_AUTO}, {"bf16", v1::DTYPE_BF16}, {"fp16", v1::DTYPE_FP16}, {"fp32", v1::DTYPE_FP32}};

// --dataset-format: auto (the default qat sends) lets the daemon detect the format from the
// records (DATASET_FORMAT_AUTO in specs.proto).
inline const std::vector<EnumName> kDatasetFormatNames = {{"auto", v1::DATASET_FORMAT_AUTO},
                                                          {"plain", v1::DATASET_FORMAT_PLAIN},
                                                          {"alpaca", v1::DATASET_FORMAT_ALPACA},
                                                          {"alpaca_chat", v1::DATASET_FORMAT_ALPACA_CHAT},
                                                          {"sharegpt", v1::DATASET_FORMAT_SHAREGPT}};
inline constexpr char kDatasetFormatHelp[] =
    "How records become text: auto (default: detected from the first record: instruction+output = alpaca_chat, "
    "conversations/messages = sharegpt, text = plain, a .txt file = plain), plain, alpaca, alpaca_chat, sharegpt";

class SpecFlags {
 public:
  explicit SpecFlags(CLI::App* app) : app_(app) {}

  CLI::App* app() const { return app_; }

  // --names VALUE: `set(value)` runs in Apply() when the option was given.
  template <typename T>
  CLI::Option* Value(const std::string& names, const std::string& help, std::function<void(const T&)> set) {
    auto value = std::make_shared<T>();
    CLI::Option* option = app_->add_option(names, *value, help);
    setters_.push_back([option, value, set = std::move(set)] {
      if (option->count() > 0) set(*value);
    });
    return option;
  }

  // A path on the daemon's host: like Value<std::string>, but a relative path is made absolute
  // against the current directory first (the daemon does not share the caller's directory).
  CLI::Option* Path(const std::string& names, const std::string& help, std::function<void(const std::string&)> set);

  // A repeatable / comma-separated list option (--layers 0,1,2).
  template <typename T>
  CLI::Option* List(const std::string& names, const std::string& help, std::function<void(const std::vector<T>&)> set) {
    auto values = std::make_shared<std::vector<T>>();
    CLI::Option* option = app_->add_option(names, *values, help)->delimiter(',');
    setters_.push_back([option, values, set = std::move(set)] {
      if (option->count() > 0) set(*values);
    });
    return option;
  }

  // A switch: `set(true)` when given. With a "!--no-x" alternative in `names`,
  // `set(false)` when the negated spelling was given last.
  CLI::Option* Flag(const std::string& names, const std::string& help, std::function<void(bool)> set);

  // An enum-valued option: one of `allowed` (case-insensitive; '-' and '_' are the same).
  CLI::Option* Enum(const std::string& names, const std::string& help, const std::vector<EnumName>& allowed,
                    std::function<void(int)> set);

  // Runs the setters of the options that were given, in registration order.
  void Apply() const {
    for (const auto& set : setters_) set();
  }

 private:
  CLI::App* app_;
  std::vector<std::function<void()>> setters_;
};

// `path` made absolute against the current directory (unchanged when empty or absolute).
std::string AbsolutePath(const std::string& path);

// The allowed names of an enum flag, for help texts: "auto|bf16|fp16|fp32".
std::string JoinEnumNames(const std::vector<EnumName>& allowed);

// The flags every submitting subcommand shares: --priority, --devices, --name.
void AddJobFlags(SpecFlags& flags, v1::JobSpec* spec);

// The V1 LUT flags (--preset --lut-size --group-size --scale-rank --lut-include-zero
// --quantize-attn --attn-lut-size --attn-group-size --attn-scale-rank --quantize-lm-head).
// `target` is called when a given flag is applied and returns the message to set.
void AddQuantFlags(SpecFlags& flags, std::function<v1::QuantSettings*()> target);

}  // namespace qatd::client
