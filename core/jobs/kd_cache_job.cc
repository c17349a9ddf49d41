#include "core/jobs/kd_cache_job.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <torch/version.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <regex>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/common/sha256.h"
#include "core/common/status_macros.h"
#include "core/common/torch_status.h"
#include "core/kd/cache_format.h"
#include "core/kd/cache_writer.h"
#include "core/kd/dataset.h"
#include "core/kd/render.h"
#include "core/kd/sample_stream.h"
#include "core/kd/teacher.h"
#include "core/model/model_io.h"
#include "core/model/safetensors.h"
#include "core/model/qwen3_config.h"
#include "core/model/tokenizer.h"
#include "core/train/dist_group.h"

namespace qatd::jobs {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The teacher's compute dtype: auto = bf16 on a GPU, fp32 on the CPU (bf16 matmuls are several
// times slower there).
at::ScalarType ScalarTypeOf(Dtype dtype, const at::Device& device) {
  switch (dtype) {
    case Dtype::kFp16: return at::kHalf;
    case Dtype::kFp32: return at::kFloat;
    case Dtype::kAuto: return device.is_cuda() ? at::kBFloat16 : at::kFloat;
    case Dtype::kBf16: break;
  }
  return at::kBFloat16;
}

std::string ScalarTypeName(at::ScalarType t) {
  return t == at::kBFloat16 ? "bf16" : t == at::kHalf ? "fp16" : "fp32";
}

absl::StatusOr<at::Device> ResolveDevice(const std::string& name) {
  if (name == "auto") return at::hasCUDA() ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  if (name == "cpu") return at::Device(at::kCPU);
  static const std::regex cuda("cuda(:([0-9]+))?");
  std::smatch m;
  if (std::regex_match(name, m, cuda)) {
    if (!at::hasCUDA()) return absl::FailedPreconditionError(absl::StrCat("device '", name, "': CUDA is not available"));
    return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(m[2].matched ? std::stoi(m[2].str()) : 0));
  }
  return absl::InvalidArgumentError(absl::StrCat("device must be auto, cpu, cuda or cuda:N; got '", name, "'"));
}

std::string AbsolutePath(const std::string& p) {
  std::error_code ec;
  fs::path abs = fs::weakly_canonical(fs::absolute(p), ec);
  return ec ? p : abs.string();
}

// The fields of meta.json that must be equal for a continuation to be the same cache.
absl::Status CompareForResume(const kd::KdCacheMeta& old, const kd::KdCacheMeta& now) {
  const json a = old.ToJson(), b = now.ToJson();
  for (const char* key : {"teacher_model", "tokenizer_sha256", "dataset_path", "dataset_format", "dataset_text_field",
                          "dataset_text_unit", "dataset_sha256", "thinking", "max_length", "top_k", "rand_neg",
                          "vocab_size", "eos_token_id", "shard_size", "seed", "shuffle", "dtype"}) {
    if (a[key] != b[key]) {
      return absl::FailedPreconditionError(absl::StrCat("resume: meta.json field '", key, "' is ", a[key].dump(),
                                                        " but this run has ", b[key].dump(),
                                                        " (use --overwrite to start a new cache)"));
    }
  }
  return absl::OkStatus();
}

// Removes the files of a KD cache in `dir` (and nothing else).
void RemoveCacheFiles(const std::string& dir) {
  std::error_code ec;
  static const std::regex ours(R"((shard_[0-9]{5,}\.safetensors|meta\.json|progress\.json)(\.tmp\.[0-9]+)?)");
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    // ::unlink, not fs::remove: see RemoveFlatDir in bench/kd_cache_bench.cc (pip LibTorch
    // exports its own std::filesystem symbols).
    if (std::regex_match(entry.path().filename().string(), ours)) ::unlink(entry.path().c_str());
  }
}

