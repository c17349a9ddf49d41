// Submit-time checks of what a spec's inputs hold (issue #17): the dataset format, detected
// or given, must fit a sample of the records (item 1); a model must match the KD cache's
// teacher and the checkpoint's base model (item 3); fields the worker would ignore are
// refused (item 5). LibTorch-free: the daemon's own check (core/jobs/job_spec.h).
#include <filesystem>
#include <fstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/common/sha256.h"
#include "core/jobs/job_spec.h"
#include "tests/common/temp_dir.h"

namespace qatd::jobs {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::HasSubstr;

const std::string kGolden = std::string(QATD_TEST_DATA) + "/golden";

class SpecInputsTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& name, const std::string& content) {
    const fs::path path = dir_.path() / name;
    fs::create_directories(path.parent_path());
    std::ofstream(path) << content;
    return path.string();
  }
  // A model folder: the golden Qwen3-0.6B config with `vocab` and `hidden`, and `tokenizer`
  // as its tokenizer.json.
  std::string Model(const std::string& name, int64_t vocab, int64_t hidden = 1024, const std::string& tokenizer = "") {
    std::ifstream in(kGolden + "/qwen3-0.6b/config.json");
    json config = json::parse(in);
    config["vocab_size"] = vocab;
    config["hidden_size"] = hidden;
    Write(name + "/config.json", config.dump());
    if (!tokenizer.empty()) Write(name + "/tokenizer.json", tokenizer);
    return (dir_.path() / name).string();
  }
  std::string Cache(const std::string& name, const json& meta) {
    Write(name + "/meta.json", meta.dump());
    return (dir_.path() / name).string();
  }
  std::string Checkpoint(const std::string& name, const json& config) {
    Write(name + "/config.json", config.dump());
    return (dir_.path() / name).string();
  }
  v1::JobSpec KdCache(const std::string& dataset, v1::DatasetFormat format) {
    v1::JobSpec spec;
    spec.mutable_kd_cache()->set_teacher_model(dir_.path().string());
    spec.mutable_kd_cache()->set_dataset(dataset);
    spec.mutable_kd_cache()->set_dataset_format(format);
    return spec;
  }
  std::string Error(const v1::JobSpec& spec) {
    const absl::Status status = ValidateJobSpec(spec);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    return std::string(status.message());
  }
  qatd::testing::TempDir dir_;
};

// Item 1's reproduction: `qat pipeline run q4 --dataset alpaca.json` sent plain (the old
// default), and all six stages failed in the worker. Auto now detects alpaca_chat; plain fails
// at submit, naming the field and the format the records look like.
TEST_F(SpecInputsTest, TheDatasetFormatIsDetectedOrCheckedAtSubmit) {
  const std::string alpaca =
      Write("alpaca.json", R"([{"instruction": "Say hi", "input": "", "output": "hi"}, {"instruction": "a", "output": "b"}])");
  EXPECT_TRUE(ValidateJobSpec(KdCache(alpaca, v1::DATASET_FORMAT_AUTO)).ok()) << ValidateJobSpec(KdCache(alpaca, v1::DATASET_FORMAT_AUTO));
  EXPECT_TRUE(ValidateJobSpec(KdCache(alpaca, v1::DATASET_FORMAT_ALPACA_CHAT)).ok());
  EXPECT_EQ(Error(KdCache(alpaca, v1::DATASET_FORMAT_PLAIN)),
            "spec.kd_cache.dataset_format plain does not fit the dataset: " + alpaca +
                "[0]: missing string field 'text' (the records look like alpaca_chat)");
  EXPECT_THAT(Error(KdCache(alpaca, v1::DATASET_FORMAT_SHAREGPT)),
              HasSubstr("spec.kd_cache.dataset_format sharegpt does not fit the dataset"));

  const std::string odd = Write("odd.jsonl", "{\"question\": \"a\", \"answer\": \"b\"}\n");
  EXPECT_THAT(Error(KdCache(odd, v1::DATASET_FORMAT_AUTO)),
              HasSubstr("spec.kd_cache.dataset_format cannot be detected from the dataset: " + odd +
                        ":1: a record with the fields (answer, question) fits no format"));
  // The text field a spec names is the one detection and the check look for.
  v1::JobSpec body = KdCache(odd, v1::DATASET_FORMAT_AUTO);
  body.mutable_kd_cache()->set_dataset_text_field("question");
  EXPECT_TRUE(ValidateJobSpec(body).ok()) << ValidateJobSpec(body);

  const std::string text = Write("notes.txt", "one line\n");
  EXPECT_TRUE(ValidateJobSpec(KdCache(text, v1::DATASET_FORMAT_AUTO)).ok());
  EXPECT_THAT(Error(KdCache(text, v1::DATASET_FORMAT_ALPACA_CHAT)), HasSubstr("got a text file"));
  // A pipeline stage whose dataset comes later is not read.
  SpecCheckContext fed;
  fed.fed_fields.insert("dataset");
  EXPECT_TRUE(ValidateJobSpec(KdCache("", v1::DATASET_FORMAT_AUTO), fed).ok());
}

