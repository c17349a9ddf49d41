#include "core/kd/cache_reader.h"

#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/version.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <regex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/common/input_file.h"
#include "core/common/status_macros.h"
#include "core/common/torch_status.h"
#include "core/kd/cache_writer.h"
#include "core/kd/packing.h"
#include "core/model/safetensors.h"

namespace qatd::kd {
namespace fs = std::filesystem;
using nlohmann::json;

struct KdCacheReader::Shard {
  std::string path;
  int64_t first = 0;
  int64_t n = 0;
  std::shared_ptr<model::SafetensorsFile> file;  // qatd shards (memory-mapped)
  at::Tensor owned[5];                           // reference shards (unpickled)
  const int32_t* ids = nullptr;
  const int32_t* idx = nullptr;
  const uint16_t* val = nullptr;
  const int32_t* ridx = nullptr;
  const uint16_t* rval = nullptr;
  // The data check (ids, finite logits), run once, when a batch first reads the shard.
  mutable std::once_flag data_checked;
  mutable absl::Status data_status;
};

namespace {

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::Status ShardError(const std::string& path, const std::string& what) {
  return absl::DataLossError(absl::StrCat(path, ": ", what));
}

// Shard files named shard_NNNNN<ext> in `dir`, sorted; their ids must run 0, 1, 2, ...
absl::StatusOr<std::vector<std::string>> ListShards(const std::string& dir, const std::string& ext) {
  std::vector<std::string> names;
  std::error_code ec;
  const std::regex pattern("shard_([0-9]{5,})" + std::regex_replace(ext, std::regex("\\."), "\\."));
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (std::regex_match(name, pattern)) names.push_back(name);
  }
  if (ec) return absl::InternalError(absl::StrCat(dir, ": cannot list: ", ec.message()));
  std::sort(names.begin(), names.end());
  return names;
}

// The data checks run on plain loops the compiler vectorizes: a max reduction first, a search
// for the position only when something is wrong.

// First of p[0, n) outside [0, limit) (a negative id is a huge unsigned one), or -1.
int64_t FirstIdOutside(const int32_t* p, int64_t n, uint32_t limit) {
  uint32_t high = 0;
  for (int64_t i = 0; i < n; ++i) high = std::max(high, static_cast<uint32_t>(p[i]));
  if (high < limit) return -1;
  for (int64_t i = 0; i < n; ++i) {
    if (static_cast<uint32_t>(p[i]) >= limit) return i;
  }
  return -1;
}

// First f16 of p[0, n) that is an infinity or a NaN (every exponent bit set), or -1.
int64_t FirstNonFinite(const uint16_t* p, int64_t n) {
  constexpr uint16_t kExponent = 0x7c00;
  uint16_t high = 0;
  for (int64_t i = 0; i < n; ++i) high = std::max<uint16_t>(high, p[i] & kExponent);
  if (high != kExponent) return -1;
  for (int64_t i = 0; i < n; ++i) {
    if ((p[i] & kExponent) == kExponent) return i;
  }
  return -1;
}

std::string HalfName(uint16_t bits) {
  if ((bits & 0x03ff) != 0) return "nan";
  return (bits & 0x8000) != 0 ? "-inf" : "inf";
}

// "topk_idx[3][1]" for element `offset` of a row of `width`-wide positions ("input_ids[5]"
// when width is 0).
std::string Element(const char* tensor, int64_t width, int64_t offset) {
  if (width == 0) return absl::StrCat(tensor, "[", offset, "]");
  return absl::StrCat(tensor, "[", offset / width, "][", offset % width, "]");
}

}  // namespace

KdCacheReader::~KdCacheReader() = default;