bool HasCacheFiles(const std::string& dir) {
  std::error_code ec;
  static const std::regex ours(R"(shard_[0-9]{5,}\.(safetensors|pt)|meta\.json|progress\.json)");
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (std::regex_match(entry.path().filename().string(), ours)) return true;
  }
  return false;
}

// The rows shard `id` holds in a complete cache of `n` sequences in shards of `shard_size`.
int64_t ShardRows(int64_t id, int64_t n, int64_t shard_size) {
  return std::clamp<int64_t>(n - id * shard_size, 0, shard_size);
}

// Whether shard `id` of `dir` is on disk with `rows` rows. Shards are written whole (temp file,
// fsync, rename) and their content depends only on the request (CompareForResume) and the
// shard's index, so such a file is that shard, whoever wrote it.
bool ShardComplete(const std::string& dir, int64_t id, int64_t rows) {
  absl::StatusOr<std::shared_ptr<model::SafetensorsFile>> file =
      model::SafetensorsFile::Open((fs::path(dir) / kd::ShardFileName(id)).string());
  if (!file.ok()) return false;
  const model::TensorInfo* info = (*file)->Find("input_ids");
  return info != nullptr && !info->shape.empty() && info->shape[0] == rows;
}

std::string TokenizerJsonPath(const std::string& p) {
  std::error_code ec;
  return fs::is_directory(p, ec) ? (fs::path(p) / "tokenizer.json").string() : p;
}

}  // namespace

// RunKdCache as a class: one method per step of the header's pipeline.
class KdCacheRunner {
 public:
  KdCacheRunner(const KdCacheOptions& o, Reporter& reporter, CancelToken& cancel)
      : o_(o), reporter_(reporter), cancel_(cancel),
        meta_path_((fs::path(o.output_dir) / "meta.json").string()),
        progress_path_((fs::path(o.output_dir) / "progress.json").string()) {}

  absl::Status Run();

 private:
  absl::Status RunSharded();  // data parallel (kd_cache_job.h)
  absl::StatusOr<bool> WriteShard(int64_t id, int64_t& stream_pos);  // false: the data ran out
  absl::Status ReadData();
  absl::Status OpenTokenizerAndConfig();
  absl::Status BuildMeta();
  absl::StatusOr<bool> PrepareOutputDir();  // false: a resumed cache that is already complete
  absl::Status OpenStream();
  absl::Status LoadTeacher();
  absl::Status OpenWriter();
  absl::Status Loop();
  // Reads up to `want` sequences (sets exhausted_ when the data runs out), hands them to the
  // teacher as the batch starting at `pos` and writes what the teacher has finished. Returns
  // how many were read.
  absl::StatusOr<int64_t> SubmitBatch(std::vector<int32_t>& ids, int64_t pos, int64_t want);
  absl::Status Consume(const std::optional<kd::TeacherHostBatch>& done);
  absl::Status Finish();
  absl::Status CrashStatus() {
    std::lock_guard<std::mutex> lock(crash_mu_);
    return crash_status_;
  }

  const KdCacheOptions& o_;
  Reporter& reporter_;
  CancelToken& cancel_;
  const std::string meta_path_, progress_path_;

  kd::Dataset data_;
  std::string tokenizer_path_;
  std::optional<model::Tokenizer> tokenizer_;
  std::optional<model::Qwen3Config> config_;
  int64_t eos_ = -1;
  at::Device device_{at::kCPU};
  at::ScalarType dtype_ = at::kFloat;
  kd::KdCacheMeta meta_;
  kd::KdProgress start_;
  std::unique_ptr<kd::PackedSequenceStream> stream_;
  model::LoadedModel loaded_;
  std::unique_ptr<kd::TeacherPipeline> teacher_;
  std::unique_ptr<kd::KdCacheWriter> writer_;

  // after_durable's verdict, set from the writer's thread.
  std::atomic<bool> crashed_{false};
  std::mutex crash_mu_;
  absl::Status crash_status_;  // guarded by crash_mu_; set once crashed_

