#pragma once
// Reading KD caches for training: the qatd format (cache_format.h; shards memory-mapped)
// and the reference's `.pt` caches (spec §6.4; shards unpickled into memory — import them
// with ImportReferenceCache for large caches).
//
// Open() validates before anything is trained on: meta.json, progress.json (the cache must
// be complete unless allow_incomplete), and every shard's tensors (names, dtypes, shapes
// [N, L], [N, L-1, K], [N, L-1, R], N equal across tensors, shard ids contiguous from 0,
// the sum of N equal to progress.n_written). A truncated or mis-shaped shard fails with
// DATA_LOSS naming the file.
//
// The data (issue #14): a shard's data is checked once, when a batch first reads from it (every
// shard at Open with verify_data), so a bad sequence never reaches the model: ids in
// [0, vocab_size) (meta.json's, and the model's when given in KdCacheReaderOptions) and finite
// teacher logits. The first bad one fails that batch and every later one that touches the shard,
// naming the shard file, the sample (its row in the shard), the sequence, the position and the
// value: DATA_LOSS, or FAILED_PRECONDITION for an id that only the model's vocabulary excludes (a
// cache made for another model). Cost: one vectorized pass over each shard used (6-13 ms for a
// 50 MB shard on a 2-core CPU host, page cache warm), nothing per batch after that.
//
// Batches are CPU tensors in the stored dtypes. KdBatchStream adds seeded shuffling over a
// split (train / held-out) with a serializable cursor, so training can resume exactly.
//
// Thread safety: a KdCacheReader is immutable after Open and safe to share; a
// KdBatchStream is not thread-safe.

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "core/kd/cache_format.h"

namespace qatd::kd {

struct KdCacheReaderOptions {
  bool allow_incomplete = false;  // read a cache whose progress.json is not done
  bool verify_data = false;       // check every sequence at Open (reads all the data once)
  // The vocabulary of the model trained or evaluated on the cache (its config.json vocab_size;
  // 0 = unknown): ids at or above it fail the batch that holds them.
  int64_t model_vocab_size = 0;
};

// One batch (CPU tensors).
struct KdBatch {
  at::Tensor indices;      // [B] int64, global sequence indices
  at::Tensor input_ids;    // [B, L] int32
  at::Tensor topk_idx;     // [B, L-1, K] int32
  at::Tensor topk_logits;  // [B, L-1, K] f16
  at::Tensor rand_idx;     // [B, L-1, R] int32, undefined when R == 0 or not requested
  at::Tensor rand_logits;  // [B, L-1, R] f16
  // Rows of the whole (global) batch this one is a shard of (KdStreamOptions::shard_count);
  // equals B for an unsharded batch. A shard may hold 0 rows (an epoch's last partial batch
  // split over more ranks than it has rows): its tensors are then undefined.
  int64_t global_rows = 0;
  int64_t rows() const { return indices.defined() ? indices.size(0) : 0; }
};

struct KdShardInfo {
  std::string path;
  int64_t first_sequence = 0;
  int64_t num_sequences = 0;
};

class KdCacheReader {
 public:
  // `dir` holds either meta.json of format qatd_kd_cache_v1 with shard_*.safetensors, or
  // the reference's shard_*.pt (meta.json of format qwen_kd_topk_cache_v1 optional; without
  // it L, K and R are taken from the first shard).
  static absl::StatusOr<std::shared_ptr<const KdCacheReader>> Open(const std::string& dir,
                                                                   const KdCacheReaderOptions& options = {});
  ~KdCacheReader();

  const std::string& dir() const { return dir_; }
  bool is_reference_format() const { return reference_; }
  // meta.json as read (the reference's keys for .pt caches; {} when absent).
  const nlohmann::json& meta_json() const { return meta_json_; }
  int64_t num_sequences() const { return num_sequences_; }
  int64_t max_length() const { return max_length_; }
  int64_t top_k() const { return top_k_; }
  int64_t rand_neg() const { return rand_neg_; }
  int64_t vocab_size() const { return vocab_size_; }  // 0 if unknown
  const std::vector<KdShardInfo>& shards() const { return shard_infos_; }

  // The sequences `indices` (each in [0, num_sequences())), in that order.
  // with_rand: also gather rand_idx/rand_logits (when R > 0). INVALID_ARGUMENT for an
  // out-of-range index; DATA_LOSS / FAILED_PRECONDITION for a shard with a bad sequence (above).
  absl::StatusOr<KdBatch> Gather(std::span<const int64_t> indices, bool with_rand = false) const;
  // Sequences [begin, end).
  absl::StatusOr<KdBatch> Range(int64_t begin, int64_t end, bool with_rand = false) const;

