// LoRA recovery on a snapped Q2 student (issue #19, core/train/lora.h, peft_adapter.h): the
// adapters lower the held-out KD loss, the quantized tensors stay bit-identical, resume is
// exact (dropout included), bf16 adapters halve the optimizer state, the PEFT files round-trip,
// and scripts/gpu/check_peft_adapter.py accepts a LORA job's output.

#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "core/jobs/export_job.h"
#include "core/jobs/job_spec.h"
#include "core/jobs/lora_job.h"
#include "core/jobs/lora_options.h"
#include "core/kd/cache_reader.h"
#include "core/quant/quantize_model.h"
#include "core/train/e2e_trainer.h"
#include "core/train/evaluate.h"
#include "core/train/held_out.h"
#include "core/train/json_file.h"
#include "core/train/lora.h"
#include "core/train/optimizer.h"
#include "core/train/peft_adapter.h"
#include "core/train/student.h"
#include "tests/core/train/train_fixture.h"

namespace qatd::train {
namespace {

quant::TensorMap Clone(const quant::TensorMap& m) {
  quant::TensorMap out;
  for (const auto& [k, v] : m) out[k] = v.detach().clone();
  return out;
}

void ExpectBitIdentical(const quant::TensorMap& a, const quant::TensorMap& b) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [k, v] : a) {
    ASSERT_TRUE(b.count(k)) << k;
    EXPECT_TRUE(v.scalar_type() == b.at(k).scalar_type() && at::equal(v, b.at(k))) << k << " differs";
  }
}

// A snapped Q2 checkpoint of the tiny teacher: V2 Q2_A4 (MLP LUT 4, attention LUT 16),
// freshly quantized (SVD init), indices frozen, snapped for export.
const std::string& SnappedQ2() {
  static const std::string dir = [] {
    const std::string out = Scratch().File("q2_snapped");
    StudentOptions so;
    so.model_dir = Teacher().teacher;
    so.device = "cpu";
    so.dtype = "fp32";
    so.version = 2;
    so.quant_v2 = *quant::QuantConfigV2::FromPreset("Q2_A4");
    so.quant_v2.scale_rank = 4;  // a coarse model: there is something to recover
    so.quant_v2.attn_scale_rank = 4;
    auto s = LoadStudent(so);
    EXPECT_TRUE(s.ok()) << s.status();
    auto snapped = quant::SnapAllV2ForExport(*s->registry);
    EXPECT_TRUE(snapped.ok()) << snapped.status();
    s->snapped_mode = "v2_export";
    EXPECT_TRUE(SaveStudent(*s, out).ok());
    return out;
  }();
  return dir;
}

Student LoadSnapped() {
  StudentOptions so;
  so.model_dir = Teacher().teacher;
  so.device = "cpu";
  so.dtype = "fp32";
  so.checkpoint = SnappedQ2();
  auto s = LoadStudent(so);
  EXPECT_TRUE(s.ok()) << s.status();
  return std::move(*s);
}

E2eOptions LoraE2e(const std::string& out) {
  E2eOptions o;
  o.kd_cache_dir = Teacher().cache;
  o.eval_samples = 12;
  o.batch_size = 8;
  o.max_steps = 24;
  o.logging_steps = 4;
  o.eval_steps = 8;
  o.hard_full_weight = 0;
  o.lr = 3e-3;
  o.output_dir = out;
  o.seed = 3;
  return o;
}

LoraConfig Rank8() {
  LoraConfig c;
  c.rank = 8;
  c.alpha = 16;
  c.seed = 11;
  return c;
}

double HeldOutKd(Student& s) {
  auto reader = kd::KdCacheReader::Open(Teacher().cache);
  EXPECT_TRUE(reader.ok());
  auto splits = HeldOutSplits(**reader, 12);
  EXPECT_TRUE(splits.ok());
  EvalOptions eo;
  eo.max_sequences = 0;
  auto r = Evaluate(*s.model, **reader, splits->held_out, eo);
  EXPECT_TRUE(r.ok()) << r.status();
  return r->kd;
}