  std::chrono::steady_clock::time_point t0_, last_metric_;
  bool exhausted_ = false;
  // Data parallel: sequences this rank computed and has to compute in this run.
  int64_t rank_done_ = 0, rank_total_ = 0;
  std::atomic<int64_t> rank_shards_durable_{0};  // the hook's count (writer threads, one at a time)
};

absl::Status KdCacheRunner::Run() {
  if (o_.dist != nullptr && o_.dist->distributed()) return RunSharded();
  QATD_RETURN_IF_ERROR(o_.Validate());
  QATD_RETURN_IF_ERROR(ReadData());
  QATD_RETURN_IF_ERROR(OpenTokenizerAndConfig());
  QATD_RETURN_IF_ERROR(BuildMeta());
  QATD_ASSIGN_OR_RETURN(const bool more, PrepareOutputDir());
  if (!more) return absl::OkStatus();
  QATD_RETURN_IF_ERROR(OpenStream());
  QATD_RETURN_IF_ERROR(LoadTeacher());
  QATD_RETURN_IF_ERROR(OpenWriter());
  QATD_RETURN_IF_ERROR(Loop());
  return Finish();
}

// 1. Data first: a malformed file fails before anything expensive happens.
absl::Status KdCacheRunner::ReadData() {
  QATD_ASSIGN_OR_RETURN(data_, kd::ReadDataset({o_.dataset, o_.dataset_format, o_.dataset_text_field, o_.text_unit}));
  if (!data_.bad_records.empty()) {
    const size_t shown = std::min<size_t>(data_.bad_records.size(), 10);
    for (size_t i = 0; i < shown; ++i) {
      reporter_.Log(LogLevel::kWarning, absl::StrCat("bad record ", data_.bad_records[i].location.ToString(), ": ",
                                                     data_.bad_records[i].reason));
    }
    reporter_.Log(LogLevel::kWarning, absl::StrCat(data_.bad_records.size(), " bad record(s) skipped",
                                                   shown < data_.bad_records.size() ? " (first 10 listed)" : ""));
  }
  if (data_.records.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(o_.dataset, ": no usable records (", data_.bad_records.size(),
                                                      " bad, ", data_.skipped_empty, " empty)"));
  }
  reporter_.Log(LogLevel::kInfo, absl::StrCat("dataset: ", data_.records.size(), " records from ", data_.files.size(),
                                              " file(s)"));
  return absl::OkStatus();
}

// 2. Tokenizer and teacher config (cheap; the weights come later).
absl::Status KdCacheRunner::OpenTokenizerAndConfig() {
  tokenizer_path_ = o_.tokenizer.empty() ? o_.teacher_model : o_.tokenizer;
  QATD_ASSIGN_OR_RETURN(model::Tokenizer tokenizer, model::Tokenizer::FromFile(tokenizer_path_));
  tokenizer_.emplace(std::move(tokenizer));
  QATD_ASSIGN_OR_RETURN(model::Qwen3Config config, model::Qwen3Config::FromFile(o_.teacher_model));
  config_.emplace(std::move(config));
  if (tokenizer_->vocab_size() > config_->vocab_size) {
    // Its ids would index past the teacher's embedding ("index out of range in self").
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer ", TokenizerJsonPath(tokenizer_path_), " has token ids up to ", tokenizer_->vocab_size() - 1,
        ", but the teacher's vocab_size (config.json) is ", config_->vocab_size, ": they are not one model's"));
  }
  eos_ = tokenizer_->eos_token_id().value_or(-1);
  if (eos_ < 0) eos_ = config_->eos_token_id;
  if (eos_ < 0) {
    return absl::FailedPreconditionError("no eos token: neither tokenizer_config.json nor config.json names one");
  }
  if (o_.topk + (o_.rand_neg > 0 ? 1 : 0) > config_->vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("topk (", o_.topk, ") must be below the vocabulary size ",
                                                   config_->vocab_size));
  }
  QATD_ASSIGN_OR_RETURN(device_, ResolveDevice(o_.device));
  dtype_ = ScalarTypeOf(o_.dtype, device_);
  return absl::OkStatus();
}

