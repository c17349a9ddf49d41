// EVAL with `version` (issue #17 item 5): a seed-style V2 .pt state_dict (model_state_dict.pt
// as qatd writes it for the Python tooling) evaluated as V2 gives the KD loss of the qatd V2
// checkpoint it came from; as V1 (no --v2) it is refused with a message naming --v2, and a V1
// state_dict evaluated as V2 is refused too.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <vector>

#include "absl/strings/match.h"
#include "core/jobs/model_jobs.h"
#include "core/train/seed_state.h"
#include "core/train/student.h"
#include "tests/core/train/train_fixture.h"

namespace qatd::train {
namespace {
namespace fs = std::filesystem;

// A V2 student (MLP LUT 4 / rank 8, attention LUT 16 / rank 4: not a preset, so the seed
// loader must read them from the tensors), indices frozen, scales and magnitudes moved off
// their SVD init; saved as a qatd checkpoint with the seed's model_state_dict.pt next to it.
std::string SaveV2Checkpoint(const std::string& name) {
  StudentOptions so;
  so.model_dir = Teacher().teacher;
  so.dtype = "fp32";
  so.device = "cpu";
  so.version = 2;
  so.quant_v2 = *quant::QuantConfigV2::FromPreset("Q2_A4");
  so.quant_v2.scale_rank = 8;
  so.quant_v2.attn_scale_rank = 4;
  so.quant_v2.quantize_attn = true;
  auto s = LoadStudent(so);
  EXPECT_TRUE(s.ok()) << s.status();
  {
    at::NoGradGuard no_grad;
    at::manual_seed(5);
    for (auto& item : s->model->named_parameters()) {
      if (absl::EndsWith(item.key(), "scale_A") || absl::EndsWith(item.key(), "rank_magnitude")) {
        item.value().mul_(1.0 + 0.2 * at::rand_like(item.value()));
      }
    }
  }
  const std::string dir = Scratch().File(name);
  absl::Status saved = SaveStudent(*s, dir, {}, /*seed_files=*/true);
  EXPECT_TRUE(saved.ok()) << saved;
  return dir;
}

jobs::EvalJobOptions Eval(const std::string& checkpoint, jobs::QatVersion version) {
  jobs::EvalJobOptions e;
  e.model = Teacher().teacher;
  e.checkpoint = checkpoint;
  e.version = version;
  e.kd_cache_dir = Teacher().cache;
  e.eval_samples = 12;
  e.device = "cpu";
  e.dtype = jobs::Dtype::kFp32;
  return e;
}

TEST(EvalSeedV2, SeedV2StateDictEvaluatesLikeItsQatdCheckpoint) {
  const std::string dir = SaveV2Checkpoint("eval_v2_ckpt");
  const std::string pt = (fs::path(dir) / "model_state_dict.pt").string();
  ASSERT_TRUE(fs::exists(pt));
  jobs::CancelToken cancel;

  QuietReporter qatd_rep;
  absl::Status s = jobs::RunEval(Eval(dir, jobs::QatVersion::kV2), qatd_rep, cancel);
  ASSERT_TRUE(s.ok()) << s;
  const double want = qatd_rep.Last("eval/kd");
  ASSERT_TRUE(std::isfinite(want));

  QuietReporter seed_rep;
  s = jobs::RunEval(Eval(pt, jobs::QatVersion::kV2), seed_rep, cancel);
  ASSERT_TRUE(s.ok()) << s;
  std::printf("V2 KD: qatd checkpoint %.6f, seed .pt as V2 %.6f\n", want, seed_rep.Last("eval/kd"));
  EXPECT_DOUBLE_EQ(seed_rep.Last("eval/kd"), want);
  EXPECT_DOUBLE_EQ(seed_rep.Last("eval/top1"), qatd_rep.Last("eval/top1"));
  bool logged = false;
  for (const std::string& line : seed_rep.logs) logged |= absl::StrContains(line, "as V2 layers");
  EXPECT_TRUE(logged);

  // Without --v2 the .pt file is refused, naming the flag, instead of running as V1.
  QuietReporter v1_rep;
  s = jobs::RunEval(Eval(pt, jobs::QatVersion::kV1), v1_rep, cancel);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "is a V2 state_dict")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "--v2")) << s;
  EXPECT_TRUE(std::isnan(v1_rep.Last("eval/kd")));
}

