// EXPORT (issue #17): a quantized checkpoint as a Hugging Face folder. The folder is loaded
// back with qatd's plain (unquantized) Qwen3 loader and must compute the quantized model's
// logits; the submit-time check names the bad field.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/jobs/export_job.h"
#include "core/jobs/job_spec.h"
#include "core/model/model_io.h"
#include "core/model/safetensors.h"
#include "core/quant/quantize_model.h"
#include "core/train/student.h"
#include "tests/core/train/train_fixture.h"

namespace qatd::train {
namespace {
namespace fs = std::filesystem;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A tiny Qwen3 base folder (random weights, the real tokenizer files).
const std::string& BaseModel() {
  static const std::string dir = [] {
    const std::string out = Scratch().File("export_base");
    auto config = model::Qwen3Config::FromFile(kData + "/golden/tiny-qwen3/config.json");
    EXPECT_TRUE(config.ok()) << config.status();
    model::InitOptions init;
    init.seed = 11;
    init.initializer_range = 0.25;
    auto m = model::InitTinyQwen3(*config, init);
    EXPECT_TRUE(m.ok()) << m.status();
    model::SaveOptions save;
    save.dtype = at::kFloat;
    EXPECT_TRUE(model::SaveQwen3(*m, *config, out, save).ok());
    for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) fs::copy_file(kTokenizer + "/" + f, out + "/" + f);
    fs::copy_file(kData + "/golden/tiny-qwen3/generation_config.json", out + "/generation_config.json");
    return out;
  }();
  return dir;
}

// A freshly quantized student (V1: LUT 16, rank-4 scales; V2: Q2_A4-like, indices frozen) with
// its scales moved off their init, saved as a qatd checkpoint.
std::string MakeCheckpoint(const std::string& name, int version) {
  StudentOptions so;
  so.model_dir = BaseModel();
  so.dtype = "fp32";
  so.device = "cpu";
  so.version = version;
  so.quant_v1.lut_size = 16;
  so.quant_v1.group_size = 16;
  so.quant_v1.scale_rank = 4;
  so.quant_v1.quantize_attn = true;
  so.quant_v2 = *quant::QuantConfigV2::FromPreset("Q2_A4");
  so.quant_v2.scale_rank = 4;
  so.quant_v2.attn_scale_rank = 4;
  so.quant_v2.quantize_attn = true;
  auto s = LoadStudent(so);
  EXPECT_TRUE(s.ok()) << s.status();
  {
    at::NoGradGuard no_grad;
    at::manual_seed(3);
    for (const auto& [layer_name, layer] : quant::QuantizedLayers(*s->registry)) {
      for (auto& p : layer->named_parameters(false)) {
        if (p.key() == "scale_A") p.value().mul_(1.0 + 0.1 * at::rand_like(p.value()));
      }
    }
  }
  const std::string dir = Scratch().File(name);
  absl::Status saved = SaveStudent(*s, dir);
  EXPECT_TRUE(saved.ok()) << saved;
  return dir;
}

at::Tensor StudentLogits(const std::string& checkpoint, const at::Tensor& ids) {
  StudentOptions so;
  so.model_dir = BaseModel();
  so.checkpoint = checkpoint;
  so.dtype = "fp32";
  so.device = "cpu";
  auto s = LoadStudent(so);
  EXPECT_TRUE(s.ok()) << s.status();
  at::NoGradGuard no_grad;
  s->model->eval();
  return s->model->ForwardLogits(ids);
}

at::Tensor DenseLogits(const std::string& dir, const at::Tensor& ids) {
  auto loaded = model::LoadQwen3(dir, {at::kFloat, at::kCPU});
  EXPECT_TRUE(loaded.ok()) << loaded.status();
  at::NoGradGuard no_grad;
  return loaded->model->ForwardLogits(ids);
}

// max |a - b| / max |b|
double RelativeMaxDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>() / b.abs().max().item<double>();
}

at::Tensor Ids() {
  const std::vector<int64_t> ids = jobs::ReferenceTokenIds(151936, 12);
  return at::tensor(ids, at::kLong).unsqueeze(0);
}

jobs::ExportOptions Options(const std::string& checkpoint, const std::string& out, jobs::Dtype dtype) {
  jobs::ExportOptions o;
  o.model = BaseModel();
  o.checkpoint = checkpoint;
  o.dtype = dtype;
  o.device = "cpu";
  o.output_dir = Scratch().File(out);
  return o;
}