// Item 3: a 151,669-vocab student against a 151,936-vocab cache failed at run time with
// "index out of range in self"; a 160,000-vocab one trained silently on another model's cache.
TEST_F(SpecInputsTest, AStudentMustShareTheCachesVocabularyAndTokenizer) {
  const std::string tokenizer = R"({"model": {"vocab": {}}})";
  std::string sha = *Sha256File(Write("tok/tokenizer.json", tokenizer));
  const std::string cache =
      Cache("cache", {{"teacher_model", "/models/teacher"}, {"vocab_size", 151936}, {"tokenizer_sha256", sha}});
  auto qat = [&](const std::string& model) {
    v1::JobSpec spec;
    spec.mutable_qat()->set_model(model);
    spec.mutable_qat()->set_kd_cache_dir(cache);
    spec.mutable_qat()->set_train_scales(true);
    return spec;
  };
  EXPECT_TRUE(ValidateJobSpec(qat(Model("same", 151936, 1024, tokenizer))).ok());
  for (const int64_t vocab : {151669, 160000}) {
    const std::string model = Model("v" + std::to_string(vocab), vocab, 1024, tokenizer);
    EXPECT_EQ(Error(qat(model)), "spec.qat.kd_cache_dir " + cache +
                                     " was made by teacher /models/teacher with vocab_size 151936 (meta.json), but "
                                     "model " + model + " has vocab_size " + std::to_string(vocab) +
                                     " (config.json): a student must share its teacher's vocabulary");
  }
  const std::string other_tok = Model("other_tok", 151936, 1024, R"({"model": {"vocab": {"a": 0}}})");
  const std::string other_sha = *Sha256File(other_tok + "/tokenizer.json");
  EXPECT_EQ(Error(qat(other_tok)), "spec.qat.kd_cache_dir " + cache +
                                       " was made by teacher /models/teacher with a tokenizer of sha256 " +
                                       sha.substr(0, 12) + "... (meta.json), but model " + other_tok +
                                       " has a tokenizer.json of sha256 " + other_sha.substr(0, 12) +
                                       "...: a student must share its teacher's tokenizer");
  // Every kind that reads a cache with a model checks it.
  v1::JobSpec eval;
  eval.mutable_eval()->set_model(other_tok);
  eval.mutable_eval()->set_kd_cache_dir(cache);
  EXPECT_THAT(Error(eval), HasSubstr("spec.eval.kd_cache_dir " + cache + " was made by teacher"));
  v1::JobSpec lbl;
  lbl.mutable_layerwise()->set_model(Model("lbl", 1000));
  lbl.mutable_layerwise()->set_kd_cache_dir(cache);
  EXPECT_THAT(Error(lbl), HasSubstr("with vocab_size 151936 (meta.json), but model"));
  // A cache filled in by a pipeline stage is checked by the worker, not here.
  SpecCheckContext fed;
  fed.fed_fields.insert("kd_cache_dir");
  v1::JobSpec staged = qat(Model("staged", 1000));
  staged.mutable_qat()->clear_kd_cache_dir();
  EXPECT_TRUE(ValidateJobSpec(staged, fed).ok());
}