// The seed's own files come from Python's torch.save(model.state_dict()): an OrderedDict in
// torch.save's zip format. Re-saved that way by the host's Python torch (skipped without one).
// LibTorch's torch::jit::pickle_load fails on such a file ("Expected GenericDict but got None":
// it cannot rebuild collections.OrderedDict); the seed readers use qatd's own safe reader
// (core/model/torch_state_dict.h), whose fixture tests need no Python.
TEST(EvalSeedV2, PythonTorchSaveFileEvaluatesAsV2) {
  std::string python;
  std::vector<std::string> candidates = {"python3", "/usr/bin/python3"};
  if (const char* env = std::getenv("QATD_TORCH_PYTHON"); env != nullptr && *env != '\0') candidates.insert(candidates.begin(), env);
  for (const std::string& candidate : candidates) {
    if (std::system((candidate + " -c 'import torch' >/dev/null 2>&1").c_str()) == 0) {
      python = candidate;
      break;
    }
  }
  if (python.empty()) GTEST_SKIP() << "no python3 with torch";
  const std::string dir = SaveV2Checkpoint("eval_v2_python");
  const std::string pt = (fs::path(dir) / "model_state_dict.pt").string();
  const std::string py = Scratch().File("python_seed.pt");
  const std::string cmd = python + " -c \"import torch, collections; sd = torch.load('" + pt +
                          "'); torch.save(collections.OrderedDict(sd), '" + py + "')\"";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  jobs::CancelToken cancel;
  QuietReporter qatd_rep, seed_rep;
  ASSERT_TRUE(jobs::RunEval(Eval(dir, jobs::QatVersion::kV2), qatd_rep, cancel).ok());
  absl::Status s = jobs::RunEval(Eval(py, jobs::QatVersion::kV2), seed_rep, cancel);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_DOUBLE_EQ(seed_rep.Last("eval/kd"), qatd_rep.Last("eval/kd"));
}

TEST(EvalSeedV2, SettingsComeFromTheTensors) {
  const std::string dir = SaveV2Checkpoint("eval_v2_settings");
  auto state = ReadSeedStateDict((fs::path(dir) / "model_state_dict.pt").string());
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_TRUE(HoldsV2Layers(*state));
  auto c = SeedQuantConfigV2(*state, *quant::QuantConfigV2::FromPreset("Q4_A4"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->lut_size, 4);
  EXPECT_EQ(c->scale_rank, 8);
  EXPECT_TRUE(c->quantize_attn);
  EXPECT_EQ(c->attn_lut_size, 16);
  EXPECT_EQ(c->attn_scale_rank, 4);
  EXPECT_FALSE(c->quantize_lm_head);

  // Two MLP layers that disagree are named.
  quant::TensorMap bad = *state;
  bad["model.layers.1.mlp.up_proj.lut"] = at::zeros({16});
  auto b = SeedQuantConfigV2(bad, *quant::QuantConfigV2::FromPreset("Q2_A4"));
  EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(b.status().message(), "model.layers.1.mlp.up_proj")) << b.status();
}

TEST(EvalSeedV2, V1StateDictAsV2IsRefused) {
  StudentOptions so;
  so.model_dir = Teacher().teacher;
  so.dtype = "fp32";
  so.device = "cpu";
  // The default V1 settings: a seed V1 file is loaded with them (its group size decides
  // scale_B's padded width, which the tensors cannot tell apart from a larger rank).
  auto s = LoadStudent(so);
  ASSERT_TRUE(s.ok()) << s.status();
  const std::string dir = Scratch().File("eval_v1_ckpt");
  ASSERT_TRUE(SaveStudent(*s, dir, {}, /*seed_files=*/true).ok());
  const std::string pt = (fs::path(dir) / "model_state_dict.pt").string();
  QuietReporter rep;
  jobs::CancelToken cancel;
  absl::Status st = jobs::RunEval(Eval(pt, jobs::QatVersion::kV2), rep, cancel);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_TRUE(absl::StrContains(st.message(), "is not a V2 state_dict")) << st;
  // As V1 it evaluates, and a V1 qatd checkpoint asked for as V2 is refused by the worker too.
  QuietReporter ok_rep;
  st = jobs::RunEval(Eval(pt, jobs::QatVersion::kV1), ok_rep, cancel);
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_TRUE(std::isfinite(ok_rep.Last("eval/kd")));
  st = jobs::RunEval(Eval(dir, jobs::QatVersion::kV2), rep, cancel);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_TRUE(absl::StrContains(st.message(), "holds V1 layers")) << st;
}

}  // namespace
}  // namespace qatd::train
