#include "core/kd/cache_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"
#include "core/model/safetensors.h"

namespace qatd::kd {
namespace {

template <typename T>
void AppendRows(std::vector<T>& dst, const T* src, int64_t n, int64_t per_row) {
  dst.insert(dst.end(), src, src + n * per_row);
}

std::string ShardPath(const std::string& dir, int64_t shard_id) {
  return (std::filesystem::path(dir) / ShardFileName(shard_id)).string();
}

// Makes the renames into `dir` durable.
absl::Status FsyncDir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot open ", dir, ": ", std::strerror(errno)));
  const int rc = ::fsync(fd);
  const int saved = errno;
  ::close(fd);
  if (rc != 0) return absl::InternalError(absl::StrCat("fsync ", dir, ": ", std::strerror(saved)));
  return absl::OkStatus();
}

}  // namespace

KdCacheWriter::KdCacheWriter(Options options) : options_(std::move(options)) {
  const KdShardLayout& l = options_.layout;
  row_ids_ = l.max_length;
  row_topk_ = (l.max_length - 1) * l.top_k;
  row_rand_ = (l.max_length - 1) * l.rand_neg;
}

absl::StatusOr<std::unique_ptr<KdCacheWriter>> KdCacheWriter::Open(Options options, const KdProgress& start) {
  const KdShardLayout& l = options.layout;
  if (l.max_length < 2 || l.top_k < 1 || l.rand_neg < 0 || l.shard_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("KdCacheWriter: bad layout L=", l.max_length, " K=", l.top_k,
                                                   " R=", l.rand_neg, " shard_size=", l.shard_size));
  }
  if (options.queue_depth < 1) options.queue_depth = 1;
  const int64_t full = start.n_written / l.shard_size;
  const int64_t partial = start.n_written % l.shard_size;
  const int64_t expected_next = full + (partial > 0 ? 1 : 0);
  if (start.next_shard_id != expected_next) {
    return absl::InvalidArgumentError(absl::StrCat("progress.json: next_shard_id is ", start.next_shard_id, " but ",
                                                   start.n_written, " sequences in shards of ", l.shard_size,
                                                   " end in shard ", expected_next));
  }
  std::unique_ptr<KdCacheWriter> w(new KdCacheWriter(std::move(options)));
  w->NewShard(full);
  if (partial > 0) QATD_RETURN_IF_ERROR(w->LoadPartialShard(full, partial));
  w->n_appended_ = start.n_written;
  w->n_queued_ = start.n_written;
  w->n_durable_ = start.n_written;
  w->thread_ = std::thread([raw = w.get()]() { raw->Run(); });
  return w;
}

KdCacheWriter::~KdCacheWriter() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void KdCacheWriter::NewShard(int64_t shard_id) {
  auto s = std::make_shared<ShardBuffer>();
  s->shard_id = shard_id;
  const int64_t cap = options_.layout.shard_size;
  s->input_ids.reserve(static_cast<size_t>(cap * row_ids_));
  s->topk_idx.reserve(static_cast<size_t>(cap * row_topk_));
  s->topk_logits.reserve(static_cast<size_t>(cap * row_topk_));
  if (row_rand_ > 0) {
    s->rand_idx.reserve(static_cast<size_t>(cap * row_rand_));
    s->rand_logits.reserve(static_cast<size_t>(cap * row_rand_));
  }
  current_ = std::move(s);
}

