#include "core/model/qwen3_config.h"

#include <unistd.h>

#include <filesystem>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace qatd::model {
namespace {

using json = nlohmann::json;

const std::string kDir = std::string(QATD_TEST_DATA) + "/golden";

TEST(Qwen3Config, ReadsTinyAndRealConfigs) {
  auto tiny = Qwen3Config::FromFile(kDir + "/tiny-qwen3");
  ASSERT_TRUE(tiny.ok()) << tiny.status();
  EXPECT_EQ(tiny->hidden_size, 64);
  EXPECT_EQ(tiny->intermediate_size, 192);
  EXPECT_EQ(tiny->num_hidden_layers, 2);
  EXPECT_EQ(tiny->num_attention_heads, 4);
  EXPECT_EQ(tiny->num_key_value_heads, 2);
  EXPECT_EQ(tiny->head_dim, 16);
  EXPECT_EQ(tiny->vocab_size, 151936);
  EXPECT_DOUBLE_EQ(tiny->rope_theta, 1e6);
  EXPECT_DOUBLE_EQ(tiny->rms_norm_eps, 1e-6);
  EXPECT_TRUE(tiny->tie_word_embeddings);
  EXPECT_EQ(tiny->max_position_embeddings, 512);
  EXPECT_EQ(tiny->eos_token_id, 151645);

  auto real = Qwen3Config::FromFile(kDir + "/qwen3-0.6b/config.json");
  ASSERT_TRUE(real.ok()) << real.status();
  EXPECT_EQ(real->hidden_size, 1024);
  EXPECT_EQ(real->num_hidden_layers, 28);
  EXPECT_EQ(real->head_dim, 128);
}

TEST(Qwen3Config, RoundTripsThroughToJson) {
  auto tiny = Qwen3Config::FromFile(kDir + "/tiny-qwen3");
  ASSERT_TRUE(tiny.ok());
  auto again = Qwen3Config::FromJson(tiny->ToJson());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->ToJson(), tiny->ToJson());
}

json Base() {
  return json::parse(R"({"architectures":["Qwen3ForCausalLM"],"model_type":"qwen3","hidden_size":64,
    "intermediate_size":192,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
    "head_dim":16,"vocab_size":1000,"rope_theta":1000000,"rms_norm_eps":1e-6,
    "tie_word_embeddings":true,"max_position_embeddings":512})");
}

TEST(Qwen3Config, AcceptsTransformers5RopeParameters) {
  json j = Base();
  j.erase("rope_theta");
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 5e5}};
  auto c = Qwen3Config::FromJson(j.dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->rope_theta, 5e5);
}

TEST(Qwen3Config, ErrorsNameTheField) {
  for (const char* field : {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                            "num_key_value_heads", "vocab_size", "rms_norm_eps", "tie_word_embeddings",
                            "max_position_embeddings", "rope_theta"}) {
    json j = Base();
    j.erase(field);
    auto c = Qwen3Config::FromJson(j.dump());
    ASSERT_FALSE(c.ok()) << field;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(c.status().message().find(field), std::string::npos) << c.status();
  }
  json j = Base();
  j["hidden_size"] = "64";
  EXPECT_NE(Qwen3Config::FromJson(j.dump()).status().message().find("'hidden_size' must be an integer"), std::string::npos);
  j = Base();
  j["num_key_value_heads"] = 3;
  EXPECT_NE(Qwen3Config::FromJson(j.dump()).status().message().find("multiple of num_key_value_heads"), std::string::npos);
}

TEST(Qwen3Config, RejectsOtherArchitectures) {
  json j = Base();
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = "llama";
  auto c = Qwen3Config::FromJson(j.dump());
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("LlamaForCausalLM"), std::string::npos);
  EXPECT_FALSE(Qwen3Config::FromJson("not json").ok());
  EXPECT_EQ(Qwen3Config::FromFile("/nonexistent").status().code(), absl::StatusCode::kNotFound);
}

// Issue #14, item 9: config.json was read to its end (a symlink to /dev/zero until memory ran
// out). The worker reads it as the daemon checks it at submit: a regular file of at most 16 MiB.
TEST(Qwen3Config, ADeviceIsRefusedNotReadForever) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("qatd_config_zero." + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::filesystem::remove(dir / "config.json");
  std::filesystem::create_symlink("/dev/zero", dir / "config.json");
  const absl::StatusOr<Qwen3Config> c = Qwen3Config::FromFile(dir.string());
  std::filesystem::remove(dir / "config.json");
  std::filesystem::remove(dir);
  ASSERT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
  EXPECT_NE(c.status().message().find("config.json is a character device, not a regular file"), std::string::npos)
      << c.status();
}

// Found by tests/fuzz/model_config_fuzz.cc: a non-string model_type threw
// json::type_error out of FromJson, which the daemon calls at submit time (std::terminate).
TEST(Qwen3Config, ANonStringModelTypeIsAnErrorNotAnException) {
  const std::string fuzzed = R"({"architectures": ["Qwen3ForCausalLM"], "head_dim": 16, "model_type": 5968})";
  absl::StatusOr<Qwen3Config> c = Qwen3Config::FromJson(fuzzed);
  ASSERT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
  EXPECT_EQ(c.status().message(), "config.json: field 'model_type' must be a string, got number");
  json j = Base();
  j["model_type"] = nullptr;  // null reads as absent: the architecture decides
  EXPECT_TRUE(Qwen3Config::FromJson(j.dump()).ok());
}

}  // namespace
}  // namespace qatd::model
