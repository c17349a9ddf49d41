// The seed-format files (model_state_dict.pt, indices.pt) load in Python with
// torch.load(weights_only=True) (issue #17 item 4), and qatd still reads both the files it writes
// now and the ones older qatd versions wrote with torch::jit::pickle_save.
//
// The Python half runs scripts/gpu/check_pt_weights_only.py with the first Python that has torch
// (Python() below): Debian's python3-torch 1.13 here (scripts/deps.txt), torch 2.x on a GPU host.

#include <gtest/gtest.h>
#include <torch/csrc/jit/serialization/pickle.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/common/file_util.h"
#include "core/model/model_io.h"
#include "core/model/qwen3_config.h"
#include "core/model/torch_pt_writer.h"
#include "core/quant/quant_linear_v1.h"
#include "core/quant/quantize_model.h"
#include "core/train/student.h"
#include "tests/common/temp_dir.h"

namespace qatd::train {
namespace {

namespace fs = std::filesystem;

const std::string kData = QATD_TEST_DATA;

qatd::testing::TempDir& Scratch() {
  static qatd::testing::TempDir dir;
  return dir;
}

// A tiny random Qwen3 saved as an HF folder (fp32), built once.
const std::string& BaseModel() {
  static const std::string dir = [] {
    const std::string out = Scratch().File("base");
    auto config = model::Qwen3Config::FromFile(kData + "/golden/tiny-qwen3/config.json");
    EXPECT_TRUE(config.ok()) << config.status();
    model::InitOptions init;
    init.seed = 11;
    auto m = model::InitTinyQwen3(*config, init);
    EXPECT_TRUE(m.ok()) << m.status();
    model::SaveOptions save;
    save.dtype = at::kFloat;
    EXPECT_TRUE(model::SaveQwen3(*m, *config, out, save).ok());
    return out;
  }();
  return dir;
}

StudentOptions V1Student(const std::string& dtype) {
  StudentOptions o;
  o.model_dir = BaseModel();
  o.dtype = dtype;
  o.quant_v1.lut_size = 4;
  o.quant_v1.group_size = 16;
  o.quant_v1.scale_rank = 4;
  o.quant_v1.quantize_attn = true;
  return o;
}

std::string PythonDtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    case at::kDouble: return "float64";
    case at::kByte: return "uint8";
    case at::kChar: return "int8";
    case at::kShort: return "int16";
    case at::kInt: return "int32";
    case at::kLong: return "int64";
    case at::kBool: return "bool";
    default: return std::string(c10::toString(t));
  }
}

using Named = std::vector<std::pair<std::string, at::Tensor>>;

// What the seed files must hold: the full state_dict (without the derived cache) and the V1
// indices.
Named ExpectedStateDict(Student& s) {
  Named out;
  for (const auto& item : s.model->named_parameters(true)) out.emplace_back(item.key(), item.value().detach());
  for (const auto& item : s.model->named_buffers(true)) {
    if (absl::EndsWith(item.key(), "_cached_weight_q") || item.value().numel() == 0) continue;
    out.emplace_back(item.key(), item.value().detach());
  }
  return out;
}

Named ExpectedIndices(Student& s) {
  Named out;
  for (const auto& [name, layer] : quant::QuantizedLayers(*s.registry)) {
    if (auto* v1 = dynamic_cast<quant::QuantLinearV1*>(layer.get())) out.emplace_back(name, v1->ComputeIndices());
  }
  return out;
}

// Writes {file: [{key, dtype, shape, data}]} and one raw little-endian blob per tensor.
void WriteManifest(const std::string& dir, const std::vector<std::pair<std::string, Named>>& files) {
  fs::create_directories(fs::path(dir) / "blobs");
  nlohmann::json manifest = nlohmann::json::object();
  int n = 0;
  for (const auto& [file, tensors] : files) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& [key, t] : tensors) {
      at::Tensor c = t.cpu().contiguous();
      const std::string blob = absl::StrCat("blobs/", n++, ".bin");
      std::ofstream(fs::path(dir) / blob, std::ios::binary)
          .write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.numel() * c.element_size()));
      list.push_back({{"key", key}, {"dtype", PythonDtype(c.scalar_type())}, {"shape", c.sizes().vec()}, {"data", blob}});
    }
    manifest[file] = list;
  }
  std::ofstream(fs::path(dir) / "manifest.json") << manifest.dump(1);
}

