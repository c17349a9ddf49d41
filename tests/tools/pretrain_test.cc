// The built-in demo dataset (tools/demo/demo_data.h) and teacher pretraining (tools/demo/pretrain.h):
// the data is deterministic and reads as Alpaca; a few dozen steps on the tiny Qwen3 lower the
// training loss and the held-out next-token entropy by clear margins; the output is a loadable
// HF directory; cancellation and an existing output leave nothing behind.
#include "tools/demo/pretrain.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/kd/dataset.h"
#include "tools/demo/demo_data.h"
#include "core/model/model_io.h"
#include "core/model/qwen3_config.h"
#include "core/model/tokenizer.h"
#include "gtest/gtest.h"
#include "tests/common/temp_dir.h"

namespace qatd::train {
namespace {

namespace fs = std::filesystem;

const std::string kData = QATD_TEST_DATA;
const std::string kTokenizerDir = kData + "/golden/qwen3-tokenizer";
const std::string kTinyConfig = kData + "/golden/tiny-qwen3/config.json";

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Records what a job reports.
class RecordingReporter : public jobs::Reporter {
 public:
  void Progress(int64_t done, int64_t, const std::string&, double, double) override { last_progress = done; }
  void Metric(const std::string& name, int64_t step, double value) override {
    if (name == "pretrain/loss") losses.push_back(value);
    if (name == "pretrain/eval_entropy") eval_entropy.push_back(value);
    (void)step;
  }
  void Log(jobs::LogLevel, const std::string&) override {}
  void Artifact(const std::string& path, const std::string& kind) override { artifacts.push_back(kind + ":" + path); }

  int64_t last_progress = 0;
  std::vector<double> losses;
  std::vector<double> eval_entropy;
  std::vector<std::string> artifacts;
};

// A random-init tiny Qwen3 (the golden tiny-qwen3 config: H=64, 2 layers, full 151936 vocab,
// tied) in HF layout with the real Qwen3 tokenizer, as `qat-model init` writes it.
void WriteTinyModel(const std::string& dir) {
  auto config = model::Qwen3Config::FromFile(kTinyConfig);
  ASSERT_TRUE(config.ok()) << config.status();
  config->torch_dtype = "float32";
  auto m = model::InitTinyQwen3(*config, {.seed = 0});
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE(model::SaveQwen3(*m, *config, dir).ok());
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(fs::path(kTokenizerDir) / f, fs::path(dir) / f);
}

TEST(DemoDataTest, DeterministicAndVaried) {
  auto a = kd::GenerateDemoRecords(500, 3);
  auto b = kd::GenerateDemoRecords(500, 3);
  auto c = kd::GenerateDemoRecords(500, 4);
  ASSERT_EQ(a.size(), 500u);
  EXPECT_EQ(kd::DemoRecordsToAlpacaJson(a), kd::DemoRecordsToAlpacaJson(b));
  EXPECT_NE(kd::DemoRecordsToAlpacaJson(a), kd::DemoRecordsToAlpacaJson(c));
  // Varied: many distinct instructions, every record has an answer, some use the input field.
  std::set<std::string> instructions;
  int with_input = 0;
  for (const auto& r : a) {
    instructions.insert(r.instruction);
    EXPECT_FALSE(r.output.empty());
    with_input += !r.input.empty();
    EXPECT_EQ(kd::DemoRecordText(r).find('\n'), std::string::npos);
  }
  EXPECT_GT(instructions.size(), 250u);
  EXPECT_GT(with_input, 20);
  // A pattern the file comment promises, spelled exactly.
  bool saw_plus = false;
  for (const auto& r : a)
    if (r.instruction.rfind("What is ", 0) == 0 && r.instruction.find(" plus ") != std::string::npos)
      saw_plus = r.output.find(" is ") != std::string::npos && r.output.back() == '.';
  EXPECT_TRUE(saw_plus);
}

TEST(DemoDataTest, WritesAlpacaJsonAndTextThatTheKdReaderParses) {
  testing::TempDir tmp;
  const std::string json_path = tmp.File("demo.json"), txt_path = tmp.File("demo.txt");
  ASSERT_TRUE(kd::WriteDemoDataset(json_path, 300, 9).ok());
  const std::string first = Slurp(json_path);
  ASSERT_TRUE(kd::WriteDemoDataset(json_path, 300, 9).ok());
  EXPECT_EQ(Slurp(json_path), first) << "same (n, seed) must give the same bytes";
  EXPECT_FALSE(fs::exists(json_path + ".tmp"));

  auto ds = kd::ReadDataset({json_path, kd::DatasetFormat::kAlpacaChat});
  ASSERT_TRUE(ds.ok()) << ds.status();
  ASSERT_EQ(ds->records.size(), 300u);
  EXPECT_TRUE(ds->bad_records.empty());
  const auto records = kd::GenerateDemoRecords(300, 9);
  ASSERT_EQ(ds->records[0].messages.size(), 2u);
  EXPECT_EQ(ds->records[0].messages[0].role, "user");
  EXPECT_EQ(ds->records[0].messages[1].content, records[0].output);

  ASSERT_TRUE(kd::WriteDemoDataset(txt_path, 300, 9).ok());
  auto text = kd::ReadDataset({txt_path, kd::DatasetFormat::kPlain});
  ASSERT_TRUE(text.ok()) << text.status();
  ASSERT_EQ(text->records.size(), 300u);
  EXPECT_EQ(text->records[5].text, kd::DemoRecordText(records[5]));
}

TEST(DemoDataTest, RejectsBadCount) {
  testing::TempDir tmp;
  absl::Status s = kd::WriteDemoDataset(tmp.File("x.json"), 0, 0);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("n (records)"), std::string_view::npos) << s;
  EXPECT_FALSE(fs::exists(tmp.File("x.json")));
}

TEST(PretrainOptionsTest, ValidateNamesTheField) {
  PretrainOptions o;
  o.model_dir = "m";
  o.output_dir = "o";
  o.dataset = "d";
  EXPECT_TRUE(o.Validate().ok());
  auto expect_bad = [&](PretrainOptions bad, const std::string& field) {
    absl::Status s = bad.Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_NE(s.message().find(field), std::string_view::npos) << s;
  };
  PretrainOptions b = o;
  b.steps = 0;
  expect_bad(b, "steps");
  b = o;
  b.seq_len = 1;
  expect_bad(b, "seq_len");
  b = o;
  b.lr = -1;
  expect_bad(b, "lr");
  b = o;
  b.holdout_fraction = 0.9;
  expect_bad(b, "holdout_fraction");
  b = o;
  b.format = "csv";
  EXPECT_FALSE(b.Validate().ok());
}

// Inputs shared by the tests below, and one pretraining run (the expensive part) made by the
// first test that needs it (ctest runs every test in its own process).
class PretrainRunTest : public ::testing::Test {
 protected:
  static constexpr int64_t kSteps = 60;

