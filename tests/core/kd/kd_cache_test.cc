// KD cache reading: bit-exact round trip through the writer and reader, corrupt shards,
// batching with seeded shuffling and a resumable cursor, the held-out split, and the
// reference `.pt` cache (tests/data/golden/kd_cache_sample) read directly and imported.

#include <ATen/ATen.h>
#include "tests/core/kd/kd_test_dirs.h"

#include <cstring>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <set>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/kd/cache_format.h"
#include "core/kd/cache_reader.h"
#include "core/kd/cache_writer.h"
#include "core/model/safetensors.h"

namespace qatd::kd {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

const std::string kData = QATD_TEST_DATA;
const std::string kSample = kData + "/golden/kd_cache_sample";

using testdirs::FreshDir;

// A synthetic cache: N sequences, L, K, R, shard size S.
struct SyntheticCache {
  int64_t n = 11, l = 6, k = 3, r = 2, shard = 4, vocab = 500;
  std::vector<int32_t> ids, idx, ridx;
  std::vector<uint16_t> val, rval;
  fs::path dir;

  // `edit` may change the data before it is written (damaged caches).
  explicit SyntheticCache(const std::string& name, const std::function<void(SyntheticCache&)>& edit = nullptr) {
    std::mt19937 g(5);
    ids.resize(static_cast<size_t>(n * l));
    idx.resize(static_cast<size_t>(n * (l - 1) * k));
    val.resize(idx.size());
    ridx.resize(static_cast<size_t>(n * (l - 1) * r));
    rval.resize(ridx.size());
    for (auto& v : ids) v = static_cast<int32_t>(g() % vocab);
    for (auto& v : idx) v = static_cast<int32_t>(g() % vocab);
    for (auto& v : val) v = static_cast<uint16_t>(g() & 0x7bff);  // finite halves
    for (auto& v : ridx) v = static_cast<int32_t>(g() % vocab);
    for (auto& v : rval) v = static_cast<uint16_t>(g() & 0x7bff);
    if (edit) edit(*this);
    dir = FreshDir(name);
    KdCacheMeta meta;
    meta.teacher_model = "synthetic";
    meta.dataset_path = "synthetic";
    meta.dataset_format = "plain";
    meta.thinking = "none";
    meta.max_length = l;
    meta.top_k = k;
    meta.rand_neg = r;
    meta.vocab_size = vocab;
    meta.num_sequences = n;
    meta.shard_size = shard;
    EXPECT_TRUE(WriteJsonFileAtomic((dir / "meta.json").string(), meta.ToJson()).ok());
    KdCacheWriter::Options o;
    o.dir = dir.string();
    o.layout = {l, k, r, shard};
    auto w = KdCacheWriter::Open(o, {});
    EXPECT_TRUE(w.ok());
    const int64_t s = l - 1;
    EXPECT_TRUE((*w)->Append({n, ids.data(), idx.data(), val.data(), ridx.data(), rval.data()}).ok());
    EXPECT_TRUE((*w)->Finish().ok());
    (void)s;
  }
};

template <typename T>
bool SameBytes(const at::Tensor& t, const T* p, int64_t count) {
  return t.is_contiguous() && t.numel() == count &&
         std::memcmp(t.data_ptr(), p, static_cast<size_t>(count) * sizeof(T)) == 0;
}

TEST(KdCacheReaderTest, RoundTripIsBitExact) {
  SyntheticCache c("roundtrip");
  auto reader = KdCacheReader::Open(c.dir.string(), {false, true});
  ASSERT_TRUE(reader.ok()) << reader.status();
  const auto& rd = **reader;
  EXPECT_FALSE(rd.is_reference_format());
  EXPECT_EQ(rd.num_sequences(), c.n);
  EXPECT_EQ(rd.shards().size(), 3u);
  EXPECT_EQ(rd.shards()[2].num_sequences, 3);
  auto all = rd.Range(0, c.n, /*with_rand=*/true);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->input_ids.scalar_type(), at::kInt);
  EXPECT_EQ(all->topk_logits.scalar_type(), at::kHalf);
  EXPECT_EQ(all->topk_idx.sizes(), (std::vector<int64_t>{c.n, c.l - 1, c.k}));
  EXPECT_TRUE(SameBytes(all->input_ids, c.ids.data(), c.n * c.l));
  EXPECT_TRUE(SameBytes(all->topk_idx, c.idx.data(), static_cast<int64_t>(c.idx.size())));
  EXPECT_TRUE(SameBytes(all->topk_logits, c.val.data(), static_cast<int64_t>(c.val.size())));
  EXPECT_TRUE(SameBytes(all->rand_idx, c.ridx.data(), static_cast<int64_t>(c.ridx.size())));
  EXPECT_TRUE(SameBytes(all->rand_logits, c.rval.data(), static_cast<int64_t>(c.rval.size())));