absl::StatusOr<std::shared_ptr<const KdCacheReader>> KdCacheReader::Open(const std::string& dir,
                                                                         const KdCacheReaderOptions& options) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return absl::NotFoundError(absl::StrCat(dir, ": not a directory"));
  std::shared_ptr<KdCacheReader> reader(new KdCacheReader());
  reader->dir_ = dir;
  const std::string meta_path = (fs::path(dir) / "meta.json").string();
  bool qatd = false;
  if (fs::exists(meta_path, ec)) {
    QATD_ASSIGN_OR_RETURN(reader->meta_json_, ReadJsonFile(meta_path));
    if (!reader->meta_json_.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(meta_path, ": expected a JSON object"));
    }
    if (reader->meta_json_.contains("format") && !reader->meta_json_["format"].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(meta_path, ": field 'format' must be a string"));
    }
    const std::string format = reader->meta_json_.value("format", "");
    if (format == kKdCacheFormat) {
      qatd = true;
    } else if (format != kReferenceCacheFormat) {
      return absl::InvalidArgumentError(absl::StrCat(meta_path, ": unknown cache format '", format, "' (expected ",
                                                     std::string(kKdCacheFormat), " or ",
                                                     std::string(kReferenceCacheFormat), ")"));
    }
  }
  if (qatd) {
    QATD_RETURN_IF_ERROR(reader->OpenQatd(options));
  } else {
    QATD_RETURN_IF_ERROR(reader->OpenReference(options));
  }
  int64_t first = 0;
  for (const auto& s : reader->shards_) {
    s->first = first;
    first += s->n;
    reader->shard_infos_.push_back({s->path, s->first, s->n});
  }
  reader->num_sequences_ = first;
  reader->model_vocab_size_ = options.model_vocab_size;
  int64_t limit = int64_t{1} << 31;
  if (reader->vocab_size_ > 0) limit = std::min(limit, reader->vocab_size_);
  if (options.model_vocab_size > 0) limit = std::min(limit, options.model_vocab_size);
  reader->id_limit_ = static_cast<uint32_t>(limit);
  if (options.verify_data) {
    for (const auto& s : reader->shards_) QATD_RETURN_IF_ERROR(reader->CheckShardData(*s));
  }
  return std::shared_ptr<const KdCacheReader>(std::move(reader));
}

absl::Status KdCacheReader::OpenQatd(const KdCacheReaderOptions& options) {
  const std::string meta_path = (fs::path(dir_) / "meta.json").string();
  absl::StatusOr<KdCacheMeta> meta = KdCacheMeta::FromJson(meta_json_);
  if (!meta.ok()) return absl::Status(meta.status().code(), absl::StrCat(dir_, "/", meta.status().message()));
  max_length_ = meta->max_length;
  top_k_ = meta->top_k;
  rand_neg_ = meta->rand_neg;
  vocab_size_ = meta->vocab_size;
  const std::string progress_path = (fs::path(dir_) / "progress.json").string();
  QATD_ASSIGN_OR_RETURN(json pj, ReadJsonFile(progress_path));
  absl::StatusOr<KdProgress> progress = KdProgress::FromJson(pj);
  if (!progress.ok()) return absl::Status(progress.status().code(), absl::StrCat(dir_, "/", progress.status().message()));
  if (!progress->done && !options.allow_incomplete) {
    return absl::FailedPreconditionError(absl::StrCat("KD cache ", dir_, " is incomplete (progress.json: n_written=",
                                                      progress->n_written, ", done=false); finish it with --resume"));
  }
  int64_t remaining = progress->n_written;
  for (int64_t id = 0; id < progress->next_shard_id; ++id) {
    auto shard = std::make_unique<Shard>();
    shard->path = (fs::path(dir_) / ShardFileName(id)).string();
    absl::StatusOr<std::shared_ptr<model::SafetensorsFile>> file = model::SafetensorsFile::Open(shard->path);
    if (!file.ok()) {
      // The safetensors reader already names the file; keep its reason (truncation, ...).
      return absl::DataLossError(absl::StrCat("corrupt KD cache shard: ", file.status().message()));
    }
    shard->file = *std::move(file);
    const model::TensorInfo* ids = shard->file->Find("input_ids");
    if (ids == nullptr || ids->shape.size() != 2) return ShardError(shard->path, "missing or malformed input_ids");
    shard->n = ids->shape[0];
    QATD_RETURN_IF_ERROR(CheckShard(*shard));
    // Rows beyond progress.json (a shard rewritten by a run that stopped before its
    // progress update) are not part of the cache.
    if (shard->n > remaining) {
      if (progress->done) {
        return ShardError(shard->path, absl::StrCat("holds ", shard->n, " sequences but progress.json accounts for ",
                                                    remaining, " more"));
      }
      shard->n = remaining;
    }
    remaining -= shard->n;
    shards_.push_back(std::move(shard));
  }
  if (remaining != 0) {
    return absl::DataLossError(absl::StrCat(progress_path, ": n_written=", progress->n_written, " but the ",
                                            progress->next_shard_id, " shards hold ",
                                            progress->n_written - remaining, " sequences"));
  }
  return absl::OkStatus();
}

