// Layer-by-layer QAT (core/train/lbl_trainer.h) and the LAYERWISE job on a tiny peaked teacher:
// held-out loss falls for scales and for weights, the per-layer table is complete and never
// ends a layer worse, the local loss is real and falls, a killed run resumes to the same state,
// the job writes a checkpoint that reloads, and bad options name their field.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <fstream>
#include <mutex>

#include <nlohmann/json.hpp>

#include "core/common/status_macros.h"
#include "core/jobs/kd_cache_job.h"
#include "core/jobs/layerwise_job.h"
#include "core/kd/cache_reader.h"
#include "core/model/model_io.h"
#include "core/quant/quantize_model.h"
#include "core/quant/tensor_io.h"
#include "core/train/dist_group.h"
#include "core/train/evaluate.h"
#include "core/train/lbl_trainer.h"
#include "core/train/student.h"
#include "tests/common/temp_dir.h"

namespace qatd::train {
namespace {
namespace fs = std::filesystem;

const std::string kData = QATD_TEST_DATA;
const std::string kTokenizer = kData + "/golden/qwen3-tokenizer";

class QuietReporter : public jobs::Reporter {
 public:
  void Progress(int64_t done, int64_t total, const std::string&, double, double) override {
    last_done = done;
    last_total = total;
  }
  void Metric(const std::string& name, int64_t step, double value) override {
    std::lock_guard<std::mutex> l(mu_);
    metrics.emplace_back(name, step, value);
  }
  void Log(jobs::LogLevel, const std::string& m) override {
    std::lock_guard<std::mutex> l(mu_);
    logs.push_back(m);
  }
  void Artifact(const std::string& path, const std::string& kind) override {
    std::lock_guard<std::mutex> l(mu_);
    artifacts.emplace_back(kind, path);
  }
  bool Saw(const std::string& name) const {
    for (const auto& [n, s, v] : metrics) {
      if (n == name) return true;
    }
    return false;
  }
  int64_t last_done = 0, last_total = 0;
  std::vector<std::tuple<std::string, int64_t, double>> metrics;
  std::vector<std::string> logs;
  std::vector<std::pair<std::string, std::string>> artifacts;

 private:
  std::mutex mu_;
};

qatd::testing::TempDir& Scratch() {
  static qatd::testing::TempDir dir;
  return dir;
}

// As in trainer_test.cc: a tiny Qwen3 (2 layers, real vocabulary) drawn with a large
// initializer range so its next-token distributions are peaked, and a KD cache of it.
struct Fixture {
  std::string teacher;
  std::string cache;
};

const Fixture& Teacher() {
  static const Fixture f = [] {
    Fixture out;
    out.teacher = Scratch().File("teacher");
    out.cache = Scratch().File("cache");
    auto config = model::Qwen3Config::FromFile(kData + "/golden/tiny-qwen3/config.json");
    EXPECT_TRUE(config.ok()) << config.status();
    model::InitOptions init;
    init.seed = 7;
    init.initializer_range = 0.25;
    auto m = model::InitTinyQwen3(*config, init);
    EXPECT_TRUE(m.ok()) << m.status();
    model::SaveOptions save;
    save.dtype = at::kFloat;
    EXPECT_TRUE(model::SaveQwen3(*m, *config, out.teacher, save).ok());
    jobs::KdCacheOptions o;
    o.teacher_model = out.teacher;
    o.tokenizer = kTokenizer;
    o.dataset = kData + "/kd/job_alpaca.json";
    o.dataset_format = kd::DatasetFormat::kAlpacaChat;
    o.enable_thinking = kd::ThinkingMode::kBoth;
    o.max_length = 24;
    o.topk = 16;
    o.num_sequences = 72;
    o.batch_size = 8;
    o.shard_size = 32;
    o.device = "cpu";
    o.dtype = jobs::Dtype::kFp32;
    o.output_dir = out.cache;
    QuietReporter rep;
    jobs::CancelToken cancel;
    absl::Status s = jobs::RunKdCache(o, rep, cancel);
    EXPECT_TRUE(s.ok()) << s;
    return out;
  }();
  return f;
}

// QATD_TEST_DEVICE=cuda runs the trainer tests on a GPU (default cpu).
std::string TestDevice() {
  const char* d = std::getenv("QATD_TEST_DEVICE");
  return d != nullptr && *d != '\0' ? d : "cpu";
}

StudentOptions Q2Student() {
  StudentOptions o;
  o.model_dir = Teacher().teacher;
  o.device = TestDevice();
  o.dtype = "fp32";
  o.quant_v1.lut_size = 4;
  o.quant_v1.group_size = 16;
  o.quant_v1.scale_rank = 4;
  o.quant_v1.quantize_attn = true;
  return o;
}

LblOptions BaseLbl(const std::string& out) {
  LblOptions o;
  o.kd_cache_dir = Teacher().cache;
  o.eval_samples = 12;
  o.layer_eval_samples = 0;  // the per-layer numbers use the same 12 sequences
  o.batch_size = 8;
  o.steps_per_layer = 8;
  o.logging_steps = 4;
  o.output_dir = out;
  o.seed = 3;
  return o;
}

quant::TensorMap StateOf(Student& s) {
  quant::TensorMap m;
  for (auto& [k, v] : quant::QuantState(*s.registry)) m[k] = v.clone();
  return m;
}

void ExpectSameState(const quant::TensorMap& a, const quant::TensorMap& b) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [k, v] : a) {
    ASSERT_TRUE(b.count(k)) << k;
    EXPECT_TRUE(at::equal(v, b.at(k))) << k << " differs";
  }
}

