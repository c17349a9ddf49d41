// The teacher pass on tiny-qwen3 (chunked top-K equals top-K of the full logits; random
// negatives), and the KD_CACHE job end to end: content, resume after a simulated crash or
// a cancel gives the same files as an uninterrupted run, option validation.

#include <ATen/ATen.h>
#include "tests/core/kd/kd_test_dirs.h"
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <atomic>
#include <cstring>
#include <map>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/cuda/fused_ops.h"
#include "core/jobs/kd_cache_job.h"
#include "core/kd/cache_format.h"
#include "core/kd/cache_reader.h"
#include "core/kd/dataset.h"
#include "core/kd/sample_stream.h"
#include "core/kd/teacher.h"
#include "core/model/model_io.h"
#include "core/model/safetensors.h"
#include "core/model/tokenizer.h"

namespace qatd::kd {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

const std::string kData = QATD_TEST_DATA;
const std::string kTiny = kData + "/golden/tiny-qwen3";
const std::string kTokenizer = kData + "/golden/qwen3-tokenizer";

using testdirs::FreshDir;

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

model::Qwen3Model& TinyModel(at::ScalarType dtype) {
  static std::map<at::ScalarType, model::Qwen3Model> models;
  auto it = models.find(dtype);
  if (it == models.end()) {
    auto loaded = model::LoadQwen3(kTiny, {dtype, at::kCPU});
    if (!loaded.ok()) {
      ADD_FAILURE() << loaded.status();
      std::abort();
    }
    it = models.emplace(dtype, loaded->model).first;
  }
  return it->second;
}

at::Tensor RandomIds(int64_t b, int64_t l, uint64_t seed) {
  std::mt19937_64 g(seed);
  at::Tensor ids = at::empty({b, l}, at::TensorOptions().dtype(at::kInt));
  for (int64_t i = 0; i < b * l; ++i) ids.data_ptr<int32_t>()[i] = static_cast<int32_t>(g() % 151000);
  return ids;
}

TEST(TeacherTest, ChunkedTopKEqualsTopKOfTheFullLogits) {
  torch::NoGradGuard no_grad;
  auto& m = TinyModel(at::kFloat);
  const at::Tensor ids = RandomIds(3, 10, 1);
  const at::Tensor hidden = m->Forward(ids);
  const at::Tensor full = m->Logits(hidden).narrow(1, 0, 9);  // [3, 9, V] fp32
  const auto [want_val, want_idx] = at::topk(full, 16, -1);
  const LogitsFn logits = [&](const at::Tensor& x) { return m->Logits(x); };
  TeacherOptions o;
  o.top_k = 16;
  o.chunk_rows = 0;
  const TeacherTopK whole = TopKFromHidden(hidden, logits, o, 0);
  o.chunk_rows = 5;  // 27 rows in chunks of 5: a ragged last chunk
  const TeacherTopK chunked = TopKFromHidden(hidden, logits, o, 0);
  ASSERT_EQ(ResolveTopKBlock(o.topk_block, 151936, 16), 64);  // the prefilter is on by default
  o.topk_block = 1;                                          // plain at::topk
  const TeacherTopK plain = TopKFromHidden(hidden, logits, o, 0);
  for (const TeacherTopK* t : {&whole, &chunked, &plain}) {
    EXPECT_EQ(t->topk_idx.sizes(), (std::vector<int64_t>{3, 9, 16}));
    EXPECT_EQ(t->topk_idx.scalar_type(), at::kInt);
    EXPECT_EQ(t->topk_logits.scalar_type(), at::kHalf);
    // Every returned id really holds the j-th largest logit (robust to ties).
    const at::Tensor got = full.gather(2, t->topk_idx.to(at::kLong));
    EXPECT_TRUE(at::allclose(got, want_val, 0.0, 1e-6));
    EXPECT_TRUE(at::equal(t->topk_logits, want_val.to(at::kHalf)));
    // Index 0 is the argmax.
    EXPECT_TRUE(at::allclose(got.select(2, 0), std::get<0>(full.max(2)), 0.0, 1e-6));
  }
  EXPECT_TRUE(at::equal(whole.topk_logits, chunked.topk_logits));
  EXPECT_TRUE(at::equal(whole.topk_logits, plain.topk_logits));
}

TEST(TeacherTest, BlockTopKIsExactWithTies) {
  // Few distinct values, so ties straddle block boundaries and the K-th value.
  std::mt19937 g(8);
  at::Tensor logits = at::empty({40, 512}, at::TensorOptions().dtype(at::kFloat));
  for (int64_t i = 0; i < logits.numel(); ++i) logits.data_ptr<float>()[i] = static_cast<float>(g() % 7);
  for (int64_t block : {2, 8, 16, 32}) {
    for (int64_t k : {1, 5, 16}) {
      if (512 / block < k) continue;
      auto [val, idx] = BlockTopK(logits, k, block);
      auto [want, unused] = at::topk(logits, k, 1);
      EXPECT_TRUE(at::equal(val, want)) << "block " << block << " k " << k;
      EXPECT_TRUE(at::equal(logits.gather(1, idx), want)) << "block " << block << " k " << k;
      // Ids are distinct within a row.
      if (k > 1) {
        const at::Tensor sorted = std::get<0>(idx.sort(1));
        EXPECT_FALSE(sorted.narrow(1, 1, k - 1).eq(sorted.narrow(1, 0, k - 1)).any().item<bool>());
      }
    }
  }
  EXPECT_EQ(ResolveTopKBlock(0, 1000, 10), 1);    // 64 does not divide 1000
  EXPECT_EQ(ResolveTopKBlock(0, 640, 11), 1);     // 10 blocks < K
  EXPECT_EQ(ResolveTopKBlock(32, 640, 11), 32);
}

TEST(TeacherTest, Bf16TopKMatchesGoldenLogits) {
  // tiny-qwen3's golden top-64 (fp32 reference) vs our bf16 teacher: the top ids agree on
  // the clear winners; here we only require the argmax logit to agree within bf16 error.
  torch::NoGradGuard no_grad;
  auto& m = TinyModel(at::kBFloat16);
  auto golden = model::SafetensorsFile::Open(kTiny + "/golden.safetensors");
  ASSERT_TRUE(golden.ok());
  const model::TensorInfo* ids_info = (*golden)->Find("input_ids");
  const model::TensorInfo* top_info = (*golden)->Find("logits_top64_values");
  ASSERT_NE(ids_info, nullptr);
  ASSERT_NE(top_info, nullptr);
  const at::Tensor ids = at::from_blob(const_cast<uint8_t*>((*golden)->DataOf(*ids_info)), {2, 24},
                                       at::TensorOptions().dtype(at::kLong)).clone();
  const at::Tensor top = at::from_blob(const_cast<uint8_t*>((*golden)->DataOf(*top_info)), {2, 24, 64},
                                       at::TensorOptions().dtype(at::kFloat)).clone();
  TeacherOptions o;
  o.top_k = 8;
  o.chunk_rows = 7;
  const TeacherTopK t = TopKFromHidden(m->Forward(ids), [&](const at::Tensor& x) { return m->Logits(x); }, o, 0);
  const at::Tensor ours = t.topk_logits.to(at::kFloat).select(2, 0);  // [2, 23]
  const at::Tensor want = top.narrow(1, 0, 23).select(2, 0);
  EXPECT_LT((ours - want).abs().max().item<float>(), 0.05f);
}

TEST(TeacherTest, RandomNegativesAvoidTheTopKAndAreSeededPerSequence) {
  torch::NoGradGuard no_grad;
  auto& m = TinyModel(at::kFloat);
  const at::Tensor ids = RandomIds(3, 8, 2);
  const at::Tensor hidden = m->Forward(ids);
  const at::Tensor full = m->Logits(hidden).narrow(1, 0, 7);
  const LogitsFn logits = [&](const at::Tensor& x) { return m->Logits(x); };
  TeacherOptions o;
  o.top_k = 32;
  o.rand_neg = 64;
  o.seed = 11;
  o.chunk_rows = 4;
  const TeacherTopK a = TopKFromHidden(hidden, logits, o, 100);
  ASSERT_EQ(a.rand_idx.sizes(), (std::vector<int64_t>{3, 7, 64}));
  const at::Tensor r = a.rand_idx.to(at::kLong);
  EXPECT_GE(r.min().item<int64_t>(), 0);
  EXPECT_LT(r.max().item<int64_t>(), full.size(2));
  // Never a top-K id.
  const at::Tensor clash = r.unsqueeze(-1).eq(a.topk_idx.to(at::kLong).unsqueeze(2));  // [3, 7, 64, 32]
  EXPECT_FALSE(clash.any().item<bool>());
  // The negatives' logits are the model's, stored as f16. The reference pass is one GEMM over
  // all rows while the pipeline ran chunks of 4 rows: with 2 BLAS threads the two are blocked
  // differently and may round differently in fp32, which can move an f16 value by one ulp
  // (<= 0.004 for |logit| < 8), so compare within two ulps instead of bit for bit.
  const at::Tensor want_logits = full.gather(2, r);
  EXPECT_LT((a.rand_logits.to(at::kFloat) - want_logits).abs().max().item<float>(), 8e-3f);
  // Independent of the chunking and of which batch a sequence is in.
  o.chunk_rows = 0;
  EXPECT_TRUE(at::equal(TopKFromHidden(hidden, logits, o, 100).rand_idx, a.rand_idx));
  const TeacherTopK tail = TopKFromHidden(hidden.narrow(0, 1, 2), logits, o, 101);
  EXPECT_TRUE(at::equal(tail.rand_idx, a.rand_idx.narrow(0, 1, 2)));
  o.seed = 12;
  EXPECT_FALSE(at::equal(TopKFromHidden(hidden, logits, o, 100).rand_idx, a.rand_idx));
}

TEST(TeacherTest, ExcludeTopKIsTheUthNonMember) {
  std::mt19937 g(4);
  for (int trial = 0; trial < 20; ++trial) {
    const int64_t v = 30, k = 6;
    std::vector<int64_t> all(v);
    for (int64_t i = 0; i < v; ++i) all[static_cast<size_t>(i)] = i;
    std::shuffle(all.begin(), all.end(), g);
    std::vector<int64_t> top(all.begin(), all.begin() + k);
    std::set<int64_t> excluded(top.begin(), top.end());
    std::vector<int64_t> complement;
    for (int64_t i = 0; i < v; ++i) {
      if (!excluded.count(i)) complement.push_back(i);
    }
    at::Tensor u = at::arange(v - k, at::TensorOptions().dtype(at::kLong)).unsqueeze(0);
    at::Tensor t = at::tensor(top, at::TensorOptions().dtype(at::kLong)).unsqueeze(0);
    at::Tensor x = ExcludeTopK(u, t);
    for (int64_t i = 0; i < v - k; ++i) EXPECT_EQ(x[0][i].item<int64_t>(), complement[static_cast<size_t>(i)]);
  }
}

TEST(TeacherTest, CpuPipelineReturnsEachBatchAtOnce) {
  auto& m = TinyModel(at::kFloat);
  TeacherOptions o;
  o.top_k = 4;
  o.rand_neg = 2;
  TeacherPipeline pipe(m, o, 6);
  const at::Tensor ids = RandomIds(2, 6, 3);
  auto got = pipe.Submit(ids.data_ptr<int32_t>(), 2, 40);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->first_sequence, 40);
  EXPECT_TRUE(at::equal((*got)->input_ids, ids));
  torch::NoGradGuard no_grad;
  const TeacherTopK direct = TopKFromHidden(m->Forward(ids), [&](const at::Tensor& x) { return m->Logits(x); }, o, 40);
  EXPECT_TRUE(at::equal((*got)->topk_idx, direct.topk_idx));
  EXPECT_TRUE(at::equal((*got)->rand_idx, direct.rand_idx));
  const KdRows rows = (*got)->rows();
  EXPECT_EQ(rows.n, 2);
  EXPECT_EQ(rows.input_ids[7], ids.data_ptr<int32_t>()[7]);
  auto drained = pipe.Drain();
  ASSERT_TRUE(drained.ok());
  EXPECT_FALSE(drained->has_value());
}