TEST(Export, Fp32FolderComputesTheQuantizedModelsLogits) {
  const std::string ckpt = MakeCheckpoint("export_v1_ckpt", 1);
  jobs::ExportOptions o = Options(ckpt, "export_v1_fp32", jobs::Dtype::kFp32);
  o.max_shard_bytes = 8 << 20;  // the 39 MB embedding gets a shard of its own, the rest share one
  QuietReporter rep;
  jobs::CancelToken cancel;
  absl::Status s = jobs::RunExport(o, rep, cancel);
  ASSERT_TRUE(s.ok()) << s;
  const std::string hf = rep.ArtifactOf("export");
  ASSERT_EQ(hf, o.output_dir + "/hf");

  // HF layout: shards + index, config with torch_dtype, tokenizer files byte for byte.
  EXPECT_FALSE(fs::exists(hf + "/model.safetensors"));
  ASSERT_TRUE(fs::exists(hf + "/model.safetensors.index.json"));
  const auto index = nlohmann::json::parse(ReadFile(hf + "/model.safetensors.index.json"));
  EXPECT_EQ(index["weight_map"]["model.embed_tokens.weight"], "model-00001-of-00002.safetensors");
  EXPECT_EQ(index["weight_map"]["model.layers.0.mlp.down_proj.weight"], "model-00002-of-00002.safetensors");
  auto ckpt_files = model::Checkpoint::Open(hf);
  ASSERT_TRUE(ckpt_files.ok()) << ckpt_files.status();
  uint64_t total = 0;
  for (const std::string& name : ckpt_files->Names()) total += ckpt_files->Get(name)->info->nbytes();
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), total);
  EXPECT_EQ(index["weight_map"].size(), ckpt_files->Names().size());
  const auto config = nlohmann::json::parse(ReadFile(hf + "/config.json"));
  EXPECT_EQ(config["torch_dtype"], "float32");
  EXPECT_EQ(config["architectures"][0], "Qwen3ForCausalLM");
  EXPECT_EQ(config["hidden_size"], 64);
  EXPECT_EQ(ReadFile(hf + "/tokenizer.json"), ReadFile(kTokenizer + "/tokenizer.json"));
  EXPECT_TRUE(fs::exists(hf + "/tokenizer_config.json"));
  EXPECT_TRUE(fs::exists(hf + "/generation_config.json"));
  const auto provenance = nlohmann::json::parse(ReadFile(hf + "/qatd_export.json"));
  EXPECT_EQ(provenance["materialised"]["tensors"].size(), 14u);  // 2 layers x 7 projections
  for (const auto& entry : fs::directory_iterator(o.output_dir)) {
    EXPECT_EQ(entry.path().string().find(".tmp-"), std::string::npos) << entry.path();
  }

  // Logits: the exported folder, loaded as a plain model, computes the quantized model.
  const at::Tensor ids = Ids();
  const at::Tensor quantized = StudentLogits(ckpt, ids);
  const at::Tensor exported = DenseLogits(hf, ids);
  const at::Tensor base = DenseLogits(BaseModel(), ids);
  const double diff = RelativeMaxDiff(exported, quantized);
  const double quantization = RelativeMaxDiff(base, quantized);
  std::printf("fp32 export: max |exported - quantized| / max |quantized| = %.3g (base model: %.3g)\n", diff, quantization);
  EXPECT_LE(diff, 1e-5);
  EXPECT_GT(quantization, 1e-2);  // the export is not the base model

  // The reference logits the GPU-host check compares against are the quantized model's.
  auto ref = model::SafetensorsFile::Open(o.output_dir + "/reference_logits.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto view = (*ref)->Get("logits");
  ASSERT_TRUE(view.ok());
  const std::vector<int64_t> want_shape = {1, 16, 151936};
  EXPECT_EQ(view->info->shape, want_shape);
  const at::Tensor ref_ids = at::tensor(jobs::ReferenceTokenIds(151936), at::kLong).unsqueeze(0);
  at::Tensor ref_logits =
      at::from_blob(const_cast<void*>(view->data), {1, 16, 151936}, at::kFloat).clone();
  EXPECT_LE(RelativeMaxDiff(ref_logits, StudentLogits(ckpt, ref_ids)), 1e-6);
}