absl::Status KdCacheWriter::LoadPartialShard(int64_t shard_id, int64_t rows) {
  const std::string path = ShardPath(options_.dir, shard_id);
  absl::StatusOr<std::shared_ptr<model::SafetensorsFile>> file = model::SafetensorsFile::Open(path);
  if (!file.ok()) {
    return absl::Status(file.status().code(),
                        absl::StrCat("resume: cannot reload the partial shard: ", file.status().message()));
  }
  const KdShardLayout& l = options_.layout;
  auto load = [&](const char* name, model::DType dtype, int64_t per_row, auto& dst) -> absl::Status {
    const model::TensorInfo* info = (*file)->Find(name);
    if (info == nullptr || info->dtype != dtype || info->shape.empty() || info->shape[0] < rows ||
        info->numel() != info->shape[0] * per_row) {
      return absl::DataLossError(absl::StrCat(path, ": tensor '", name, "' is missing or does not match L=",
                                              l.max_length, " K=", l.top_k, " R=", l.rand_neg, " with >= ", rows,
                                              " rows"));
    }
    using T = typename std::remove_reference_t<decltype(dst)>::value_type;
    const T* src = reinterpret_cast<const T*>((*file)->DataOf(*info));
    AppendRows(dst, src, rows, per_row);
    return absl::OkStatus();
  };
  QATD_RETURN_IF_ERROR(load("input_ids", model::DType::kI32, row_ids_, current_->input_ids));
  QATD_RETURN_IF_ERROR(load("topk_idx", model::DType::kI32, row_topk_, current_->topk_idx));
  QATD_RETURN_IF_ERROR(load("topk_logits", model::DType::kF16, row_topk_, current_->topk_logits));
  if (row_rand_ > 0) {
    QATD_RETURN_IF_ERROR(load("rand_idx", model::DType::kI32, row_rand_, current_->rand_idx));
    QATD_RETURN_IF_ERROR(load("rand_logits", model::DType::kF16, row_rand_, current_->rand_logits));
  }
  current_->rows = rows;
  return absl::OkStatus();
}

absl::Status KdCacheWriter::sticky_error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

int64_t KdCacheWriter::n_durable() const {
  std::lock_guard<std::mutex> lock(mu_);
  return n_durable_;
}

int64_t KdCacheWriter::shards_durable() const {
  std::lock_guard<std::mutex> lock(mu_);
  return shards_durable_;
}

absl::Status KdCacheWriter::Append(const KdRows& rows) {
  QATD_RETURN_IF_ERROR(sticky_error());
  if (rows.n < 0 || (rows.n > 0 && (rows.input_ids == nullptr || rows.topk_idx == nullptr ||
                                    rows.topk_logits == nullptr ||
                                    (row_rand_ > 0 && (rows.rand_idx == nullptr || rows.rand_logits == nullptr))))) {
    return absl::InvalidArgumentError("KdCacheWriter::Append: missing arrays for the layout");
  }
  const int64_t shard_size = options_.layout.shard_size;
  int64_t done = 0;
  while (done < rows.n) {
    const int64_t take = std::min(rows.n - done, shard_size - current_->rows);
    AppendRows(current_->input_ids, rows.input_ids + done * row_ids_, take, row_ids_);
    AppendRows(current_->topk_idx, rows.topk_idx + done * row_topk_, take, row_topk_);
    AppendRows(current_->topk_logits, rows.topk_logits + done * row_topk_, take, row_topk_);
    if (row_rand_ > 0) {
      AppendRows(current_->rand_idx, rows.rand_idx + done * row_rand_, take, row_rand_);
      AppendRows(current_->rand_logits, rows.rand_logits + done * row_rand_, take, row_rand_);
    }
    current_->rows += take;
    done += take;
    n_appended_ += take;
    if (current_->rows == shard_size) {
      const int64_t next_id = current_->shard_id + 1;
      n_queued_ = n_appended_;
      QATD_RETURN_IF_ERROR(Enqueue(current_, {n_appended_, next_id, false}));
      NewShard(next_id);
    }
  }
  return absl::OkStatus();
}

absl::Status KdCacheWriter::Enqueue(std::shared_ptr<const ShardBuffer> shard, KdProgress progress) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&]() {
    return !error_.ok() || static_cast<int>(queue_.size()) < options_.queue_depth;
  });
  if (!error_.ok()) return error_;
  queue_.push_back({std::move(shard), progress});
  cv_.notify_all();
  return absl::OkStatus();
}