// The CUDA pipeline (pinned double buffers, side-stream copies, the teacher pass captured as a
// CUDA graph and replayed) returns exactly what a direct synchronous pass gives, batch by batch,
// including a batch of another size between replays and seeded random negatives.
TEST(TeacherTest, CudaPipelineWithGraphEqualsTheDirectPass) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "needs a CUDA device";
  auto loaded = model::LoadQwen3(kTiny, {at::kBFloat16, at::Device(at::kCUDA, 0)});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  model::Qwen3Model m = loaded->model;
  m->eval();
  TeacherOptions o;
  o.top_k = 8;
  o.rand_neg = 3;
  o.chunk_rows = 21;  // several logits chunks per batch, the last one partial
  o.seed = 5;
  const int64_t l = 16;
  TeacherPipeline pipe(m, o, l);
  const std::vector<int64_t> sizes = {4, 4, 4, 4, 3, 4, 4};
  int64_t total = 0;
  for (int64_t n : sizes) total += n;
  const at::Tensor ids = RandomIds(total, l, 9);
  std::vector<TeacherHostBatch> got;
  auto keep = [&](const std::optional<TeacherHostBatch>& b) {
    if (!b.has_value()) return;
    TeacherHostBatch c = *b;  // views of pinned buffers: copy them out
    c.input_ids = b->input_ids.clone();
    c.topk_idx = b->topk_idx.clone();
    c.topk_logits = b->topk_logits.clone();
    c.rand_idx = b->rand_idx.clone();
    c.rand_logits = b->rand_logits.clone();
    got.push_back(c);
  };
  int64_t pos = 0;
  for (int64_t n : sizes) {
    auto r = pipe.Submit(ids.data_ptr<int32_t>() + pos * l, n, pos);
    ASSERT_TRUE(r.ok()) << r.status();
    keep(*r);
    pos += n;
  }
  auto last = pipe.Drain();
  ASSERT_TRUE(last.ok()) << last.status();
  keep(*last);
  ASSERT_EQ(got.size(), sizes.size());
  if (cuda::FusedKernelsCompiled() && cuda::CudaGraphsAllowedByEnvironment()) {
    // Batch 1 warms up, batch 2 is captured and replayed, the size-3 batch runs eagerly.
    EXPECT_EQ(pipe.graph_replays(), 5);
  }
  torch::NoGradGuard no_grad;
  for (const TeacherHostBatch& b : got) {
    SCOPED_TRACE("batch at sequence " + std::to_string(b.first_sequence));
    const at::Tensor batch_ids = ids.narrow(0, b.first_sequence, b.n);
    const TeacherTopK direct = TopKFromHidden(m->Forward(batch_ids.to(at::kCUDA)),
                                              [&](const at::Tensor& x) { return m->Logits(x); }, o, b.first_sequence);
    EXPECT_TRUE(at::equal(b.input_ids, batch_ids));
    EXPECT_TRUE(at::equal(b.topk_idx, direct.topk_idx.cpu()));
    EXPECT_TRUE(at::equal(b.topk_logits, direct.topk_logits.cpu()));
    EXPECT_TRUE(at::equal(b.rand_idx, direct.rand_idx.cpu()));
    EXPECT_TRUE(at::equal(b.rand_logits, direct.rand_logits.cpu()));
  }
}