absl::Status KdCacheReader::CheckShard(Shard& s) {
  const int64_t n = s.n, l = max_length_, k = top_k_, r = rand_neg_;
  struct Want {
    const char* name;
    model::DType dtype;
    std::vector<int64_t> shape;
  };
  std::vector<Want> wants = {{"input_ids", model::DType::kI32, {n, l}},
                             {"topk_idx", model::DType::kI32, {n, l - 1, k}},
                             {"topk_logits", model::DType::kF16, {n, l - 1, k}}};
  if (r > 0) {
    wants.push_back({"rand_idx", model::DType::kI32, {n, l - 1, r}});
    wants.push_back({"rand_logits", model::DType::kF16, {n, l - 1, r}});
  }
  if (n <= 0) return ShardError(s.path, "holds no sequences");
  const void* ptrs[5] = {};
  for (size_t i = 0; i < wants.size(); ++i) {
    const model::TensorInfo* info = s.file->Find(wants[i].name);
    if (info == nullptr) return ShardError(s.path, absl::StrCat("missing tensor '", wants[i].name, "'"));
    if (info->dtype != wants[i].dtype) {
      return ShardError(s.path, absl::StrCat(wants[i].name, " has dtype ", std::string(model::DTypeName(info->dtype)),
                                             ", expected ", std::string(model::DTypeName(wants[i].dtype))));
    }
    if (info->shape != wants[i].shape) {
      return ShardError(s.path, absl::StrCat(wants[i].name, " has shape ", ShapeString(info->shape), ", expected ",
                                             ShapeString(wants[i].shape), " (L=", l, " K=", k, " R=", r,
                                             " from meta.json)"));
    }
    ptrs[i] = s.file->DataOf(*info);
  }
  s.ids = static_cast<const int32_t*>(ptrs[0]);
  s.idx = static_cast<const int32_t*>(ptrs[1]);
  s.val = static_cast<const uint16_t*>(ptrs[2]);
  s.ridx = static_cast<const int32_t*>(ptrs[3]);
  s.rval = static_cast<const uint16_t*>(ptrs[4]);
  return absl::OkStatus();
}