void PrintTable(const char* what, const LblResult& r) {
  std::printf("%s: held-out kd %.4f -> %.4f\n", what, r.initial_kd, r.final_kd);
  for (const auto& l : r.layers) {
    std::printf("  layer %lld: %.4f -> %.4f%s, local %.4f -> %.4f, global %.4f -> %.4f\n",
                static_cast<long long>(l.layer), l.before, l.after, l.restored ? " (restored)" : "", l.local_first,
                l.local_last, l.global_first, l.global_last);
  }
}

// Every layer has a row; a layer that is kept never ends worse, and the next layer starts from
// the kept state's loss.
void ExpectConsistentTable(const LblResult& r, int64_t num_layers) {
  ASSERT_EQ(static_cast<int64_t>(r.layers.size()), num_layers);
  double current = r.initial_kd;  // layer_eval_samples = 0: the same sequences
  for (int64_t i = 0; i < num_layers; ++i) {
    const LayerResult& l = r.layers[i];
    EXPECT_EQ(l.layer, i);
    EXPECT_TRUE(std::isfinite(l.before) && std::isfinite(l.after)) << i;
    EXPECT_NEAR(l.before, current, 1e-9) << i;
    EXPECT_NEAR(l.improvement, l.before - l.after, 1e-12) << i;
    if (l.restored) {
      EXPECT_GT(l.after, l.before) << i;
    } else {
      EXPECT_LE(l.after, l.before) << i;
      current = l.after;
    }
  }
  EXPECT_NEAR(r.final_kd, current, 1e-6);
  EXPECT_LE(r.final_kd, r.initial_kd + 1e-9);
}

TEST(LblTrainer, ScalesLowerHeldOutKd) {
  auto s = LoadStudent(Q2Student());
  ASSERT_TRUE(s.ok()) << s.status();
  LblOptions o = BaseLbl(Scratch().File("lbl_scales"));
  o.lr = 5e-3;
  o.steps_per_layer = 16;
  QuietReporter rep;
  jobs::CancelToken cancel;
  auto r = TrainLayerwise(*s, o, rep, cancel);
  ASSERT_TRUE(r.ok()) << r.status();
  PrintTable("LBL scales", *r);
  EXPECT_GT(r->initial_kd, 0.05) << "the teacher is not peaked enough for a meaningful test";
  EXPECT_LT(r->final_kd, 0.95 * r->initial_kd);
  EXPECT_EQ(r->steps, 32);
  ExpectConsistentTable(*r, 2);
  // The student ends in the trained state, frozen.
  auto reader = kd::KdCacheReader::Open(Teacher().cache);
  ASSERT_TRUE(reader.ok());
  auto splits = kd::SplitTrainHeldOut((*reader)->num_sequences(), {.count = 12});
  auto again = Evaluate(*s->model, **reader, splits->held_out, {.max_sequences = 0, .batch_size = 8});
  ASSERT_TRUE(again.ok());
  EXPECT_NEAR(again->kd, r->final_kd, 1e-6);
  for (const auto& p : s->model->parameters()) EXPECT_FALSE(p.requires_grad());
  // Reported series, progress and the csv with its layer column.
  for (const char* m : {"loss/local", "loss/kd", "loss/total", "eval/kd"}) EXPECT_TRUE(rep.Saw(m)) << m;
  EXPECT_EQ(rep.last_done, 32);
  EXPECT_EQ(rep.last_total, 32);
  std::ifstream csv(fs::path(o.output_dir) / "training_log.csv");
  std::string header, first, row;
  std::getline(csv, header);
  std::getline(csv, first);
  std::getline(csv, row);
  EXPECT_EQ(header, "step,train_loss,eval_loss,lr,elapsed_sec,layer");
  EXPECT_EQ(row.substr(0, 2), "4,");
  EXPECT_EQ(row.back(), '0');
}