// ---------------------------------------------------------------------------------------
// The job

class RecordingReporter : public jobs::Reporter {
 public:
  // Cancels `cancel` once `cancel_at` sequences are reported (0 = never).
  RecordingReporter(jobs::CancelToken* cancel = nullptr, int64_t cancel_at = 0) : cancel_(cancel), cancel_at_(cancel_at) {}
  void Progress(int64_t done, int64_t total, const std::string& unit, double, double) override {
    std::lock_guard<std::mutex> l(mu_);
    last_done = done;
    last_total = total;
    this->unit = unit;
    if (cancel_ != nullptr && cancel_at_ > 0 && done >= cancel_at_) cancel_->Cancel();
  }
  void Metric(const std::string& name, int64_t, double) override {
    std::lock_guard<std::mutex> l(mu_);
    metrics.push_back(name);
  }
  void Log(jobs::LogLevel, const std::string& message) override {
    std::lock_guard<std::mutex> l(mu_);
    logs.push_back(message);
  }
  void Artifact(const std::string& path, const std::string& kind) override {
    std::lock_guard<std::mutex> l(mu_);
    artifacts.push_back(kind + ":" + path);
  }
  bool Logged(const std::string& needle) const {
    for (const auto& l : logs) {
      if (l.find(needle) != std::string::npos) return true;
    }
    return false;
  }

