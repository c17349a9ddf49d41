#pragma once
// KdCacheWriter: accumulates teacher outputs into shards of the "qatd_kd_cache_v1" format
// (cache_format.h) and writes them on a background thread, so that teacher compute and disk
// writes overlap.
//
// Durability: a shard is written atomically (WriteSafetensors: temp + fsync + rename), then
// progress.json (atomically, with a directory fsync). A crash at any point leaves a cache
// whose progress.json describes exactly what is on disk; shard files beyond it are stale
// and get overwritten by the continuation.
//
// Threading: Append/Flush/Finish are called from one thread (the producer). The writer
// thread owns the files. A bounded queue (`queue_depth` shards) makes Append block when
// the disk falls behind, so memory stays bounded. Errors of the writer thread are sticky:
// every later call returns the first one.
//
// LibTorch-free: rows come in as raw row-major arrays.

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/kd/cache_format.h"

namespace qatd::kd {

struct KdShardLayout {
  int64_t max_length = 0;  // L
  int64_t top_k = 0;       // K
  int64_t rand_neg = 0;    // R (0: no rand_* tensors)
  int64_t shard_size = 0;  // sequences per shard
};

// n sequences, row-major, borrowed for the duration of Append.
struct KdRows {
  int64_t n = 0;
  const int32_t* input_ids = nullptr;      // [n, L]
  const int32_t* topk_idx = nullptr;       // [n, L-1, K]
  const uint16_t* topk_logits = nullptr;   // [n, L-1, K] IEEE half bits
  const int32_t* rand_idx = nullptr;       // [n, L-1, R], when R > 0
  const uint16_t* rand_logits = nullptr;   // [n, L-1, R], when R > 0
};

class KdCacheWriter {
 public:
  struct Options {
    std::string dir;  // must exist; meta.json is the caller's business
    KdShardLayout layout;
    int queue_depth = 2;  // shards waiting for the disk before Append blocks
    // Called on the writer thread after each shard and its progress.json are durable
    // (shards durable so far). Test seam for crash simulation; may be empty.
    std::function<void(int64_t shards_durable)> on_durable;
    // false: no progress.json at all (a data-parallel rank writing some of the shards: a shard
    // file with all its rows is the record that it is done, kd_cache_job.cc); the directory is
    // fsynced after each shard instead.
    bool write_progress = true;
  };

  // Starts at `start` (a fresh cache: {0, 0}; a resume: the progress.json read back). When
  // start.n_written is not a multiple of shard_size, the last shard is partial: its rows
  // are read back from disk and the shard is rewritten when it fills up.
  // Errors: INVALID_ARGUMENT (bad layout, inconsistent progress), and the shard reader's
  // errors for the partial shard (naming the file).
  static absl::StatusOr<std::unique_ptr<KdCacheWriter>> Open(Options options, const KdProgress& start);

  // Stops the writer thread after the queued shards; rows not flushed are dropped.
  ~KdCacheWriter();
  KdCacheWriter(const KdCacheWriter&) = delete;
  KdCacheWriter& operator=(const KdCacheWriter&) = delete;

  // Copies `rows` into the current shard; full shards are queued for writing.
  absl::Status Append(const KdRows& rows);
  // Queues the current partial shard (if it has rows not yet on disk) and waits until every
  // queued shard is durable. The rows stay in memory: further Appends continue the shard.
  absl::Status Flush();
  // Flush, then marks progress.json done.
  absl::Status Finish();  // (without write_progress: Flush)

  int64_t n_appended() const { return n_appended_; }
  // Sequences / shards durable on disk (progress.json says so).
  int64_t n_durable() const;
  int64_t shards_durable() const;

 private:
  struct ShardBuffer {
    int64_t shard_id = 0;
    int64_t rows = 0;
    std::vector<int32_t> input_ids, topk_idx, rand_idx;
    std::vector<uint16_t> topk_logits, rand_logits;
  };
  struct Job {
    std::shared_ptr<const ShardBuffer> shard;
    KdProgress progress;  // to write after the shard
  };

  explicit KdCacheWriter(Options options);
  absl::Status LoadPartialShard(int64_t shard_id, int64_t rows);
  void NewShard(int64_t shard_id);
  absl::Status Enqueue(std::shared_ptr<const ShardBuffer> shard, KdProgress progress);
  absl::Status WaitIdle();
  void Run();
  absl::Status WriteJob(const Job& job);
  absl::Status sticky_error() const;

  Options options_;
  int64_t row_ids_ = 0, row_topk_ = 0, row_rand_ = 0;  // elements per sequence
  std::shared_ptr<ShardBuffer> current_;
  int64_t n_appended_ = 0;
  int64_t n_queued_ = 0;  // sequences covered by queued or written jobs

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  bool busy_ = false;
  bool stop_ = false;
  absl::Status error_;
  int64_t n_durable_ = 0;
  int64_t shards_durable_ = 0;
  std::thread thread_;
};

}  // namespace qatd::kd