  const std::vector<int64_t> pick = {10, 0, 5, 5};
  auto some = rd.Gather(pick);
  ASSERT_TRUE(some.ok());
  EXPECT_FALSE(some->rand_idx.defined());
  for (size_t j = 0; j < pick.size(); ++j) {
    EXPECT_TRUE(at::equal(some->topk_idx[static_cast<int64_t>(j)], all->topk_idx[pick[j]]));
    EXPECT_EQ(some->indices[static_cast<int64_t>(j)].item<int64_t>(), pick[j]);
  }
  EXPECT_EQ(rd.Gather(std::vector<int64_t>{c.n}).status().code(), absl::StatusCode::kInvalidArgument);
}

std::string OpenError(const fs::path& dir, KdCacheReaderOptions o = {}) {
  auto r = KdCacheReader::Open(dir.string(), o);
  return r.ok() ? "" : std::string(r.status().message());
}

TEST(KdCacheReaderTest, TruncatedShardIsNamed) {
  SyntheticCache c("truncated");
  const fs::path shard = c.dir / "shard_00001.safetensors";
  fs::resize_file(shard, fs::file_size(shard) - 10);
  auto r = KdCacheReader::Open(c.dir.string());
  ASSERT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(std::string(r.status().message()).find("shard_00001.safetensors"), std::string::npos) << r.status();
}

TEST(KdCacheReaderTest, WrongShapeOrDtypeIsNamed) {
  SyntheticCache c("shape");
  // Rewrite shard 1 with K = 2 instead of 3.
  const int64_t n = 4, s = c.l - 1;
  std::vector<int32_t> ids(static_cast<size_t>(n * c.l)), idx(static_cast<size_t>(n * s * 2)),
      ridx(static_cast<size_t>(n * s * c.r));
  std::vector<uint16_t> val(idx.size()), rval(ridx.size());
  std::vector<model::TensorToWrite> t = {
      {"input_ids", model::DType::kI32, {n, c.l}, ids.data(), ids.size() * 4},
      {"topk_idx", model::DType::kI32, {n, s, 2}, idx.data(), idx.size() * 4},
      {"topk_logits", model::DType::kF16, {n, s, 2}, val.data(), val.size() * 2},
      {"rand_idx", model::DType::kI32, {n, s, c.r}, ridx.data(), ridx.size() * 4},
      {"rand_logits", model::DType::kF16, {n, s, c.r}, rval.data(), rval.size() * 2}};
  ASSERT_TRUE(model::WriteSafetensors((c.dir / "shard_00001.safetensors").string(), t).ok());
  std::string e = OpenError(c.dir);
  EXPECT_NE(e.find("shard_00001.safetensors: topk_idx has shape [4, 5, 2], expected [4, 5, 3]"), std::string::npos)
      << e;
  // Same shapes, wrong dtype for the logits.
  t[1] = {"topk_idx", model::DType::kI32, {n, s, 3}, idx.data(), static_cast<size_t>(n * s * 3) * 4};
  std::vector<float> fval(static_cast<size_t>(n * s * 3));
  t[2] = {"topk_logits", model::DType::kF32, {n, s, 3}, fval.data(), fval.size() * 4};
  idx.resize(static_cast<size_t>(n * s * 3));
  t[1].data = idx.data();
  ASSERT_TRUE(model::WriteSafetensors((c.dir / "shard_00001.safetensors").string(), t).ok());
  e = OpenError(c.dir);
  EXPECT_NE(e.find("shard_00001.safetensors: topk_logits has dtype F32, expected F16"), std::string::npos) << e;
}

