#pragma once
// A directory under $TMPDIR (or /tmp) that lives as long as the object. Header-only; shared
// by every test that needs scratch files. Removal goes through qatd::RemoveTree (never
// std::filesystem::remove_all, see core/common/file_util.h). QATD_KEEP_TEST_DIRS=1 keeps them.

#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>

#include "core/common/file_util.h"

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
