// EXPORT --format anemll (issue #17): a tiny snapped checkpoint (V1 lut snap, V2 export snap,
// V2 ANE fp16 snap) exported; W = lut[indices] * S re-materialised from the folder alone, by the
// formula docs/export-anemll.md gives, equals qatd's snapped model weights bit for bit; the
// written files verify, and a corrupted file, a tampered tensor or a missing file does not.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "core/common/sha256.h"
#include "core/jobs/export_anemll.h"
#include "core/jobs/export_job.h"
#include "core/jobs/job_spec.h"
#include "core/model/safetensors.h"
#include "core/quant/export.h"
#include "core/quant/quantize_model.h"
#include "core/quant/snap.h"
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

enum class Snap { kV1Lut, kV2Export, kV2Ane };

StudentOptions Options(int version) {
  StudentOptions so;
  so.model_dir = Teacher().teacher;
  so.dtype = "fp32";
  so.device = "cpu";
  so.version = version;
  so.quant_v1.lut_size = 16;
  so.quant_v1.group_size = 16;
  so.quant_v1.scale_rank = 4;
  so.quant_v1.quantize_attn = true;
  so.quant_v2 = *quant::QuantConfigV2::FromPreset("Q2_A4");
  so.quant_v2.scale_rank = 8;
  so.quant_v2.attn_scale_rank = 4;
  so.quant_v2.quantize_attn = true;
  return so;
}

// A quantized student with its scales moved off their init, snapped, saved.
std::string SnappedCheckpoint(const std::string& name, Snap snap) {
  auto s = LoadStudent(Options(snap == Snap::kV1Lut ? 1 : 2));
  EXPECT_TRUE(s.ok()) << s.status();
  {
    at::NoGradGuard no_grad;
    at::manual_seed(9);
    for (const auto& [layer_name, layer] : quant::QuantizedLayers(*s->registry)) {
      for (auto& p : layer->named_parameters(false)) {
        if (p.key() == "scale_A" || p.key() == "rank_magnitude") p.value().mul_(1.0 + 0.2 * at::rand_like(p.value()));
      }
    }
  }
  for (const auto& [layer_name, layer] : quant::QuantizedLayers(*s->registry)) {
    absl::StatusOr<quant::SnapStats> st;
    if (snap == Snap::kV1Lut) st = quant::SnapV1(*dynamic_cast<quant::QuantLinearV1*>(layer.get()), quant::SnapMode::kLut);
    if (snap == Snap::kV2Export) st = quant::SnapV2ForExport(*dynamic_cast<quant::QuantLinearV2*>(layer.get()));
    if (snap == Snap::kV2Ane) st = quant::SnapV2ForAne(*dynamic_cast<quant::QuantLinearV2*>(layer.get()));
    EXPECT_TRUE(st.ok()) << layer_name << ": " << st.status();
  }
  s->snapped_mode = snap == Snap::kV1Lut ? "lut" : (snap == Snap::kV2Export ? "v2_export" : "ane_fp16");
  const std::string dir = Scratch().File(name);
  absl::Status saved = SaveStudent(*s, dir);
  EXPECT_TRUE(saved.ok()) << saved;
  return dir;
}

std::string Export(const std::string& checkpoint, const std::string& out, jobs::Dtype dtype) {
  jobs::ExportOptions o;
  o.model = Teacher().teacher;
  o.checkpoint = checkpoint;
  o.format = jobs::ExportFormat::kAnemll;
  o.dtype = dtype;
  o.device = "cpu";
  o.output_dir = Scratch().File(out);
  QuietReporter rep;
  jobs::CancelToken cancel;
  absl::Status s = jobs::RunExport(o, rep, cancel);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(rep.ArtifactOf("export"), o.output_dir + "/anemll");
  return o.output_dir + "/anemll";
}

at::Tensor TensorOf(const model::SafetensorsFile& file, const std::string& name) {
  auto view = file.Get(name);
  EXPECT_TRUE(view.ok()) << name;
  if (!view.ok()) return at::Tensor();
  at::ScalarType t = at::kFloat;
  if (view->info->dtype == model::DType::kF16) t = at::kHalf;
  if (view->info->dtype == model::DType::kBF16) t = at::kBFloat16;
  if (view->info->dtype == model::DType::kU8) t = at::kByte;
  return at::from_blob(const_cast<void*>(view->data), view->info->shape, t).clone();
}