absl::Status KdCacheReader::OpenReference(const KdCacheReaderOptions& options) {
  (void)options;
  reference_ = true;
  QATD_ASSIGN_OR_RETURN(std::vector<std::string> names, ListShards(dir_, ".pt"));
  if (names.empty()) {
    return absl::NotFoundError(absl::StrCat(dir_, ": no meta.json of format ", std::string(kKdCacheFormat),
                                            " and no shard_*.pt files: not a KD cache"));
  }
  auto meta_int = [&](std::initializer_list<const char*> keys) -> int64_t {
    for (const char* key : keys) {
      auto it = meta_json_.find(key);
      if (it != meta_json_.end() && it->is_number_integer()) return it->get<int64_t>();
    }
    return -1;
  };
  max_length_ = meta_int({"max_length"});
  top_k_ = meta_int({"topk", "top_k"});
  rand_neg_ = meta_int({"rand_neg", "random_negatives"});
  vocab_size_ = std::max<int64_t>(0, meta_int({"vocab_size"}));

  for (const std::string& name : names) {
    auto shard = std::make_unique<Shard>();
    shard->path = (fs::path(dir_) / name).string();
    // Unpickled in memory: a regular file, bounded.
    constexpr int64_t kMaxPtShardBytes = int64_t{16} << 30;
    absl::StatusOr<InputFile> in = InputFile::Open(shard->path);
    if (!in.ok()) return absl::DataLossError(absl::StrCat("corrupt KD cache shard: ", in.status().message()));
    if (in->size() > kMaxPtShardBytes) {
      return ShardError(shard->path, absl::StrCat("holds ", FormatBytes(in->size()), ", more than the ",
                                                  FormatBytes(kMaxPtShardBytes),
                                                  " a .pt shard may hold (it is unpickled in memory)"));
    }
    std::vector<char> bytes(static_cast<size_t>(in->size()));
    for (size_t filled = 0; filled < bytes.size();) {
      absl::StatusOr<size_t> n = in->Read(bytes.data() + filled, bytes.size() - filled);
      if (!n.ok()) return ShardError(shard->path, std::string(n.status().message()));
      if (*n == 0) {
        bytes.resize(filled);
        break;
      }
      filled += *n;
    }
    Shard* s = shard.get();
    absl::Status st = CatchTorch("unpickle", [&]() -> absl::Status {
      const c10::IValue value = torch::jit::pickle_load(bytes);
      if (!value.isGenericDict()) return ShardError(s->path, "not a dict of tensors");
      const c10::impl::GenericDict dict = value.toGenericDict();
      auto get = [&](const char* key) -> at::Tensor {
        auto it = dict.find(c10::IValue(std::string(key)));
        if (it == dict.end() || !it->value().isTensor()) return at::Tensor();
        return it->value().toTensor().contiguous();
      };
      const char* keys[5] = {"input_ids", "topk_idx", "topk_logits", "rand_idx", "rand_logits"};
      const at::ScalarType types[5] = {at::kInt, at::kInt, at::kHalf, at::kInt, at::kHalf};
      for (int i = 0; i < 5; ++i) {
        s->owned[i] = get(keys[i]);
        if (i < 3 && !s->owned[i].defined()) return ShardError(s->path, absl::StrCat("missing tensor '", keys[i], "'"));
        if (s->owned[i].defined() && s->owned[i].scalar_type() != types[i]) {
          return ShardError(s->path, absl::StrCat(keys[i], " has dtype ", c10::toString(s->owned[i].scalar_type()),
                                                  ", expected ", c10::toString(types[i])));
        }
      }
      if (s->owned[3].defined() != s->owned[4].defined()) {
        return ShardError(s->path, "rand_idx and rand_logits must come together");
      }
      const at::Tensor mask = get("attention_mask");
      if (mask.defined() && !(mask.sizes() == s->owned[0].sizes() && mask.eq(1).all().item<bool>())) {
        return ShardError(s->path, "attention_mask is not all ones (padded caches are not supported)");
      }
      if (s->owned[0].dim() != 2 || s->owned[1].dim() != 3) return ShardError(s->path, "malformed input_ids/topk_idx");
      return absl::OkStatus();
    });
    if (!st.ok()) {
      // LibTorch's unpickling errors do not name the file.
      if (std::string(st.message()).find(s->path) != std::string::npos) return st;
      return ShardError(s->path, absl::StrCat("cannot read the .pt shard: ", st.message()));
    }
    if (max_length_ < 0) max_length_ = s->owned[0].size(1);
    if (top_k_ < 0) top_k_ = s->owned[1].size(2);
    if (rand_neg_ < 0) rand_neg_ = s->owned[3].defined() ? s->owned[3].size(2) : 0;
    s->n = s->owned[0].size(0);
    // Reuse the safetensors checks through a view of the owned tensors' shapes.
    const int64_t n = s->n, l = max_length_, k = top_k_, r = rand_neg_;
    auto check = [&](int i, std::vector<int64_t> want) -> absl::Status {
      if (!s->owned[i].defined()) return ShardError(s->path, "missing rand_idx/rand_logits (R > 0 in meta.json)");
      std::vector<int64_t> got(s->owned[i].sizes().begin(), s->owned[i].sizes().end());
      if (got != want) {
        return ShardError(s->path, absl::StrCat("tensor #", i, " has shape ", ShapeString(got), ", expected ",
                                                ShapeString(want), " (L=", l, " K=", k, " R=", r, ")"));
      }
      return absl::OkStatus();
    };
    if (n <= 0) return ShardError(s->path, "holds no sequences");
    QATD_RETURN_IF_ERROR(check(0, {n, l}));
    QATD_RETURN_IF_ERROR(check(1, {n, l - 1, k}));
    QATD_RETURN_IF_ERROR(check(2, {n, l - 1, k}));
    if (r > 0) {
      QATD_RETURN_IF_ERROR(check(3, {n, l - 1, r}));
      QATD_RETURN_IF_ERROR(check(4, {n, l - 1, r}));
      s->ridx = s->owned[3].data_ptr<int32_t>();
      s->rval = reinterpret_cast<const uint16_t*>(s->owned[4].data_ptr<at::Half>());
    }
    s->ids = s->owned[0].data_ptr<int32_t>();
    s->idx = s->owned[1].data_ptr<int32_t>();
    s->val = reinterpret_cast<const uint16_t*>(s->owned[2].data_ptr<at::Half>());
    shards_.push_back(std::move(shard));
  }
  return absl::OkStatus();
}

