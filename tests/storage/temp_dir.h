#pragma once
// A directory under $TMPDIR (or /tmp) that lives as long as the object. Header-only; shared
// by the storage, server and e2e tests.

#include <cstdlib>
#include "core/common/file_util.h"
#include <filesystem>
#include <stdexcept>
#include <string>

namespace qatd::testing {

class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/qatd-test-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    if (std::getenv("QATD_KEEP_TEST_DIRS") == nullptr) (void)::qatd::RemoveTree(path_.string());
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::string File(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace qatd::testing