// Re-materialises every layer from the folder alone (docs/export-anemll.md "Effective weight")
// and compares with the snapped student's weights and indices, bit for bit.
void ExpectExactWeights(const std::string& checkpoint, const std::string& folder, at::ScalarType dtype) {
  StudentOptions so = Options(2);
  so.checkpoint = checkpoint;
  auto s = LoadStudent(so);
  ASSERT_TRUE(s.ok()) << s.status();
  const auto manifest = nlohmann::json::parse(ReadFile(folder + "/anemll_manifest.json"));
  auto quantized = model::SafetensorsFile::Open(folder + "/quantized.safetensors");
  auto snapped = model::SafetensorsFile::Open(folder + "/snapped.safetensors");
  auto dense = model::SafetensorsFile::Open(folder + "/model.safetensors");
  ASSERT_TRUE(quantized.ok() && snapped.ok() && dense.ok());
  std::map<std::string, nlohmann::json> layers;
  for (const auto& l : manifest["layers"]) layers[l["name"].get<std::string>()] = l;
  int checked = 0;
  for (const auto& [name, layer] : quant::QuantizedLayers(*s->registry)) {
    ASSERT_TRUE(layers.count(name)) << name;
    const nlohmann::json& l = layers[name];
    const std::vector<int64_t> shape = l["shape"];
    const int bits = l["bits"];
    auto idx = quant::UnpackIndices(TensorOf(**quantized, name + ".indices"), bits, shape);
    ASSERT_TRUE(idx.ok()) << idx.status();
    at::Tensor want_idx;
    if (auto* v1 = dynamic_cast<quant::QuantLinearV1*>(layer.get())) want_idx = v1->ComputeIndices();
    if (auto* v2 = dynamic_cast<quant::QuantLinearV2*>(layer.get())) want_idx = v2->Indices();
    EXPECT_TRUE(at::equal(*idx, want_idx.to(at::kByte))) << name;
    const at::Tensor lut = TensorOf(**quantized, name + ".lut");
    ASSERT_EQ(lut.scalar_type(), dtype);
    const at::Tensor q = lut.index_select(0, idx->to(at::kLong).reshape({-1})).reshape(shape);
    EXPECT_TRUE(at::equal(q, TensorOf(**snapped, name + ".weight"))) << name;
    // S in float32, rounded once to the export dtype; V1 clamps at 1e-8, V2 does not.
    at::Tensor scale = at::matmul(TensorOf(**quantized, name + ".scale_A").to(at::kFloat),
                                  TensorOf(**quantized, name + ".scale_B").to(at::kFloat))
                           .to(dtype);
    if (l["scale_formula"] == "clamp_min(scale_A @ scale_B, 1e-8)") scale = scale.clamp_min(1e-8);
    const at::Tensor w = q * scale;
    const at::Tensor want = layer->EffectiveWeight().to(dtype);
    EXPECT_TRUE(at::equal(w, want)) << name << ": max diff " << (w.to(at::kFloat) - want.to(at::kFloat)).abs().max().item<float>();
    ++checked;
  }
  EXPECT_EQ(checked, 14);  // 2 layers x 7 projections
  // The unquantized tensors, as stored, in the export dtype.
  const at::Tensor embed = TensorOf(**dense, "model.embed_tokens.weight");
  EXPECT_TRUE(at::equal(embed, s->model->named_parameters()["model.embed_tokens.weight"].to(dtype)));
  EXPECT_FALSE((*dense)->Get("model.layers.0.mlp.up_proj.weight").ok());  // quantized: not dense
}

TEST(ExportAnemll, V1LutSnapReMaterialisesExactly) {
  const std::string ckpt = SnappedCheckpoint("anemll_v1_lut", Snap::kV1Lut);
  const std::string folder = Export(ckpt, "anemll_v1_out", jobs::Dtype::kFp32);
  ExpectExactWeights(ckpt, folder, at::kFloat);
  EXPECT_TRUE(jobs::VerifyAnemllFolder(folder).ok());

  // config.json: the HF config plus the seed's quantization keys.
  const auto config = nlohmann::json::parse(ReadFile(folder + "/config.json"));
  EXPECT_EQ(config["architectures"][0], "Qwen3ForCausalLM");
  EXPECT_EQ(config["torch_dtype"], "float32");
  EXPECT_EQ(config["snapped_mode"], "lut");
  EXPECT_EQ(config["lut_bits"], 4);
  EXPECT_EQ(config["scale_rank"], 4);
  EXPECT_EQ(config["group_size"], 16);
  const auto manifest = nlohmann::json::parse(ReadFile(folder + "/anemll_manifest.json"));
  EXPECT_EQ(manifest["format_version"], 1);
  EXPECT_EQ(manifest["layer_version"], 1);
  EXPECT_EQ(manifest["layers"][0]["bits"], 4);
  EXPECT_EQ(manifest["layers"][0]["layer_version"], 1);
  for (const auto& entry : fs::directory_iterator(fs::path(folder).parent_path())) {
    EXPECT_EQ(entry.path().string().find(".tmp-"), std::string::npos) << entry.path();
  }
}

