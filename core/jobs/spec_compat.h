#pragma once
// Compatibility of the inputs one spec names (issue #17, item 3), checked at submit time by
// job_spec.cc (LibTorch-free, bounded reads):
//   - a student model against the KD cache it trains or evaluates on: the cache's meta.json
//     records its teacher's vocab_size and tokenizer_sha256 (core/kd/cache_format.h);
//   - a model against a qatd checkpoint (config.json: base_model, version, LUT settings;
//     core/train/student.h): the checkpoint was made on base_model, whose architecture must
//     be the model's.
// Each check returns OK when there is nothing to compare (no meta.json, a seed .pt file, a
// base model no longer on disk, a file without the key): the worker reports what it cannot
// load. Errors are INVALID_ARGUMENT with both values and no field prefix (the caller adds it).

#include <functional>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"

namespace qatd::jobs {

// "was made by teacher /t with vocab_size 151936 (meta.json), but model /m has vocab_size
// 151669 (config.json): a student must share its teacher's vocabulary" / the same for the
// tokenizer's sha256 (compared when the model has a tokenizer.json and the meta records one).
absl::Status CheckModelMatchesCache(const std::string& model, const std::string& kd_cache_dir);

// "was made on base model /a (hidden_size 64, ...), but model /b has hidden_size 128": the
// architecture fields of the two config.json files (vocab_size, hidden_size,
// intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim).
// The base model's path comes from a file, not from the spec: it is read only when
// `may_read(path)` (the daemon's input roots) allows it.
absl::Status CheckCheckpointMatchesModel(const std::string& checkpoint, const std::string& model,
                                         const std::function<bool(const std::string&)>& may_read = nullptr);

// The config.json of a qatd checkpoint directory (format "qatd_checkpoint_v1"), nullopt for
// anything else (a seed .pt file or directory, a missing or unreadable file).
std::optional<nlohmann::json> QatdCheckpointConfig(const std::string& checkpoint);

}  // namespace qatd::jobs