  int64_t last_done = 0, last_total = 0;
  std::string unit;
  std::vector<std::string> metrics, logs, artifacts;

 private:
  std::mutex mu_;
  jobs::CancelToken* cancel_;
  int64_t cancel_at_;
};

jobs::KdCacheOptions JobOptions(const fs::path& out) {
  jobs::KdCacheOptions o;
  o.teacher_model = kTiny;
  o.tokenizer = kTokenizer;
  o.dataset = kData + "/kd/job_alpaca.json";
  o.dataset_format = kd::DatasetFormat::kAlpacaChat;
  o.enable_thinking = kd::ThinkingMode::kBoth;
  o.max_length = 16;
  o.topk = 8;
  o.rand_neg = 3;
  o.num_sequences = 20;
  o.batch_size = 3;
  o.shard_size = 8;
  o.device = "cpu";
  o.seed = 5;
  o.num_threads = 2;
  o.output_dir = out.string();
  return o;
}

// The files a resumed run must reproduce (meta.json differs only in created_utc).
void ExpectSameCache(const fs::path& a, const fs::path& b) {
  for (const char* name : {"shard_00000.safetensors", "shard_00001.safetensors", "shard_00002.safetensors",
                           "progress.json"}) {
    ASSERT_TRUE(fs::exists(a / name)) << name;
    EXPECT_EQ(ReadFile(a / name), ReadFile(b / name)) << name << " differs";
  }
  EXPECT_FALSE(fs::exists(b / "shard_00003.safetensors"));
}

