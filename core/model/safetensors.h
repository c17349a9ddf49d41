#pragma once
// safetensors reader and writer (https://github.com/huggingface/safetensors format):
//   [u64 little-endian header length N][N bytes JSON header][data section]
// The header maps tensor names to {dtype, shape, data_offsets:[begin,end)} relative to the
// data section, plus an optional "__metadata__" string->string map.
//
// Reading memory-maps the file (no copy); every header field is validated before anything
// is allocated from it: header length bounded, JSON well-formed, dtypes known, shapes
// non-negative, offsets in range, non-overlapping, and shape x dtype size == byte length.
// LibTorch-free on purpose: the parser is fuzz/ASan-tested without ATen.

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qatd::model {

enum class DType { kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

// Bytes per element.
size_t DTypeSize(DType dtype);
// The safetensors spelling ("F32", "BF16", ...).
std::string_view DTypeName(DType dtype);
// Parses the safetensors spelling; INVALID_ARGUMENT names the unknown dtype.
absl::StatusOr<DType> ParseDType(std::string_view name);

// Upper bound on the JSON header (the reference implementation uses 100 MB).
inline constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // offset in the data section
  uint64_t end = 0;    // one past the last byte
  uint64_t nbytes() const { return end - begin; }
  int64_t numel() const;
};

// A read-only view of one tensor's bytes; valid while its SafetensorsFile lives.
struct TensorView {
  const TensorInfo* info = nullptr;
  const void* data = nullptr;
};

// One memory-mapped .safetensors file. Thread-safe for concurrent reads.
class SafetensorsFile {
 public:
  // Opens and validates `path`. Errors: NOT_FOUND (no file), INVALID_ARGUMENT (malformed,
  // with the reason and the tensor name where there is one).
  static absl::StatusOr<std::shared_ptr<SafetensorsFile>> Open(const std::string& path);

  // Validates an in-memory image (same checks as Open). Copies nothing; `bytes` must outlive
  // the returned object. Used by tests and fuzzers.
  static absl::StatusOr<std::shared_ptr<SafetensorsFile>> FromBuffer(const void* bytes, size_t size);

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  // Tensors in file order (sorted by data offset).
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // nullptr when absent.
  const TensorInfo* Find(std::string_view name) const;
  // NOT_FOUND names the tensor.
  absl::StatusOr<TensorView> Get(std::string_view name) const;
  const uint8_t* DataOf(const TensorInfo& info) const { return data_ + info.begin; }

 private:
  SafetensorsFile() = default;
  absl::Status Parse(const uint8_t* bytes, size_t size);

  std::string path_;
  void* mapping_ = nullptr;
  size_t mapping_size_ = 0;
  const uint8_t* data_ = nullptr;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
  std::map<std::string, std::string> metadata_;
};

// A tensor to write: bytes are borrowed, not copied.
struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
};

// Writes `tensors` (in the given order, 8-byte aligned header as the reference does) to
// `path` atomically: streamed to `path.tmp.<pid>`, fsynced, renamed. INVALID_ARGUMENT on
// duplicate names or a byte length that does not match shape x dtype.
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

// A Hugging Face checkpoint directory: `model.safetensors`, or shards listed in
// `model.safetensors.index.json` ({"weight_map": {name: file}}). Also accepts a path to a
// single .safetensors file.
class Checkpoint {
 public:
  static absl::StatusOr<Checkpoint> Open(const std::string& path);

  // All tensor names, sorted.
  std::vector<std::string> Names() const;
  bool Has(std::string_view name) const;
  absl::StatusOr<TensorView> Get(std::string_view name) const;
  const std::vector<std::shared_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t, std::less<>> where_;  // name -> index into files_
};

}  // namespace qatd::model