TEST(KdCacheReaderTest, ProgressMustMatchTheShards) {
  SyntheticCache c("progress");
  ASSERT_TRUE(WriteJsonFileAtomic((c.dir / "progress.json").string(), KdProgress{11, 3, false}.ToJson()).ok());
  auto r = KdCacheReader::Open(c.dir.string());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(KdCacheReader::Open(c.dir.string(), {true, false}).ok());
  ASSERT_TRUE(WriteJsonFileAtomic((c.dir / "progress.json").string(), KdProgress{13, 4, true}.ToJson()).ok());
  EXPECT_NE(OpenError(c.dir).find("shard_00003.safetensors"), std::string::npos);  // missing shard
  ASSERT_TRUE(WriteJsonFileAtomic((c.dir / "progress.json").string(), KdProgress{9, 3, true}.ToJson()).ok());
  EXPECT_NE(OpenError(c.dir).find("shard_00002.safetensors: holds 3 sequences"), std::string::npos);
  // An incomplete cache whose last shard was rewritten past progress.json: extra rows ignored.
  ASSERT_TRUE(WriteJsonFileAtomic((c.dir / "progress.json").string(), KdProgress{9, 3, false}.ToJson()).ok());
  auto partial = KdCacheReader::Open(c.dir.string(), {true, false});
  ASSERT_TRUE(partial.ok()) << partial.status();
  EXPECT_EQ((*partial)->num_sequences(), 9);
}

TEST(KdCacheReaderTest, VerifyDataCatchesOutOfRangeIds) {
  SyntheticCache c("verify");
  json meta = *ReadJsonFile((c.dir / "meta.json").string());
  meta["vocab_size"] = 10;  // ids go up to 499
  ASSERT_TRUE(WriteJsonFileAtomic((c.dir / "meta.json").string(), meta).ok());
  EXPECT_TRUE(KdCacheReader::Open(c.dir.string()).ok());
  const std::string e = OpenError(c.dir, {false, true});
  EXPECT_NE(e.find("shard_00000.safetensors sample 0 (sequence 0): input_ids["), std::string::npos) << e;
  EXPECT_NE(e.find("outside the vocabulary of 10 ids (meta.json vocab_size)"), std::string::npos) << e;
}

// Issue #14, item 9: out-of-range ids in a cache reached the model as "index out of range in
// self", and NaN logits as "diverged... try a lower lr". Every batch is checked as it is read.
// Sequence 6 is shard 1's sample 2 (shard size 4); position 3, top-K slot 1.
constexpr int64_t kBadSequence = 6, kBadPosition = 3, kBadSlot = 1;

int64_t TopkOffset(const SyntheticCache& c) { return (kBadSequence * (c.l - 1) + kBadPosition) * c.k + kBadSlot; }

std::string GatherError(const fs::path& dir, KdCacheReaderOptions o = {}) {
  auto reader = KdCacheReader::Open(dir.string(), o);
  if (!reader.ok()) return "open: " + std::string(reader.status().message());
  auto batch = (*reader)->Range(4, 8, /*with_rand=*/true);
  return batch.ok() ? "" : std::string(batch.status().message());
}

TEST(KdCacheDataTest, AnIdOutsideTheVocabularyIsNamedWithShardSampleAndBound) {
  SyntheticCache c("bad_id", [](SyntheticCache& c) { c.idx[static_cast<size_t>(TopkOffset(c))] = 600; });
  auto reader = KdCacheReader::Open(c.dir.string());
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_TRUE((*reader)->Range(0, 4).ok());  // shard 0 is fine
  auto batch = (*reader)->Range(4, 8);
  ASSERT_EQ(batch.status().code(), absl::StatusCode::kDataLoss) << batch.status();
  const std::string shard = (c.dir / "shard_00001.safetensors").string();
  EXPECT_NE(std::string(batch.status().message())
                .find("KD cache shard " + shard + " sample 2 (sequence 6): topk_idx[3][1] holds id 600, outside the "
                      "vocabulary of 500 ids (meta.json vocab_size)"),
            std::string::npos)
      << batch.status();
}

