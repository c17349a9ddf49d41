// KD cache metadata and shards (core/kd/cache_format.cc, DESIGN.md §4), the LibTorch-free part
// of KdCacheReader::Open: meta.json and progress.json text through ParseJsonText (what
// ReadJsonFile runs) into KdCacheMeta / KdProgress, and a shard through the safetensors parser,
// looking its tensors up by the names the reader uses. The rest of Open (the shard shape checks
// and the id range checks) lives in core/kd/cache_reader.cc, a LibTorch translation unit, and is
// not built here.
//
// Input: the three files concatenated, each after a marker line that no JSON text can hold
// (a raw newline then '#'):
//   <meta.json>\n#progress.json\n<progress.json>\n#shard\n<shard_00000.safetensors>
// A missing marker leaves the later parts empty.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/kd/cache_format.h"
#include "core/model/safetensors.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

constexpr std::string_view kProgressMarker = "\n#progress.json\n";
constexpr std::string_view kShardMarker = "\n#shard\n";

// Splits `rest` at the first `marker`: returns what precedes it and leaves what follows.
std::string_view TakeUntil(std::string_view& rest, std::string_view marker) {
  const size_t at = rest.find(marker);
  if (at == std::string_view::npos) {
    std::string_view all = rest;
    rest = {};
    return all;
  }
  std::string_view head = rest.substr(0, at);
  rest.remove_prefix(at + marker.size());
  return head;
}

void FuzzMeta(std::string_view text) {
  absl::StatusOr<nlohmann::json> j = qatd::kd::ParseJsonText(std::string(text), "meta.json");
  qatd::fuzz::FuzzReport("meta.json text", j.status());
  if (!j.ok()) {
    QATD_FUZZ_CHECK(absl::IsInvalidArgument(j.status()));
    return;
  }
  absl::StatusOr<qatd::kd::KdCacheMeta> meta = qatd::kd::KdCacheMeta::FromJson(*j);
  qatd::fuzz::FuzzReport("meta.json", meta.status());
  if (!meta.ok()) {
    QATD_FUZZ_CHECK(absl::IsInvalidArgument(meta.status()));
    return;
  }
  // What a writer stores, a reader takes back unchanged (resume compares the two).
  const nlohmann::json written = meta->ToJson();
  absl::StatusOr<qatd::kd::KdCacheMeta> again = qatd::kd::KdCacheMeta::FromJson(written);
  QATD_FUZZ_CHECK(again.ok());
  QATD_FUZZ_CHECK(again->ToJson() == written);
  (void)written.dump(2);
}

void FuzzProgress(std::string_view text) {
  absl::StatusOr<nlohmann::json> j = qatd::kd::ParseJsonText(std::string(text), "progress.json");
  if (!j.ok()) return;
  absl::StatusOr<qatd::kd::KdProgress> progress = qatd::kd::KdProgress::FromJson(*j);
  qatd::fuzz::FuzzReport("progress.json", progress.status());
  if (!progress.ok()) {
    QATD_FUZZ_CHECK(absl::IsInvalidArgument(progress.status()));
    return;
  }
  QATD_FUZZ_CHECK(progress->n_written >= 0 && progress->next_shard_id >= 0);
  absl::StatusOr<qatd::kd::KdProgress> again = qatd::kd::KdProgress::FromJson(progress->ToJson());
  QATD_FUZZ_CHECK(again.ok() && again->n_written == progress->n_written &&
                  again->next_shard_id == progress->next_shard_id && again->done == progress->done);
}

void FuzzShard(std::string_view bytes) {
  // A copy of exactly the shard's size, so reads past its end are ASan errors.
  const std::string shard(bytes);
  auto file = qatd::model::SafetensorsFile::FromBuffer(shard.data(), shard.size());
  qatd::fuzz::FuzzReport("shard", file.status());
  if (!file.ok()) return;
  unsigned sink = 0;
  for (const char* name : {"input_ids", "topk_idx", "topk_logits", "rand_idx", "rand_logits"}) {
    const qatd::model::TensorInfo* info = (*file)->Find(name);
    if (info == nullptr || info->nbytes() == 0) continue;
    const uint8_t* data = (*file)->DataOf(*info);
    sink += data[0] + data[info->nbytes() - 1];
  }
  volatile unsigned keep = sink;
  (void)keep;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  const std::string_view meta = TakeUntil(rest, kProgressMarker);
  const std::string_view progress = TakeUntil(rest, kShardMarker);
  FuzzMeta(meta);
  FuzzProgress(progress);
  FuzzShard(rest);
  return 0;
}