// Item 3: `qat infer --model ./other --checkpoint <q4 of tiny>` ran.
TEST_F(SpecInputsTest, ACheckpointMustBeUsedOnItsBaseModelsArchitecture) {
  const std::string base = Model("base", 151936, 64);
  const std::string copy = Model("copy", 151936, 64);
  const std::string other = Model("other", 151936, 1024);
  const std::string ckpt = Checkpoint("ckpt", {{"format", "qatd_checkpoint_v1"}, {"version", 1}, {"base_model", base}});
  auto generate = [&](const std::string& model) {
    v1::JobSpec spec;
    spec.mutable_generate()->set_model(model);
    spec.mutable_generate()->set_checkpoint(ckpt);
    spec.mutable_generate()->set_prompt("hi");
    return spec;
  };
  EXPECT_TRUE(ValidateJobSpec(generate(base)).ok());
  EXPECT_TRUE(ValidateJobSpec(generate(copy)).ok());  // the same architecture elsewhere
  EXPECT_EQ(Error(generate(other)), "spec.generate.checkpoint " + ckpt + " was made on base model " + base +
                                        " (config.json), but model " + other +
                                        " is another architecture: hidden_size 64 vs 1024 (checkpoint's base vs model)");
  v1::JobSpec eval;
  eval.mutable_eval()->set_model(other);
  eval.mutable_eval()->set_checkpoint(ckpt);
  eval.mutable_eval()->set_kd_cache_dir(dir_.path().string());
  EXPECT_THAT(Error(eval), HasSubstr("spec.eval.checkpoint " + ckpt + " was made on base model"));
  v1::JobSpec qat;
  qat.mutable_qat()->set_model(other);
  qat.mutable_qat()->set_skip_training(true);
  qat.mutable_qat()->set_init_state(ckpt);
  EXPECT_THAT(Error(qat), HasSubstr("spec.qat.init_state " + ckpt + " was made on base model"));
  // The base model's path comes from the checkpoint's file: a daemon that may read only some
  // roots does not read it elsewhere (nothing to compare, the worker reports what fails).
  SpecCheckContext confined;
  confined.confine_paths = true;
  confined.allowed_input_roots = {other, ckpt};
  EXPECT_TRUE(ValidateJobSpec(generate(other), confined).ok()) << ValidateJobSpec(generate(other), confined);
  confined.allowed_input_roots.push_back(base);
  EXPECT_THAT(ValidateJobSpec(generate(other), confined).message(), HasSubstr("is another architecture"));
  v1::JobSpec exp;
  exp.mutable_export_()->set_model(other);
  exp.mutable_export_()->set_checkpoint(ckpt);
  EXPECT_THAT(Error(exp), HasSubstr("spec.export.checkpoint"));
}

