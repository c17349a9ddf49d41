// resume/ stays compatible across the trainer refactor (issue #13 item 5): the fixtures under
// testdata/resume_v1/<trainer>/resume are whole resume/ directories written by the trainers
// as they were BEFORE core/train/resume_state existed (commit named in
// testdata/resume_v1/README.md), from a run killed mid-job. Each test kills the same run with
// today's code and checks that
//   1. resume/ holds the same files, and every safetensors file the same tensor names, dtypes,
//      shapes and metadata;
//   2. trainer_state.json has the same keys at every level and the same values (timings aside;
//      floats to a tolerance, so a machine with another BLAS still passes);
//   3. the old resume/, put in place of today's, resumes: the job finishes with the result an
//      uninterrupted run of today's code has.
// QATD_WRITE_RESUME_FIXTURE=<dir> writes the fixtures into <dir> instead (run it only on the
// code whose format is to be pinned).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "core/common/durable_hook.h"
#include "core/quant/quantize_model.h"
#include "core/quant/tensor_io.h"
#include "core/train/e2e_trainer.h"
#include "core/train/lbl_trainer.h"
#include "core/train/student.h"
#include "tests/core/train/train_fixture.h"

namespace qatd::train {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

const std::string kFixture = QATD_RESUME_FIXTURE;
// The fixture's tensors come from this repository's CI machine; another BLAS rounds differently.
constexpr double kTol = 1e-4;

StudentOptions Q2Student() {
  StudentOptions o;
  o.model_dir = Teacher().teacher;
  o.dtype = "fp32";
  o.quant_v1.lut_size = 4;
  o.quant_v1.group_size = 16;
  o.quant_v1.scale_rank = 4;
  o.quant_v1.quantize_attn = true;
  return o;
}

E2eOptions CompatE2e(const std::string& out) {
  E2eOptions o;
  o.kd_cache_dir = Teacher().cache;
  o.eval_samples = 12;
  o.batch_size = 4;
  o.grad_accum = 2;
  o.max_steps = 8;
  o.logging_steps = 2;
  o.eval_steps = 4;
  o.save_steps = 2;
  o.train_weights = o.train_scales = true;
  o.lr = 2e-3;
  o.hard_top1_weight = 0.1;
  o.cosine = true;
  o.warmup_steps = 2;
  o.seed = 3;
  o.output_dir = out;
  return o;
}

LblOptions CompatLbl(const std::string& out) {
  LblOptions o;
  o.kd_cache_dir = Teacher().cache;
  o.eval_samples = 12;
  o.layer_eval_samples = 0;
  o.batch_size = 4;
  o.grad_accum = 2;
  o.steps_per_layer = 3;
  o.logging_steps = 2;
  o.save_steps = 2;
  o.train_weights = o.train_scales = true;
  o.lr = 2e-3;
  o.hard_top1_weight = 0.1;
  o.seed = 3;
  o.output_dir = out;
  return o;
}

// "<file>" for every file of `dir`, then "<file> <tensor> <dtype> <shape>" and
// "<file> meta <key>=<value>" for every safetensors file, sorted.
std::string Manifest(const std::string& dir) {
  std::set<std::string> lines;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    lines.insert(name);
    if (entry.path().extension() != ".safetensors") continue;
    auto loaded = quant::ReadTensorMap(entry.path().string());
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    if (!loaded.ok()) continue;
    for (const auto& [k, v] : loaded->tensors) {
      std::ostringstream shape;
      shape << v.sizes();
      lines.insert(absl::StrCat(name, " ", k, " ", std::string(c10::toString(v.scalar_type())), " ", shape.str()));
    }
    for (const auto& [k, v] : loaded->metadata) lines.insert(absl::StrCat(name, " meta ", k, "=", v));
  }
  std::string out;
  for (const auto& l : lines) absl::StrAppend(&out, l, "\n");
  return out;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool IsTiming(const std::string& where) {
  for (const char* key : {"/elapsed_sec", "/seconds"}) {
    const std::string k = key;
    if (where.size() >= k.size() && where.compare(where.size() - k.size(), k.size(), k) == 0) return true;
  }
  // Log rows: [step, train_loss, eval_loss, lr, elapsed_sec, extra].
  return where.find("/log/") != std::string::npos && where.size() >= 2 && where.compare(where.size() - 2, 2, "/4") == 0;
}

// Same keys at every level, same array lengths, same values (floats to a tolerance).
void ExpectSameJson(const json& old_j, const json& new_j, const std::string& where = "") {
  if (IsTiming(where)) return;
  if (old_j.is_number() && new_j.is_number()) {
    const double a = old_j.get<double>(), b = new_j.get<double>();
    EXPECT_NEAR(a, b, 1e-4 * std::max(1.0, std::fabs(a))) << where;
    EXPECT_EQ(old_j.is_number_integer(), new_j.is_number_integer()) << where;
    return;
  }
  ASSERT_EQ(old_j.type_name(), new_j.type_name()) << where;
  if (old_j.is_object()) {
    std::set<std::string> ka, kb;
    for (const auto& [k, v] : old_j.items()) ka.insert(k);
    for (const auto& [k, v] : new_j.items()) kb.insert(k);
    ASSERT_EQ(ka, kb) << "keys of " << (where.empty() ? "/" : where);
    for (const auto& k : ka) ExpectSameJson(old_j.at(k), new_j.at(k), where + "/" + k);
  } else if (old_j.is_array()) {
    ASSERT_EQ(old_j.size(), new_j.size()) << where;
    for (size_t i = 0; i < old_j.size(); ++i) ExpectSameJson(old_j[i], new_j[i], where + "/" + std::to_string(i));
  } else {
    EXPECT_EQ(old_j, new_j) << where;
  }
}

// Write mode: copies `resume_dir` to the fixture `name` and returns true. Else checks it
// against the fixture (same manifest, same trainer_state.json), then puts the fixture's
// resume/ (written by the old code) in its place and returns false.
bool WriteOrSwapInFixture(const std::string& name, const std::string& resume_dir) {
  const char* write = std::getenv("QATD_WRITE_RESUME_FIXTURE");
  if (write != nullptr && *write != '\0') {
    const std::string dest = absl::StrCat(write, "/", name, "/resume");
    fs::create_directories(dest);
    fs::copy(resume_dir, dest, fs::copy_options::overwrite_existing | fs::copy_options::recursive);
    return true;
  }
  const std::string old_dir = absl::StrCat(kFixture, "/", name, "/resume");
  EXPECT_TRUE(fs::exists(old_dir + "/trainer_state.json")) << old_dir;
  EXPECT_EQ(Manifest(old_dir), Manifest(resume_dir)) << "resume/ files differ from " << old_dir;
  ExpectSameJson(json::parse(ReadFile(old_dir + "/trainer_state.json")),
                 json::parse(ReadFile(resume_dir + "/trainer_state.json")));
  // The old files replace today's; fs::remove on plain files only (no remove_all with LibTorch).
  for (const auto& entry : fs::directory_iterator(resume_dir)) fs::remove(entry.path());
  for (const auto& entry : fs::directory_iterator(old_dir)) {
    fs::copy_file(entry.path(), fs::path(resume_dir) / entry.path().filename());
  }
  return false;
}

TEST(ResumeCompat, E2eResumeDirWrittenBeforeTheRefactorResumes) {
  jobs::CancelToken cancel;
  const std::string out = Scratch().File("compat_e2e");
  {
    auto s = LoadStudent(Q2Student());
    ASSERT_TRUE(s.ok());
    E2eOptions crash = CompatE2e(out);
    crash.after_durable = CrashAfter(4);
    QuietReporter rep;
    EXPECT_EQ(TrainE2e(*s, crash, rep, cancel).status().code(), absl::StatusCode::kAborted);
  }
  if (WriteOrSwapInFixture("e2e", out + "/resume")) GTEST_SKIP() << "fixture written";

  // The old resume/ in place of today's: it resumes and ends as an uninterrupted run does.
  auto b = LoadStudent(Q2Student());
  ASSERT_TRUE(b.ok());
  E2eOptions again = CompatE2e(out);
  again.resume = true;
  QuietReporter rep_b;
  auto rb = TrainE2e(*b, again, rep_b, cancel);
  ASSERT_TRUE(rb.ok()) << rb.status();
  EXPECT_TRUE(rb->resumed);
  EXPECT_EQ(rb->steps, 8);

  auto a = LoadStudent(Q2Student());
  ASSERT_TRUE(a.ok());
  QuietReporter rep_a;
  auto ra = TrainE2e(*a, CompatE2e(Scratch().File("compat_e2e_full")), rep_a, cancel);
  ASSERT_TRUE(ra.ok()) << ra.status();
  EXPECT_NEAR(ra->initial.kd, rb->initial.kd, kTol);
  EXPECT_NEAR(ra->best.kd, rb->best.kd, kTol);
  EXPECT_NEAR(ra->last.kd, rb->last.kd, kTol);
  EXPECT_EQ(ra->best.step, rb->best.step);
}

TEST(ResumeCompat, LayerwiseResumeDirWrittenBeforeTheRefactorResumes) {
  jobs::CancelToken cancel;
  const std::string out = Scratch().File("compat_lbl");
  {
    auto s = LoadStudent(Q2Student());
    ASSERT_TRUE(s.ok());
    LblOptions crash = CompatLbl(out);
    crash.after_durable = CrashAfter(4);  // layer 1 after its first step: optimizer + layer_start saved
    QuietReporter rep;
    EXPECT_EQ(TrainLayerwise(*s, crash, rep, cancel).status().code(), absl::StatusCode::kAborted);
  }
  if (WriteOrSwapInFixture("lbl", out + "/resume")) GTEST_SKIP() << "fixture written";

  auto b = LoadStudent(Q2Student());
  ASSERT_TRUE(b.ok());
  LblOptions again = CompatLbl(out);
  again.resume = true;
  QuietReporter rep_b;
  auto rb = TrainLayerwise(*b, again, rep_b, cancel);
  ASSERT_TRUE(rb.ok()) << rb.status();
  EXPECT_TRUE(rb->resumed);
  EXPECT_EQ(rb->steps, 6);

  auto a = LoadStudent(Q2Student());
  ASSERT_TRUE(a.ok());
  QuietReporter rep_a;
  auto ra = TrainLayerwise(*a, CompatLbl(Scratch().File("compat_lbl_full")), rep_a, cancel);
  ASSERT_TRUE(ra.ok()) << ra.status();
  EXPECT_NEAR(ra->initial_kd, rb->initial_kd, kTol);
  EXPECT_NEAR(ra->final_kd, rb->final_kd, kTol);
  ASSERT_EQ(ra->layers.size(), rb->layers.size());
  for (size_t i = 0; i < ra->layers.size(); ++i) {
    EXPECT_NEAR(ra->layers[i].after, rb->layers[i].after, kTol) << i;
    EXPECT_EQ(ra->layers[i].restored, rb->layers[i].restored) << i;
  }
}

// Default options switch hard_top1/hard_full off, so their window sums are NaN, stored as null;
// a resume point inside a logging window (save_steps 2, logging_steps 10) must still load.
TEST(ResumeCompat, LayerwiseResumesInsideALoggingWindowWithTermsSwitchedOff) {
  jobs::CancelToken cancel;
  LblOptions o = CompatLbl(Scratch().File("window_null"));
  o.hard_top1_weight = 0;
  o.logging_steps = 10;
  {
    auto s = LoadStudent(Q2Student());
    ASSERT_TRUE(s.ok());
    LblOptions crash = o;
    crash.after_durable = CrashAfter(2);  // layer 0 after 2 of its 3 steps, no log row yet
    QuietReporter rep;
    EXPECT_EQ(TrainLayerwise(*s, crash, rep, cancel).status().code(), absl::StatusCode::kAborted);
    const json st = json::parse(ReadFile(o.output_dir + "/resume/trainer_state.json"));
    EXPECT_EQ(st["window"]["count"], 2);
    EXPECT_TRUE(st["window"]["sum"][2].is_null()) << st["window"].dump();
  }
  auto b = LoadStudent(Q2Student());
  ASSERT_TRUE(b.ok());
  LblOptions again = o;
  again.resume = true;
  QuietReporter rep_b;
  auto rb = TrainLayerwise(*b, again, rep_b, cancel);
  ASSERT_TRUE(rb.ok()) << rb.status();
  EXPECT_TRUE(rb->resumed);
  EXPECT_EQ(rb->steps, 6);

  auto a = LoadStudent(Q2Student());
  ASSERT_TRUE(a.ok());
  LblOptions full = o;
  full.output_dir = Scratch().File("window_null_full");
  QuietReporter rep_a;
  auto ra = TrainLayerwise(*a, full, rep_a, cancel);
  ASSERT_TRUE(ra.ok()) << ra.status();
  EXPECT_NEAR(ra->final_kd, rb->final_kd, kTol);
  // The log row at step 3 (layer 0's end) averages steps 1-3, two of them from the restored window.
  auto at_step3 = [](const QuietReporter& r) {
    for (const auto& [name, step, value] : r.metrics) {
      if (name == "loss/total" && step == 3) return value;
    }
    return std::nan("");
  };
  EXPECT_NEAR(at_step3(rep_a), at_step3(rep_b), kTol);
}

// A resume/ whose fingerprint differs is refused with an error naming both settings and the key.
TEST(ResumeCompat, MismatchedFingerprintNamesBothSettings) {
  jobs::CancelToken cancel;
  const std::string out = Scratch().File("compat_fp");
  {
    auto s = LoadStudent(Q2Student());
    ASSERT_TRUE(s.ok());
    E2eOptions crash = CompatE2e(out);
    crash.after_durable = CrashAfter(2);
    QuietReporter rep;
    EXPECT_EQ(TrainE2e(*s, crash, rep, cancel).status().code(), absl::StatusCode::kAborted);
  }
  auto s = LoadStudent(Q2Student());
  ASSERT_TRUE(s.ok());
  E2eOptions again = CompatE2e(out);
  again.resume = true;
  again.seed = 4;
  QuietReporter rep;
  auto r = TrainE2e(*s, again, rep, cancel);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_NE(r.status().message().find("\"seed\":3"), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("\"seed\":4"), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("differs in: seed;"), std::string::npos) << r.status();
}

}  // namespace
}  // namespace qatd::train