TEST(LblTrainer, WeightsLowerHeldOutKd) {
  auto s = LoadStudent(Q2Student());
  ASSERT_TRUE(s.ok()) << s.status();
  quant::TensorMap before = StateOf(*s);
  LblOptions o = BaseLbl(Scratch().File("lbl_weights"));
  o.train_scales = false;
  o.train_weights = true;
  o.lr = 1e-2;
  o.hard_top1_weight = 0.1;
  QuietReporter rep;
  jobs::CancelToken cancel;
  auto r = TrainLayerwise(*s, o, rep, cancel);
  ASSERT_TRUE(r.ok()) << r.status();
  PrintTable("LBL weights", *r);
  EXPECT_LT(r->final_kd, 0.9 * r->initial_kd);
  ExpectConsistentTable(*r, 2);
  // Only weights moved (scales stay), in the layers that were kept.
  quant::TensorMap after = StateOf(*s);
  const std::string l0 = "model.layers.0.mlp.up_proj";
  EXPECT_TRUE(at::equal(before.at(l0 + ".scale_A"), after.at(l0 + ".scale_A")));
  if (!r->layers[0].restored) EXPECT_FALSE(at::equal(before.at(l0 + ".weight"), after.at(l0 + ".weight")));
}

TEST(LblTrainer, OnlyTheCurrentLayerAndMlpOnlyMove) {
  auto s = LoadStudent(Q2Student());
  ASSERT_TRUE(s.ok());
  quant::TensorMap before = StateOf(*s);
  LblOptions o = BaseLbl(Scratch().File("lbl_one_layer"));
  o.layers = {1};
  o.train_mlp_only = true;
  o.steps_per_layer = 2;
  o.keep_best_layer = false;  // see what training moved, good or bad
  o.lr = 1e-2;
  QuietReporter rep;
  jobs::CancelToken cancel;
  auto r = TrainLayerwise(*s, o, rep, cancel);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->layers.size(), 1u);
  EXPECT_EQ(r->layers[0].layer, 1);
  quant::TensorMap after = StateOf(*s);
  EXPECT_FALSE(at::equal(before.at("model.layers.1.mlp.down_proj.scale_B"), after.at("model.layers.1.mlp.down_proj.scale_B")));
  for (const auto& [k, v] : before) {
    if (k.rfind("model.layers.1.mlp.", 0) == 0) continue;
    EXPECT_TRUE(at::equal(v, after.at(k))) << k << " moved but is not in layer 1's MLP";
  }
}

TEST(LblTrainer, HarmfulLrRestoresLayersAndNeverEndsWorse) {
  auto s = LoadStudent(Q2Student());
  ASSERT_TRUE(s.ok());
  quant::TensorMap before = StateOf(*s);
  LblOptions o = BaseLbl(Scratch().File("lbl_harm"));
  o.train_scales = false;
  o.train_weights = true;
  o.lr = 0.5;  // wrecks every layer
  o.steps_per_layer = 3;
  QuietReporter rep;
  jobs::CancelToken cancel;
  auto r = TrainLayerwise(*s, o, rep, cancel);
  ASSERT_TRUE(r.ok()) << r.status();
  PrintTable("LBL harmful lr", *r);
  ExpectConsistentTable(*r, 2);
  for (const auto& l : r->layers) EXPECT_TRUE(l.restored) << l.layer;
  EXPECT_DOUBLE_EQ(r->final_kd, r->initial_kd);
  ExpectSameState(before, StateOf(*s));
}