absl::Status KdCacheReader::CheckShardData(const Shard& s) const {
  std::call_once(s.data_checked, [&] { s.data_status = ScanShardData(s); });
  return s.data_status;
}

absl::Status KdCacheReader::ScanShardData(const Shard& s) const {
  const int64_t n = s.n, l = max_length_, k = top_k_, r = rand_neg_;
  struct Ids {
    const char* name;
    const int32_t* data;
    int64_t row;    // elements per sequence
    int64_t width;  // per position (0: one per position)
  };
  for (const Ids& t : {Ids{"input_ids", s.ids, l, 0}, Ids{"topk_idx", s.idx, (l - 1) * k, k},
                       Ids{"rand_idx", s.ridx, (l - 1) * r, r}}) {
    if (t.data == nullptr || t.row == 0) continue;
    if (const int64_t at = FirstIdOutside(t.data, n * t.row, id_limit_); at >= 0) {
      return BadId(s, at / t.row, t.name, t.width, at % t.row, t.data[at]);
    }
  }
  struct Logits {
    const char* name;
    const uint16_t* data;
    int64_t row, width;
  };
  for (const Logits& t : {Logits{"topk_logits", s.val, (l - 1) * k, k}, Logits{"rand_logits", s.rval, (l - 1) * r, r}}) {
    if (t.data == nullptr || t.row == 0) continue;
    if (const int64_t at = FirstNonFinite(t.data, n * t.row); at >= 0) {
      const int64_t row = at / t.row;
      return absl::DataLossError(absl::StrCat("KD cache shard ", s.path, " sample ", row, " (sequence ", s.first + row,
                                              ") has non-finite teacher logits (",
                                              Element(t.name, t.width, at % t.row), " is ", HalfName(t.data[at]),
                                              "): the cache is damaged or its teacher overflowed; rebuild it"));
    }
  }
  return absl::OkStatus();
}

absl::Status KdCacheReader::BadId(const Shard& s, int64_t row, const char* tensor, int64_t width, int64_t offset,
                                  int32_t id) const {
  const std::string where = absl::StrCat("KD cache shard ", s.path, " sample ", row, " (sequence ", s.first + row,
                                         "): ", Element(tensor, width, offset), " holds id ", id);
  if (id < 0) return absl::DataLossError(absl::StrCat(where, ", a negative id"));
  if (vocab_size_ > 0 && id >= vocab_size_) {
    return absl::DataLossError(
        absl::StrCat(where, ", outside the vocabulary of ", vocab_size_, " ids (meta.json vocab_size)"));
  }
  // Within the teacher's vocabulary (or it is unknown) but not the model's: the cache was made
  // for a model with a larger vocabulary.
  return absl::FailedPreconditionError(absl::StrCat(where, ", outside the model's vocabulary of ", model_vocab_size_,
                                                    " ids (its config.json vocab_size): the cache was made with a "
                                                    "teacher of a larger vocabulary"));
}

