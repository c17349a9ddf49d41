#include "core/kd/cache_format.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/common/file_util.h"
#include "core/common/input_file.h"
#include "core/common/status_macros.h"

namespace qatd::kd {
using nlohmann::json;

namespace {

// Typed field access with errors that name the field.
class FieldReader {
 public:
  FieldReader(const json& j, std::string_view what) : j_(j), what_(what) {}

  template <typename T>
  void Get(const char* key, T* out, bool required = true) {
    if (!status_.ok()) return;
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) {
      if (required) status_ = absl::InvalidArgumentError(absl::StrCat(what_, ": missing field '", key, "'"));
      return;
    }
    bool ok = false;
    if constexpr (std::is_same_v<T, std::string>) {
      ok = it->is_string();
    } else if constexpr (std::is_same_v<T, bool>) {
      ok = it->is_boolean();
    } else if constexpr (std::is_unsigned_v<T>) {
      ok = it->is_number_unsigned() || (it->is_number_integer() && it->template get<int64_t>() >= 0);
    } else {
      ok = it->is_number_integer();
    }
    if (!ok) {
      status_ = absl::InvalidArgumentError(
          absl::StrCat(what_, ": field '", key, "' has the wrong type (", it->type_name(), ")"));
      return;
    }
    *out = it->template get<T>();
  }

  const absl::Status& status() const { return status_; }

 private:
  const json& j_;
  std::string what_;
  absl::Status status_;
};

const char* const kMetaKeys[] = {
    "format", "teacher_model", "tokenizer_sha256", "dataset_path", "dataset_format", "dataset_text_field",
    "dataset_text_unit", "dataset_sha256", "thinking", "max_length", "top_k", "rand_neg", "vocab_size",
    "eos_token_id", "num_sequences", "shard_size", "seed", "shuffle", "dtype", "device", "dataset_records",
    "dataset_bad_records", "versions", "created_utc"};

}  // namespace

json KdCacheMeta::ToJson() const {
  json j = json::object();
  for (auto it = extra.begin(); it != extra.end(); ++it) j[it.key()] = it.value();
  j["format"] = format;
  j["teacher_model"] = teacher_model;
  j["tokenizer_sha256"] = tokenizer_sha256;
  j["dataset_path"] = dataset_path;
  j["dataset_format"] = dataset_format;
  j["dataset_text_field"] = dataset_text_field;
  j["dataset_text_unit"] = dataset_text_unit;
  j["dataset_sha256"] = dataset_sha256;
  j["thinking"] = thinking;
  j["max_length"] = max_length;
  j["top_k"] = top_k;
  j["rand_neg"] = rand_neg;
  j["vocab_size"] = vocab_size;
  j["eos_token_id"] = eos_token_id;
  j["num_sequences"] = num_sequences;
  j["shard_size"] = shard_size;
  j["seed"] = seed;
  j["shuffle"] = shuffle;
  j["dtype"] = dtype;
  j["device"] = device;
  j["dataset_records"] = dataset_records;
  j["dataset_bad_records"] = dataset_bad_records;
  j["versions"] = {{"qatd", qatd_version}, {"libtorch", libtorch_version}};
  j["created_utc"] = created_utc;
  return j;
}