  struct Shard;  // defined in cache_reader.cc

 private:
  KdCacheReader() = default;
  absl::Status OpenQatd(const KdCacheReaderOptions& options);
  absl::Status OpenReference(const KdCacheReaderOptions& options);
  absl::Status CheckShard(Shard& shard);
  // The shard's ids in range and its logits finite: scanned on the first call, remembered.
  absl::Status CheckShardData(const Shard& shard) const;
  absl::Status ScanShardData(const Shard& shard) const;
  absl::Status BadId(const Shard& shard, int64_t row, const char* tensor, int64_t width, int64_t offset,
                     int32_t id) const;

  std::string dir_;
  bool reference_ = false;
  nlohmann::json meta_json_ = nlohmann::json::object();
  int64_t num_sequences_ = 0;
  int64_t max_length_ = 0, top_k_ = 0, rand_neg_ = 0, vocab_size_ = 0;
  int64_t model_vocab_size_ = 0;
  uint32_t id_limit_ = 0;  // ids must be below it: the smaller known vocabulary, else 2^31
  std::vector<std::unique_ptr<Shard>> shards_;
  std::vector<KdShardInfo> shard_infos_;
};

// A contiguous range [begin, end) of sequence indices.
struct KdSplit {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
};

// The held-out set is the last `count` sequences, or the last round(fraction * N) when
// count is 0 (never both). Training never sees them (spec §17.12: the reference evaluates
// on its first training sequences).
struct HeldOutOptions {
  int64_t count = 0;
  double fraction = 0.0;
};

struct KdSplits {
  KdSplit train;
  KdSplit held_out;
};

// INVALID_ARGUMENT when both are set, negative, fraction >= 1, or nothing is left to train.
absl::StatusOr<KdSplits> SplitTrainHeldOut(int64_t num_sequences, const HeldOutOptions& options);

// Position of a KdBatchStream: `position` sequences of epoch `epoch` were consumed.
struct KdCursor {
  int64_t epoch = 0;
  int64_t position = 0;
  nlohmann::json ToJson() const;
  static absl::StatusOr<KdCursor> FromJson(const nlohmann::json& j);
  bool operator==(const KdCursor&) const = default;
};

struct KdStreamOptions {
  int64_t batch_size = 1;
  bool shuffle = true;     // a fresh permutation per epoch: SeededPermutation(n, MixSeed(seed, epoch))
  uint64_t seed = 0;
  bool drop_last = false;  // false: the last partial batch of an epoch is kept (reference)
  bool with_rand = false;  // include rand_idx/rand_logits
  // Data parallel (issue #15): batch_size is the global batch; shard `shard_index` of
  // `shard_count` receives rows [i * ceil(B / count), (i + 1) * ceil(B / count)) of every global
  // batch B, so the ranks together see exactly the batches of one unsharded stream, and the
  // cursor (in global sequences) is the same on every rank and for any shard_count.
  int64_t shard_index = 0;
  int64_t shard_count = 1;
};

// Endless stream of batches over `split`, epoch after epoch.
class KdBatchStream {
 public:
  // INVALID_ARGUMENT for batch_size < 1, an empty split, a split outside the cache, or
  // drop_last with a split smaller than one batch.
  static absl::StatusOr<KdBatchStream> Create(std::shared_ptr<const KdCacheReader> reader, KdSplit split,
                                              KdStreamOptions options);

  absl::StatusOr<KdBatch> Next();
  const KdCursor& cursor() const { return cursor_; }
  // Restores a cursor from cursor(); INVALID_ARGUMENT if it is outside the split.
  absl::Status Seek(const KdCursor& cursor);
  int64_t batches_per_epoch() const;

 private:
  KdBatchStream() = default;
  void PrepareEpoch();

  std::shared_ptr<const KdCacheReader> reader_;
  KdSplit split_;
  KdStreamOptions options_;
  KdCursor cursor_;
  int64_t permutation_epoch_ = -1;
  std::vector<int64_t> permutation_;
};

struct ImportOptions {
  bool overwrite = false;       // replace an existing cache in dst
  int64_t shard_size = 0;       // 0: keep the source's shard size
  std::string tokenizer_sha256;  // if known (the reference stores only a name)
};

// Converts a reference `.pt` cache (`src`) into a qatd cache in `dst` (created): same
// sequences in the same order, attention_mask dropped (it must be all ones: DATA_LOSS
// otherwise), meta.json filled from the reference's keys with the original kept under
// "imported_from". Returns the sequences imported.
absl::StatusOr<int64_t> ImportReferenceCache(const std::string& src, const std::string& dst,
                                             const ImportOptions& options = {});

}  // namespace qatd::kd