// Item 5: flags the worker never read are honoured or refused.
TEST_F(SpecInputsTest, IgnoredFieldsAreRefused) {
  const std::string v1_ckpt = Checkpoint("v1", {{"format", "qatd_checkpoint_v1"}, {"version", 1}, {"base_model", ""}});
  const std::string v2_ckpt = Checkpoint("v2", {{"format", "qatd_checkpoint_v1"}, {"version", 2}, {"base_model", ""},
                                                {"lut_bits", 2}, {"attn_lut_bits", 4}, {"scale_rank", 32},
                                                {"attn_scale_rank", 8}});
  const std::string seed_pt = Write("seed/model_state_dict.pt", "not read");
  v1::JobSpec eval;
  eval.mutable_eval()->set_model(dir_.path().string());
  eval.mutable_eval()->set_kd_cache_dir(dir_.path().string());
  eval.mutable_eval()->set_version(v1::QAT_VERSION_V2);
  eval.mutable_eval()->set_checkpoint(v2_ckpt);
  EXPECT_TRUE(ValidateJobSpec(eval).ok()) << ValidateJobSpec(eval);
  eval.mutable_eval()->set_checkpoint(v1_ckpt);
  EXPECT_EQ(Error(eval), "spec.eval.version is V2, but checkpoint " + v1_ckpt + " holds V1 layers (config.json version 1)");
  // EVAL loads a seed .pt file as V2 (its worker refuses one that is not a V2 state_dict);
  // GENERATE loads seed files as V1, so V2 stays refused there.
  eval.mutable_eval()->set_checkpoint(seed_pt);
  EXPECT_TRUE(ValidateJobSpec(eval).ok()) << ValidateJobSpec(eval);
  v1::JobSpec generate;
  generate.mutable_generate()->set_model(dir_.path().string());
  generate.mutable_generate()->set_prompt("hi");
  generate.mutable_generate()->set_version(v1::QAT_VERSION_V2);
  generate.mutable_generate()->set_checkpoint(seed_pt);
  EXPECT_THAT(Error(generate), HasSubstr("spec.generate.version V2 is not supported with " + seed_pt));
  eval.mutable_eval()->clear_checkpoint();
  EXPECT_THAT(Error(eval), HasSubstr("spec.eval.version V2 needs a V2 checkpoint"));

  v1::JobSpec snap;
  snap.mutable_snap()->set_model(dir_.path().string());
  snap.mutable_snap()->set_checkpoint(v2_ckpt);
  snap.mutable_snap()->set_lut_bits(2);
  snap.mutable_snap()->set_scale_rank(32);
  EXPECT_TRUE(ValidateJobSpec(snap).ok()) << ValidateJobSpec(snap);
  snap.mutable_snap()->set_lut_bits(3);
  EXPECT_THAT(Error(snap), HasSubstr("spec.snap.lut_bits is 3, but checkpoint " + v2_ckpt +
                                     " has lut_bits 2 (config.json): the snap keeps the checkpoint's LUTs and ranks"));
  snap.mutable_snap()->clear_lut_bits();
  snap.mutable_snap()->set_attn_scale_rank(16);
  EXPECT_THAT(Error(snap), HasSubstr("spec.snap.attn_scale_rank is 16, but checkpoint"));
  snap.mutable_snap()->clear_attn_scale_rank();
  snap.mutable_snap()->set_checkpoint(seed_pt);
  snap.mutable_snap()->set_attn_lut_bits(8);
  EXPECT_THAT(Error(snap), HasSubstr("has attn_lut_bits 4 (a seed .pt file loads as Q2_A4)"));

  v1::JobSpec qat;
  qat.mutable_qat()->set_model(dir_.path().string());
  qat.mutable_qat()->set_kd_cache_dir(dir_.path().string());
  qat.mutable_qat()->set_train_scales(true);
  qat.mutable_qat()->set_use_fp16(true);
  EXPECT_THAT(Error(qat), HasSubstr("spec.qat.use_fp16 is not supported"));

  v1::JobSpec convert;
  convert.mutable_convert()->set_model(dir_.path().string());
  convert.mutable_convert()->set_checkpoint(v1_ckpt);
  convert.mutable_convert()->set_eval_samples(0);
  EXPECT_EQ(Error(convert), "spec.convert.eval_samples must be in [1, 2147483647], got 0");
  // The conversion's GPTQ calibrates on a KD cache: required at submit, bad words named.
  convert.mutable_convert()->clear_eval_samples();
  convert.mutable_convert()->set_rounding("gptq");
  EXPECT_EQ(Error(convert), "spec.convert.kd_cache_dir is required");
  convert.mutable_convert()->set_rounding("gptqq");
  EXPECT_EQ(Error(convert), "spec.convert.rounding must be 'nearest' or 'gptq', got 'gptqq'");
  convert.mutable_convert()->set_rounding("nearest");
  convert.mutable_convert()->set_lut_init("uniform");
  EXPECT_EQ(Error(convert), "spec.convert.lut_init must be 'values' or 'kmeans', got 'uniform'");
  convert.mutable_convert()->set_lut_init("kmeans");
  convert.mutable_convert()->set_calibration_sequences(0);
  EXPECT_THAT(Error(convert), HasSubstr("spec.convert.calibration_sequences must be in [1, 2147483647], got 0"));
}

}  // namespace
}  // namespace qatd::jobs