absl::StatusOr<KdCacheMeta> KdCacheMeta::FromJson(const json& j) {
  if (!j.is_object()) return absl::InvalidArgumentError("meta.json: expected a JSON object");
  KdCacheMeta m;
  FieldReader r(j, "meta.json");
  r.Get("format", &m.format);
  if (r.status().ok() && m.format != kKdCacheFormat) {
    return absl::InvalidArgumentError(
        absl::StrCat("meta.json: format is '", m.format, "', expected '", std::string(kKdCacheFormat), "'"));
  }
  r.Get("teacher_model", &m.teacher_model);
  r.Get("tokenizer_sha256", &m.tokenizer_sha256);
  r.Get("dataset_path", &m.dataset_path);
  r.Get("dataset_format", &m.dataset_format);
  r.Get("dataset_text_field", &m.dataset_text_field, false);
  r.Get("dataset_text_unit", &m.dataset_text_unit, false);
  r.Get("dataset_sha256", &m.dataset_sha256, false);
  r.Get("thinking", &m.thinking);
  r.Get("max_length", &m.max_length);
  r.Get("top_k", &m.top_k);
  r.Get("rand_neg", &m.rand_neg);
  r.Get("vocab_size", &m.vocab_size);
  r.Get("eos_token_id", &m.eos_token_id, false);
  r.Get("num_sequences", &m.num_sequences);
  r.Get("shard_size", &m.shard_size);
  r.Get("seed", &m.seed);
  r.Get("shuffle", &m.shuffle, false);
  r.Get("dtype", &m.dtype, false);
  r.Get("device", &m.device, false);
  r.Get("dataset_records", &m.dataset_records, false);
  r.Get("dataset_bad_records", &m.dataset_bad_records, false);
  r.Get("created_utc", &m.created_utc, false);
  if (!r.status().ok()) return r.status();
  if (auto v = j.find("versions"); v != j.end() && v->is_object()) {
    FieldReader vr(*v, "meta.json versions");
    vr.Get("qatd", &m.qatd_version, false);
    vr.Get("libtorch", &m.libtorch_version, false);
    if (!vr.status().ok()) return vr.status();
  }
  if (m.max_length < 2) return absl::InvalidArgumentError("meta.json: max_length must be >= 2");
  if (m.top_k < 1) return absl::InvalidArgumentError("meta.json: top_k must be >= 1");
  if (m.rand_neg < 0) return absl::InvalidArgumentError("meta.json: rand_neg must be >= 0");
  if (m.shard_size < 1) return absl::InvalidArgumentError("meta.json: shard_size must be >= 1");
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (std::find(std::begin(kMetaKeys), std::end(kMetaKeys), it.key()) == std::end(kMetaKeys)) {
      m.extra[it.key()] = it.value();
    }
  }
  return m;
}

json KdProgress::ToJson() const {
  return {{"n_written", n_written}, {"next_shard_id", next_shard_id}, {"done", done}};
}

absl::StatusOr<KdProgress> KdProgress::FromJson(const json& j) {
  if (!j.is_object()) return absl::InvalidArgumentError("progress.json: expected a JSON object");
  KdProgress p;
  FieldReader r(j, "progress.json");
  r.Get("n_written", &p.n_written);
  r.Get("next_shard_id", &p.next_shard_id);
  r.Get("done", &p.done, false);
  if (!r.status().ok()) return r.status();
  if (p.n_written < 0 || p.next_shard_id < 0) {
    return absl::InvalidArgumentError("progress.json: n_written and next_shard_id must be >= 0");
  }
  return p;
}

std::string ShardFileName(int64_t shard_id) { return absl::StrFormat("shard_%05d.safetensors", shard_id); }
std::string ReferenceShardFileName(int64_t shard_id) { return absl::StrFormat("shard_%05d.pt", shard_id); }

absl::StatusOr<json> ReadJsonFile(const std::string& path) {
  // meta.json / progress.json are a few KB; an imported cache keeps the reference's meta too.
  constexpr int64_t kMaxJsonBytes = int64_t{64} << 20;
  QATD_ASSIGN_OR_RETURN(InputFile in, InputFile::Open(path));
  QATD_ASSIGN_OR_RETURN(std::string text, in.ReadAll(kMaxJsonBytes));
  return ParseJsonText(text, path);
}

absl::StatusOr<json> ParseJsonText(const std::string& text, const std::string& path) {
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    const size_t at = std::min<size_t>(e.byte > 0 ? e.byte - 1 : 0, text.size());
    const int64_t line = 1 + std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(at), '\n');
    return absl::InvalidArgumentError(absl::StrCat(path, ":", line, ": not valid JSON: ", e.what()));
  } catch (const json::exception& e) {
    // A number out of range (1e999) is thrown as out_of_range, not as a parse_error.
    return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON: ", e.what()));
  }
}

absl::Status SyncDirectory(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return absl::InternalError(absl::StrCat("open ", dir, ": ", std::strerror(errno)));
  const bool ok = ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  if (!ok) return absl::DataLossError(absl::StrCat("fsync ", dir, ": ", std::strerror(err)));
  return absl::OkStatus();
}

absl::Status WriteJsonFileAtomic(const std::string& path, const json& j) {
  const std::string text = j.dump(2) + "\n";
  return WriteFileAtomically(path, text);
}

#ifndef QATD_VERSION
#define QATD_VERSION "unknown"
#endif
std::string QatdVersion() { return QATD_VERSION; }

std::string UtcNowIso8601() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace qatd::kd