// Replaces every quantized projection of `s` by a dense layer holding weight_of(name).
void Densify(Student& s, const std::function<at::Tensor(const std::string&)>& weight_of) {
  for (const auto& [name, layer] : quant::QuantizedLayers(*s.registry)) {
    at::Tensor w = weight_of(name);
    auto dense = std::make_shared<model::DenseLinear>(w.size(1), w.size(0), w.options());
    {
      at::NoGradGuard no_grad;
      dense->weight.copy_(w);
    }
    ASSERT_TRUE(s.registry->ReplaceLinear(name, dense).ok());
  }
}

at::Tensor LogitsOf(Student& s) {
  at::NoGradGuard no_grad;
  at::Tensor ids = at::arange(3, 40, 3, at::kLong).unsqueeze(0);
  return s.model->ForwardLogits(ids).to(at::kFloat);
}

TEST(LoraConfig, ValidateNamesTheField) {
  LoraConfig c;
  EXPECT_TRUE(c.Validate().ok());
  c.rank = 0;
  EXPECT_NE(c.Validate().message().find("rank"), std::string::npos);
  c = LoraConfig();
  c.target_modules = {"q_proj", "lm_head"};
  EXPECT_NE(c.Validate().message().find("target_modules"), std::string::npos);
  c = LoraConfig();
  c.dropout = 1.0;
  EXPECT_NE(c.Validate().message().find("dropout"), std::string::npos);
  c = LoraConfig();
  c.dtype = "fp16";
  EXPECT_NE(c.Validate().message().find("dtype"), std::string::npos);
}

// A LORA spec is checked at submit (core/jobs/job_spec.cc + LoraJobOptions): errors name the field.
TEST(LoraSpec, SubmitTimeValidationNamesTheField) {
  auto error = [](const std::function<void(v1::LoraSpec*)>& edit) {
    v1::JobSpec spec;
    v1::LoraSpec* l = spec.mutable_lora();
    l->set_model(Teacher().teacher);
    l->set_checkpoint(SnappedQ2());
    l->set_kd_cache_dir(Teacher().cache);
    edit(l);
    return std::string(jobs::ValidateJobSpec(spec).message());
  };
  EXPECT_EQ(error([](v1::LoraSpec*) {}), "");
  EXPECT_NE(error([](v1::LoraSpec* l) { l->set_rank(0); }).find("spec.lora.rank"), std::string::npos);
  EXPECT_NE(error([](v1::LoraSpec* l) { l->set_dropout(1.5); }).find("spec.lora.dropout"), std::string::npos);
  EXPECT_NE(error([](v1::LoraSpec* l) { l->add_target_modules("lm_head"); }).find("spec.lora.target_modules"),
            std::string::npos);
  EXPECT_NE(error([](v1::LoraSpec* l) { l->clear_checkpoint(); }).find("spec.lora.checkpoint"), std::string::npos);
  EXPECT_NE(error([](v1::LoraSpec* l) { l->set_adapter_dtype(v1::DTYPE_FP16); }).find("spec.lora.adapter_dtype"),
            std::string::npos);
  EXPECT_NE(error([](v1::LoraSpec* l) { l->set_merged_dtype(v1::DTYPE_FP32); }).find("spec.lora.merged_dtype"),
            std::string::npos);
  // Defaults: rank 16, alpha 2 x rank, all seven projections, fp32 adapters.
  v1::LoraSpec plain;
  plain.set_rank(8);
  auto o = jobs::LoraJobOptions::FromProto(plain);
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->lora.alpha, 16.0);
  EXPECT_EQ(o->lora.target_modules.size(), 7u);
  EXPECT_EQ(o->lora.dtype, "fp32");
}

TEST(Lora, FreshAdaptersDoNotChangeTheModelAndDetachRestoresIt) {
  Student s = LoadSnapped();
  const at::Tensor before = LogitsOf(s);
  const size_t quantized = quant::QuantizedLayers(*s.registry).size();
  LoraConfig c = Rank8();
  c.target_modules = {"q_proj", "v_proj", "down_proj"};
  auto a = LoraAdapters::Attach(s, c);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ((*a)->modules().size(), 3u * s.config.num_hidden_layers);
  EXPECT_TRUE(at::equal(LogitsOf(s), before));  // B = 0
  ASSERT_TRUE((*a)->Detach().ok());
  EXPECT_EQ(quant::QuantizedLayers(*s.registry).size(), quantized);
}