absl::StatusOr<KdBatch> KdCacheReader::Gather(std::span<const int64_t> indices, bool with_rand) const {
  const auto b = static_cast<int64_t>(indices.size());
  for (int64_t i : indices) {
    if (i < 0 || i >= num_sequences_) {
      return absl::InvalidArgumentError(absl::StrCat("sequence index ", i, " outside [0, ", num_sequences_, ")"));
    }
  }
  return CatchTorchOr<KdBatch>("gather kd batch", [&]() -> absl::StatusOr<KdBatch> {
    const int64_t l = max_length_, k = top_k_, r = with_rand ? rand_neg_ : 0;
    const int64_t row_ids = l, row_topk = (l - 1) * k, row_rand = (l - 1) * r;
    KdBatch out;
    out.global_rows = b;
    out.indices = at::empty({b}, at::TensorOptions().dtype(at::kLong));
    out.input_ids = at::empty({b, l}, at::TensorOptions().dtype(at::kInt));
    out.topk_idx = at::empty({b, l - 1, k}, at::TensorOptions().dtype(at::kInt));
    out.topk_logits = at::empty({b, l - 1, k}, at::TensorOptions().dtype(at::kHalf));
    if (r > 0) {
      out.rand_idx = at::empty({b, l - 1, r}, at::TensorOptions().dtype(at::kInt));
      out.rand_logits = at::empty({b, l - 1, r}, at::TensorOptions().dtype(at::kHalf));
    }
    int64_t* pi = out.indices.data_ptr<int64_t>();
    auto* p_ids = out.input_ids.data_ptr<int32_t>();
    auto* p_idx = out.topk_idx.data_ptr<int32_t>();
    auto* p_val = reinterpret_cast<uint16_t*>(out.topk_logits.data_ptr<at::Half>());
    int32_t* p_ridx = r > 0 ? out.rand_idx.data_ptr<int32_t>() : nullptr;
    uint16_t* p_rval = r > 0 ? reinterpret_cast<uint16_t*>(out.rand_logits.data_ptr<at::Half>()) : nullptr;
    for (int64_t j = 0; j < b; ++j) {
      const int64_t g = indices[static_cast<size_t>(j)];
      pi[j] = g;
      auto it = std::upper_bound(shards_.begin(), shards_.end(), g,
                                 [](int64_t v, const std::unique_ptr<Shard>& s) { return v < s->first; });
      const Shard& s = **(it - 1);
      const int64_t row = g - s.first;
      QATD_RETURN_IF_ERROR(CheckShardData(s));  // once per shard; then an atomic load
      std::memcpy(p_ids + j * row_ids, s.ids + row * row_ids, sizeof(int32_t) * row_ids);
      std::memcpy(p_idx + j * row_topk, s.idx + row * row_topk, sizeof(int32_t) * row_topk);
      std::memcpy(p_val + j * row_topk, s.val + row * row_topk, sizeof(uint16_t) * row_topk);
      if (r > 0) {
        std::memcpy(p_ridx + j * row_rand, s.ridx + row * row_rand, sizeof(int32_t) * row_rand);
        std::memcpy(p_rval + j * row_rand, s.rval + row * row_rand, sizeof(uint16_t) * row_rand);
      }
    }
    return out;
  });
}

absl::StatusOr<KdBatch> KdCacheReader::Range(int64_t begin, int64_t end, bool with_rand) const {
  if (begin < 0 || end < begin || end > num_sequences_) {
    return absl::InvalidArgumentError(
        absl::StrCat("range [", begin, ", ", end, ") outside [0, ", num_sequences_, ")"));
  }
  std::vector<int64_t> idx(static_cast<size_t>(end - begin));
  for (int64_t i = begin; i < end; ++i) idx[static_cast<size_t>(i - begin)] = i;
  return Gather(idx, with_rand);
}

absl::StatusOr<KdSplits> SplitTrainHeldOut(int64_t n, const HeldOutOptions& options) {
  if (options.count < 0) return absl::InvalidArgumentError(absl::StrCat("held_out count must be >= 0, got ", options.count));
  if (!(options.fraction >= 0.0 && options.fraction < 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat("held_out fraction must be in [0, 1), got ", options.fraction));
  }
  if (options.count > 0 && options.fraction > 0.0) {
    return absl::InvalidArgumentError("held_out: give a count or a fraction, not both");
  }
  const int64_t held = options.count > 0 ? options.count : static_cast<int64_t>(std::llround(options.fraction * n));
  if (held >= n) {
    return absl::InvalidArgumentError(
        absl::StrCat("held_out of ", held, " sequences leaves nothing to train on (cache has ", n, ")"));
  }
  return KdSplits{{0, n - held}, {n - held, n}};
}