TEST(LblTrainer, LocalLossIsRealAndFalls) {
  // Local loss only: the model runs up to layer i and the scales learn to reproduce the
  // float MLP's output.
  auto s = LoadStudent(Q2Student());
  ASSERT_TRUE(s.ok());
  LblOptions o = BaseLbl(Scratch().File("lbl_local"));
  o.local_weight = 1.0;
  o.global_weight = 0.0;
  o.lr = 1e-2;
  o.steps_per_layer = 12;
  o.keep_best_layer = false;
  QuietReporter rep;
  jobs::CancelToken cancel;
  auto r = TrainLayerwise(*s, o, rep, cancel);
  ASSERT_TRUE(r.ok()) << r.status();
  PrintTable("LBL local only", *r);
  EXPECT_FALSE(rep.Saw("loss/kd"));
  for (const auto& l : r->layers) {
    EXPECT_GT(l.local_first, 1e-3) << l.layer;
    EXPECT_LT(l.local_last, 0.9 * l.local_first) << l.layer;
    EXPECT_TRUE(std::isnan(l.global_first)) << l.layer;
  }

  // The target is the float MLP on the same input: with a 256-entry LUT (and exact scales) the
  // quantized MLP is close to it and the local loss is far smaller than with 4 entries.
  StudentOptions fine = Q2Student();
  fine.quant_v1.lut_size = 256;
  fine.quant_v1.scale_rank = 0;  // full per-group scales: no rank-truncation clipping either
  auto f = LoadStudent(fine);
  ASSERT_TRUE(f.ok());
  LblOptions one = o;
  one.output_dir = Scratch().File("lbl_local_256");
  one.steps_per_layer = 1;
  one.layers = {0};
  auto rf = TrainLayerwise(*f, one, rep, cancel);
  ASSERT_TRUE(rf.ok()) << rf.status();
  std::printf("local loss at the first step of layer 0: lut 4 %.5f, lut 256 %.6f\n", r->layers[0].local_first,
              rf->layers[0].local_first);
  EXPECT_LT(rf->layers[0].local_first, 0.05 * r->layers[0].local_first);
}

TEST(LblTrainer, Bf16StudentTrainsWithFp32Target) {
  // The seed's default dtype: bf16 student, float MLP target computed in fp32.
  StudentOptions bf = Q2Student();
  bf.dtype = "bf16";
  auto s = LoadStudent(bf);
  ASSERT_TRUE(s.ok()) << s.status();
  LblOptions o = BaseLbl(Scratch().File("lbl_bf16"));
  o.steps_per_layer = 4;
  o.lr = 5e-3;
  QuietReporter rep;
  jobs::CancelToken cancel;
  auto r = TrainLayerwise(*s, o, rep, cancel);
  ASSERT_TRUE(r.ok()) << r.status();
  PrintTable("LBL scales bf16", *r);
  ExpectConsistentTable(*r, 2);
  for (const auto& l : r->layers) {
    EXPECT_TRUE(std::isfinite(l.local_first) && l.local_first > 0 && l.local_first < 10) << l.layer;
    EXPECT_TRUE(std::isfinite(l.global_last)) << l.layer;
  }
}