// One uninterrupted run shared by the job tests.
const fs::path& ReferenceRun() {
  static const fs::path dir = [] {
    fs::path d = FreshDir("uninterrupted");
    RecordingReporter rep;
    jobs::CancelToken cancel;
    absl::Status s = jobs::RunKdCache(JobOptions(d), rep, cancel);
    EXPECT_TRUE(s.ok()) << s;
    return d;
  }();
  return dir;
}

TEST(KdCacheJobTest, WritesAReadableCacheWithTheStreamsSequences) {
  const fs::path& dir = ReferenceRun();
  auto reader = KdCacheReader::Open(dir.string(), {false, true});
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->num_sequences(), 20);
  EXPECT_EQ((*reader)->shards().size(), 3u);  // 8 + 8 + 4
  const json meta = *ReadJsonFile((dir / "meta.json").string());
  EXPECT_EQ(meta["format"], "qatd_kd_cache_v1");
  EXPECT_EQ(meta["thinking"], "both");
  EXPECT_EQ(meta["top_k"], 8);
  EXPECT_EQ(meta["rand_neg"], 3);
  EXPECT_EQ(meta["eos_token_id"], 151645);
  // dtype auto: bf16 on a GPU, fp32 on the CPU.
  EXPECT_EQ(meta["dtype"], meta["device"] == "cuda" ? "bf16" : "fp32");
  EXPECT_EQ(meta["tokenizer_sha256"].get<std::string>().substr(0, 8), "aeb13307");
  EXPECT_EQ(meta["dataset_records"], 20);
  EXPECT_EQ(meta["versions"]["libtorch"].get<std::string>().substr(0, 1), std::string(TORCH_VERSION).substr(0, 1));

  // input_ids are the deterministic sample stream's blocks.
  auto data = ReadDataset({kData + "/kd/job_alpaca.json", DatasetFormat::kAlpacaChat});
  auto tok = model::Tokenizer::FromFile(kTokenizer);
  ASSERT_TRUE(data.ok() && tok.ok());
  SampleStreamOptions so;
  so.render = {DatasetFormat::kAlpacaChat, ThinkingMode::kBoth};
  so.block_length = 16;
  so.eos_id = 151645;
  so.seed = 5;
  PackedSequenceStream stream(*data, [&](const std::string& t) { return tok->Encode(t); }, so);
  auto all = (*reader)->Range(0, 20, true);
  ASSERT_TRUE(all.ok());
  std::vector<int32_t> block(16);
  for (int64_t i = 0; i < 20; ++i) {
    ASSERT_TRUE(*stream.Next(block.data()));
    EXPECT_EQ(0, std::memcmp(block.data(), all->input_ids[i].data_ptr<int32_t>(), 16 * sizeof(int32_t))) << i;
  }
  // The second batch (sequences 3..5) recomputed directly in the cache's dtype gives the same top-K.
  torch::NoGradGuard no_grad;
  auto& m = TinyModel(meta["dtype"] == "bf16" ? at::kBFloat16 : at::kFloat);
  TeacherOptions to;
  to.top_k = 8;
  to.rand_neg = 3;
  to.seed = 5;
  const at::Tensor ids = all->input_ids.narrow(0, 3, 3).contiguous();
  const TeacherTopK direct = TopKFromHidden(m->Forward(ids), [&](const at::Tensor& x) { return m->Logits(x); }, to, 3);
  EXPECT_TRUE(at::equal(direct.topk_idx, all->topk_idx.narrow(0, 3, 3)));
  EXPECT_TRUE(at::equal(direct.topk_logits.view(at::kShort), all->topk_logits.narrow(0, 3, 3).view(at::kShort)));
  EXPECT_TRUE(at::equal(direct.rand_idx, all->rand_idx.narrow(0, 3, 3)));
}