TEST(KdCacheDataTest, AnIdOnlyTheModelsVocabularyExcludesIsAPreconditionNotDamage) {
  // Every id below 400 but one, 450: inside the cache's vocabulary (500), outside a model's of 400.
  SyntheticCache c("model_vocab", [](SyntheticCache& c) {
    for (auto* ids : {&c.ids, &c.idx, &c.ridx}) {
      for (auto& v : *ids) v %= 400;
    }
    c.idx[static_cast<size_t>(TopkOffset(c))] = 450;
  });
  KdCacheReaderOptions o;
  o.model_vocab_size = 400;
  auto reader = KdCacheReader::Open(c.dir.string(), o);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_TRUE((*reader)->Range(0, 4).ok());
  const absl::Status bad = (*reader)->Range(4, 8).status();
  ASSERT_EQ(bad.code(), absl::StatusCode::kFailedPrecondition) << bad;
  EXPECT_EQ(bad.message(), "KD cache shard " + (c.dir / "shard_00001.safetensors").string() +
                               " sample 2 (sequence 6): topk_idx[3][1] holds id 450, outside the model's vocabulary "
                               "of 400 ids (its config.json vocab_size): the cache was made with a teacher of a "
                               "larger vocabulary");
  // Without the model's vocabulary the cache is fine; verify_data finds the same sequence at Open.
  EXPECT_TRUE(KdCacheReader::Open(c.dir.string(), {false, true}).ok());
  o.verify_data = true;
  EXPECT_EQ(KdCacheReader::Open(c.dir.string(), o).status(), bad);
}

TEST(KdCacheDataTest, NonFiniteTeacherLogitsAreNamedNotTrainedOn) {
  for (const uint16_t bits : {uint16_t{0x7e00}, uint16_t{0x7c00}, uint16_t{0xfc00}}) {  // nan, +inf, -inf
    SyntheticCache c("nan", [&](SyntheticCache& c) { c.val[static_cast<size_t>(TopkOffset(c))] = bits; });
    const std::string e = GatherError(c.dir);
    EXPECT_NE(e.find("KD cache shard " + (c.dir / "shard_00001.safetensors").string() +
                     " sample 2 (sequence 6) has non-finite teacher logits (topk_logits[3][1] is "),
              std::string::npos)
        << e;
  }
  SyntheticCache r("nan_rand", [](SyntheticCache& c) { c.rval[static_cast<size_t>(6 * (c.l - 1) * c.r)] = 0x7e01; });
  EXPECT_NE(GatherError(r.dir).find("sample 2 (sequence 6) has non-finite teacher logits (rand_logits[0][0] is nan)"),
            std::string::npos)
      << GatherError(r.dir);
}

TEST(KdBatchStreamTest, EpochsCoverTheSplitAndTheCursorResumes) {
  SyntheticCache c("stream");
  auto reader = *KdCacheReader::Open(c.dir.string());
  auto splits = SplitTrainHeldOut(reader->num_sequences(), {3, 0.0});
  ASSERT_TRUE(splits.ok());
  EXPECT_EQ(splits->train.end, 8);
  EXPECT_EQ(splits->held_out.begin, 8);
  KdStreamOptions o;
  o.batch_size = 3;
  o.seed = 9;
  auto stream = KdBatchStream::Create(reader, splits->train, o);
  ASSERT_TRUE(stream.ok()) << stream.status();
  EXPECT_EQ(stream->batches_per_epoch(), 3);
  std::vector<int64_t> epoch0, epoch1;
  for (int b = 0; b < 3; ++b) {
    auto batch = stream->Next();
    ASSERT_TRUE(batch.ok());
    for (int64_t i = 0; i < batch->indices.size(0); ++i) epoch0.push_back(batch->indices[i].item<int64_t>());
  }
  EXPECT_EQ(stream->cursor(), (KdCursor{0, 8}));
  const json saved = stream->cursor().ToJson();
  std::vector<int64_t> next_batch;
  for (int b = 0; b < 3; ++b) {
    auto batch = stream->Next();
    for (int64_t i = 0; i < batch->indices.size(0); ++i) {
      epoch1.push_back(batch->indices[i].item<int64_t>());
      if (b == 0) next_batch.push_back(batch->indices[i].item<int64_t>());
    }
  }
  std::vector<int64_t> sorted0 = epoch0, sorted1 = epoch1;
  std::sort(sorted0.begin(), sorted0.end());
  std::sort(sorted1.begin(), sorted1.end());
  EXPECT_EQ(sorted0, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7}));  // held-out 8..10 never seen
  EXPECT_EQ(sorted1, sorted0);
  EXPECT_NE(epoch0, epoch1);  // reshuffled per epoch

  // A new stream restored from the saved cursor continues identically.
  auto restored = KdBatchStream::Create(reader, splits->train, o);
  ASSERT_TRUE(restored->Seek(*KdCursor::FromJson(saved)).ok());
  auto batch = restored->Next();
  ASSERT_TRUE(batch.ok());
  std::vector<int64_t> got;
  for (int64_t i = 0; i < batch->indices.size(0); ++i) got.push_back(batch->indices[i].item<int64_t>());
  EXPECT_EQ(got, next_batch);
  EXPECT_FALSE(restored->Seek({0, 9}).ok());

  EXPECT_FALSE(SplitTrainHeldOut(10, {10, 0.0}).ok());
  EXPECT_FALSE(SplitTrainHeldOut(10, {1, 0.5}).ok());
  EXPECT_EQ(SplitTrainHeldOut(10, {0, 0.25})->held_out.size(), 3);  // round(2.5) away from zero
}