  static void SetUpTestSuite() {
    tmp_ = new testing::TempDir();
    in_dir_ = tmp_->File("tiny");
    out_dir_ = tmp_->File("out/teacher");
    fs::create_directories(in_dir_);
    WriteTinyModel(in_dir_);
    data_ = tmp_->File("demo.json");
    ASSERT_TRUE(kd::WriteDemoDataset(data_, 800, 1).ok());
  }
  static void Run() {
    if (status_ != nullptr) return;
    PretrainOptions o = Options();
    jobs::CancelToken cancel;
    reporter_ = new RecordingReporter();
    status_ = new absl::Status(Pretrain(o, *reporter_, cancel, &summary_));
  }
  void SetUp() override { ASSERT_NE(tmp_, nullptr); }
  static void TearDownTestSuite() {
    delete status_;
    delete reporter_;
    delete tmp_;
  }
  static PretrainOptions Options() {
    PretrainOptions o;
    o.model_dir = in_dir_;
    o.output_dir = out_dir_;
    o.dataset = data_;
    o.steps = kSteps;
    o.batch_size = 8;
    o.seq_len = 64;
    o.warmup_steps = 5;
    o.eval_blocks = 8;
    o.eval_every = 30;
    o.seed = 5;
    return o;
  }

  static testing::TempDir* tmp_;
  static std::string in_dir_, out_dir_, data_;
  static RecordingReporter* reporter_;
  static absl::Status* status_;
  static PretrainSummary summary_;
};
testing::TempDir* PretrainRunTest::tmp_ = nullptr;
std::string PretrainRunTest::in_dir_, PretrainRunTest::out_dir_, PretrainRunTest::data_;
RecordingReporter* PretrainRunTest::reporter_ = nullptr;
absl::Status* PretrainRunTest::status_ = nullptr;
PretrainSummary PretrainRunTest::summary_;

TEST_F(PretrainRunTest, LowersTrainingLossByAClearMargin) {
  Run();
  ASSERT_TRUE(status_->ok()) << *status_;
  EXPECT_EQ(summary_.steps, kSteps);
  ASSERT_EQ(reporter_->losses.size(), static_cast<size_t>(kSteps));
  EXPECT_EQ(reporter_->last_progress, kSteps);
  // Random init: ~ln(151936) = 11.9 nats at the first step. 60 steps take the mean of the
  // last 10 far below the mean of the first 10 (seen: 10.6 -> 2.0).
  EXPECT_GT(reporter_->losses.front(), 11.0);
  EXPECT_LT(summary_.last_loss, summary_.first_loss - 5.0);
  EXPECT_LT(summary_.last_loss, 4.0);
  EXPECT_GT(summary_.active_vocab, 100);
  EXPECT_LT(summary_.active_vocab, 5000);
  // before (step 0), step 30, after
  EXPECT_EQ(reporter_->eval_entropy.size(), 3u);
}

TEST_F(PretrainRunTest, HeldOutDistributionBecomesPeaked) {
  Run();
  ASSERT_TRUE(status_->ok()) << *status_;
  EXPECT_GT(summary_.before.positions, 0);
  EXPECT_GT(summary_.before.entropy, 10.0);  // nearly uniform over 151936 ids (seen: 11.92 -> 2.96)
  EXPECT_LT(summary_.after.entropy, summary_.before.entropy - 6.0);
  EXPECT_LT(summary_.after.cross_entropy, summary_.before.cross_entropy - 6.0);
  EXPECT_GT(summary_.after.top1_prob, 0.3);

  // Independently, on demo text of another seed, through the loaded output directory.
  auto tok = model::Tokenizer::FromFile(out_dir_);
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto heldout_path = tmp_->File("heldout.json");
  ASSERT_TRUE(kd::WriteDemoDataset(heldout_path, 100, 77).ok());
  auto heldout = kd::ReadDataset({heldout_path, kd::DatasetFormat::kAlpacaChat});
  ASSERT_TRUE(heldout.ok());
  auto blocks = PackBlocks(*heldout, *tok, {kd::DatasetFormat::kAlpacaChat, kd::ThinkingMode::kNone}, 64,
                           *tok->eos_token_id(), 0, 6);
  ASSERT_TRUE(blocks.ok()) << blocks.status();
  ASSERT_EQ(blocks->size(0), 6);
  auto before = model::LoadQwen3(in_dir_, {at::kFloat});
  auto after = model::LoadQwen3(out_dir_, {at::kFloat});
  ASSERT_TRUE(before.ok()) << before.status();
  ASSERT_TRUE(after.ok()) << after.status();
  auto sb = MeasureNextToken(before->model, *blocks);
  auto sa = MeasureNextToken(after->model, *blocks);
  ASSERT_TRUE(sb.ok() && sa.ok());
  EXPECT_LT(sa->entropy, sb->entropy - 6.0) << "before " << sb->entropy << " after " << sa->entropy;
  EXPECT_GT(sa->top1_accuracy, 0.3);
}

TEST_F(PretrainRunTest, OutputIsACompleteHfDirectory) {
  Run();
  ASSERT_TRUE(status_->ok()) << *status_;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "pretrain.json"})
    EXPECT_TRUE(fs::exists(fs::path(out_dir_) / f)) << f;
  EXPECT_EQ(Slurp(out_dir_ + "/tokenizer.json"), Slurp(kTokenizerDir + "/tokenizer.json"));
  auto loaded = model::LoadQwen3(out_dir_, {at::kFloat});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->config.vocab_size, 151936);
  EXPECT_TRUE(loaded->config.tie_word_embeddings);
  // Nothing left next to it.
  int entries = 0;
  for (const auto& e : fs::directory_iterator(fs::path(out_dir_).parent_path())) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1);
  ASSERT_EQ(reporter_->artifacts.size(), 1u);
  EXPECT_EQ(reporter_->artifacts[0].rfind("model:", 0), 0u);
}