// The acceptance: adapters trained by top-k KD lower the held-out KD of a snapped Q2
// model, and the quantized tensors (LUT, indices, scales) are bit-identical afterwards.
TEST(Lora, AdaptersLowerHeldOutKdOfSnappedQ2AndLeaveQuantizedTensorsBitIdentical) {
  Student s = LoadSnapped();
  const quant::TensorMap before = Clone(quant::QuantState(*s.registry));
  ASSERT_FALSE(before.empty());
  const double snapped_kd = HeldOutKd(s);
  auto a = LoraAdapters::Attach(s, Rank8());
  ASSERT_TRUE(a.ok()) << a.status();
  E2eOptions o = LoraE2e(Scratch().File("lora_train"));
  o.external = a->get();
  QuietReporter rep;
  jobs::CancelToken cancel;
  auto r = TrainE2e(s, o, rep, cancel);
  ASSERT_TRUE(r.ok()) << r.status();
  std::printf("lora r8: snapped held-out kd %.4f -> %.4f (step %lld)\n", r->initial.kd, r->best.kd,
              static_cast<long long>(r->best.step));
  EXPECT_NEAR(r->initial.kd, snapped_kd, 1e-6);
  EXPECT_GT(snapped_kd, 0.05) << "the snapped model is too close to the teacher for a meaningful test";
  EXPECT_LT(r->best.kd, 0.9 * r->initial.kd);
  EXPECT_NEAR(HeldOutKd(s), r->best.kd, 1e-5);  // the student ends with the best adapters
  // best/ is a PEFT adapter directory.
  EXPECT_TRUE(std::filesystem::exists(Scratch().File("lora_train/best/adapter_model.safetensors")));
  EXPECT_TRUE(std::filesystem::exists(Scratch().File("lora_train/resume/adapters.safetensors")));
  ASSERT_TRUE((*a)->Detach().ok());
  ExpectBitIdentical(before, quant::QuantState(*s.registry));
  EXPECT_NEAR(HeldOutKd(s), snapped_kd, 1e-9);
}