TEST(Export, Bf16FolderHoldsTheRoundedEffectiveWeights) {
  const std::string ckpt = MakeCheckpoint("export_v2_ckpt", 2);
  jobs::ExportOptions o = Options(ckpt, "export_v2_bf16", jobs::Dtype::kBf16);
  QuietReporter rep;
  jobs::CancelToken cancel;
  absl::Status s = jobs::RunExport(o, rep, cancel);
  ASSERT_TRUE(s.ok()) << s;
  const std::string hf = rep.ArtifactOf("export");
  ASSERT_TRUE(fs::exists(hf + "/model.safetensors"));  // under 2 GiB: one file, no index
  EXPECT_FALSE(fs::exists(hf + "/model.safetensors.index.json"));
  EXPECT_EQ(nlohmann::json::parse(ReadFile(hf + "/config.json"))["torch_dtype"], "bfloat16");

  // Every quantized projection is exactly its effective weight LUT[idx] ⊙ S rounded to bf16.
  StudentOptions so;
  so.model_dir = BaseModel();
  so.checkpoint = ckpt;
  so.dtype = "fp32";
  so.device = "cpu";
  auto student = LoadStudent(so);
  ASSERT_TRUE(student.ok()) << student.status();
  EXPECT_EQ(student->version, 2);
  auto file = model::SafetensorsFile::Open(hf + "/model.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  int checked = 0;
  for (const auto& [name, layer] : quant::QuantizedLayers(*student->registry)) {
    auto view = (*file)->Get(name + ".weight");
    ASSERT_TRUE(view.ok()) << name;
    ASSERT_EQ(view->info->dtype, model::DType::kBF16);
    at::Tensor stored = at::from_blob(const_cast<void*>(view->data), view->info->shape, at::kBFloat16);
    at::Tensor want = layer->EffectiveWeight().to(at::kBFloat16);
    EXPECT_TRUE(at::equal(stored, want)) << name;
    ++checked;
  }
  EXPECT_EQ(checked, 14);

  // Logits of the bf16 folder (computed in fp32) vs the quantized model in fp32: only the
  // weights' bf16 rounding (relative 2^-9 per weight) separates them.
  const at::Tensor ids = Ids();
  const at::Tensor quantized = StudentLogits(ckpt, ids);
  const double diff = RelativeMaxDiff(DenseLogits(hf, ids), quantized);
  std::printf("bf16 export: max |exported - quantized| / max |quantized| = %.3g\n", diff);
  EXPECT_LE(diff, 2e-2);
}

TEST(Export, SubmitTimeCheckNamesTheField) {
  auto check = [](const std::function<void(v1::ExportSpec*)>& edit) {
    v1::JobSpec spec;
    spec.mutable_export_()->set_model(BaseModel());
    spec.mutable_export_()->set_checkpoint(BaseModel());
    edit(spec.mutable_export_());
    jobs::SpecCheckContext context;
    return jobs::ValidateJobSpec(spec, context);
  };
  EXPECT_TRUE(check([](v1::ExportSpec*) {}).ok()) << check([](v1::ExportSpec*) {});
  absl::Status s = check([](v1::ExportSpec* e) { e->set_format(static_cast<v1::ExportFormat>(7)); });
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("export.format has no enum value 7"), std::string::npos) << s;
  s = check([](v1::ExportSpec* e) { e->set_format(v1::EXPORT_FORMAT_ANEMLL); });
  EXPECT_TRUE(s.ok()) << s;  // implemented: core/jobs/export_anemll.h (tests/core/jobs/export_anemll_test.cc)
  s = check([](v1::ExportSpec* e) { e->clear_checkpoint(); });
  EXPECT_NE(s.message().find("export.checkpoint is required"), std::string::npos) << s;
  s = check([](v1::ExportSpec* e) { e->set_checkpoint("/nonexistent/ckpt"); });
  EXPECT_NE(s.message().find("export.checkpoint names a path that does not exist"), std::string::npos) << s;
  s = check([](v1::ExportSpec* e) { e->set_max_shard_bytes(0); });
  EXPECT_NE(s.message().find("export.max_shard_bytes must be in [1, "), std::string::npos) << s;
  s = check([](v1::ExportSpec* e) { e->set_dtype(static_cast<v1::Dtype>(9)); });
  EXPECT_NE(s.message().find("export.dtype has no enum value 9"), std::string::npos) << s;
}

}  // namespace
}  // namespace qatd::train