TEST(ExportAnemll, V2ExportSnapReMaterialisesExactly) {
  const std::string ckpt = SnappedCheckpoint("anemll_v2_export", Snap::kV2Export);
  const std::string folder = Export(ckpt, "anemll_v2_out", jobs::Dtype::kFp32);
  ExpectExactWeights(ckpt, folder, at::kFloat);
  const auto manifest = nlohmann::json::parse(ReadFile(folder + "/anemll_manifest.json"));
  std::set<int> bits;
  for (const auto& l : manifest["layers"]) bits.insert(l["bits"].get<int>());
  EXPECT_EQ(bits, (std::set<int>{2, 4}));  // MLP LUT 4, attention LUT 16
  const auto config = nlohmann::json::parse(ReadFile(folder + "/config.json"));
  EXPECT_EQ(config["lut_bits"], 2);
  EXPECT_EQ(config["attn_lut_bits"], 4);
  EXPECT_EQ(config["scale_rank"], 8);
  EXPECT_EQ(config["attn_scale_rank"], 4);
}

TEST(ExportAnemll, V2AneFp16SnapReMaterialisesExactlyInFp16) {
  const std::string ckpt = SnappedCheckpoint("anemll_v2_ane", Snap::kV2Ane);
  const std::string folder = Export(ckpt, "anemll_v2_ane_out", jobs::Dtype::kFp16);
  ExpectExactWeights(ckpt, folder, at::kHalf);
  EXPECT_EQ(nlohmann::json::parse(ReadFile(folder + "/config.json"))["torch_dtype"], "float16");
}

// Each damage is found by the check the export runs on its own output.
TEST(ExportAnemll, VerifyFailsOnDamagedFolders) {
  const std::string ckpt = SnappedCheckpoint("anemll_damage_ckpt", Snap::kV2Export);
  const std::string folder = Export(ckpt, "anemll_damage_out", jobs::Dtype::kFp16);
  ASSERT_TRUE(jobs::VerifyAnemllFolder(folder).ok());
  auto copy = [&](const std::string& name) {
    const std::string dir = Scratch().File(name);
    fs::copy(folder, dir, fs::copy_options::recursive);
    return dir;
  };
  auto flip_last_byte = [](const std::string& path) {
    std::string bytes = ReadFile(path);
    bytes.back() = static_cast<char>(bytes.back() ^ 0x01);
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  };

  // A flipped bit in a tensor: the file's SHA-256 differs.
  const std::string flipped = copy("anemll_flipped");
  flip_last_byte(flipped + "/quantized.safetensors");
  absl::Status s = jobs::VerifyAnemllFolder(flipped);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "quantized.safetensors: SHA-256 differs")) << s;

  // A snapped weight changed and the manifest's checksums rewritten to match: the layer check
  // (weight == lut[indices]) still finds it.
  const std::string tampered = copy("anemll_tampered");
  const std::string snapped = tampered + "/snapped.safetensors";
  flip_last_byte(snapped);
  auto manifest = nlohmann::json::parse(ReadFile(tampered + "/anemll_manifest.json"));
  auto file = model::SafetensorsFile::Open(snapped);
  ASSERT_TRUE(file.ok());
  for (auto& f : manifest["checksums"]) {
    if (f["name"] != "snapped.safetensors") continue;
    f["sha256"] = *Sha256File(snapped);
    for (auto& [tensor, hex] : f["tensor_sha256"].items()) {
      auto view = (*file)->Get(tensor);
      Sha256 h;
      h.Update(view->data, view->info->nbytes());
      hex = h.FinishHex();
    }
  }
  std::ofstream(tampered + "/anemll_manifest.json", std::ios::trunc) << manifest.dump(2);
  s = jobs::VerifyAnemllFolder(tampered);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "snapped weight != lut[indices]")) << s;

  // A missing file.
  const std::string missing = copy("anemll_missing");
  fs::remove(missing + "/model.safetensors");
  s = jobs::VerifyAnemllFolder(missing);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "file 'model.safetensors' is missing")) << s;
}

TEST(ExportAnemll, SubmitTimeCheck) {
  v1::JobSpec spec;
  spec.mutable_export_()->set_model(Teacher().teacher);
  spec.mutable_export_()->set_checkpoint(Teacher().teacher);
  spec.mutable_export_()->set_format(v1::EXPORT_FORMAT_ANEMLL);
  jobs::SpecCheckContext context;
  EXPECT_TRUE(jobs::ValidateJobSpec(spec, context).ok()) << jobs::ValidateJobSpec(spec, context);
  auto o = jobs::ExportOptions::FromProto(spec.export_());
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->dtype, jobs::Dtype::kFp16);  // auto = fp16 for anemll
  spec.mutable_export_()->set_max_shard_bytes(1 << 20);
  absl::Status s = jobs::ValidateJobSpec(spec, context);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "export.max_shard_bytes applies to format hf only")) << s;
}

}  // namespace
}  // namespace qatd::train
