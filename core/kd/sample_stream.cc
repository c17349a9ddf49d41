#include "core/kd/sample_stream.h"

#include <algorithm>
#include <thread>

#include "absl/strings/str_cat.h"

namespace qatd::kd {

PackedSequenceStream::PackedSequenceStream(const Dataset& dataset, TextEncoder encoder, SampleStreamOptions options)
    : dataset_(dataset),
      encoder_(std::move(encoder)),
      options_(std::move(options)),
      packer_(options_.block_length, options_.eos_id) {
  const auto n = static_cast<int64_t>(dataset_.records.size());
  if (options_.shuffle) {
    order_ = SeededPermutation(n, options_.seed);
  } else {
    order_.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) order_[static_cast<size_t>(i)] = i;
  }
}

absl::Status PackedSequenceStream::Refill() {
  const size_t end = std::min(order_.size(), next_record_ + static_cast<size_t>(std::max<int64_t>(1, options_.chunk_records)));
  std::vector<std::string> texts;
  for (size_t i = next_record_; i < end; ++i) {
    const DatasetRecord& record = dataset_.records[static_cast<size_t>(order_[i])];
    absl::StatusOr<std::vector<std::string>> rendered = RenderRecord(record, options_.render);
    if (!rendered.ok()) {
      return absl::Status(rendered.status().code(),
                          absl::StrCat(record.location.ToString(), ": ", rendered.status().message()));
    }
    for (std::string& t : *rendered) texts.push_back(std::move(t));
  }
  stats_.records_consumed += static_cast<int64_t>(end - next_record_);
  next_record_ = end;

  std::vector<std::vector<int32_t>> ids(texts.size());
  const size_t workers = std::min<size_t>(std::max(1, options_.num_threads), texts.size());
  if (workers <= 1) {
    for (size_t i = 0; i < texts.size(); ++i) ids[i] = encoder_(texts[i]);
  } else {
    // Strided split: text i goes to worker i % workers; results land in their own slots.
    std::vector<std::thread> pool;
    pool.reserve(workers);
    for (size_t w = 0; w < workers; ++w) {
      pool.emplace_back([&, w]() {
        for (size_t i = w; i < texts.size(); i += workers) ids[i] = encoder_(texts[i]);
      });
    }
    for (std::thread& t : pool) t.join();
  }
  for (const std::vector<int32_t>& v : ids) {
    if (v.empty()) continue;
    packer_.Add(v);
    stats_.texts += 1;
    stats_.tokens += static_cast<int64_t>(v.size()) + (options_.eos_id >= 0 ? 1 : 0);
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> PackedSequenceStream::Next(int32_t* out) {
  while (packer_.blocks_ready() == 0) {
    if (next_record_ >= order_.size()) return false;
    absl::Status s = Refill();
    if (!s.ok()) return s;
  }
  packer_.PopBlock(out);
  ++stats_.blocks;
  return true;
}

absl::StatusOr<int64_t> PackedSequenceStream::Skip(int64_t n) {
  std::vector<int32_t> scratch(static_cast<size_t>(options_.block_length));
  int64_t done = 0;
  while (done < n) {
    absl::StatusOr<bool> more = Next(scratch.data());
    if (!more.ok()) return more.status();
    if (!*more) break;
    ++done;
  }
  return done;
}

}  // namespace qatd::kd