absl::Status KdCacheRunner::BuildMeta() {
  QATD_ASSIGN_OR_RETURN(const std::string tokenizer_sha, Sha256File(TokenizerJsonPath(tokenizer_path_)));
  QATD_ASSIGN_OR_RETURN(const std::string dataset_sha, kd::DatasetSha256(data_.files));
  kd::KdCacheMeta& meta = meta_;
  meta.teacher_model = AbsolutePath(o_.teacher_model);
  meta.tokenizer_sha256 = tokenizer_sha;
  meta.dataset_path = AbsolutePath(o_.dataset);
  meta.dataset_format = kd::DatasetFormatName(o_.dataset_format);
  meta.dataset_text_field = o_.dataset_text_field;
  meta.dataset_text_unit = kd::TextUnitName(o_.text_unit);
  meta.dataset_sha256 = dataset_sha;
  meta.thinking = kd::ThinkingModeName(o_.enable_thinking);
  meta.max_length = o_.max_length;
  meta.top_k = o_.topk;
  meta.rand_neg = o_.rand_neg;
  meta.vocab_size = config_->vocab_size;
  meta.eos_token_id = eos_;
  meta.num_sequences = o_.num_sequences;
  meta.shard_size = o_.shard_size;
  meta.seed = o_.seed;
  meta.shuffle = o_.shuffle;
  meta.dtype = ScalarTypeName(dtype_);
  meta.device = device_.is_cuda() ? "cuda" : "cpu";
  meta.dataset_records = static_cast<int64_t>(data_.records.size());
  meta.dataset_bad_records = static_cast<int64_t>(data_.bad_records.size());
  meta.qatd_version = kd::QatdVersion();
  meta.libtorch_version = TORCH_VERSION;
  meta.created_utc = kd::UtcNowIso8601();
  return absl::OkStatus();
}