TEST(KdCacheJobTest, ResumeAfterSimulatedCrashGivesTheSameCache) {
  const fs::path dir = FreshDir("crashed");
  jobs::KdCacheOptions o = JobOptions(dir);
  o.after_durable = CrashAfter(1);
  RecordingReporter rep;
  jobs::CancelToken cancel;
  absl::Status s = jobs::RunKdCache(o, rep, cancel);
  ASSERT_EQ(s.code(), absl::StatusCode::kAborted) << s;
  const auto progress = *KdProgress::FromJson(*ReadJsonFile((dir / "progress.json").string()));
  EXPECT_FALSE(progress.done);
  EXPECT_GE(progress.n_written, 8);
  EXPECT_LT(progress.n_written, 20);

  o.after_durable = nullptr;
  o.resume = true;
  RecordingReporter rep2;
  s = jobs::RunKdCache(o, rep2, cancel);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_TRUE(rep2.Logged("resume: "));
  ExpectSameCache(ReferenceRun(), dir);
}

TEST(KdCacheJobTest, CancelThenResumeGivesTheSameCache) {
  const fs::path dir = FreshDir("cancelled");
  jobs::KdCacheOptions o = JobOptions(dir);
  jobs::CancelToken cancel;
  RecordingReporter rep(&cancel, 5);  // cancels after the second batch (6 sequences)
  absl::Status s = jobs::RunKdCache(o, rep, cancel);
  ASSERT_EQ(s.code(), absl::StatusCode::kCancelled) << s;
  const auto progress = *KdProgress::FromJson(*ReadJsonFile((dir / "progress.json").string()));
  EXPECT_EQ(progress.n_written, 6);  // durable, inside the first shard
  EXPECT_EQ(progress.next_shard_id, 1);
  auto partial = KdCacheReader::Open(dir.string(), {true, false});
  ASSERT_TRUE(partial.ok()) << partial.status();
  EXPECT_EQ((*partial)->num_sequences(), 6);

  o.resume = true;
  jobs::CancelToken fresh;
  RecordingReporter rep2;
  s = jobs::RunKdCache(o, rep2, fresh);
  ASSERT_TRUE(s.ok()) << s;
  ExpectSameCache(ReferenceRun(), dir);
  EXPECT_EQ(rep2.last_done, 20);
  EXPECT_EQ(rep2.unit, "sequences");
  EXPECT_FALSE(rep2.artifacts.empty());

  // Resuming a finished cache is a no-op.
  RecordingReporter rep3;
  ASSERT_TRUE(jobs::RunKdCache(o, rep3, fresh).ok());
  EXPECT_TRUE(rep3.Logged("already complete"));
}