TEST_F(PretrainRunTest, RefusesAnExistingOutputWithoutOverwrite) {
  PretrainOptions o = Options();
  o.output_dir = tmp_->File("existing");
  fs::create_directories(o.output_dir);
  std::ofstream(o.output_dir + "/keep.txt") << "keep";
  RecordingReporter r;
  jobs::CancelToken cancel;
  absl::Status s = Pretrain(o, r, cancel);
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists) << s;
  EXPECT_NE(s.message().find(o.output_dir), std::string_view::npos) << s;
  EXPECT_TRUE(r.losses.empty());
  EXPECT_EQ(Slurp(o.output_dir + "/keep.txt"), "keep");
}

TEST_F(PretrainRunTest, CancelledRunWritesNothing) {
  PretrainOptions o = Options();
  o.output_dir = tmp_->File("cancelled");
  RecordingReporter r;
  jobs::CancelToken cancel;
  cancel.Cancel();
  absl::Status s = Pretrain(o, r, cancel);
  EXPECT_EQ(s.code(), absl::StatusCode::kCancelled) << s;
  EXPECT_FALSE(fs::exists(o.output_dir));
}

TEST_F(PretrainRunTest, SameSeedSameWeights) {
  PretrainOptions o = Options();
  o.steps = 3;
  o.eval_blocks = 0;
  std::vector<at::Tensor> weights;
  for (const char* name : {"a", "b"}) {
    o.output_dir = tmp_->File(std::string("det-") + name);
    RecordingReporter r;
    jobs::CancelToken cancel;
    ASSERT_TRUE(Pretrain(o, r, cancel).ok());
    auto m = model::LoadQwen3(o.output_dir, {at::kFloat});
    ASSERT_TRUE(m.ok()) << m.status();
    weights.push_back(m->model->model->layers[0]->mlp->gate_proj->EffectiveWeight().clone());
  }
  EXPECT_TRUE(weights[0].equal(weights[1]));
  auto init = model::LoadQwen3(in_dir_, {at::kFloat});
  ASSERT_TRUE(init.ok());
  EXPECT_FALSE(weights[0].equal(init->model->model->layers[0]->mlp->gate_proj->EffectiveWeight()))
      << "training must change the weights";
}

}  // namespace
}  // namespace qatd::train