TEST(KdBatchStreamTest, UnshuffledDropLast) {
  SyntheticCache c("droplast");
  auto reader = *KdCacheReader::Open(c.dir.string());
  KdStreamOptions o;
  o.batch_size = 4;
  o.shuffle = false;
  o.drop_last = true;
  auto s = KdBatchStream::Create(reader, {0, 11}, o);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->Next()->indices[0].item<int64_t>(), 0);
  EXPECT_EQ(s->Next()->indices[0].item<int64_t>(), 4);
  auto third = s->Next();  // 3 left < 4: next epoch
  EXPECT_EQ(third->indices[0].item<int64_t>(), 0);
  EXPECT_EQ(s->cursor(), (KdCursor{1, 4}));
}

// ---------------------------------------------------------------------------------------
// The reference sample (shared/golden/kd_cache_sample)

TEST(ReferenceCacheTest, ReadsPtShardsMatchingChecksJson) {
  auto reader = KdCacheReader::Open(kSample, {false, true});
  ASSERT_TRUE(reader.ok()) << reader.status();
  const auto& rd = **reader;
  EXPECT_TRUE(rd.is_reference_format());
  EXPECT_EQ(rd.num_sequences(), 32);
  EXPECT_EQ(rd.max_length(), 32);
  EXPECT_EQ(rd.top_k(), 8);
  EXPECT_EQ(rd.rand_neg(), 0);
  EXPECT_EQ(rd.vocab_size(), 151936);
  const json checks = *ReadJsonFile(kSample + "/checks.json");
  ASSERT_EQ(rd.shards().size(), 3u);
  for (const auto& info : rd.shards()) {
    const std::string name = fs::path(info.path).filename().string();
    SCOPED_TRACE(name);
    const json& c = checks["shards"][name];
    ASSERT_TRUE(c.is_object());
    auto b = rd.Range(info.first_sequence, info.first_sequence + info.num_sequences);
    ASSERT_TRUE(b.ok()) << b.status();
    auto shape = [](const at::Tensor& t) { return std::vector<int64_t>(t.sizes().begin(), t.sizes().end()); };
    EXPECT_EQ(shape(b->input_ids), c["input_ids"]["shape"].get<std::vector<int64_t>>());
    EXPECT_EQ(shape(b->topk_idx), c["topk_idx"]["shape"].get<std::vector<int64_t>>());
    EXPECT_EQ(shape(b->topk_logits), c["topk_logits"]["shape"].get<std::vector<int64_t>>());
    EXPECT_EQ(c["input_ids"]["dtype"], "int32");
    EXPECT_EQ(b->input_ids.scalar_type(), at::kInt);
    EXPECT_EQ(b->topk_idx.scalar_type(), at::kInt);
    EXPECT_EQ(b->topk_logits.scalar_type(), at::kHalf);
    EXPECT_EQ(b->input_ids.to(at::kLong).sum().item<int64_t>(), c["input_ids"]["sum"].get<int64_t>());
    EXPECT_EQ(b->topk_idx.to(at::kLong).sum().item<int64_t>(), c["topk_idx"]["sum"].get<int64_t>());
    EXPECT_NEAR(b->topk_logits.to(at::kDouble).sum().item<double>(), c["topk_logits"]["sum"].get<double>(), 1e-6);
    const auto first_ids = b->input_ids[0].narrow(0, 0, 8).to(at::kLong);
    const auto first_idx = b->topk_idx[0][0].to(at::kLong);
    const auto first_val = b->topk_logits[0][0].to(at::kDouble);
    for (int i = 0; i < 8; ++i) {
      EXPECT_EQ(first_ids[i].item<int64_t>(), c["first_input_ids"][i].get<int64_t>());
      EXPECT_EQ(first_idx[i].item<int64_t>(), c["first_topk_idx"][i].get<int64_t>());
      EXPECT_EQ(first_val[i].item<double>(), c["first_topk_logits"][i].get<double>());
    }
    // Sorted descending: index 0 is the argmax.
    EXPECT_TRUE(at::all(b->topk_logits.narrow(2, 0, 7).ge(b->topk_logits.narrow(2, 1, 7))).item<bool>());
  }
}

