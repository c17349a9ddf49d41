// The safe .pt reader (core/model/torch_state_dict.h) on files written by Python's torch.save
// (tests/data/torch_pt, Debian's torch 1.13; the reference KD shard, torch 2.11) and by qatd,
// and on broken archives written here, each of which must give an error naming the problem.
#include "core/model/torch_state_dict.h"

#include <caffe2/serialize/inline_container.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include <unistd.h>

#include "absl/strings/match.h"
#include "nlohmann/json.hpp"

namespace qatd::model {
namespace {

using namespace std::string_literals;
namespace fs = std::filesystem;

std::string Data(const std::string& name) { return std::string(QATD_TEST_DATA) + "/" + name; }

std::string TempPath(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("qatd_torch_state_dict_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return (dir / name).string();
}

std::map<std::string, at::Tensor> AsMap(const NamedTensors& tensors) {
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, t] : tensors) out[name] = t;
  return out;
}

// A torch.save-style archive with the given data.pkl and records, written by LibTorch's writer.
std::string WriteArchive(const std::string& name, const std::string& pickle,
                         const std::map<std::string, std::string>& records) {
  const std::string path = TempPath(name);
  std::string bytes;
  {
    caffe2::serialize::PyTorchStreamWriter writer([&bytes](const void* data, size_t n) -> size_t {
      bytes.append(static_cast<const char*>(data), n);
      return n;
    });
    writer.writeRecord("data.pkl", pickle.data(), pickle.size());
    for (const auto& [record, content] : records) writer.writeRecord(record, content.data(), content.size());
    writer.writeEndOfFile();
  }
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

std::string Le(uint64_t v, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += static_cast<char>((v >> (8 * i)) & 0xFF);
  return out;
}
std::string Str(const std::string& s) { return "X" + Le(s.size(), 4) + s; }

// {'w': float32 [4] of storage `key` (numel 4)} as torch.save writes it.
std::string FourFloats(const std::string& key) {
  return "\x80\x02}(" + Str("w") + "ctorch._utils\n_rebuild_tensor_v2\n((" + Str("storage") +
         "ctorch\nFloatStorage\n" + Str(key) + Str("cpu") + "K\x04tQK\x00K\x04\x85K\x01\x85\x89"s +
         "ccollections\nOrderedDict\n)RtRu.";
}

std::string FloatBytes(std::initializer_list<float> values) {
  std::string out;
  for (float v : values) out.append(reinterpret_cast<const char*>(&v), sizeof v);
  return out;
}

TEST(TorchStateDict, ReadsAModuleStateDictOfEveryDtype) {
  // torch.save(module.state_dict()): an OrderedDict with _metadata, which LibTorch's
  // pickle_load turns into None.
  auto sd = ReadTorchStateDict(Data("torch_pt/state_dict_dtypes.pt"));
  ASSERT_TRUE(sd.ok()) << sd.status();
  std::vector<std::string> names;
  for (const auto& [name, t] : *sd) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"fp16", "bf16_buf", "idx", "i8", "mask", "f64", "proj.weight", "proj.bias"}));
  auto m = AsMap(*sd);
  EXPECT_EQ(m["fp16"].scalar_type(), at::kHalf);
  EXPECT_TRUE(m["fp16"].equal(at::arange(4, at::kFloat).mul(0.5).to(at::kHalf)));
  EXPECT_EQ(m["bf16_buf"].scalar_type(), at::kBFloat16);
  EXPECT_TRUE(m["bf16_buf"].equal(at::arange(5, at::kFloat).sub(2).to(at::kBFloat16)));
  EXPECT_EQ(m["idx"].scalar_type(), at::kLong);
  EXPECT_TRUE(m["idx"].equal(at::tensor({int64_t{0}, int64_t{-1}, int64_t{1} << 40, -(int64_t{1} << 62)})));
  EXPECT_TRUE(m["i8"].equal(at::tensor({-128, 0, 127}, at::kChar)));
  EXPECT_EQ(m["mask"].scalar_type(), at::kBool);
  EXPECT_TRUE(m["mask"].equal(at::tensor({1, 0, 1}, at::kInt).to(at::kBool)));
  EXPECT_EQ(m["f64"].scalar_type(), at::kDouble);
  EXPECT_EQ(m["f64"][1].item<double>(), -1e300);
  EXPECT_EQ(m["f64"][0].item<double>(), 0.1);
  EXPECT_TRUE(m["proj.weight"].equal(at::arange(6, at::kFloat).reshape({2, 3}) * 0.25 - 0.5));
  EXPECT_TRUE(m["proj.bias"].equal(at::tensor({1.5f, -2.0f})));
  for (const auto& [name, t] : *sd) {
    EXPECT_TRUE(t.device().is_cpu()) << name;
    EXPECT_FALSE(t.requires_grad()) << name;
  }
}

