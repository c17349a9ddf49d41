#include "core/kd/packing.h"

#include <cstring>
#include <limits>

namespace qatd::kd {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t UniformBelow(std::mt19937_64& rng, uint64_t m) {
  // Largest multiple of m that fits: accept r < limit, where limit = 2^64 - (2^64 mod m).
  const uint64_t rem = (std::numeric_limits<uint64_t>::max() % m + 1) % m;  // 2^64 mod m
  const uint64_t limit = std::numeric_limits<uint64_t>::max() - rem + 1;    // 0 means 2^64
  while (true) {
    const uint64_t r = rng();
    if (limit == 0 || r < limit) return r % m;
  }
}

std::vector<int64_t> SeededPermutation(int64_t n, uint64_t seed) {
  std::vector<int64_t> perm(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm[static_cast<size_t>(i)] = i;
  SeededShuffle(perm, seed);
  return perm;
}

SequencePacker::SequencePacker(int64_t block_length, int32_t eos_id)
    : block_length_(block_length), eos_id_(eos_id) {}

void SequencePacker::Add(std::span<const int32_t> ids) {
  if (ids.empty()) return;
  // Compact once the consumed prefix dominates, so the buffer stays O(L + sample).
  if (head_ > 0 && head_ >= buffer_.size() / 2) {
    buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(head_));
    head_ = 0;
  }
  buffer_.insert(buffer_.end(), ids.begin(), ids.end());
  if (eos_id_ >= 0) buffer_.push_back(eos_id_);
}

void SequencePacker::PopBlock(int32_t* out) {
  std::memcpy(out, buffer_.data() + head_, static_cast<size_t>(block_length_) * sizeof(int32_t));
  head_ += static_cast<size_t>(block_length_);
}

std::vector<int32_t> SequencePacker::PopBlock() {
  std::vector<int32_t> block(static_cast<size_t>(block_length_));
  PopBlock(block.data());
  return block;
}

}  // namespace qatd::kd
