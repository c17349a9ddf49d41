#include "core/jobs/kd_cache_job.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <torch/version.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <regex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"
#include "core/common/torch_status.h"
#include "core/kd/cache_format.h"
#include "core/kd/cache_writer.h"
#include "core/kd/dataset.h"
#include "core/kd/render.h"
#include "core/kd/sample_stream.h"
#include "core/common/sha256.h"
#include "core/kd/teacher.h"
#include "core/model/model_io.h"
#include "core/model/qwen3_config.h"
#include "core/model/tokenizer.h"

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

std::string TokenizerJsonPath(const std::string& p) {
  std::error_code ec;
  return fs::is_directory(p, ec) ? (fs::path(p) / "tokenizer.json").string() : p;
}

}  // namespace


absl::Status RunKdCache(const KdCacheOptions& o, Reporter& reporter, CancelToken& cancel) {
  QATD_RETURN_IF_ERROR(o.Validate());
  const kd::DatasetFormat format = o.dataset_format;
  const kd::ThinkingMode thinking = o.enable_thinking;
  const kd::TextUnit text_unit = o.text_unit;

  // 1. Data first: a malformed file fails before anything expensive happens.
  QATD_ASSIGN_OR_RETURN(kd::Dataset data, kd::ReadDataset({o.dataset, format, o.dataset_text_field, text_unit}));
  if (!data.bad_records.empty()) {
    const size_t shown = std::min<size_t>(data.bad_records.size(), 10);
    for (size_t i = 0; i < shown; ++i) {
      reporter.Log(LogLevel::kWarning, absl::StrCat("bad record ", data.bad_records[i].location.ToString(), ": ",
                                                    data.bad_records[i].reason));
    }
    reporter.Log(LogLevel::kWarning, absl::StrCat(data.bad_records.size(), " bad record(s) skipped",
                                                  shown < data.bad_records.size() ? " (first 10 listed)" : ""));
  }
  if (data.records.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(o.dataset, ": no usable records (", data.bad_records.size(),
                                                      " bad, ", data.skipped_empty, " empty)"));
  }
  reporter.Log(LogLevel::kInfo, absl::StrCat("dataset: ", data.records.size(), " records from ", data.files.size(),
                                             " file(s)"));

  // 2. Tokenizer and teacher config (cheap; the weights come later).
  const std::string tokenizer_path = o.tokenizer.empty() ? o.teacher_model : o.tokenizer;
  QATD_ASSIGN_OR_RETURN(const model::Tokenizer tokenizer, model::Tokenizer::FromFile(tokenizer_path));
  QATD_ASSIGN_OR_RETURN(const std::string tokenizer_sha, Sha256File(TokenizerJsonPath(tokenizer_path)));
  QATD_ASSIGN_OR_RETURN(const model::Qwen3Config config, model::Qwen3Config::FromFile(o.teacher_model));
  if (tokenizer.vocab_size() > config.vocab_size) {
    // Its ids would index past the teacher's embedding ("index out of range in self").
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer ", TokenizerJsonPath(tokenizer_path), " has token ids up to ", tokenizer.vocab_size() - 1,
        ", but the teacher's vocab_size (config.json) is ", config.vocab_size, ": they are not one model's"));
  }
  int64_t eos = tokenizer.eos_token_id().value_or(-1);
  if (eos < 0) eos = config.eos_token_id;
  if (eos < 0) {
    return absl::FailedPreconditionError("no eos token: neither tokenizer_config.json nor config.json names one");
  }
  if (o.topk + (o.rand_neg > 0 ? 1 : 0) > config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("topk (", o.topk, ") must be below the vocabulary size ",
                                                   config.vocab_size));
  }
  QATD_ASSIGN_OR_RETURN(const at::Device device, ResolveDevice(o.device));
  const at::ScalarType dtype = ScalarTypeOf(o.dtype, device);
  QATD_ASSIGN_OR_RETURN(const std::string dataset_sha, kd::DatasetSha256(data.files));

  kd::KdCacheMeta meta;
  meta.teacher_model = AbsolutePath(o.teacher_model);
  meta.tokenizer_sha256 = tokenizer_sha;
  meta.dataset_path = AbsolutePath(o.dataset);
  meta.dataset_format = kd::DatasetFormatName(format);
  meta.dataset_text_field = o.dataset_text_field;
  meta.dataset_text_unit = kd::TextUnitName(text_unit);
  meta.dataset_sha256 = dataset_sha;
  meta.thinking = kd::ThinkingModeName(thinking);
  meta.max_length = o.max_length;
  meta.top_k = o.topk;
  meta.rand_neg = o.rand_neg;
  meta.vocab_size = config.vocab_size;
  meta.eos_token_id = eos;
  meta.num_sequences = o.num_sequences;
  meta.shard_size = o.shard_size;
  meta.seed = o.seed;
  meta.shuffle = o.shuffle;
  meta.dtype = ScalarTypeName(dtype);
  meta.device = device.is_cuda() ? "cuda" : "cpu";
  meta.dataset_records = static_cast<int64_t>(data.records.size());
  meta.dataset_bad_records = static_cast<int64_t>(data.bad_records.size());
  meta.qatd_version = kd::QatdVersion();
  meta.libtorch_version = TORCH_VERSION;
  meta.created_utc = kd::UtcNowIso8601();

  // 3. Output directory: new, replaced, or continued.
  std::error_code ec;
  fs::create_directories(o.output_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create output_dir ", o.output_dir, ": ", ec.message()));
  const std::string meta_path = (fs::path(o.output_dir) / "meta.json").string();
  const std::string progress_path = (fs::path(o.output_dir) / "progress.json").string();
  kd::KdProgress start;
  if (o.resume && fs::exists(meta_path)) {
    QATD_ASSIGN_OR_RETURN(json old_json, kd::ReadJsonFile(meta_path));
    QATD_ASSIGN_OR_RETURN(kd::KdCacheMeta old, kd::KdCacheMeta::FromJson(old_json));
    QATD_RETURN_IF_ERROR(CompareForResume(old, meta));
    meta.created_utc = old.created_utc;
    meta.device = old.device;
    meta.extra = old.extra;
    if (fs::exists(progress_path)) {
      QATD_ASSIGN_OR_RETURN(json pj, kd::ReadJsonFile(progress_path));
      QATD_ASSIGN_OR_RETURN(start, kd::KdProgress::FromJson(pj));
    }
    if (start.done && start.n_written >= o.num_sequences) {
      reporter.Log(LogLevel::kInfo, absl::StrCat("resume: ", o.output_dir, " is already complete (",
                                                 start.n_written, " sequences)"));
      reporter.Artifact(o.output_dir, "kd_cache");
      return absl::OkStatus();
    }
    start.done = false;
    reporter.Log(LogLevel::kInfo, absl::StrCat("resume: ", start.n_written, " sequences already on disk"));
  } else if (HasCacheFiles(o.output_dir)) {
    if (!o.overwrite) {
      return absl::FailedPreconditionError(absl::StrCat("output_dir ", o.output_dir,
                                                        " already holds a KD cache: pass --resume to continue it "
                                                        "or --overwrite to replace it"));
    }
    RemoveCacheFiles(o.output_dir);
  }
  QATD_RETURN_IF_ERROR(kd::WriteJsonFileAtomic(meta_path, meta.ToJson()));
  if (start.n_written == 0) QATD_RETURN_IF_ERROR(kd::WriteJsonFileAtomic(progress_path, start.ToJson()));

  // 4. The sample stream, fast-forwarded past what is already stored.
  kd::SampleStreamOptions so;
  so.render = {format, thinking};
  so.block_length = o.max_length;
  so.eos_id = static_cast<int32_t>(eos);
  so.seed = o.seed;
  so.shuffle = o.shuffle;
  so.num_threads = o.num_threads > 0 ? o.num_threads
                                     : static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 8u));
  kd::PackedSequenceStream stream(
      data, [&tokenizer](const std::string& text) { return tokenizer.Encode(text); }, so);
  if (start.n_written > 0) {
    QATD_ASSIGN_OR_RETURN(const int64_t skipped, stream.Skip(start.n_written));
    if (skipped != start.n_written) {
      return absl::DataLossError(absl::StrCat("resume: the dataset yields ", skipped, " sequences but ",
                                              start.n_written, " are stored"));
    }
  }

  // 5. Teacher.
  reporter.Log(LogLevel::kInfo, absl::StrCat("loading teacher ", o.teacher_model, " (", ScalarTypeName(dtype), ", ",
                                             device.str(), ")"));
  QATD_ASSIGN_OR_RETURN(model::LoadedModel loaded, model::LoadQwen3(o.teacher_model, {dtype, device}));
  loaded.model->eval();
  kd::TeacherOptions to;
  to.reporter = &reporter;
  to.top_k = o.topk;
  to.rand_neg = o.rand_neg;
  to.chunk_rows = o.logits_chunk_rows;
  to.seed = o.seed;
  kd::TeacherPipeline teacher(loaded.model, to, o.max_length);

  std::atomic<bool> crashed{false};
  std::mutex crash_mu;
  absl::Status crash_status;  // guarded by crash_mu; set once `crashed`
  kd::KdCacheWriter::Options wo;
  wo.dir = o.output_dir;
  wo.layout = {o.max_length, o.topk, o.rand_neg, o.shard_size};
  if (o.after_durable) {
    wo.on_durable = [&](int64_t shards) {
      absl::Status hooked = o.after_durable(shards);
      if (hooked.ok() || crashed.load()) return;
      std::lock_guard<std::mutex> lock(crash_mu);
      crash_status = hooked;
      crashed.store(true);
    };
  }
  auto crash = [&] {
    std::lock_guard<std::mutex> lock(crash_mu);
    return crash_status;
  };
  QATD_ASSIGN_OR_RETURN(std::unique_ptr<kd::KdCacheWriter> writer, kd::KdCacheWriter::Open(wo, start));

  // 6. The loop. Batches never cross a shard boundary, so a continuation batches exactly
  // as an uninterrupted run does.
  const auto t0 = std::chrono::steady_clock::now();
  auto last_metric = t0;
  const int64_t first = start.n_written;
  int64_t pos = start.n_written;
  bool exhausted = false;
  std::vector<int32_t> ids(static_cast<size_t>(o.batch_size * o.max_length));
  auto consume = [&](const std::optional<kd::TeacherHostBatch>& done) -> absl::Status {
    if (!done.has_value()) return absl::OkStatus();
    QATD_RETURN_IF_ERROR(writer->Append(done->rows()));
    const auto now = std::chrono::steady_clock::now();
    const double secs = std::chrono::duration<double>(now - t0).count();
    const int64_t n_done = writer->n_appended();
    const double rate = secs > 0 ? static_cast<double>(n_done - first) / secs : 0.0;
    const double eta = rate > 0 ? static_cast<double>(o.num_sequences - n_done) / rate : -1.0;
    reporter.Progress(n_done, o.num_sequences, "sequences", rate, eta);
    if (std::chrono::duration<double>(now - last_metric).count() >= 1.0) {
      reporter.Metric("kd_cache/tokens_per_second", n_done, rate * static_cast<double>(o.max_length));
      last_metric = now;
    }
    return absl::OkStatus();
  };
  while (pos < o.num_sequences && !cancel.cancelled()) {
    const int64_t shard_end = (pos / o.shard_size + 1) * o.shard_size;
    const int64_t want = std::min({o.batch_size, shard_end - pos, o.num_sequences - pos});
    int64_t got = 0;
    while (got < want) {
      QATD_ASSIGN_OR_RETURN(const bool more, stream.Next(ids.data() + got * o.max_length));
      if (!more) {
        exhausted = true;
        break;
      }
      ++got;
    }
    if (got > 0) {
      QATD_ASSIGN_OR_RETURN(auto done, teacher.Submit(ids.data(), got, pos));
      QATD_RETURN_IF_ERROR(consume(done));
      pos += got;
    }
    if (crashed.load()) return crash();
    if (exhausted) break;
  }
  QATD_ASSIGN_OR_RETURN(auto last, teacher.Drain());
  QATD_RETURN_IF_ERROR(consume(last));
  if (crashed.load()) return crash();

  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const int64_t computed = writer->n_appended() - first;
  if (cancel.cancelled() && writer->n_appended() < o.num_sequences && !exhausted) {
    QATD_RETURN_IF_ERROR(writer->Flush());
    reporter.Log(LogLevel::kInfo, absl::StrCat("cancelled: ", writer->n_durable(),
                                               " sequences are durable; continue with --resume"));
    return absl::CancelledError(absl::StrCat("KD cache cancelled after ", writer->n_durable(), " sequences"));
  }
  QATD_RETURN_IF_ERROR(writer->Finish());
  if (exhausted) {
    reporter.Log(LogLevel::kWarning, absl::StrCat("dataset exhausted after ", writer->n_appended(),
                                                  " sequences (", o.num_sequences, " requested)"));
  }
  const double tps = secs > 0 ? static_cast<double>(computed * o.max_length) / secs : 0.0;
  reporter.Metric("kd_cache/tokens_per_second", writer->n_appended(), tps);
  reporter.Log(LogLevel::kInfo, absl::StrCat("KD cache done: ", writer->n_appended(), " sequences of ", o.max_length,
                                             " tokens in ", o.output_dir, " (", static_cast<int64_t>(tps),
                                             " tokens/s)"));
  reporter.Artifact(o.output_dir, "kd_cache");
  return absl::OkStatus();
}

}  // namespace qatd::jobs
