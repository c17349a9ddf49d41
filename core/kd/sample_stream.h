#pragma once
// The deterministic stream of packed sequences a KD cache is built from (spec §6.2):
//   records (optionally shuffled with SeededPermutation(n, seed))
//   -> RenderRecord (1 or 2 texts each)
//   -> encode (no special tokens) -> SequencePacker(L, eos) -> blocks of L ids.
// Given the same dataset, options and tokenizer, the i-th block is always the same, which is
// what `resume` relies on: it skips the blocks already stored.
//
// Deliberate difference from the reference: the reference's order is the Hugging Face
// `Dataset.shuffle(seed)` permutation; ours is the documented Fisher-Yates of packing.h, so
// the same seed does not give the reference's order.
//
// Encoding runs on `num_threads` threads, a chunk of records at a time; order is preserved.
// The stream borrows the dataset and the encoder; it is not thread-safe itself.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/kd/dataset.h"
#include "core/kd/packing.h"
#include "core/kd/render.h"

namespace qatd::kd {

// Text -> token ids, without special tokens. Must be safe to call from several threads.
using TextEncoder = std::function<std::vector<int32_t>(const std::string&)>;

struct SampleStreamOptions {
  RenderOptions render;
  int64_t block_length = 64;  // L
  int32_t eos_id = -1;        // appended after every sample (< 0: none)
  uint64_t seed = 0;
  bool shuffle = true;
  int num_threads = 1;
  int64_t chunk_records = 256;  // records rendered and encoded per refill
};

struct SampleStreamStats {
  int64_t records_consumed = 0;  // records rendered so far
  int64_t texts = 0;             // rendered texts (2 per record for `both`)
  int64_t tokens = 0;            // tokens added to the packer, eos included
  int64_t blocks = 0;            // blocks emitted (or skipped)
};

class PackedSequenceStream {
 public:
  // `dataset` and `encoder` must outlive the stream.
  PackedSequenceStream(const Dataset& dataset, TextEncoder encoder, SampleStreamOptions options);

  // Writes the next block (block_length ids) to `out`; false once the data is exhausted
  // (the final partial block is dropped). Errors: a record the chat template rejects
  // (INVALID_ARGUMENT naming the record).
  absl::StatusOr<bool> Next(int32_t* out);
  // Drops the next `n` blocks; returns how many there were (< n at the end of the data).
  absl::StatusOr<int64_t> Skip(int64_t n);

  const SampleStreamStats& stats() const { return stats_; }
  // Records in the stream (the permutation's length).
  int64_t num_records() const { return static_cast<int64_t>(order_.size()); }

 private:
  absl::Status Refill();

  const Dataset& dataset_;
  TextEncoder encoder_;
  SampleStreamOptions options_;
  std::vector<int64_t> order_;
  size_t next_record_ = 0;
  SequencePacker packer_;
  SampleStreamStats stats_;
};

}  // namespace qatd::kd