TEST(TorchStateDict, ViewsKeepOffsetsStridesAndShareTheirStorage) {
  auto sd = ReadTorchStateDict(Data("torch_pt/shared_storage_views.pt"));
  ASSERT_TRUE(sd.ok()) << sd.status();
  auto m = AsMap(*sd);
  const at::Tensor base = at::arange(12, at::kFloat).reshape({3, 4});
  EXPECT_TRUE(m["base"].equal(base));
  EXPECT_TRUE(m["transposed"].equal(base.t()));
  EXPECT_EQ(m["transposed"].strides().vec(), base.t().strides().vec());
  EXPECT_TRUE(m["block"].equal(base.slice(0, 1).slice(1, 1, 3)));
  EXPECT_EQ(m["block"].storage_offset(), 5);
  EXPECT_TRUE(m["row"].equal(base[2]));
  EXPECT_TRUE(m["every_third"].equal(at::tensor({0.f, 3.f, 6.f, 9.f})));
  EXPECT_TRUE(m["expanded"].equal(at::full({3, 2}, 1.f)));
  EXPECT_EQ(m["expanded"].stride(0), 0);
  EXPECT_EQ(m["scalar"].dim(), 0);
  EXPECT_EQ(m["scalar"].item<float>(), 6.f);
  EXPECT_EQ(m["empty"].numel(), 0);
  EXPECT_EQ(m["empty"].sizes().vec(), (std::vector<int64_t>{3, 0}));
  // One storage record, shared as after Python's torch.load: a write shows through the views.
  for (const char* name : {"transposed", "block", "row", "every_third", "expanded", "scalar"}) {
    EXPECT_TRUE(m[name].is_alias_of(m["base"])) << name;
  }
  m["base"][2][0].fill_(-1.f);
  EXPECT_EQ(m["row"][0].item<float>(), -1.f);
}

TEST(TorchStateDict, UnwrapsModelStateDictAndKeepsTheRest) {
  const std::string path = Data("torch_pt/nested_wrapper.pt");
  auto sd = ReadTorchStateDict(path);
  ASSERT_TRUE(sd.ok()) << sd.status();
  ASSERT_EQ(sd->size(), 2u);
  auto m = AsMap(*sd);
  EXPECT_TRUE(m["model.layers.0.mlp.up_proj.weight"].equal(at::arange(4, at::kFloat)));
  EXPECT_TRUE(m["model.layers.0.mlp.up_proj.lut"].equal(at::tensor({-1.f, 1.f}).to(at::kHalf)));

  auto file = ReadTorchPt(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const PickleDocument& doc = file->pickle;
  EXPECT_EQ(doc.at(doc.Find(doc.root, "step")).i, 1234);
  const int config = doc.Find(doc.root, "config");
  ASSERT_EQ(doc.at(config).kind, PickleValue::Kind::kDict);
  EXPECT_EQ(doc.at(doc.Find(config, "version")).s, "v2");
  EXPECT_EQ(doc.at(doc.Find(config, "lut_bits")).i, 2);
  EXPECT_EQ(doc.at(doc.Find(config, "fp16")).kind, PickleValue::Kind::kBool);
  EXPECT_FALSE(doc.at(doc.Find(config, "fp16")).b);
  EXPECT_DOUBLE_EQ(doc.at(doc.Find(config, "eps")).f, 1e-5);
  EXPECT_EQ(doc.at(doc.Find(config, "note")).kind, PickleValue::Kind::kNone);
  EXPECT_EQ(doc.at(doc.Find(config, "ranks")).items.size(), 2u);
  EXPECT_EQ(doc.at(doc.Find(config, "big")).i, int64_t{1} << 40);
  EXPECT_EQ(doc.at(doc.Find(config, "negative")).i, -70000);
}

TEST(TorchStateDict, ReadsProtocol4AndParameters) {
  auto sd = ReadTorchStateDict(Data("torch_pt/protocol4_parameter.pt"));
  ASSERT_TRUE(sd.ok()) << sd.status();
  auto m = AsMap(*sd);
  EXPECT_TRUE(m["param"].equal(at::arange(3, at::kFloat)));
  EXPECT_TRUE(m["buffer"].equal(at::arange(3, at::kInt) * -7));
}

TEST(TorchStateDict, ReadsTheReferenceKdShardWrittenByTorch211) {
  // A plain dict from torch 2.11 ("archive/" folder, byteorder record); checks.json holds
  // each tensor's shape and sum as the generating machine computed them.
  std::ifstream in(Data("golden/kd_cache_sample/checks.json"));
  const nlohmann::json checks = nlohmann::json::parse(in)["shards"]["shard_00000.pt"];
  auto sd = ReadTorchStateDict(Data("golden/kd_cache_sample/shard_00000.pt"));
  ASSERT_TRUE(sd.ok()) << sd.status();
  auto m = AsMap(*sd);
  ASSERT_EQ(m.size(), 4u);
  for (const char* name : {"input_ids", "attention_mask", "topk_idx", "topk_logits"}) {
    ASSERT_TRUE(m.count(name)) << name;
    EXPECT_EQ(m[name].sizes().vec(), checks[name]["shape"].get<std::vector<int64_t>>()) << name;
    EXPECT_DOUBLE_EQ(m[name].to(at::kDouble).sum().item<double>(), checks[name]["sum"].get<double>()) << name;
  }
  EXPECT_EQ(m["topk_logits"].scalar_type(), at::kHalf);
  EXPECT_EQ(m["attention_mask"].scalar_type(), at::kByte);
}

TEST(TorchStateDict, ReadsWhatQatdWrites) {
  const std::string path = TempPath("qatd_written.pt");
  NamedTensors in = {{"a", at::arange(6, at::kFloat).reshape({2, 3}).t()},
                     {"b", at::arange(3, at::kLong)},
                     {"c", at::tensor({0.25f}).to(at::kBFloat16)}};
  ASSERT_TRUE(WriteTorchPt(path, in).ok());
  auto sd = ReadTorchStateDict(path);
  ASSERT_TRUE(sd.ok()) << sd.status();
  ASSERT_EQ(sd->size(), 3u);
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ((*sd)[i].first, in[i].first);
    EXPECT_TRUE((*sd)[i].second.equal(in[i].second)) << in[i].first;
  }
}