// 3. Output directory: new, replaced, or continued.
absl::StatusOr<bool> KdCacheRunner::PrepareOutputDir() {
  std::error_code ec;
  fs::create_directories(o_.output_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create output_dir ", o_.output_dir, ": ", ec.message()));
  if (o_.resume && fs::exists(meta_path_)) {
    QATD_ASSIGN_OR_RETURN(json old_json, kd::ReadJsonFile(meta_path_));
    QATD_ASSIGN_OR_RETURN(kd::KdCacheMeta old, kd::KdCacheMeta::FromJson(old_json));
    QATD_RETURN_IF_ERROR(CompareForResume(old, meta_));
    meta_.created_utc = old.created_utc;
    meta_.device = old.device;
    meta_.extra = old.extra;
    if (fs::exists(progress_path_)) {
      QATD_ASSIGN_OR_RETURN(json pj, kd::ReadJsonFile(progress_path_));
      QATD_ASSIGN_OR_RETURN(start_, kd::KdProgress::FromJson(pj));
    }
    if (start_.done && start_.n_written >= o_.num_sequences) {
      reporter_.Log(LogLevel::kInfo, absl::StrCat("resume: ", o_.output_dir, " is already complete (",
                                                  start_.n_written, " sequences)"));
      reporter_.Artifact(o_.output_dir, "kd_cache");
      return false;
    }
    start_.done = false;
    // Whole shards past progress.json (a data-parallel run writes shards out of order, and a
    // crash can come between a shard's rename and progress.json) are kept.
    while (start_.n_written % o_.shard_size == 0 && start_.n_written < o_.num_sequences) {
      const int64_t id = start_.n_written / o_.shard_size;
      const int64_t rows = ShardRows(id, o_.num_sequences, o_.shard_size);
      if (!ShardComplete(o_.output_dir, id, rows)) break;
      start_.n_written += rows;
      start_.next_shard_id = id + 1;
    }
    reporter_.Log(LogLevel::kInfo, absl::StrCat("resume: ", start_.n_written, " sequences already on disk"));
  } else if (HasCacheFiles(o_.output_dir)) {
    if (!o_.overwrite) {
      return absl::FailedPreconditionError(absl::StrCat("output_dir ", o_.output_dir,
                                                        " already holds a KD cache: pass --resume to continue it "
                                                        "or --overwrite to replace it"));
    }
    RemoveCacheFiles(o_.output_dir);
  }
  QATD_RETURN_IF_ERROR(kd::WriteJsonFileAtomic(meta_path_, meta_.ToJson()));
  if (start_.n_written == 0) QATD_RETURN_IF_ERROR(kd::WriteJsonFileAtomic(progress_path_, start_.ToJson()));
  return true;
}

// 4. The sample stream, fast-forwarded past what is already stored.
absl::Status KdCacheRunner::OpenStream() {
  kd::SampleStreamOptions so;
  so.render = {o_.dataset_format, o_.enable_thinking};
  so.block_length = o_.max_length;
  so.eos_id = static_cast<int32_t>(eos_);
  so.seed = o_.seed;
  so.shuffle = o_.shuffle;
  so.num_threads = o_.num_threads > 0 ? o_.num_threads
                                      : static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 8u));
  const model::Tokenizer* tokenizer = &*tokenizer_;
  stream_ = std::make_unique<kd::PackedSequenceStream>(
      data_, [tokenizer](const std::string& text) { return tokenizer->Encode(text); }, so);
  if (start_.n_written > 0) {
    QATD_ASSIGN_OR_RETURN(const int64_t skipped, stream_->Skip(start_.n_written));
    if (skipped != start_.n_written) {
      return absl::DataLossError(absl::StrCat("resume: the dataset yields ", skipped, " sequences but ",
                                              start_.n_written, " are stored"));
    }
  }
  return absl::OkStatus();
}

// 5. Teacher.
absl::Status KdCacheRunner::LoadTeacher() {
  reporter_.Log(LogLevel::kInfo, absl::StrCat("loading teacher ", o_.teacher_model, " (", ScalarTypeName(dtype_), ", ",
                                              device_.str(), ")"));
  QATD_ASSIGN_OR_RETURN(loaded_, model::LoadQwen3(o_.teacher_model, {dtype_, device_}));
  loaded_.model->eval();
  kd::TeacherOptions to;
  to.reporter = &reporter_;
  to.top_k = o_.topk;
  to.rand_neg = o_.rand_neg;
  to.chunk_rows = o_.logits_chunk_rows;
  to.seed = o_.seed;
  teacher_ = std::make_unique<kd::TeacherPipeline>(loaded_.model, to, o_.max_length);
  return absl::OkStatus();
}

absl::Status KdCacheRunner::OpenWriter() {
  kd::KdCacheWriter::Options wo;
  wo.dir = o_.output_dir;
  wo.layout = {o_.max_length, o_.topk, o_.rand_neg, o_.shard_size};
  if (o_.after_durable) {
    wo.on_durable = [this](int64_t shards) {
      absl::Status hooked = o_.after_durable(shards);
      if (hooked.ok() || crashed_.load()) return;
      std::lock_guard<std::mutex> lock(crash_mu_);
      crash_status_ = hooked;
      crashed_.store(true);
    };
  }
  QATD_ASSIGN_OR_RETURN(writer_, kd::KdCacheWriter::Open(wo, start_));
  return absl::OkStatus();
}