// The first Python that imports torch among $QATD_TORCH_PYTHON, the python3 on PATH (a GPU
// host's torch 2.x venv) and Debian's /usr/bin/python3 (python3-torch, scripts/deps.txt).
const std::string& Python() {
  static const std::string python = [] {
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("QATD_TORCH_PYTHON"); env != nullptr && *env != '\0') candidates.push_back(env);
    candidates.push_back("python3");
    candidates.push_back(QATD_PYTHON3);
    for (const std::string& c : candidates) {
      const std::string cmd = absl::StrCat(c, " -c 'import torch' >/dev/null 2>&1");
      if (std::system(cmd.c_str()) == 0) return c;
    }
    return std::string(QATD_PYTHON3);
  }();
  return python;
}

// Runs the checker script; returns its exit status and output.
std::pair<int, std::string> RunPythonCheck(const std::string& ckpt, const std::string& manifest) {
  const std::string log = Scratch().File(absl::StrCat("python-", fs::path(ckpt).filename().string(), ".log"));
  const std::string cmd = absl::StrCat(Python(), " ", QATD_SOURCE_DIR, "/scripts/gpu/check_pt_weights_only.py ", ckpt,
                                       " --expect ", manifest, " >", log, " 2>&1");
  const int rc = std::system(cmd.c_str());
  std::ifstream in(log);
  std::string out((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, out};
}

TEST(SeedPt, PythonTorchIsInstalled) {
  // scripts/deps.txt: python3-torch. Without it the checks below cannot run.
  const std::string cmd = absl::StrCat(Python(), " -c 'import torch' >/dev/null 2>&1");
  ASSERT_EQ(std::system(cmd.c_str()), 0) << Python() << " has no torch: apt-get install -y python3-torch";
}

void CheckWeightsOnly(const std::string& dtype) {
  auto s = LoadStudent(V1Student(dtype));
  ASSERT_TRUE(s.ok()) << s.status();
  {
    at::NoGradGuard g;  // make the scales differ from a fresh quantization
    for (auto& item : s->model->named_parameters()) {
      if (absl::StrContains(item.key(), "scale_A")) item.value().mul_(1.5);
    }
  }
  const std::string dir = Scratch().File("ckpt-" + dtype);
  ASSERT_TRUE(SaveStudent(*s, dir, {}, /*seed_files=*/true).ok());
  const std::string expect = Scratch().File("expect-" + dtype);
  const Named state = ExpectedStateDict(*s);
  const Named indices = ExpectedIndices(*s);
  ASSERT_FALSE(indices.empty());
  bool has_dtype = false;
  for (const auto& [k, t] : state) has_dtype |= PythonDtype(t.scalar_type()) == (dtype == "bf16" ? "bfloat16" : "float32");
  EXPECT_TRUE(has_dtype);
  WriteManifest(expect, {{"model_state_dict.pt", state}, {"indices.pt", indices}});
  auto [rc, out] = RunPythonCheck(dir, expect + "/manifest.json");
  EXPECT_EQ(rc, 0) << out;
  EXPECT_TRUE(absl::StrContains(out, "OK: 2 file(s)")) << out;
}

TEST(SeedPt, TorchLoadWeightsOnlyReadsFp32SeedFiles) { CheckWeightsOnly("fp32"); }
TEST(SeedPt, TorchLoadWeightsOnlyReadsBf16SeedFiles) { CheckWeightsOnly("bf16"); }

// The checker fails (so the tests above can fail): a tensor qatd did not write is reported.
TEST(SeedPt, CheckerReportsADifferentTensor) {
  auto s = LoadStudent(V1Student("fp32"));
  ASSERT_TRUE(s.ok()) << s.status();
  const std::string dir = Scratch().File("ckpt-changed");
  ASSERT_TRUE(SaveStudent(*s, dir, {}, /*seed_files=*/true).ok());
  Named indices = ExpectedIndices(*s);
  indices[0].second = indices[0].second.clone();
  indices[0].second.view(-1)[0].add_(1);
  const std::string expect = Scratch().File("expect-changed");
  WriteManifest(expect, {{"indices.pt", indices}});
  auto [rc, out] = RunPythonCheck(dir, expect + "/manifest.json");
  EXPECT_EQ(rc, 1) << out;
  EXPECT_TRUE(absl::StrContains(out, indices[0].first + " values differ")) << out;
}

// The writer on its own: every supported dtype, a 0-dim tensor, an empty one, a strided view
// with an offset, ints past 65535 and more than 1000 entries (two SETITEMS batches), read by
// Python's weights_only loader and by LibTorch's reader alike.
TEST(TorchPtWriter, DtypesViewsScalarsAndManyEntries) {
  at::manual_seed(3);
  model::NamedTensors t;
  t.emplace_back("bf16", at::randn({3, 5}).to(at::kBFloat16));
  t.emplace_back("fp16", at::randn({4}).to(at::kHalf));
  t.emplace_back("fp64", at::scalar_tensor(2.5, at::kDouble));
  t.emplace_back("int64", at::arange(70000, at::kLong).view({7, 10000}) - 35000);
  t.emplace_back("int8", at::arange(-5, 5, at::kChar));
  t.emplace_back("bool", at::rand({6}) > 0.5);
  t.emplace_back("view", at::randn({6, 8}).t().slice(0, 2, 5));  // [3, 6], strides (1, 8), offset 2
  t.emplace_back("empty", at::zeros({0, 3}));
  for (int i = 0; i < 1100; ++i) t.emplace_back(absl::StrCat("many.", i), at::full({1}, i, at::kInt));
  const std::string dir = Scratch().File("writer");
  fs::create_directories(dir);
  ASSERT_TRUE(model::WriteTorchPt(dir + "/model_state_dict.pt", t).ok());
  const std::string expect = Scratch().File("expect-writer");
  WriteManifest(expect, {{"model_state_dict.pt", t}});
  auto [rc, out] = RunPythonCheck(dir, expect + "/manifest.json");
  EXPECT_EQ(rc, 0) << out;
  EXPECT_TRUE(absl::StrContains(out, "OK: 1 file(s)")) << out;

  std::ifstream in(dir + "/model_state_dict.pt", std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const c10::IValue value = torch::jit::pickle_load(bytes);
  ASSERT_TRUE(value.isGenericDict());
  const auto dict = value.toGenericDict();
  ASSERT_EQ(dict.size(), t.size());
  for (const auto& [key, tensor] : t) {
    const at::Tensor got = dict.at(key).toTensor();
    EXPECT_EQ(got.scalar_type(), tensor.scalar_type()) << key;
    EXPECT_TRUE(at::equal(got, tensor)) << key;
  }
  // An unsupported dtype is named.
  absl::StatusOr<std::string> bad = model::SerializeTorchPt({{"c", at::zeros({2}, at::kComplexFloat)}});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "tensor c has dtype")) << bad.status();
}