// A crash after step 8 and a resume end bit-identical to an uninterrupted run, with dropout on
// (its masks replay from the saved counters) and bf16 adapters (bf16 AdamW moments, no master).
TEST(Lora, ResumeIsExact) {
  LoraConfig c = Rank8();
  c.dropout = 0.1;
  c.dtype = "bf16";
  jobs::CancelToken cancel;
  Student a = LoadSnapped();
  auto la = LoraAdapters::Attach(a, c);
  ASSERT_TRUE(la.ok());
  E2eOptions o = LoraE2e(Scratch().File("lora_resume_a"));
  o.max_steps = 16;
  o.save_steps = 4;
  o.external = la->get();
  QuietReporter rep_a;
  auto ra = TrainE2e(a, o, rep_a, cancel);
  ASSERT_TRUE(ra.ok()) << ra.status();

  o.output_dir = Scratch().File("lora_resume_b");
  {
    Student b = LoadSnapped();
    auto lb = LoraAdapters::Attach(b, c);
    ASSERT_TRUE(lb.ok());
    E2eOptions crash = o;
    crash.external = lb->get();
    crash.after_durable = CrashAfter(8);
    QuietReporter rep;
    auto rb = TrainE2e(b, crash, rep, cancel);
    EXPECT_EQ(rb.status().code(), absl::StatusCode::kAborted) << rb.status();
  }
  Student b = LoadSnapped();  // a new process
  auto lb = LoraAdapters::Attach(b, c);
  ASSERT_TRUE(lb.ok());
  E2eOptions again = o;
  again.external = lb->get();
  again.resume = true;
  QuietReporter rep_b;
  auto rb = TrainE2e(b, again, rep_b, cancel);
  ASSERT_TRUE(rb.ok()) << rb.status();
  EXPECT_TRUE(rb->resumed);
  EXPECT_EQ(rb->steps, 16);
  EXPECT_DOUBLE_EQ(ra->best.kd, rb->best.kd);
  EXPECT_DOUBLE_EQ(ra->last.kd, rb->last.kd);
  ExpectBitIdentical(Clone((*la)->State()), Clone((*lb)->State()));
  auto last_a = quant::ReadTensorMap(Scratch().File("lora_resume_a/resume/adapters.safetensors"));
  auto last_b = quant::ReadTensorMap(Scratch().File("lora_resume_b/resume/adapters.safetensors"));
  ASSERT_TRUE(last_a.ok() && last_b.ok());
  ExpectBitIdentical(last_a->tensors, last_b->tensors);
  EXPECT_GT(last_a->tensors.at("dropout_calls").sum().item<int64_t>(), 0);
  // The optimizer state that resumed: bf16 moments, no fp32 master, bit-identical.
  auto opt_a = quant::ReadTensorMap(Scratch().File("lora_resume_a/resume/optimizer.safetensors"));
  auto opt_b = quant::ReadTensorMap(Scratch().File("lora_resume_b/resume/optimizer.safetensors"));
  ASSERT_TRUE(opt_a.ok() && opt_b.ok()) << opt_a.status() << opt_b.status();
  ExpectBitIdentical(opt_a->tensors, opt_b->tensors);
  for (const auto& [key, t] : opt_a->tensors) {
    EXPECT_EQ(key.find(".master"), std::string::npos) << key;
    if (key != "step") EXPECT_EQ(t.scalar_type(), at::kBFloat16) << key;
  }
  // A resume with other adapter settings is refused, naming the setting.
  Student d = LoadSnapped();
  LoraConfig other = c;
  other.rank = 4;
  auto ld = LoraAdapters::Attach(d, other);
  ASSERT_TRUE(ld.ok());
  E2eOptions mismatch = again;
  mismatch.external = ld->get();
  QuietReporter rep_d;
  auto rd = TrainE2e(d, mismatch, rep_d, cancel);
  EXPECT_EQ(rd.status().code(), absl::StatusCode::kFailedPrecondition) << rd.status();
  EXPECT_NE(rd.status().message().find("external"), std::string::npos) << rd.status();
}