TEST(LblTrainer, ResumeAfterKillMidLayerEqualsUninterrupted) {
  LblOptions o = BaseLbl("");
  o.train_weights = o.train_scales = true;
  o.lr = 2e-3;
  o.steps_per_layer = 3;
  o.save_steps = 2;
  o.grad_accum = 2;
  o.batch_size = 4;
  o.hard_top1_weight = 0.1;
  o.hard_full_weight = 0.01;
  jobs::CancelToken cancel;

  auto a = LoadStudent(Q2Student());
  ASSERT_TRUE(a.ok());
  o.output_dir = Scratch().File("lbl_resume_a");
  QuietReporter rep_a;
  auto ra = TrainLayerwise(*a, o, rep_a, cancel);
  ASSERT_TRUE(ra.ok()) << ra.status();

  o.output_dir = Scratch().File("lbl_resume_b");
  {
    auto b = LoadStudent(Q2Student());
    ASSERT_TRUE(b.ok());
    LblOptions crash = o;
    crash.after_durable = CrashAfter(4);  // layer 1, after its first step (save_steps 2)
    QuietReporter rep;
    auto rb = TrainLayerwise(*b, crash, rep, cancel);
    EXPECT_EQ(rb.status().code(), absl::StatusCode::kAborted) << rb.status();
    auto st = std::ifstream(fs::path(o.output_dir) / "resume" / "trainer_state.json");
    nlohmann::json j = nlohmann::json::parse(st);
    EXPECT_EQ(j["layer"], 1);
    EXPECT_EQ(j["step_in_layer"], 1);
    EXPECT_TRUE(fs::exists(fs::path(o.output_dir) / "resume" / "optimizer.safetensors"));
  }
  auto b = LoadStudent(Q2Student());  // a new process starts from the base model
  ASSERT_TRUE(b.ok());
  LblOptions again = o;
  again.resume = true;
  QuietReporter rep_b;
  auto rb = TrainLayerwise(*b, again, rep_b, cancel);
  ASSERT_TRUE(rb.ok()) << rb.status();
  EXPECT_TRUE(rb->resumed);
  EXPECT_EQ(rb->steps, 6);
  EXPECT_DOUBLE_EQ(ra->initial_kd, rb->initial_kd);
  EXPECT_DOUBLE_EQ(ra->final_kd, rb->final_kd);
  ASSERT_EQ(ra->layers.size(), rb->layers.size());
  for (size_t i = 0; i < ra->layers.size(); ++i) {
    EXPECT_DOUBLE_EQ(ra->layers[i].after, rb->layers[i].after) << i;
    EXPECT_DOUBLE_EQ(ra->layers[i].local_last, rb->layers[i].local_last) << i;
    EXPECT_DOUBLE_EQ(ra->layers[i].global_first, rb->layers[i].global_first) << i;
    EXPECT_EQ(ra->layers[i].restored, rb->layers[i].restored) << i;
  }
  ExpectSameState(StateOf(*a), StateOf(*b));
}

// Data parallel (issue #15): two ranks (threads of this process, a real TCPStore and Gloo) each
// train on half of every global batch; the gradients are summed over the ranks.
TEST(LblTrainer, TwoGlooRanksTrainTheWeightsOfOneProcessWithTheGlobalBatch) {
  LblOptions o = BaseLbl(Scratch().File("lbl_dp_one"));
  // The KD terms only: L_local is normalised over each rank's own rows (lbl_step.h).
  o.local_weight = 0;
  o.global_weight = 1;
  o.hard_top1_weight = 0.1;
  o.lr = 2e-3;
  o.steps_per_layer = 10;  // 20 steps over the 2 layers
  jobs::CancelToken cancel;
  auto one = LoadStudent(Q2Student());
  ASSERT_TRUE(one.ok());
  QuietReporter rep;
  auto r1 = TrainLayerwise(*one, o, rep, cancel);
  ASSERT_TRUE(r1.ok()) << r1.status();

  DistOptions d0;
  d0.world_size = 2;
  d0.device = "cpu";  // Gloo, also where a GPU is visible
  d0.timeout = std::chrono::seconds(120);
  auto g0 = DistGroup::Create(d0);
  ASSERT_TRUE(g0.ok()) << g0.status();
  DistOptions d1 = d0;
  d1.rank = 1;
  d1.store_port = (*g0)->store_port();
  auto g1 = DistGroup::Create(d1);
  ASSERT_TRUE(g1.ok()) << g1.status();
  auto s0 = LoadStudent(Q2Student());
  auto s1 = LoadStudent(Q2Student());
  ASSERT_TRUE(s0.ok() && s1.ok());
  LblOptions o0 = o;
  o0.batch_size = o.batch_size / 2;  // per rank: the same global batch
  o0.output_dir = Scratch().File("lbl_dp_two");
  LblOptions o1 = o0;
  o0.dist = g0->get();
  o1.dist = g1->get();
  QuietReporter rep0, rep1;
  jobs::CancelToken cancel1;
  auto rank1 = std::async(std::launch::async, [&]() -> absl::StatusOr<LblResult> {
    QATD_RETURN_IF_ERROR((*g1)->Connect());
    return TrainLayerwise(*s1, o1, rep1, cancel1);
  });
  absl::Status connected = (*g0)->Connect();
  ASSERT_TRUE(connected.ok()) << connected;
  auto r0 = TrainLayerwise(*s0, o0, rep0, cancel);
  auto r1b = rank1.get();
  ASSERT_TRUE(r0.ok()) << r0.status();
  ASSERT_TRUE(r1b.ok()) << r1b.status();
  EXPECT_EQ(r0->steps, 20);
  // The ranks hold the same weights, bit for bit (the same summed gradient on each).
  ExpectSameState(StateOf(*s0), StateOf(*s1));
  // ... and those of one process: the ranks sum their halves' gradients in another order than
  // one process sums the batch, so they differ at rounding level.
  const quant::TensorMap a = StateOf(*one), b = StateOf(*s0);
  double worst = 0;
  std::string worst_name;
  for (const auto& [k, v] : a) {
    if (!v.is_floating_point()) {
      EXPECT_TRUE(at::equal(v, b.at(k))) << k;
      continue;
    }
    const at::Tensor x = v.to(at::kDouble), y = b.at(k).to(at::kDouble);
    const double norm = x.norm().item<double>();
    const double rel = (x - y).norm().item<double>() / (norm > 0 ? norm : 1.0);
    if (rel > worst) {
      worst = rel;
      worst_name = k;
    }
  }
  std::printf("[ data parallel ] LBL 2 ranks vs 1 process after 20 steps: relative L2 difference %.3g (%s); "
              "held-out kd %.9g vs %.9g\n", worst, worst_name.c_str(), r0->final_kd, r1->final_kd);
  // Measured 1.2e-7 (fp32, CPU); the bound is 1e-6.
  EXPECT_LE(worst, 1e-6) << worst_name;
  EXPECT_NEAR(r0->final_kd, r1->final_kd, 1e-6 * std::fabs(r1->final_kd));
  ASSERT_EQ(r0->layers.size(), r1->layers.size());
  for (size_t i = 0; i < r0->layers.size(); ++i) EXPECT_EQ(r0->layers[i].restored, r1->layers[i].restored) << i;
}

