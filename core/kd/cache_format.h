#pragma once
// The on-disk KD cache format "qatd_kd_cache_v1" (DESIGN.md §4):
//
//   <dir>/meta.json                 KdCacheMeta (what the cache is and how it was made)
//   <dir>/progress.json             KdProgress {n_written, next_shard_id, done}
//   <dir>/shard_00000.safetensors   per shard of N sequences (N = shard_size, the last one
//   <dir>/shard_00001.safetensors   may be smaller):
//       input_ids    I32 [N, L]        packed token ids
//       topk_idx     I32 [N, L-1, K]   teacher top-K ids for the token after each position,
//                                      sorted by logit descending (index 0 = argmax)
//       topk_logits  F16 [N, L-1, K]   the matching raw teacher logits (no temperature)
//       rand_idx     I32 [N, L-1, R]   only when R > 0: random ids, never in the top-K
//       rand_logits  F16 [N, L-1, R]   their teacher logits
//
// There is no attention_mask (packing leaves no padding; the reference stores all ones).
// Every json file is written atomically (temp file, fsync, rename, fsync of the directory);
// shards too (WriteSafetensors). progress.json is written after the shard it counts, so
// whatever it says is on disk. A shard may be rewritten in place on resume when the previous
// run stopped inside it (its first n_written % shard_size rows are kept).
//
// LibTorch-free. Thread safety: plain functions.

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qatd::kd {

inline constexpr std::string_view kKdCacheFormat = "qatd_kd_cache_v1";
// The reference precompute script's format name (spec §6.4).
inline constexpr std::string_view kReferenceCacheFormat = "qwen_kd_topk_cache_v1";

struct KdCacheMeta {
  std::string format = std::string(kKdCacheFormat);
  std::string teacher_model;      // path of the teacher model directory
  std::string tokenizer_sha256;   // sha256 of tokenizer.json ("" if unknown, e.g. imported)
  std::string dataset_path;
  std::string dataset_format;     // "plain", "alpaca", "alpaca_chat", "sharegpt"
  std::string dataset_text_field;
  std::string dataset_text_unit;
  std::string dataset_sha256;     // over the data files, in read order (see DatasetSha256)
  std::string thinking;           // "none", "on", "off", "both"
  int64_t max_length = 0;         // L
  int64_t top_k = 0;              // K
  int64_t rand_neg = 0;           // R
  int64_t vocab_size = 0;         // teacher's logits width
  int64_t eos_token_id = -1;
  int64_t num_sequences = 0;      // requested
  int64_t shard_size = 0;
  uint64_t seed = 0;
  bool shuffle = true;
  std::string dtype;              // teacher compute dtype: "bf16", "fp16", "fp32"
  std::string device;             // where the first run computed ("cuda", "cpu")
  // Dataset statistics, known before the first sequence is written.
  int64_t dataset_records = 0;
  int64_t dataset_bad_records = 0;
  std::string qatd_version;
  std::string libtorch_version;
  std::string created_utc;        // "2026-11-26T15:32:07Z"
  // Anything else (kept verbatim on read/write: e.g. "imported_from").
  nlohmann::json extra = nlohmann::json::object();

  nlohmann::json ToJson() const;
  // INVALID_ARGUMENT naming the field for a missing or mistyped one.
  static absl::StatusOr<KdCacheMeta> FromJson(const nlohmann::json& j);
};

struct KdProgress {
  int64_t n_written = 0;      // sequences durable on disk, in shards [0, next_shard_id)
  int64_t next_shard_id = 0;  // the shard a continuation writes next (or rewrites if partial)
  bool done = false;

  nlohmann::json ToJson() const;
  static absl::StatusOr<KdProgress> FromJson(const nlohmann::json& j);
};

// "shard_00042.safetensors" / "shard_00042.pt".
std::string ShardFileName(int64_t shard_id);
std::string ReferenceShardFileName(int64_t shard_id);

// Reads and parses a JSON file (a regular file of at most 64 MiB: core/common/input_file.h).
// NOT_FOUND if missing; INVALID_ARGUMENT (naming the file and line) if malformed, not a regular
// file or too large.
absl::StatusOr<nlohmann::json> ReadJsonFile(const std::string& path);
// Parses JSON text read from `path` (which only names it in errors): INVALID_ARGUMENT naming
// `path` and the line for malformed text or a number out of range (1e999).
absl::StatusOr<nlohmann::json> ParseJsonText(const std::string& text, const std::string& path);
// Writes `j` (indented) to `path` atomically: `path`.tmp.<pid>, fsync, rename, fsync(dir).
absl::Status WriteJsonFileAtomic(const std::string& path, const nlohmann::json& j);
// fsync of a directory (makes renames in it durable).
absl::Status SyncDirectory(const std::string& dir);

// The project version ("0.1.0"), from CMake's PROJECT_VERSION.
std::string QatdVersion();

// The current UTC time as "YYYY-MM-DDTHH:MM:SSZ".
std::string UtcNowIso8601();

}  // namespace qatd::kd