TEST(KdCacheJobTest, ResumeRefusesADifferentRequest) {
  const fs::path dir = FreshDir("mismatch");
  fs::copy(ReferenceRun(), dir, fs::copy_options::recursive);
  jobs::KdCacheOptions o = JobOptions(dir);
  o.resume = true;
  o.topk = 4;
  o.num_sequences = 30;
  RecordingReporter rep;
  jobs::CancelToken cancel;
  absl::Status s = jobs::RunKdCache(o, rep, cancel);
  ASSERT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(std::string(s.message()).find("'top_k' is 8 but this run has 4"), std::string::npos) << s;
  // Without --resume or --overwrite an existing cache is never touched.
  o = JobOptions(dir);
  s = jobs::RunKdCache(o, rep, cancel);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(std::string(s.message()).find("--overwrite"), std::string::npos);
}

TEST(KdCacheJobTest, DatasetErrorsComeBeforeAnyModelWork) {
  jobs::KdCacheOptions o = JobOptions(FreshDir("bad_data"));
  o.teacher_model = "/nonexistent/model";
  o.dataset = kData + "/kd/malformed.json";
  RecordingReporter rep;
  jobs::CancelToken cancel;
  absl::Status s = jobs::RunKdCache(o, rep, cancel);
  ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(std::string(s.message()).find("malformed.json:3"), std::string::npos) << s;

  o.dataset = kData + "/kd/alpaca.json";  // 2 bad records, reported, then the model fails
  s = jobs::RunKdCache(o, rep, cancel);
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(rep.Logged("alpaca.json[3]"));
  EXPECT_TRUE(rep.Logged("2 bad record(s) skipped"));
}

// Issue #14, item 9: a tokenizer whose ids reach past the teacher's vocabulary would index past
// its embedding ("index out of range in self"); the job says so before loading any weight.
TEST(KdCacheJobTest, ATokenizerLargerThanTheTeachersVocabularyIsRefused) {
  const fs::path teacher = FreshDir("small_vocab_teacher");
  nlohmann::json config = nlohmann::json::parse(ReadFile(fs::path(kTiny) / "config.json"));
  config["vocab_size"] = 1000;
  std::ofstream(teacher / "config.json") << config.dump();
  jobs::KdCacheOptions o = JobOptions(FreshDir("small_vocab_out"));
  o.teacher_model = teacher.string();
  RecordingReporter rep;
  jobs::CancelToken cancel;
  const absl::Status s = jobs::RunKdCache(o, rep, cancel);
  ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(std::string(s.message()).find("tokenizer.json has token ids up to 151668, but the teacher's vocab_size "
                                          "(config.json) is 1000"),
            std::string::npos)
      << s;
}

TEST(KdCacheJobTest, ValidateNamesTheField) {
  auto message = [](const jobs::KdCacheOptions& o) { return std::string(o.Validate().message()); };
  jobs::KdCacheOptions o = JobOptions("/tmp/x");
  EXPECT_TRUE(o.Validate().ok());
  o.max_length = 1;
  EXPECT_NE(message(o).find("max_length must be in [2,"), std::string::npos);
  // Enumerations are typed in the options; the CLIs parse their spellings and name the flag.
  EXPECT_NE(std::string(kd::ParseThinkingMode("all").status().message()).find("enable_thinking"), std::string::npos);
  EXPECT_NE(std::string(kd::ParseDatasetFormat("csv").status().message()).find("dataset_format"), std::string::npos);
  EXPECT_NE(std::string(jobs::ParseDtype("int8").status().message()).find("dtype"), std::string::npos);
  o = JobOptions("/tmp/x");
  o.device = "tpu";
  EXPECT_NE(message(o).find("device"), std::string::npos);
  o = JobOptions("/tmp/x");
  o.resume = o.overwrite = true;
  EXPECT_FALSE(o.Validate().ok());
  o = JobOptions("");
  EXPECT_NE(message(o).find("output_dir"), std::string::npos);
  jobs::KdCacheOptions defaults;
  EXPECT_EQ(defaults.max_length, 64);  // the seed's defaults (spec §6.1)
  EXPECT_EQ(defaults.topk, 32);
  EXPECT_EQ(defaults.shard_size, 1024);
}

}  // namespace
}  // namespace qatd::kd