TEST(LblTrainer, CancelWritesAResumeCheckpoint) {
  auto s = LoadStudent(Q2Student());
  ASSERT_TRUE(s.ok());
  LblOptions o = BaseLbl(Scratch().File("lbl_cancel"));
  QuietReporter rep;
  jobs::CancelToken cancel;
  cancel.Cancel();
  auto r = TrainLayerwise(*s, o, rep, cancel);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(fs::exists(fs::path(o.output_dir) / "resume" / "trainer_state.json"));
  EXPECT_TRUE(fs::exists(fs::path(o.output_dir) / "resume" / "layer_start.safetensors"));
}

TEST(LblTrainer, DivergenceStopsWithClearError) {
  auto s = LoadStudent(Q2Student());
  ASSERT_TRUE(s.ok());
  LblOptions o = BaseLbl(Scratch().File("lbl_nan"));
  o.lr = 1e30;
  o.steps_per_layer = 4;
  o.keep_best_layer = false;
  QuietReporter rep;
  jobs::CancelToken cancel;
  auto r = TrainLayerwise(*s, o, rep, cancel);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_NE(r.status().message().find("diverged"), std::string::npos);
}

jobs::LayerwiseOptions BaseJob(const std::string& out) {
  jobs::LayerwiseOptions o;
  o.model = Teacher().teacher;
  o.kd_cache_dir = Teacher().cache;
  o.quant.lut_size = 4;
  o.quant.group_size = 16;
  o.quant.quantize_attn = true;
  o.dtype = jobs::Dtype::kFp32;
  o.device = TestDevice();
  o.batch_size = 8;
  o.steps_per_layer = 3;
  o.eval_samples = 12;
  o.lr = 5e-3;
  o.output_dir = out;
  return o;
}

