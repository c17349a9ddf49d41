// EXPORT through the real daemon and the real `qat` CLI (issue #17): a QAT job quantizes the
// tiny model (skip_training), `qat export --from-job ID --wait` writes its Hugging Face folder
// and `--format anemll` its LUT-palettized folder (SUCCEEDED, artifact "export"), and bad fields
// are refused at submit, naming the field.
#include <sys/wait.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/model/safetensors.h"
#include "tests/common/temp_dir.h"
#include "tests/e2e/e2e_support.h"

namespace qatd::e2e {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

bool Terminal(v1::JobState s) {
  return s == v1::JOB_STATE_SUCCEEDED || s == v1::JOB_STATE_FAILED || s == v1::JOB_STATE_CANCELLED;
}

struct CliRun {
  int exit_code = -1;
  std::string output;
};

TEST(ExportE2eTest, QatExportFromJobWritesAHuggingFaceFolder) {
  const fs::path model = fs::path(QATD_TEST_DATA) / "golden" / "tiny-qwen3";
  qatd::testing::TempDir dir;
  DaemonConfig config;
  config.data_dir = dir.File("data");
  config.max_concurrent_jobs = 1;
  Daemon daemon(config);
  ASSERT_TRUE(daemon.Start());
  int runs = 0;
  auto qat = [&](std::vector<std::string> args) {
    const std::string log = dir.File("qat-" + std::to_string(++runs) + ".out");
    std::vector<std::string> argv = {QAT_BINARY, "--address", "127.0.0.1:" + std::to_string(daemon.port())};
    argv.insert(argv.end(), args.begin(), args.end());
    ChildProcess child(argv, log);
    CliRun run;
    std::optional<int> status = child.Wait(300s);
    if (status && WIFEXITED(*status)) run.exit_code = WEXITSTATUS(*status);
    run.output = ReadFileOrEmpty(log);
    return run;
  };
  auto get = [&](int64_t id) {
    v1::GetJobRequest request;
    request.set_job_id(id);
    v1::Job job;
    EXPECT_TRUE(daemon.Stub()->GetJob(daemon.Context().get(), request, &job).ok());
    return job;
  };

  // 1. A quantized checkpoint: QAT with skip_training (quantize, save).
  v1::JobSpec spec;
  v1::QatSpec* q = spec.mutable_qat();
  q->set_model(model.string());
  q->set_skip_training(true);
  q->set_dtype(v1::DTYPE_FP32);
  q->mutable_quant()->set_lut_size(4);
  q->mutable_quant()->set_group_size(16);
  q->mutable_quant()->set_quantize_attn(true);
  v1::SubmitJobRequest request;
  *request.mutable_spec() = spec;
  v1::Job qat_job;
  ASSERT_TRUE(daemon.Stub()->SubmitJob(daemon.Context().get(), request, &qat_job).ok());
  v1::Job job;
  ASSERT_TRUE(PollUntil([&] { return Terminal((job = get(qat_job.id())).state()); }, 300s));
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.error().message();

  // 2. Bad fields are refused at submit, naming the field (exit 2: a usage error).
  CliRun sharded = qat({"export", "--from-job", std::to_string(qat_job.id()), "--format", "anemll",
                        "--max-shard-bytes", "1000000"});
  EXPECT_EQ(sharded.exit_code, 2) << sharded.output;
  EXPECT_NE(sharded.output.find("export.max_shard_bytes applies to format hf only"), std::string::npos) << sharded.output;
  CliRun no_checkpoint = qat({"export", "--model", model.string()});
  EXPECT_EQ(no_checkpoint.exit_code, 2) << no_checkpoint.output;
  EXPECT_NE(no_checkpoint.output.find("export.checkpoint is required"), std::string::npos) << no_checkpoint.output;

  // 3. qat export --from-job: the newest checkpoint of the QAT job, on the model its spec names.
  CliRun run = qat({"export", "--from-job", std::to_string(qat_job.id()), "--dtype", "fp16", "--wait"});
  ASSERT_EQ(run.exit_code, 0) << run.output << daemon.LogTail();
  std::smatch m;
  ASSERT_TRUE(std::regex_search(run.output, m, std::regex("submitted job ([0-9]+)"))) << run.output;
  const v1::Job exported = get(std::stoll(m[1].str()));
  EXPECT_EQ(exported.state(), v1::JOB_STATE_SUCCEEDED) << exported.error().message();
  EXPECT_EQ(exported.kind(), v1::JOB_KIND_EXPORT);
  std::string folder;
  for (const v1::Artifact& a : exported.artifacts()) {
    if (a.kind() == "export") folder = a.path();
  }
  ASSERT_FALSE(folder.empty()) << exported.ShortDebugString();
  EXPECT_EQ(fs::path(folder).filename(), "hf");
  std::ifstream in(folder + "/config.json");
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(nlohmann::json::parse(ss.str())["torch_dtype"], "float16");
  EXPECT_TRUE(fs::exists(folder + "/generation_config.json"));
  auto weights = model::SafetensorsFile::Open(folder + "/model.safetensors");
  ASSERT_TRUE(weights.ok()) << weights.status();
  const model::TensorInfo* gate = (*weights)->Find("model.layers.1.mlp.gate_proj.weight");
  ASSERT_NE(gate, nullptr);
  EXPECT_EQ(gate->dtype, model::DType::kF16);
  EXPECT_EQ(gate->shape, (std::vector<int64_t>{192, 64}));
  EXPECT_EQ((*weights)->Find("model.layers.1.mlp.gate_proj.scale_A"), nullptr);  // dense, HF names only
  EXPECT_TRUE(fs::exists(fs::path(folder).parent_path() / "reference_logits.safetensors"));

  // 4. --format anemll: packed indices, LUTs, scales, snapped weights, manifest (fp16 default).
  CliRun anemll = qat({"export", "--from-job", std::to_string(qat_job.id()), "--format", "anemll", "--wait"});
  ASSERT_EQ(anemll.exit_code, 0) << anemll.output << daemon.LogTail();
  ASSERT_TRUE(std::regex_search(anemll.output, m, std::regex("submitted job ([0-9]+)"))) << anemll.output;
  const v1::Job palettized = get(std::stoll(m[1].str()));
  EXPECT_EQ(palettized.state(), v1::JOB_STATE_SUCCEEDED) << palettized.error().message();
  std::string anemll_dir;
  for (const v1::Artifact& a : palettized.artifacts()) {
    if (a.kind() == "export") anemll_dir = a.path();
  }
  ASSERT_EQ(fs::path(anemll_dir).filename(), "anemll") << palettized.ShortDebugString();
  std::ifstream manifest_in(anemll_dir + "/anemll_manifest.json");
  std::stringstream manifest_text;
  manifest_text << manifest_in.rdbuf();
  const auto manifest = nlohmann::json::parse(manifest_text.str());
  EXPECT_EQ(manifest["format_version"], 1);
  EXPECT_EQ(manifest["dtype"], "float16");
  EXPECT_EQ(manifest["layers"].size(), 14u);
  auto packed = model::SafetensorsFile::Open(anemll_dir + "/quantized.safetensors");
  ASSERT_TRUE(packed.ok()) << packed.status();
  const model::TensorInfo* indices = (*packed)->Find("model.layers.1.mlp.gate_proj.indices");
  ASSERT_NE(indices, nullptr);
  EXPECT_EQ(indices->dtype, model::DType::kU8);
  EXPECT_EQ(indices->shape, (std::vector<int64_t>{192 * 64 * 2 / 8}));  // LUT 4: 2 bits per index
  EXPECT_NE((*packed)->Find("model.layers.1.mlp.gate_proj.scale_A"), nullptr);
  EXPECT_TRUE(fs::exists(anemll_dir + "/snapped.safetensors"));
  EXPECT_TRUE(fs::exists(anemll_dir + "/model.safetensors"));
}

}  // namespace
}  // namespace qatd::e2e
