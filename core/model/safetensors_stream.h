#pragma once
// A safetensors file written one tensor at a time (core/model/safetensors.h has the format and
// the all-in-memory WriteSafetensors). The header needs every tensor's name, dtype and shape
// up front; the bytes then follow in that order, so a caller can materialise a tensor, append
// it and free it before making the next one: the file never exists in memory as a whole.
//
// Published through the file seam (core/common/atomic_file_writer.h): the bytes go to a temp
// file; Commit() fsyncs and renames it over `path`. A writer destroyed before Commit() removes
// its temp file. Each tensor's SHA-256 is computed on the way, for a read-back check.
// Not thread-safe.

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/common/atomic_file_writer.h"
#include "core/model/safetensors.h"

namespace qatd::model {

// A tensor's place in the header.
struct TensorHeader {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  // shape x dtype size in bytes.
  uint64_t nbytes() const;
};

class SafetensorsStreamWriter {
 public:
  // Writes the header of `tensors` (in this order; 8-byte aligned as WriteSafetensors does) to
  // the temp file of `path`. INVALID_ARGUMENT on a duplicate or reserved name or a negative
  // dimension; file errors as AtomicFileWriter's.
  static absl::StatusOr<SafetensorsStreamWriter> Create(const std::string& path, std::vector<TensorHeader> tensors,
                                                         const std::map<std::string, std::string>& metadata = {});

  // Appends the bytes of the next tensor of the header, which must be `name` with exactly
  // its nbytes(): FAILED_PRECONDITION / INVALID_ARGUMENT otherwise.
  absl::Status Append(std::string_view name, const void* data, size_t nbytes);
  // After the last tensor: fsync, rename over the path. FAILED_PRECONDITION if tensors are missing.
  absl::Status Commit();

  const std::vector<TensorHeader>& tensors() const { return tensors_; }
  // Hex SHA-256 of each appended tensor's bytes, by name.
  const std::map<std::string, std::string>& tensor_sha256() const { return sha256_; }
  // Bytes of the whole file (header included).
  uint64_t file_bytes() const { return file_bytes_; }

 private:
  SafetensorsStreamWriter(std::unique_ptr<AtomicFileWriter> out, std::vector<TensorHeader> tensors, uint64_t file_bytes)
      : out_(std::move(out)), tensors_(std::move(tensors)), file_bytes_(file_bytes) {}

  std::unique_ptr<AtomicFileWriter> out_;
  std::vector<TensorHeader> tensors_;
  size_t next_ = 0;
  uint64_t file_bytes_ = 0;
  std::map<std::string, std::string> sha256_;
};

}  // namespace qatd::model