json KdCursor::ToJson() const { return {{"epoch", epoch}, {"position", position}}; }

absl::StatusOr<KdCursor> KdCursor::FromJson(const json& j) {
  if (!j.is_object() || !j.contains("epoch") || !j.contains("position") || !j["epoch"].is_number_integer() ||
      !j["position"].is_number_integer()) {
    return absl::InvalidArgumentError("kd cursor: expected {\"epoch\": int, \"position\": int}");
  }
  KdCursor c{j["epoch"].get<int64_t>(), j["position"].get<int64_t>()};
  if (c.epoch < 0 || c.position < 0) return absl::InvalidArgumentError("kd cursor: epoch and position must be >= 0");
  return c;
}

absl::StatusOr<KdBatchStream> KdBatchStream::Create(std::shared_ptr<const KdCacheReader> reader, KdSplit split,
                                                    KdStreamOptions options) {
  if (reader == nullptr) return absl::InvalidArgumentError("KdBatchStream: no reader");
  if (options.batch_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("batch_size must be >= 1, got ", options.batch_size));
  }
  if (split.begin < 0 || split.end > reader->num_sequences() || split.size() <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("split [", split.begin, ", ", split.end,
                                                   ") is empty or outside the cache of ", reader->num_sequences()));
  }
  if (options.shard_count < 1 || options.shard_index < 0 || options.shard_index >= options.shard_count) {
    return absl::InvalidArgumentError(
        absl::StrCat("shard ", options.shard_index, " is outside ", options.shard_count, " shard(s)"));
  }
  if (options.drop_last && split.size() < options.batch_size) {
    return absl::InvalidArgumentError(absl::StrCat("drop_last with batch_size ", options.batch_size,
                                                   " leaves no batch in a split of ", split.size()));
  }
  KdBatchStream s;
  s.reader_ = std::move(reader);
  s.split_ = split;
  s.options_ = options;
  return s;
}

int64_t KdBatchStream::batches_per_epoch() const {
  const int64_t n = split_.size(), b = options_.batch_size;
  return options_.drop_last ? n / b : (n + b - 1) / b;
}

absl::Status KdBatchStream::Seek(const KdCursor& cursor) {
  if (cursor.epoch < 0 || cursor.position < 0 || cursor.position > split_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("kd cursor (epoch ", cursor.epoch, ", position ", cursor.position,
                                                   ") is outside the split of ", split_.size()));
  }
  cursor_ = cursor;
  return absl::OkStatus();
}

void KdBatchStream::PrepareEpoch() {
  if (!options_.shuffle || permutation_epoch_ == cursor_.epoch) return;
  permutation_ = SeededPermutation(split_.size(), MixSeed(options_.seed, static_cast<uint64_t>(cursor_.epoch)));
  permutation_epoch_ = cursor_.epoch;
}

absl::StatusOr<KdBatch> KdBatchStream::Next() {
  const int64_t n = split_.size(), b = options_.batch_size;
  const int64_t left = n - cursor_.position;
  if (left <= 0 || (options_.drop_last && left < b)) {
    ++cursor_.epoch;
    cursor_.position = 0;
  }
  PrepareEpoch();
  const int64_t take = std::min(b, n - cursor_.position);
  // This shard's rows of the global batch (all of them when unsharded).
  const int64_t per_shard = (take + options_.shard_count - 1) / options_.shard_count;
  const int64_t first = std::min(take, options_.shard_index * per_shard);
  const int64_t last = std::min(take, first + per_shard);
  std::vector<int64_t> idx(static_cast<size_t>(last - first));
  for (int64_t i = first; i < last; ++i) {
    const int64_t p = cursor_.position + i;
    idx[static_cast<size_t>(i - first)] = split_.begin + (options_.shuffle ? permutation_[static_cast<size_t>(p)] : p);
  }
  KdBatch batch;
  if (!idx.empty()) {
    QATD_ASSIGN_OR_RETURN(batch, reader_->Gather(idx, options_.with_rand));
  }
  batch.global_rows = take;
  cursor_.position += take;
  return batch;
}

