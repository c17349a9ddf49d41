#pragma once
// Scratch directories of the KD tests: all under one per-process root that a gtest
// environment removes when the tests end (qatd::RemoveTree, see core/common/file_util.h).

#include <unistd.h>

#include <filesystem>
#include <string>

#include "core/common/file_util.h"
#include "gtest/gtest.h"

namespace qatd::kd::testdirs {

inline std::filesystem::path TempRoot() {
  return std::filesystem::temp_directory_path() / ("qatd_kd_tests." + std::to_string(::getpid()));
}

class TempRootCleanup : public ::testing::Environment {
 public:
  void TearDown() override { (void)::qatd::RemoveTree(TempRoot().string()); }
};
inline ::testing::Environment* const kTempRootCleanup = ::testing::AddGlobalTestEnvironment(new TempRootCleanup);

// An empty directory TempRoot()/name (emptied first if it exists).
inline std::filesystem::path FreshDir(const std::string& name) {
  std::filesystem::path dir = TempRoot() / name;
  (void)::qatd::RemoveTree(dir.string());
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace qatd::kd::testdirs