// The PEFT files: adapter_config.json's LoraConfig keys, PEFT's tensor names and shapes, and a
// fresh student with the adapter applied computes what the trained one computed; the merged
// weights (EffectiveWeight, what the 16-bit export writes) compute the same logits.
TEST(Lora, PeftFilesRoundTrip) {
  Student s = LoadSnapped();
  LoraConfig c = Rank8();
  c.target_modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  auto a = LoraAdapters::Attach(s, c);
  ASSERT_TRUE(a.ok());
  {
    // Non-zero B so the adapters change the logits.
    at::NoGradGuard no_grad;
    at::Generator gen = at::detail::createCPUGenerator(5);
    for (auto& [name, p] : (*a)->Parameters()) p.normal_(0, 0.05, gen);
  }
  const at::Tensor trained = LogitsOf(s);
  const std::string dir = Scratch().File("peft_roundtrip");
  ASSERT_TRUE(WritePeftAdapter(**a, dir, s.base_model, {{"note", "test"}}).ok());

  auto cfg = ReadJson(dir + "/adapter_config.json");
  ASSERT_TRUE(cfg.ok());
  EXPECT_EQ((*cfg)["peft_type"].get<std::string>(), "LORA");
  EXPECT_EQ((*cfg)["task_type"].get<std::string>(), "CAUSAL_LM");
  EXPECT_EQ((*cfg)["r"].get<int>(), 8);
  EXPECT_EQ((*cfg)["lora_alpha"].get<double>(), 16.0);
  EXPECT_EQ((*cfg)["bias"].get<std::string>(), "none");
  EXPECT_EQ((*cfg)["target_modules"].size(), 7u);
  EXPECT_EQ((*cfg)["base_model_name_or_path"].get<std::string>(), s.base_model);
  auto file = quant::ReadTensorMap(dir + "/adapter_model.safetensors");
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(file->tensors.size(), 2u * 7 * s.config.num_hidden_layers);
  const std::string q_a = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
  const std::string down_b = "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight";
  ASSERT_TRUE(file->tensors.count(q_a));
  ASSERT_TRUE(file->tensors.count(down_b));
  EXPECT_EQ(file->tensors.at(q_a).sizes(), (std::vector<int64_t>{8, s.config.hidden_size}));
  EXPECT_EQ(file->tensors.at(down_b).sizes(), (std::vector<int64_t>{s.config.hidden_size, 8}));
  EXPECT_EQ(file->tensors.at(q_a).scalar_type(), at::kFloat);

  Student fresh = LoadSnapped();
  auto applied = ApplyPeftAdapter(fresh, dir);
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ((*applied)->config().rank, 8);
  EXPECT_TRUE(at::equal(LogitsOf(fresh), trained));

  // Merged (what the 16-bit export writes): every adapted projection as a dense layer holding
  // LoraLinear::EffectiveWeight(). It computes what the PEFT adapter computes on the
  // materialised base weights (the export's base; a V2 layer's own forward rounds through
  // fp16 and differs from its materialised weight by ~0.2% of the logits, adapters or not).
  Student merged = LoadSnapped();
  Densify(merged, [&](const std::string& name) { return s.registry->GetLinear(name)->EffectiveWeight(); });
  Student peft_on_dense = LoadSnapped();
  Densify(peft_on_dense, [&](const std::string& name) { return peft_on_dense.registry->GetLinear(name)->EffectiveWeight(); });
  auto on_dense = ApplyPeftAdapter(peft_on_dense, dir);
  ASSERT_TRUE(on_dense.ok()) << on_dense.status();
  const at::Tensor expected = LogitsOf(peft_on_dense);
  const double merged_diff = (LogitsOf(merged) - expected).abs().max().item<double>();
  std::printf("merged vs adapters on the dense base: max |logit diff| %.3g (logit range %.3g)\n", merged_diff,
              expected.abs().max().item<double>());
  EXPECT_LT(merged_diff, 1e-4);
  EXPECT_GT((expected - trained).abs().max().item<double>(), 0);  // not trivially the same model

  // A file missing a tensor is refused, naming it.
  quant::TensorMap partial = file->tensors;
  partial.erase(q_a);
  ASSERT_TRUE(quant::WriteTensorMap(dir + "/adapter_model.safetensors", partial).ok());
  Student other = LoadSnapped();
  auto refused = ApplyPeftAdapter(other, dir);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find(q_a), std::string::npos) << refused.status();
  // ... and the student is left without adapters: all 7 projections per layer quantized again.
  EXPECT_EQ(quant::QuantizedLayers(*other.registry).size(), 7u * other.config.num_hidden_layers);
}

// Bytes of everything an AdamW keeps: every tensor of its State() (moments, masters, step).
int64_t AdamStateBytes(const AdamW& adam) {
  int64_t n = 0;
  for (const auto& [key, t] : adam.State()) n += t.numel() * static_cast<int64_t>(t.element_size());
  return n;
}

