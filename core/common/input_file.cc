#include "core/common/input_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/common/atomic_file_writer.h"

namespace qatd {
namespace {

constexpr size_t kReadChunk = size_t{1} << 20;

const char* TypeName(mode_t mode) {
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISDIR(mode)) return "a directory";
  return "a special file";
}

absl::Status NotRegular(const std::string& path, mode_t mode) {
  return absl::InvalidArgumentError(absl::StrCat(path, " is ", TypeName(mode), ", not a regular file"));
}

}  // namespace

std::string FormatBytes(int64_t bytes) {
  constexpr int64_t kKiB = 1024, kMiB = kKiB << 10, kGiB = kMiB << 10;
  for (const auto& [unit, name] : {std::pair{kGiB, "GiB"}, std::pair{kMiB, "MiB"}, std::pair{kKiB, "KiB"}}) {
    if (bytes < unit) continue;
    if (bytes % unit == 0) return absl::StrCat(bytes / unit, " ", name);
    return absl::StrFormat("%.1f %s", static_cast<double>(bytes) / static_cast<double>(unit), name);
  }
  return absl::StrCat(bytes, bytes == 1 ? " byte" : " bytes");
}

absl::StatusOr<InputFile> InputFile::Open(const std::string& path) {
  // stat first: open() itself fails on a socket (ENXIO) and would hide what the path is.
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) return NotRegular(path, st.st_mode);
  // O_NONBLOCK: a FIFO swapped in after the stat must not block the open; fstat refuses it.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return FileErrorStatus(errno, "open", path);
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return FileErrorStatus(err, "stat", path);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return NotRegular(path, st.st_mode);
  }
  return InputFile(path, fd, static_cast<int64_t>(st.st_size));
}

InputFile::InputFile(InputFile&& other) noexcept
    : path_(std::move(other.path_)), fd_(other.fd_), size_(other.size_), offset_(other.offset_) {
  other.fd_ = -1;
}

InputFile& InputFile::operator=(InputFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(other.path_);
    fd_ = other.fd_;
    size_ = other.size_;
    offset_ = other.offset_;
    other.fd_ = -1;
  }
  return *this;
}

InputFile::~InputFile() {
  if (fd_ >= 0) ::close(fd_);
}

absl::StatusOr<size_t> InputFile::Read(char* buffer, size_t n) {
  const auto want = static_cast<size_t>(std::min<int64_t>(static_cast<int64_t>(n), size_ - offset_));
  if (want == 0) return size_t{0};
  while (true) {
    const ssize_t got = ::read(fd_, buffer, want);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return FileErrorStatus(errno, "read", path_);
    offset_ += got;
    if (got == 0) size_ = offset_;  // it shrank: the end is here
    return static_cast<size_t>(got);
  }
}

absl::StatusOr<std::string> InputFile::ReadAll(int64_t max_bytes) {
  const int64_t left = size_ - offset_;
  if (left > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, " holds ", FormatBytes(left), ", more than the ", FormatBytes(max_bytes), " limit"));
  }
  std::string data(static_cast<size_t>(left), '\0');
  size_t filled = 0;
  while (filled < data.size()) {
    absl::StatusOr<size_t> got = Read(data.data() + filled, data.size() - filled);
    if (!got.ok()) return got.status();
    if (*got == 0) break;
    filled += *got;
  }
  data.resize(filled);
  return data;
}

LineReader::LineReader(InputFile* file, int64_t max_line_bytes)
    : file_(file), max_line_bytes_(max_line_bytes), buffer_(kReadChunk, '\0') {}

absl::StatusOr<bool> LineReader::Next(std::string_view* line) {
  line_.clear();
  bool any = false;  // bytes of this line seen (an empty last segment is no line)
  while (true) {
    const char* start = buffer_.data() + begin_;
    const void* nl = std::memchr(start, '\n', end_ - begin_);
    const size_t take = nl != nullptr ? static_cast<size_t>(static_cast<const char*>(nl) - start) : end_ - begin_;
    if (static_cast<int64_t>(line_.size() + take) > max_line_bytes_) {
      return absl::InvalidArgumentError(absl::StrCat(file_->path(), ":", line_number_ + 1, ": line is longer than ",
                                                     FormatBytes(max_line_bytes_)));
    }
    // The common case, a whole line in the buffer, is returned without a copy.
    if (nl != nullptr && line_.empty()) {
      *line = std::string_view(start, take);
    } else {
      line_.append(start, take);
      *line = line_;
    }
    any |= take > 0;
    if (nl != nullptr) {
      begin_ += take + 1;
      ++line_number_;
      return true;
    }
    begin_ = end_ = 0;
    absl::StatusOr<size_t> got = file_->Read(buffer_.data(), buffer_.size());
    if (!got.ok()) return got.status();
    if (*got == 0) {
      if (!any) return false;
      ++line_number_;
      *line = line_;
      return true;
    }
    end_ = *got;
  }
}

}  // namespace qatd
