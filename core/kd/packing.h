#pragma once
// Packing token streams into fixed blocks (spec §6.2.4) and the seeded shuffles used by the
// KD cache.
//
// Packing, exactly as the reference's PackedTokenStream: every sample's ids (tokenized
// without special tokens) go into one running buffer followed by the eos id; whenever the
// buffer holds >= L tokens, its first L tokens are cut off as a block; the remainder carries
// over to the next sample. Empty samples are skipped (no lone eos). The final partial buffer
// is dropped by the caller (never emitted). No BOS, no padding, no document masking.
//
// Shuffling (reproducible on every platform, unlike std::shuffle whose algorithm is
// unspecified): Fisher-Yates from the back with std::mt19937_64 seeded with `seed`:
//   for i = n-1 down to 1:  j = UniformBelow(rng, i + 1);  swap(v[i], v[j])
// where UniformBelow(rng, m) draws r = rng() until r < 2^64 - (2^64 mod m) and returns r mod m
// (unbiased rejection). Same seed, same n => same permutation.

#include <cstdint>
#include <random>
#include <span>
#include <utility>
#include <vector>

namespace qatd::kd {

// splitmix64's output function: a bijective 64-bit mixer, used to derive independent seeds
// from (seed, index) pairs: MixSeed(seed, i) = SplitMix64(seed ^ SplitMix64(i)).
uint64_t SplitMix64(uint64_t x);
inline uint64_t MixSeed(uint64_t seed, uint64_t index) { return SplitMix64(seed ^ SplitMix64(index + 1)); }

// An unbiased integer in [0, m) from `rng` (m > 0); see the file comment.
uint64_t UniformBelow(std::mt19937_64& rng, uint64_t m);

// The permutation of [0, n) described in the file comment.
std::vector<int64_t> SeededPermutation(int64_t n, uint64_t seed);

template <typename T>
void SeededShuffle(std::vector<T>& v, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (size_t i = v.size(); i > 1; --i) {
    const size_t j = static_cast<size_t>(UniformBelow(rng, i));
    using std::swap;
    swap(v[i - 1], v[j]);
  }
}

// The running buffer of the packer. Not thread-safe.
class SequencePacker {
 public:
  // block_length (L) > 0; eos_id appended after every non-empty sample (< 0: none).
  SequencePacker(int64_t block_length, int32_t eos_id);

  // Appends `ids` and the eos id. Empty `ids` are ignored entirely.
  void Add(std::span<const int32_t> ids);
  // Complete blocks available now.
  int64_t blocks_ready() const { return static_cast<int64_t>((buffer_.size() - head_) / block_length_); }
  // Copies the next block (L ids) to `out` and drops it from the buffer. Requires
  // blocks_ready() > 0.
  void PopBlock(int32_t* out);
  std::vector<int32_t> PopBlock();
  // Tokens waiting for the next block (< L after all ready blocks are popped).
  int64_t buffered_tokens() const { return static_cast<int64_t>(buffer_.size() - head_); }
  int64_t block_length() const { return block_length_; }

 private:
  int64_t block_length_;
  int32_t eos_id_;
  std::vector<int32_t> buffer_;
  size_t head_ = 0;  // tokens before head_ were already emitted
};

}  // namespace qatd::kd