// The property for --adapter-dtype bf16 (the seed's --dtype bf16): AdamW over bf16
// adapters keeps bf16 moments and no fp32 master, at most 0.55x the state of fp32 adapters;
// a bf16 parameter nobody marked still gets fp32 moments and an fp32 master (QAT training).
TEST(Lora, Bf16AdaptersHalveTheOptimizerState) {
  int64_t bytes[2] = {0, 0};
  for (int i = 0; i < 2; ++i) {
    Student s = LoadSnapped();
    LoraConfig c = Rank8();
    c.dtype = i == 0 ? "fp32" : "bf16";
    auto a = LoraAdapters::Attach(s, c);
    ASSERT_TRUE(a.ok()) << a.status();
    AdamW adam((*a)->Parameters(), {});
    // One step, so that the state is what training holds.
    at::Tensor ids = at::arange(3, 40, 3, at::kLong).unsqueeze(0);
    s.model->ForwardLogits(ids).to(at::kFloat).square().mean().backward();
    adam.Step(1e-3);
    bytes[i] = AdamStateBytes(adam);
    EXPECT_EQ(adam.state_bytes() + 8, bytes[i]);  // + the int64 step
    for (const auto& [key, t] : adam.State()) {
      EXPECT_EQ(key.find(".master"), std::string::npos) << key;
      if (key != "step") EXPECT_EQ(t.scalar_type(), i == 0 ? at::kFloat : at::kBFloat16) << key;
    }
  }
  std::printf("AdamW state over r8 adapters of the tiny model: fp32 %lld bytes, bf16 %lld bytes (%.3fx)\n",
              static_cast<long long>(bytes[0]), static_cast<long long>(bytes[1]),
              static_cast<double>(bytes[1]) / static_cast<double>(bytes[0]));
  EXPECT_LE(static_cast<double>(bytes[1]), 0.55 * static_cast<double>(bytes[0]));

  at::Tensor plain = at::ones({4, 4}, at::kBFloat16).set_requires_grad(true);
  AdamW qat({{"w", plain}}, {});
  EXPECT_EQ(qat.state_bytes(), 3 * 16 * 4);  // fp32 exp_avg, exp_avg_sq and master
  EXPECT_TRUE(qat.State().count("w.master"));
  at::Tensor copy_of_adapter = at::ones({4, 4}, at::kBFloat16);
  SetAdamStateDtype(copy_of_adapter, AdamStateDtype::kParameterDtype);
  EXPECT_EQ(GetAdamStateDtype(copy_of_adapter.clone()), AdamStateDtype::kFp32Master);  // the mark is the tensor's
  EXPECT_EQ(GetAdamStateDtype(copy_of_adapter), AdamStateDtype::kParameterDtype);
}

// bf16 adapters with bf16 AdamW state still recover what the fp32 test recovers from.
TEST(Lora, Bf16AdaptersLowerHeldOutKdOfSnappedQ2) {
  Student s = LoadSnapped();
  const double snapped_kd = HeldOutKd(s);
  LoraConfig c = Rank8();
  c.dtype = "bf16";
  auto a = LoraAdapters::Attach(s, c);
  ASSERT_TRUE(a.ok()) << a.status();
  E2eOptions o = LoraE2e(Scratch().File("lora_train_bf16"));
  o.external = a->get();
  QuietReporter rep;
  jobs::CancelToken cancel;
  auto r = TrainE2e(s, o, rep, cancel);
  ASSERT_TRUE(r.ok()) << r.status();
  std::printf("lora r8 bf16: snapped held-out kd %.4f -> %.4f (step %lld)\n", r->initial.kd, r->best.kd,
              static_cast<long long>(r->best.step));
  EXPECT_NEAR(r->initial.kd, snapped_kd, 1e-6);
  EXPECT_LT(r->best.kd, 0.9 * r->initial.kd);
  auto opt = quant::ReadTensorMap(Scratch().File("lora_train_bf16/resume/optimizer.safetensors"));
  ASSERT_TRUE(opt.ok()) << opt.status();
  for (const auto& [key, t] : opt->tensors) EXPECT_EQ(key.find(".master"), std::string::npos) << key;
}

// The first Python with torch (QATD_TORCH_PYTHON, python3, Debian's python3): the script's
// weight check needs torch; without it the script checks the files only.
const std::string& Python() {
  static const std::string python = [] {
    const char* const candidates[] = {std::getenv("QATD_TORCH_PYTHON"), "python3", QATD_PYTHON3};
    for (const char* c : candidates) {
      if (c == nullptr || *c == '\0') continue;
      if (std::system(absl::StrCat(c, " -c 'import torch' >/dev/null 2>&1").c_str()) == 0) return std::string(c);
    }
    return std::string(QATD_PYTHON3);
  }();
  return python;
}

