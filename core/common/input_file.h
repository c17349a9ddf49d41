#pragma once
// Input files that a job names (datasets, tokenizers, configs, cache files), read with bounds
// (issue #14): only a regular file is read (a device such as /dev/zero, a FIFO or a socket is
// refused, and opening one never blocks), never past the size it had when it was opened (a
// file that keeps growing ends), whole only up to the caller's limit, and line by line with a
// bound on the length of one line. Symlinks are followed (Hugging Face caches are symlinks).
//
// Errors name the path and the bound: INVALID_ARGUMENT for something that is not a regular file
// or is over a limit; open/read errors through FileErrorStatus (atomic_file_writer.h: a missing
// file is NOT_FOUND, no permission PERMISSION_DENIED, anything else INTERNAL).
//
// Thread safety: an InputFile or LineReader is used by one thread at a time.

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qatd {

// "64 MiB", "100 GiB", "1.5 GiB", "512 bytes": for messages about sizes and bounds.
std::string FormatBytes(int64_t bytes);

class InputFile {
 public:
  static absl::StatusOr<InputFile> Open(const std::string& path);
  InputFile(InputFile&& other) noexcept;
  InputFile& operator=(InputFile&& other) noexcept;
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;
  ~InputFile();

  const std::string& path() const { return path_; }
  int64_t size() const { return size_; }  // bytes, when opened

  // Up to `n` bytes into `buffer`; 0 at the end (size() bytes read, or the file shrank).
  absl::StatusOr<size_t> Read(char* buffer, size_t n);
  // The rest of the file. INVALID_ARGUMENT "<path> holds 3 GiB, more than the 2 GiB limit"
  // when size() > max_bytes (nothing is read then).
  absl::StatusOr<std::string> ReadAll(int64_t max_bytes);

 private:
  InputFile(std::string path, int fd, int64_t size) : path_(std::move(path)), fd_(fd), size_(size) {}

  std::string path_;
  int fd_ = -1;
  int64_t size_ = 0;
  int64_t offset_ = 0;
};

// Lines of an InputFile, without their '\n' (a '\r' before it is kept); a last line without
// '\n' is a line too. Holds at most max_line_bytes plus one read buffer.
class LineReader {
 public:
  // `file` must outlive the reader.
  LineReader(InputFile* file, int64_t max_line_bytes);

  // The next line in `*line` (valid until the next call); false at the end. INVALID_ARGUMENT
  // "<path>:<n>: line is longer than <max_line_bytes>" for an overlong line.
  absl::StatusOr<bool> Next(std::string_view* line);
  // 1-based number of the line Next() returned last.
  int64_t line_number() const { return line_number_; }

 private:
  InputFile* file_;
  int64_t max_line_bytes_;
  std::string buffer_;
  size_t begin_ = 0, end_ = 0;  // unread bytes: buffer_[begin_, end_)
  std::string line_;
  int64_t line_number_ = 0;
};

}  // namespace qatd