TEST(LayerwiseJob, WritesACheckpointThatReloads) {
  jobs::LayerwiseOptions o = BaseJob(Scratch().File("job"));
  QuietReporter rep;
  jobs::CancelToken cancel;
  absl::Status st = jobs::RunLayerwise(o, rep, cancel);
  ASSERT_TRUE(st.ok()) << st;
  for (const char* f : {"config.json", "model.safetensors", "model_state_dict.pt", "indices.pt", "quant_config.json",
                        "training_log.csv", "resume/trainer_state.json"}) {
    EXPECT_TRUE(fs::exists(fs::path(o.output_dir) / f)) << f;
  }
  ASSERT_EQ(rep.artifacts.size(), 1u);
  EXPECT_EQ(rep.artifacts[0], std::make_pair(std::string("checkpoint"), o.output_dir));
  EXPECT_TRUE(rep.Saw("eval/kd_initial") && rep.Saw("eval/kd_final"));
  std::ifstream cfg_in(fs::path(o.output_dir) / "config.json");
  nlohmann::json cfg = nlohmann::json::parse(cfg_in);
  EXPECT_EQ(cfg["job"], "layerwise");
  EXPECT_EQ(cfg["result"]["layers"].size(), 2u);
  const double final_kd = cfg["result"]["final_kd"].get<double>();
  std::ifstream qc_in(fs::path(o.output_dir) / "quant_config.json");
  nlohmann::json qc = nlohmann::json::parse(qc_in);
  EXPECT_EQ(qc["mlp"]["lut_size"], 4);
  EXPECT_EQ(qc["mlp"]["group_size"], 16);
  EXPECT_EQ(qc["attn"]["scale_rank"], 4);

  StudentOptions reload;
  reload.model_dir = Teacher().teacher;
  reload.dtype = "fp32";
  reload.device = TestDevice();
  reload.checkpoint = o.output_dir;
  auto r = LoadStudent(reload);
  ASSERT_TRUE(r.ok()) << r.status();
  auto reader = kd::KdCacheReader::Open(Teacher().cache);
  ASSERT_TRUE(reader.ok());
  auto splits = kd::SplitTrainHeldOut((*reader)->num_sequences(), {.count = 12});
  auto e = Evaluate(*r->model, **reader, splits->held_out, {.max_sequences = 0, .batch_size = 8});
  ASSERT_TRUE(e.ok());
  EXPECT_NEAR(e->kd, final_kd, 1e-5);

  // A finished job resumed again keeps its result.
  jobs::LayerwiseOptions again = o;
  again.resume = true;
  QuietReporter rep2;
  st = jobs::RunLayerwise(again, rep2, cancel);
  ASSERT_TRUE(st.ok()) << st;
  std::ifstream cfg2_in(fs::path(o.output_dir) / "config.json");
  nlohmann::json cfg2 = nlohmann::json::parse(cfg2_in);
  EXPECT_DOUBLE_EQ(cfg2["result"]["final_kd"].get<double>(), final_kd);
  EXPECT_TRUE(cfg2["result"]["resumed"].get<bool>());
}

TEST(LayerwiseJob, BadOptionsNameTheField) {
  auto message = [](const jobs::LayerwiseOptions& o) { return std::string(o.Validate().message()); };
  jobs::LayerwiseOptions o = BaseJob("/tmp/x");
  EXPECT_TRUE(o.Validate().ok()) << o.Validate();
  o.batch_size = 0;
  EXPECT_NE(message(o).find("batch_size"), std::string::npos) << message(o);
  o = BaseJob("/tmp/x");
  o.local_weight = o.global_weight = 0;
  EXPECT_NE(message(o).find("local_weight"), std::string::npos) << message(o);
  o = BaseJob("/tmp/x");
  o.device = "tpu";
  EXPECT_NE(message(o).find("device"), std::string::npos) << message(o);
  o = BaseJob("/tmp/x");
  o.train_scales = false;
  EXPECT_NE(message(o).find("train_scales"), std::string::npos) << message(o);
  o = BaseJob("/tmp/x");
  o.layers = {-1};
  EXPECT_NE(message(o).find("layers"), std::string::npos) << message(o);
  o = BaseJob("/tmp/x");
  o.quant.lut_size = 12;
  EXPECT_NE(message(o).find("lut_size"), std::string::npos) << message(o);
  o = BaseJob("/tmp/x");
  o.steps_per_layer = 0;
  o.epochs_per_layer = 0;
  EXPECT_NE(message(o).find("epochs_per_layer"), std::string::npos) << message(o);
  o = BaseJob("/tmp/x");
  o.model.clear();
  EXPECT_NE(message(o).find("model"), std::string::npos) << message(o);

  // Checks that need the model or the cache name their field too.
  QuietReporter rep;
  jobs::CancelToken cancel;
  o = BaseJob(Scratch().File("job_bad_layer"));
  o.layers = {0, 7};
  absl::Status st = jobs::RunLayerwise(o, rep, cancel);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("layers"), std::string::npos) << st;
  o = BaseJob(Scratch().File("job_bad_eval"));
  o.eval_samples = 1000;
  st = jobs::RunLayerwise(o, rep, cancel);
  EXPECT_NE(st.message().find("eval_samples"), std::string::npos) << st;
}

}  // namespace
}  // namespace qatd::train