// 6. The loop. Batches never cross a shard boundary, so a continuation batches exactly as an
// uninterrupted run does.
absl::Status KdCacheRunner::Loop() {
  t0_ = last_metric_ = std::chrono::steady_clock::now();
  int64_t pos = start_.n_written;
  std::vector<int32_t> ids(static_cast<size_t>(o_.batch_size * o_.max_length));
  while (pos < o_.num_sequences && !cancel_.cancelled()) {
    const int64_t shard_end = (pos / o_.shard_size + 1) * o_.shard_size;
    const int64_t want = std::min({o_.batch_size, shard_end - pos, o_.num_sequences - pos});
    QATD_ASSIGN_OR_RETURN(const int64_t got, SubmitBatch(ids, pos, want));
    pos += got;
    if (crashed_.load()) return CrashStatus();
    if (exhausted_) break;
  }
  QATD_ASSIGN_OR_RETURN(auto last, teacher_->Drain());
  QATD_RETURN_IF_ERROR(Consume(last));
  if (crashed_.load()) return CrashStatus();
  return absl::OkStatus();
}

absl::StatusOr<int64_t> KdCacheRunner::SubmitBatch(std::vector<int32_t>& ids, int64_t pos, int64_t want) {
  int64_t got = 0;
  while (got < want) {
    QATD_ASSIGN_OR_RETURN(const bool more, stream_->Next(ids.data() + got * o_.max_length));
    if (!more) {
      exhausted_ = true;
      break;
    }
    ++got;
  }
  if (got > 0) {
    QATD_ASSIGN_OR_RETURN(auto done, teacher_->Submit(ids.data(), got, pos));
    QATD_RETURN_IF_ERROR(Consume(done));
  }
  return got;
}

absl::Status KdCacheRunner::Consume(const std::optional<kd::TeacherHostBatch>& done) {
  if (!done.has_value()) return absl::OkStatus();
  QATD_RETURN_IF_ERROR(writer_->Append(done->rows()));
  const auto now = std::chrono::steady_clock::now();
  if (rank_total_ > 0) {  // data parallel: this rank's share
    rank_done_ += done->rows().n;
    const double secs = std::chrono::duration<double>(now - t0_).count();
    const double rate = secs > 0 ? static_cast<double>(rank_done_) / secs : 0.0;
    reporter_.Progress(rank_done_, rank_total_, "sequences", rate,
                       rate > 0 ? static_cast<double>(rank_total_ - rank_done_) / rate : -1.0);
    return absl::OkStatus();
  }
  const double secs = std::chrono::duration<double>(now - t0_).count();
  const int64_t n_done = writer_->n_appended();
  const double rate = secs > 0 ? static_cast<double>(n_done - start_.n_written) / secs : 0.0;
  const double eta = rate > 0 ? static_cast<double>(o_.num_sequences - n_done) / rate : -1.0;
  reporter_.Progress(n_done, o_.num_sequences, "sequences", rate, eta);
  if (std::chrono::duration<double>(now - last_metric_).count() >= 1.0) {
    reporter_.Metric("kd_cache/tokens_per_second", n_done, rate * static_cast<double>(o_.max_length));
    last_metric_ = now;
  }
  return absl::OkStatus();
}

absl::Status KdCacheRunner::Finish() {
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  const int64_t computed = writer_->n_appended() - start_.n_written;
  if (cancel_.cancelled() && writer_->n_appended() < o_.num_sequences && !exhausted_) {
    QATD_RETURN_IF_ERROR(writer_->Flush());
    reporter_.Log(LogLevel::kInfo, absl::StrCat("cancelled: ", writer_->n_durable(),
                                                " sequences are durable; continue with --resume"));
    return absl::CancelledError(absl::StrCat("KD cache cancelled after ", writer_->n_durable(), " sequences"));
  }
  QATD_RETURN_IF_ERROR(writer_->Finish());
  if (exhausted_) {
    reporter_.Log(LogLevel::kWarning, absl::StrCat("dataset exhausted after ", writer_->n_appended(),
                                                   " sequences (", o_.num_sequences, " requested)"));
  }
  const double tps = secs > 0 ? static_cast<double>(computed * o_.max_length) / secs : 0.0;
  reporter_.Metric("kd_cache/tokens_per_second", writer_->n_appended(), tps);
  reporter_.Log(LogLevel::kInfo, absl::StrCat("KD cache done: ", writer_->n_appended(), " sequences of ",
                                              o_.max_length, " tokens in ", o_.output_dir, " (",
                                              static_cast<int64_t>(tps), " tokens/s)"));
  reporter_.Artifact(o_.output_dir, "kd_cache");
  return absl::OkStatus();
}