absl::StatusOr<int64_t> ImportReferenceCache(const std::string& src, const std::string& dst,
                                             const ImportOptions& options) {
  QATD_ASSIGN_OR_RETURN(std::shared_ptr<const KdCacheReader> reader, KdCacheReader::Open(src));
  if (!reader->is_reference_format()) {
    return absl::InvalidArgumentError(absl::StrCat(src, " is already a ", std::string(kKdCacheFormat), " cache"));
  }
  std::error_code ec;
  fs::create_directories(dst, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dst, ": ", ec.message()));
  QATD_ASSIGN_OR_RETURN(std::vector<std::string> existing, ListShards(dst, ".safetensors"));
  const bool has_cache = !existing.empty() || fs::exists(fs::path(dst) / "meta.json") ||
                         fs::exists(fs::path(dst) / "progress.json");
  if (has_cache) {
    if (!options.overwrite) {
      return absl::FailedPreconditionError(absl::StrCat(dst, " already holds a KD cache (pass overwrite)"));
    }
    // ::unlink, not fs::remove (pip LibTorch exports its own std::filesystem symbols).
    for (const std::string& name : existing) ::unlink((fs::path(dst) / name).c_str());
    ::unlink((fs::path(dst) / "progress.json").c_str());
    ::unlink((fs::path(dst) / "meta.json").c_str());
  }
  const json& ref = reader->meta_json();
  auto str = [&](const char* key) { return ref.contains(key) && ref[key].is_string() ? ref[key].get<std::string>() : ""; };
  KdCacheMeta meta;
  meta.teacher_model = str("teacher_model");
  meta.tokenizer_sha256 = options.tokenizer_sha256;
  meta.dataset_path = str("dataset_name");
  meta.dataset_format = str("dataset_format");
  meta.dataset_text_field = str("dataset_text_field");
  // The reference renders every mode with the template verbatim (spec §6.2): our "none";
  // its "both" repeats every sample.
  const std::string thinking = str("chat_thinking");
  meta.thinking = thinking == "both" ? "reference_both" : "none";
  meta.max_length = reader->max_length();
  meta.top_k = reader->top_k();
  meta.rand_neg = reader->rand_neg();
  meta.vocab_size = reader->vocab_size();
  meta.num_sequences = reader->num_sequences();
  meta.shard_size = options.shard_size > 0 ? options.shard_size : reader->shards().front().num_sequences;
  meta.shuffle = true;
  meta.device = "";
  meta.qatd_version = QatdVersion();
  meta.libtorch_version = TORCH_VERSION;
  meta.created_utc = UtcNowIso8601();
  meta.extra["imported_from"] = {{"path", src}, {"meta", ref}};
  QATD_RETURN_IF_ERROR(WriteJsonFileAtomic((fs::path(dst) / "meta.json").string(), meta.ToJson()));

  KdCacheWriter::Options wo;
  wo.dir = dst;
  wo.layout = {meta.max_length, meta.top_k, meta.rand_neg, meta.shard_size};
  QATD_ASSIGN_OR_RETURN(std::unique_ptr<KdCacheWriter> writer, KdCacheWriter::Open(wo, KdProgress{}));
  const int64_t step = 256;
  for (int64_t begin = 0; begin < reader->num_sequences(); begin += step) {
    const int64_t end = std::min(reader->num_sequences(), begin + step);
    QATD_ASSIGN_OR_RETURN(KdBatch batch, reader->Range(begin, end, /*with_rand=*/true));
    KdRows rows;
    rows.n = end - begin;
    rows.input_ids = batch.input_ids.data_ptr<int32_t>();
    rows.topk_idx = batch.topk_idx.data_ptr<int32_t>();
    rows.topk_logits = reinterpret_cast<const uint16_t*>(batch.topk_logits.data_ptr<at::Half>());
    if (meta.rand_neg > 0) {
      rows.rand_idx = batch.rand_idx.data_ptr<int32_t>();
      rows.rand_logits = reinterpret_cast<const uint16_t*>(batch.rand_logits.data_ptr<at::Half>());
    }
    QATD_RETURN_IF_ERROR(writer->Append(rows));
  }
  QATD_RETURN_IF_ERROR(writer->Finish());
  return reader->num_sequences();
}

}  // namespace qatd::kd
