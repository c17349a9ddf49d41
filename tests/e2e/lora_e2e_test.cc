// `qat pipeline run q2 --recover-steps N` through the real daemon and the real `qat` CLI on the
// CPU (issue #19): every stage of the q2 recipe on a tiny Qwen3, then the recover stage (LORA)
// on the snapped checkpoint and the infer stage with its adapter. The recover job's held-out KD
// with adapters must be below the snapped model's, its PEFT files and merged folder exist, and
// EVAL with the adapter reproduces the recovered KD. Then `qat lora` on its own (rank 4 on the
// attention projections, bf16 adapters, no merged folder) writes the adapter config it was asked for,
// and LORA on 2 data-parallel ranks matches 1 rank. On the way, a CONVERT job with the qatd
// conversion (GPTQ indices on fitted LUTs, issue #18) runs through the daemon on the pipeline's
// Q4 checkpoint and its cache.
#include <sys/wait.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <utility>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/common/temp_dir.h"
#include "tests/e2e/e2e_support.h"

namespace qatd::e2e {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

// The tiny golden Qwen3 with the Qwen3 tokenizer next to it: a folder the recipe can use as
// teacher, base model and tokenizer.
std::string TinyModelWithTokenizer(const qatd::testing::TempDir& dir) {
  const fs::path out = dir.File("tiny-model");
  fs::create_directories(out);
  for (const char* f : {"config.json", "model.safetensors", "generation_config.json"}) {
    fs::copy_file(fs::path(TinyModelDir()) / f, out / f);
  }
  for (const auto& entry : fs::directory_iterator(TinyTokenizerDir())) {
    if (entry.is_regular_file() && !fs::exists(out / entry.path().filename())) fs::copy_file(entry.path(), out / entry.path().filename());
  }
  return out.string();
}

TEST(LoraE2eTest, PipelineQ2WithRecoverStepsEndsWithAdaptersThatLowerHeldOutKd) {
  qatd::testing::TempDir dir;
  const std::string model = TinyModelWithTokenizer(dir);
  const std::string dataset = dir.File("data.txt");
  {
    std::ofstream out(dataset);
    for (int i = 0; i < 200; ++i) out << "Line " << i << " tells of a river, " << i * 3 << " stones and a small boat.\n";
  }
  DaemonConfig config;
  config.data_dir = dir.File("data");
  config.max_concurrent_jobs = 1;
  Daemon daemon(config);
  ASSERT_TRUE(daemon.Start());
  const std::string log = dir.File("qat-pipeline.out");
  ChildProcess child({QAT_BINARY, "--address", "127.0.0.1:" + std::to_string(daemon.port()), "pipeline", "run", "q2",
                      // The seed's recipe: the qatd conversion (GPTQ, fitted LUTs) leaves this tiny
                      // model at kd ~5e-5, too close to its teacher for adapters to win anything.
                      "--recipe", "seed", "--model", model, "--dataset", dataset, "--dataset-format", "plain", "--max-length", "16",
                      "--top-k", "8", "--num-samples", "48", "--cache-batch-size", "8", "--batch-size", "8",
                      "--eval-samples", "8", "--eval-steps", "10", "--logging-steps", "5", "--scales-steps", "4",
                      "--v2-steps", "4", "--recover-steps", "40", "--recover-rank", "8", "--recover-lr", "3e-3",
                      "--max-new-tokens", "4", "--wait"},
                     log);
  std::optional<int> status = child.Wait(900s);
  ASSERT_TRUE(status.has_value()) << "the pipeline did not finish in 15 minutes";
  const std::string output = ReadFileOrEmpty(log);
  ASSERT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << output << "\n" << daemon.LogTail();

  v1::ListJobsRequest request;
  request.set_include_spec(true);
  request.set_page_size(100);
  v1::ListJobsResponse response;
  ASSERT_TRUE(daemon.Stub()->ListJobs(daemon.Context().get(), request, &response).ok());
  std::optional<v1::Job> recover, infer, scales;  // GetJob: the listing leaves artifacts out
  for (const v1::Job& j : response.jobs()) {
    if (j.stage() == "recover") recover = GetJobFrom(daemon, j.id());
    if (j.stage() == "infer") infer = GetJobFrom(daemon, j.id());
    if (j.stage() == "scales") scales = GetJobFrom(daemon, j.id());
  }
  ASSERT_TRUE(recover.has_value()) << output;
  ASSERT_TRUE(infer.has_value()) << output;
  EXPECT_EQ(recover->state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(infer->state(), v1::JOB_STATE_SUCCEEDED);
  std::string adapter, merged;
  for (const auto& a : recover->artifacts()) {
    if (a.kind() == "adapter") adapter = a.path();
    if (a.kind() == "merged") merged = a.path();
  }
  ASSERT_FALSE(adapter.empty());
  EXPECT_TRUE(fs::exists(fs::path(adapter) / "adapter_config.json"));
  EXPECT_TRUE(fs::exists(fs::path(adapter) / "adapter_model.safetensors"));
  ASSERT_FALSE(merged.empty());
  EXPECT_TRUE(fs::exists(fs::path(merged) / "config.json"));
  EXPECT_EQ(infer->spec().generate().adapter(), adapter);  // the infer stage ran with the adapter

  const nlohmann::json result =
      nlohmann::json::parse(ReadFileOrEmpty((fs::path(adapter).parent_path() / "lora_result.json").string()));
  const double snapped = result["result"]["initial"]["kd"].get<double>();
  const double recovered = result["result"]["best"]["kd"].get<double>();
  std::printf("q2 pipeline on the tiny model: snapped held-out kd %.5f -> with adapters %.5f (step %d)\n", snapped,
              recovered, result["result"]["best"]["step"].get<int>());
  EXPECT_GT(snapped, 0);
  EXPECT_LT(recovered, snapped);
  EXPECT_TRUE(result["result"]["quantized_tensors_unchanged"].get<bool>());

  // EVAL of the snapped checkpoint with the adapter gives the recovered held-out KD.
  v1::JobSpec eval;
  v1::EvalSpec* e = eval.mutable_eval();
  e->set_model(model);
  e->set_checkpoint(recover->spec().lora().checkpoint());
  e->set_adapter(adapter);
  e->set_kd_cache_dir(recover->spec().lora().kd_cache_dir());
  e->set_eval_samples(8);
  e->set_version(v1::QAT_VERSION_V2);
  e->set_dtype(v1::DTYPE_FP32);
  v1::Job done = RunToEnd(daemon, eval, 300s);
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.ShortDebugString();
  ASSERT_TRUE(done.result().metrics().count("eval/kd"));
  EXPECT_NEAR(done.result().metrics().at("eval/kd"), recovered, 1e-4 + 1e-3 * recovered);

  // `qat lora` on its own: rank 4 on the attention projections, bf16 adapters, no merged folder.
  const std::string lora_log = dir.File("qat-lora.out");
  ChildProcess lora({QAT_BINARY, "--address", "127.0.0.1:" + std::to_string(daemon.port()), "lora", "--model", model,
                     "--checkpoint", recover->spec().lora().checkpoint(), "--kd-cache",
                     recover->spec().lora().kd_cache_dir(), "--rank", "4", "--targets", "attn", "--adapter-dtype",
                     "bf16", "--max-steps", "6", "--eval-samples", "8", "--skip-merged", "--wait"},
                    lora_log);
  status = lora.Wait(300s);
  ASSERT_TRUE(status.has_value() && WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << ReadFileOrEmpty(lora_log);
  v1::ListJobsRequest lora_jobs;
  lora_jobs.add_kinds(v1::JOB_KIND_LORA);
  v1::ListJobsResponse listed;
  ASSERT_TRUE(daemon.Stub()->ListJobs(daemon.Context().get(), lora_jobs, &listed).ok());
  ASSERT_EQ(listed.jobs_size(), 2);  // the recover stage and this one (newest first)
  const v1::Job own = GetJobFrom(daemon, listed.jobs(0).id());
  std::string own_adapter;
  for (const auto& a : own.artifacts()) {
    if (a.kind() == "adapter") own_adapter = a.path();
  }
  ASSERT_FALSE(own_adapter.empty());
  const fs::path lora_out = fs::path(own_adapter).parent_path();
  const nlohmann::json adapter_config =
      nlohmann::json::parse(ReadFileOrEmpty((lora_out / "adapter" / "adapter_config.json").string()));
  EXPECT_EQ(adapter_config["r"].get<int>(), 4);
  EXPECT_EQ(adapter_config["lora_alpha"].get<double>(), 8.0);
  EXPECT_EQ(adapter_config["target_modules"].get<std::vector<std::string>>(),
            (std::vector<std::string>{"q_proj", "k_proj", "v_proj", "o_proj"}));
  EXPECT_EQ(adapter_config["qatd"]["dtype"].get<std::string>(), "bf16");
  EXPECT_FALSE(fs::exists(lora_out / "merged"));

  // The qatd conversion (issue #18) through the daemon on the pipeline's Q4 checkpoint: GPTQ
  // indices on fitted LUTs, calibrated on the cache; its layer output error is below nearest's.
  ASSERT_TRUE(scales.has_value());
  std::string q4_checkpoint;
  for (const auto& a : scales->artifacts()) {
    if (a.kind() == "checkpoint") q4_checkpoint = a.path();
  }
  v1::JobSpec convert;
  v1::ConvertSpec* c = convert.mutable_convert();
  c->set_mode(v1::CONVERT_MODE_Q4_TO_Q2);
  c->set_model(model);
  c->set_checkpoint(q4_checkpoint);
  c->set_kd_cache_dir(recover->spec().lora().kd_cache_dir());
  c->set_eval_samples(8);
  c->set_rounding("gptq");
  c->set_lut_init("kmeans");
  c->set_calibration_sequences(16);
  const v1::Job converted = RunToEnd(daemon, convert, 300s);
  ASSERT_EQ(converted.state(), v1::JOB_STATE_SUCCEEDED) << converted.ShortDebugString();
  const auto& cm = converted.result().metrics();
  ASSERT_TRUE(cm.count("convert/gptq_error") && cm.count("convert/gptq_error_nearest"));
  EXPECT_LT(cm.at("convert/gptq_error"), cm.at("convert/gptq_error_nearest"));

  // Data parallel: 2 Gloo ranks with batch 4 each train like 1 rank with batch 8 (the same
  // global batches), so the best held-out KD agrees to fp32 reduction noise.
  auto lora_run = [&](int devices, int batch) {
    v1::JobSpec spec;
    v1::LoraSpec* l = spec.mutable_lora();
    l->set_model(model);
    l->set_checkpoint(recover->spec().lora().checkpoint());
    l->set_kd_cache_dir(recover->spec().lora().kd_cache_dir());
    l->set_rank(4);
    l->set_max_steps(6);
    l->set_batch_size(batch);
    l->set_lr(3e-3);
    l->set_eval_samples(8);
    l->set_eval_steps(3);
    l->set_skip_merged(true);
    l->set_dtype(v1::DTYPE_FP32);
    spec.mutable_resources()->set_device_count(devices);
    v1::Job job = RunToEnd(daemon, spec, 300s);
    EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.ShortDebugString();
    const auto& m = job.result().metrics();
    return std::make_pair(m.count("eval/kd_initial") ? m.at("eval/kd_initial") : -1.0,
                          m.count("eval/kd_best") ? m.at("eval/kd_best") : -1.0);
  };
  const auto [initial, one_rank] = lora_run(1, 8);
  const double two_ranks = lora_run(2, 4).second;
  std::printf("lora data parallel: held-out kd %.9g -> 1 rank %.9g, 2 ranks %.9g\n", initial, one_rank, two_ranks);
  // This model's KD (~1e-4) is a difference of O(1) log-probabilities: fp32 reduction order
  // moves it by ~1e-8 absolute. Training moves it by far more; 2 ranks that trained on other
  // data, or without the all-reduce, would differ by about as much as training moved it.
  ASSERT_LT(one_rank, initial);
  EXPECT_NEAR(two_ranks, one_rank, 0.1 * (initial - one_rank));
}

}  // namespace
}  // namespace qatd::e2e