// Data parallel: rank r of W writes shards r, r + W, r + 2W, ... of the cache a single process
// writes, each batched from its first sequence as the single process batches it (batches never
// cross a shard boundary), so every shard file is byte for byte the one-process file. Rank 0
// alone prepares output_dir and, once every rank is done, writes progress.json; the ranks
// write no progress.json of their own: a shard file with all its rows is done (ShardComplete),
// which is what a continuation, with any number of ranks, goes by.
absl::Status KdCacheRunner::RunSharded() {
  train::DistGroup& dist = *o_.dist;
  QATD_RETURN_IF_ERROR(o_.Validate());
  QATD_RETURN_IF_ERROR(ReadData());
  QATD_RETURN_IF_ERROR(OpenTokenizerAndConfig());
  QATD_RETURN_IF_ERROR(BuildMeta());
  absl::StatusOr<bool> more = true;
  if (dist.primary()) more = PrepareOutputDir();
  QATD_ASSIGN_OR_RETURN(const bool prepare_failed, dist.Any(!more.ok()));
  if (!more.ok()) return more.status();
  if (prepare_failed) return absl::AbortedError("rank 0 could not prepare output_dir (its error is the job's)");
  QATD_ASSIGN_OR_RETURN(const bool go_on, dist.Any(dist.primary() && *more));
  if (!go_on) return absl::OkStatus();

  const int64_t size = o_.shard_size, n = o_.num_sequences;
  const int64_t shards = (n + size - 1) / size;
  std::vector<int64_t> todo;
  int64_t kept = 0;
  for (int64_t id = dist.rank(); id < shards; id += dist.world_size()) {
    if (o_.resume && ShardComplete(o_.output_dir, id, ShardRows(id, n, size))) {
      ++kept;
      continue;
    }
    todo.push_back(id);
    rank_total_ += ShardRows(id, n, size);
  }
  reporter_.Log(LogLevel::kInfo, absl::StrCat("data parallel: rank ", dist.rank(), " of ", dist.world_size(),
                                              " writes shards ", dist.rank(), ", ", dist.rank() + dist.world_size(),
                                              ", ... (", todo.size(), " to compute, ", kept,
                                              " already on disk); progress counts this rank's sequences"));
  int64_t stream_pos = 0;
  size_t whole = 0;  // shards of todo written
  bool ran_out = false;
  if (!todo.empty()) {
    start_ = kd::KdProgress{};  // the stream starts at sequence 0 on every rank
    QATD_RETURN_IF_ERROR(OpenStream());
    QATD_RETURN_IF_ERROR(LoadTeacher());
    t0_ = last_metric_ = std::chrono::steady_clock::now();
    for (const int64_t id : todo) {
      if (cancel_.cancelled()) break;
      QATD_ASSIGN_OR_RETURN(const bool written, WriteShard(id, stream_pos));
      if (crashed_.load()) return CrashStatus();
      if (!written) {
        ran_out = exhausted_;
        break;
      }
      ++whole;
    }
  }
  const bool stopped = !ran_out && whole < todo.size();  // cancelled
  // The data's length where it ran out (the smallest any rank saw), and whether a rank stopped.
  at::Tensor length = at::full({1}, static_cast<double>(ran_out ? stream_pos : n), at::kDouble);
  QATD_RETURN_IF_ERROR(dist.AllReduce(length, train::ReduceOp::kMin));
  QATD_ASSIGN_OR_RETURN(const bool cancelled, dist.Any(stopped));
  if (cancelled) {
    return absl::CancelledError("KD cache cancelled: the whole shards written are kept; continue with --resume");
  }
  if (!dist.primary()) return absl::OkStatus();
  const int64_t total = static_cast<int64_t>(length.item<double>());
  const int64_t written_shards = (total + size - 1) / size;
  for (int64_t id = 0; id < written_shards; ++id) {
    if (!ShardComplete(o_.output_dir, id, ShardRows(id, total, size))) {
      return absl::DataLossError(absl::StrCat("data parallel KD cache: ", kd::ShardFileName(id), " in ", o_.output_dir,
                                              " does not hold its ", ShardRows(id, total, size), " sequences"));
    }
  }
  QATD_RETURN_IF_ERROR(kd::WriteJsonFileAtomic(progress_path_, kd::KdProgress{total, written_shards, true}.ToJson()));
  if (total < n) {
    reporter_.Log(LogLevel::kWarning,
                  absl::StrCat("dataset exhausted after ", total, " sequences (", n, " requested)"));
  }
  reporter_.Log(LogLevel::kInfo, absl::StrCat("KD cache done: ", total, " sequences of ", o_.max_length, " tokens in ",
                                              o_.output_dir, " (", dist.world_size(), " ranks)"));
  reporter_.Artifact(o_.output_dir, "kd_cache");
  return absl::OkStatus();
}