TEST(ReferenceCacheTest, ImportConvertsBitExactly) {
  const fs::path dst = FreshDir("import");
  auto n = ImportReferenceCache(kSample, dst.string());
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 32);
  auto ref = *KdCacheReader::Open(kSample);
  auto ours = KdCacheReader::Open(dst.string(), {false, true});
  ASSERT_TRUE(ours.ok()) << ours.status();
  EXPECT_FALSE((*ours)->is_reference_format());
  EXPECT_EQ((*ours)->shards().size(), 3u);  // same shard size (12) as the source
  auto a = ref->Range(0, 32), b = (*ours)->Range(0, 32);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(at::equal(a->input_ids, b->input_ids));
  EXPECT_TRUE(at::equal(a->topk_idx, b->topk_idx));
  EXPECT_TRUE(at::equal(a->topk_logits.view(at::kShort), b->topk_logits.view(at::kShort)));  // bitwise
  const json meta = *ReadJsonFile((dst / "meta.json").string());
  EXPECT_EQ(meta["format"], "qatd_kd_cache_v1");
  EXPECT_EQ(meta["top_k"], 8);
  EXPECT_EQ(meta["imported_from"]["meta"]["format"], "qwen_kd_topk_cache_v1");
  // A second import into the same directory needs overwrite.
  EXPECT_EQ(ImportReferenceCache(kSample, dst.string()).status().code(), absl::StatusCode::kFailedPrecondition);
  ImportOptions io;
  io.overwrite = true;
  io.shard_size = 10;
  ASSERT_TRUE(ImportReferenceCache(kSample, dst.string(), io).ok());
  EXPECT_EQ((*KdCacheReader::Open(dst.string()))->shards().size(), 4u);
}

TEST(ReferenceCacheTest, CorruptPtShardIsNamed) {
  const fs::path dir = FreshDir("bad_pt");
  for (const auto& e : fs::directory_iterator(kSample)) fs::copy(e.path(), dir / e.path().filename());
  fs::permissions(dir / "shard_00001.pt", fs::perms::owner_write, fs::perm_options::add);
  fs::resize_file(dir / "shard_00001.pt", 1000);
  auto r = KdCacheReader::Open(dir.string());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find("shard_00001.pt"), std::string::npos) << r.status();
}

// Issue #14, item 9: the cache's JSON files and reference shards were read to their end (a
// symlink to /dev/zero until memory ran out; a FIFO blocked). They are regular files, bounded.
TEST(KdCacheFilesTest, DevicesAndFifosAmongTheCacheFilesAreRefusedUnread) {
  SyntheticCache meta_zero("meta_zero");
  ASSERT_EQ(::unlink((meta_zero.dir / "meta.json").c_str()), 0);  // not fs::remove: see DESIGN §7
  fs::create_symlink("/dev/zero", meta_zero.dir / "meta.json");
  std::string e = OpenError(meta_zero.dir);
  EXPECT_NE(e.find("meta.json is a character device, not a regular file"), std::string::npos) << e;

  SyntheticCache progress_fifo("progress_fifo");
  ASSERT_EQ(::unlink((progress_fifo.dir / "progress.json").c_str()), 0);
  ASSERT_EQ(::mkfifo((progress_fifo.dir / "progress.json").c_str(), 0600), 0);
  e = OpenError(progress_fifo.dir);
  EXPECT_NE(e.find("progress.json is a FIFO, not a regular file"), std::string::npos) << e;

  const fs::path pt = FreshDir("pt_zero");
  for (const auto& f : fs::directory_iterator(kSample)) fs::copy(f.path(), pt / f.path().filename());
  ASSERT_EQ(::unlink((pt / "shard_00001.pt").c_str()), 0);
  fs::create_symlink("/dev/zero", pt / "shard_00001.pt");
  e = OpenError(pt);
  EXPECT_NE(e.find("shard_00001.pt is a character device, not a regular file"), std::string::npos) << e;
}

}  // namespace
}  // namespace qatd::kd