// Runs check_peft_adapter.py with `args`; returns its exit status and fills `json` with its report.
int CheckPeftAdapter(const std::string& args, nlohmann::json* json) {
  const std::string log = Scratch().File("check_peft_adapter.log");
  const std::string cmd = absl::StrCat(Python(), " -B ", QATD_SOURCE_DIR, "/scripts/gpu/check_peft_adapter.py ", args,
                                       " >", log, " 2>&1");
  const int rc = std::system(cmd.c_str());
  std::ifstream in(log);
  std::stringstream text;
  text << in.rdbuf();
  std::printf("%s\n%s\n", cmd.c_str(), text.str().c_str());
  *json = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// scripts/gpu/check_peft_adapter.py on a LORA job's output (adapter/ + merged/) with the
// snapped checkpoint exported as HF (the un-merged base): PEFT names, shapes and config match
// the merged model, merged = base + alpha/r B A up to bf16 rounding, and (where transformers
// is installed) base + adapter computes the merged model's logits. A lora_alpha that does not
// match the merge, and a target_modules list that misses adapted modules, are refused.
TEST(Lora, CheckPeftAdapterScriptAcceptsTheJobsOutput) {
  const std::string out = Scratch().File("lora_job");
  jobs::LoraJobOptions o;
  o.model = Teacher().teacher;
  o.checkpoint = SnappedQ2();
  o.device = "cpu";
  o.dtype = jobs::Dtype::kFp32;
  o.lora = Rank8();
  o.train = LoraE2e(out);
  o.train.max_steps = 8;
  QuietReporter rep;
  jobs::CancelToken cancel;
  ASSERT_TRUE(jobs::RunLora(o, rep, cancel).ok());
  // The merged export reports its tensors as it writes them; the job's progress still ends at
  // its steps (it showed the export's tensor count).
  EXPECT_EQ(rep.last_done, 8);
  {
    Student s = LoadSnapped();
    jobs::HfFolderOptions fo;
    fo.base_model_dir = Teacher().teacher;
    auto written = jobs::WriteHfFolder(s.model, out + "/base", fo);
    ASSERT_TRUE(written.ok()) << written.status();
  }
  nlohmann::json report;
  ASSERT_EQ(CheckPeftAdapter(absl::StrCat(out, " --base ", out, "/base"), &report), 0);
  ASSERT_TRUE(report.is_object());
  EXPECT_TRUE(report["ok"].get<bool>());
  EXPECT_EQ(report["files"]["modules"].get<int>(), 7 * report["files"]["layers"].get<int>());
  const bool have_torch = report.contains("weights");
  if (have_torch) {
    EXPECT_LE(report["weights"]["worst_error_over_bound"].get<double>(), 1.0);
    EXPECT_GT(report["weights"]["elements_where_the_delta_exceeds_the_bound"].get<int64_t>(), 0)
        << "the adapter is too small for the weight check to see a wrong scaling";
  } else {
    std::printf("no Python with torch: the weight check was skipped\n");
  }

  auto altered = [&](const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
    const std::string dir = Scratch().File(name);
    std::filesystem::create_directories(dir);
    std::filesystem::copy_file(out + "/adapter/adapter_model.safetensors", dir + "/adapter_model.safetensors",
                               std::filesystem::copy_options::overwrite_existing);
    auto cfg = ReadJson(out + "/adapter/adapter_config.json");
    EXPECT_TRUE(cfg.ok());
    edit(*cfg);
    std::ofstream(dir + "/adapter_config.json") << cfg->dump(2);
    return absl::StrCat("--adapter ", dir, " --merged ", out, "/merged --base ", out, "/base");
  };
  EXPECT_EQ(CheckPeftAdapter(altered("no_down_proj", [](nlohmann::json& c) {
                               c["target_modules"] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj"};
                             }), &report), 1);
  EXPECT_NE(report.dump().find("not in target_modules"), std::string::npos) << report.dump();
  if (have_torch) {
    EXPECT_EQ(CheckPeftAdapter(altered("alpha_x2", [](nlohmann::json& c) { c["lora_alpha"] = 32.0; }), &report), 1);
    EXPECT_NE(report.dump().find("rounding bound"), std::string::npos) << report.dump();
  }
}

}  // namespace
}  // namespace qatd::train