// Computes shard `id` from the stream (at `stream_pos`, moved on) and writes it whole. Returns
// false when it is not whole: the data ran out (exhausted_, stream_pos = the data's length; the
// partial shard is written, as a single process writes it) or a cancel came (nothing written).
absl::StatusOr<bool> KdCacheRunner::WriteShard(int64_t id, int64_t& stream_pos) {
  const int64_t begin = id * o_.shard_size, end = std::min(o_.num_sequences, begin + o_.shard_size);
  QATD_ASSIGN_OR_RETURN(const int64_t skipped, stream_->Skip(begin - stream_pos));
  stream_pos += skipped;
  if (stream_pos < begin) {
    exhausted_ = true;
    return false;
  }
  kd::KdCacheWriter::Options wo;
  wo.dir = o_.output_dir;
  wo.layout = {o_.max_length, o_.topk, o_.rand_neg, o_.shard_size};
  wo.write_progress = false;
  if (o_.after_durable) {
    wo.on_durable = [this](int64_t) {
      // The hook counts this rank's shards, as it counts a single process's.
      absl::Status hooked = o_.after_durable(++rank_shards_durable_);
      if (hooked.ok() || crashed_.load()) return;
      std::lock_guard<std::mutex> lock(crash_mu_);
      crash_status_ = hooked;
      crashed_.store(true);
    };
  }
  QATD_ASSIGN_OR_RETURN(writer_, kd::KdCacheWriter::Open(wo, {begin, id, false}));
  std::vector<int32_t> ids(static_cast<size_t>(o_.batch_size * o_.max_length));
  int64_t pos = begin;
  while (pos < end && !cancel_.cancelled() && !exhausted_) {
    const int64_t want = std::min(o_.batch_size, end - pos);
    QATD_ASSIGN_OR_RETURN(const int64_t got, SubmitBatch(ids, pos, want));
    pos += got;
  }
  QATD_ASSIGN_OR_RETURN(auto last, teacher_->Drain());
  QATD_RETURN_IF_ERROR(Consume(last));
  stream_pos = pos;
  if (pos < end && !exhausted_) {
    writer_.reset();  // cancelled: the partial shard is dropped, a continuation recomputes it
    return false;
  }
  QATD_RETURN_IF_ERROR(writer_->Finish());
  writer_.reset();  // joins the writer thread: the hook has run
  return pos == end;
}

absl::Status RunKdCache(const KdCacheOptions& o, Reporter& reporter, CancelToken& cancel) {
  return KdCacheRunner(o, reporter, cancel).Run();
}

}  // namespace qatd::jobs