// LoadStudent's seed path reads the files qatd writes now and the ones older versions wrote.
TEST(SeedPt, ReaderReadsNewAndOldFiles) {
  auto s = LoadStudent(V1Student("fp32"));
  ASSERT_TRUE(s.ok()) << s.status();
  {
    at::NoGradGuard g;
    for (auto& item : s->model->named_parameters()) {
      if (absl::StrContains(item.key(), "scale_A")) item.value().mul_(1.5);
    }
  }
  const std::string dir = Scratch().File("ckpt-reader");
  ASSERT_TRUE(SaveStudent(*s, dir, {}, /*seed_files=*/true).ok());
  // Before issue #17: the same dict through torch::jit::pickle_save (typed-dict tags).
  c10::Dict<std::string, at::Tensor> dict;
  for (const auto& [k, t] : ExpectedStateDict(*s)) dict.insert(k, t.cpu());
  const std::vector<char> old_bytes = torch::jit::pickle_save(c10::IValue(dict));
  fs::create_directories(Scratch().File("old-seed"));
  const std::string old_file = Scratch().File("old-seed/model_state_dict.pt");
  ASSERT_TRUE(WriteFileAtomically(old_file, std::string_view(old_bytes.data(), old_bytes.size())).ok());

  at::Tensor ids = at::arange(10, at::kLong).unsqueeze(0) + 100;
  at::NoGradGuard g;
  const at::Tensor want = s->model->Forward(ids);
  for (const std::string& seed : {(fs::path(dir) / "model_state_dict.pt").string(), old_file}) {
    StudentOptions o = V1Student("fp32");
    o.checkpoint = seed;
    auto r = LoadStudent(o);
    ASSERT_TRUE(r.ok()) << seed << ": " << r.status();
    EXPECT_TRUE(at::equal(want, r->model->Forward(ids))) << seed;
  }
}

}  // namespace
}  // namespace qatd::train