absl::Status KdCacheWriter::WaitIdle() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&]() { return !error_.ok() || (queue_.empty() && !busy_); });
  return error_;
}

absl::Status KdCacheWriter::Flush() {
  QATD_RETURN_IF_ERROR(sticky_error());
  if (current_->rows > 0 && n_queued_ < n_appended_) {
    // A snapshot of the partial shard; the live buffer keeps growing afterwards.
    auto snapshot = std::make_shared<ShardBuffer>(*current_);
    n_queued_ = n_appended_;
    QATD_RETURN_IF_ERROR(Enqueue(std::move(snapshot), {n_appended_, current_->shard_id + 1, false}));
  }
  return WaitIdle();
}

absl::Status KdCacheWriter::Finish() {
  QATD_RETURN_IF_ERROR(Flush());
  if (!options_.write_progress) return absl::OkStatus();
  const int64_t shard_count = current_->shard_id + (current_->rows > 0 ? 1 : 0);
  KdProgress done{n_appended_, shard_count, true};
  absl::Status s = WriteJsonFileAtomic((std::filesystem::path(options_.dir) / "progress.json").string(), done.ToJson());
  if (!s.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    if (error_.ok()) error_ = s;
  }
  return s;
}

absl::Status KdCacheWriter::WriteJob(const Job& job) {
  const ShardBuffer& s = *job.shard;
  const KdShardLayout& l = options_.layout;
  const int64_t n = s.rows;
  std::vector<model::TensorToWrite> tensors;
  tensors.push_back({"input_ids", model::DType::kI32, {n, l.max_length}, s.input_ids.data(),
                     static_cast<size_t>(n * row_ids_) * sizeof(int32_t)});
  tensors.push_back({"topk_idx", model::DType::kI32, {n, l.max_length - 1, l.top_k}, s.topk_idx.data(),
                     static_cast<size_t>(n * row_topk_) * sizeof(int32_t)});
  tensors.push_back({"topk_logits", model::DType::kF16, {n, l.max_length - 1, l.top_k}, s.topk_logits.data(),
                     static_cast<size_t>(n * row_topk_) * sizeof(uint16_t)});
  if (row_rand_ > 0) {
    tensors.push_back({"rand_idx", model::DType::kI32, {n, l.max_length - 1, l.rand_neg}, s.rand_idx.data(),
                       static_cast<size_t>(n * row_rand_) * sizeof(int32_t)});
    tensors.push_back({"rand_logits", model::DType::kF16, {n, l.max_length - 1, l.rand_neg}, s.rand_logits.data(),
                       static_cast<size_t>(n * row_rand_) * sizeof(uint16_t)});
  }
  QATD_RETURN_IF_ERROR(model::WriteSafetensors(ShardPath(options_.dir, s.shard_id), tensors,
                                               {{"format", std::string(kKdCacheFormat)}}));
  if (!options_.write_progress) return FsyncDir(options_.dir);
  // WriteJsonFileAtomic fsyncs the directory, which also makes the shard's rename durable.
  return WriteJsonFileAtomic((std::filesystem::path(options_.dir) / "progress.json").string(), job.progress.ToJson());
}

void KdCacheWriter::Run() {
  while (true) {
    Job job;
    bool failed = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&]() { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop_ and nothing left
      job = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
      failed = !error_.ok();
    }
    absl::Status s = failed ? absl::OkStatus() : WriteJob(job);
    int64_t durable_shards = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      busy_ = false;
      if (!s.ok() && error_.ok()) error_ = s;
      if (s.ok() && error_.ok()) {
        n_durable_ = job.progress.n_written;
        durable_shards = ++shards_durable_;
      }
    }
    cv_.notify_all();
    if (durable_shards > 0 && options_.on_durable) options_.on_durable(durable_shards);
  }
}

}  // namespace qatd::kd