TEST(TorchStateDict, BrokenFilesGiveErrorsThatNameTheProblem) {
  const std::string ok = WriteArchive("ok.pt", FourFloats("0"), {{"data/0", FloatBytes({1, 2, 3, 4})}});
  auto good = ReadTorchStateDict(ok);
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_TRUE(AsMap(*good)["w"].equal(at::tensor({1.f, 2.f, 3.f, 4.f})));

  struct Case {
    std::string path;
    absl::StatusCode code;
    std::vector<std::string> message;
  };
  const std::string pickle = FourFloats("0");
  const std::string hostile = "\x80\x02" "cos\nsystem\n" + Str("touch /tmp/qatd_pwned") + "\x85R.";
  std::string truncated_zip;
  {
    std::ifstream f(Data("torch_pt/state_dict_dtypes.pt"), std::ios::binary);
    truncated_zip.assign(std::istreambuf_iterator<char>(f), {});
    truncated_zip.resize(truncated_zip.size() / 2);
  }
  const std::string half_zip = TempPath("half.pt");
  std::ofstream(half_zip, std::ios::binary) << truncated_zip;
  const std::string legacy = TempPath("legacy.pt");
  std::ofstream(legacy, std::ios::binary) << "\x80\x02\x8a\x0a" "lp\x95\x06\x84\x9c\x6b";
  const std::vector<Case> cases = {
      {WriteArchive("hostile.pt", hostile, {}), absl::StatusCode::kInvalidArgument, {"os.system is refused", "data.pkl"}},
      {WriteArchive("truncated.pt", pickle.substr(0, pickle.size() / 2), {{"data/0", FloatBytes({1, 2, 3, 4})}}),
       absl::StatusCode::kInvalidArgument, {"truncated.pt: data.pkl:", "offset"}},
      {WriteArchive("missing.pt", pickle, {}), absl::StatusCode::kInvalidArgument, {"data/0 is missing"}},
      {WriteArchive("short.pt", pickle, {{"data/0", FloatBytes({1, 2, 3})}}), absl::StatusCode::kInvalidArgument,
       {"data/0 holds 12 bytes", "4 Float elements (16 bytes)"}},
      {WriteArchive("big_endian.pt", pickle, {{"data/0", FloatBytes({1, 2, 3, 4})}, {"byteorder", "big"}}),
       absl::StatusCode::kInvalidArgument, {"byteorder record says \"big\""}},
      {WriteArchive("list.pt", "\x80\x02]."s, {}), absl::StatusCode::kInvalidArgument, {"holds a list, not a dict"}},
      {WriteArchive("inst.pt", "\x80\x02(ios\nsystem\n."s, {}), absl::StatusCode::kUnimplemented,
       {"INST", "LibTorch's loader failed too"}},
      {legacy, absl::StatusCode::kInvalidArgument, {"is not a zip archive"}},
      {half_zip, absl::StatusCode::kInternal, {"half.pt"}},
      {TempPath("absent.pt"), absl::StatusCode::kNotFound, {"absent.pt"}},
  };
  for (const Case& c : cases) {
    auto sd = ReadTorchStateDict(c.path);
    EXPECT_EQ(sd.status().code(), c.code) << c.path << ": " << sd.status();
    for (const std::string& part : c.message) {
      EXPECT_TRUE(absl::StrContains(sd.status().message(), part)) << sd.status() << " (want: " << part << ")";
    }
  }
  EXPECT_FALSE(fs::exists("/tmp/qatd_pwned"));
}

}  // namespace
}  // namespace qatd::model
