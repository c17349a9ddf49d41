#pragma once
// Small POSIX file helpers shared by core, server and tests.
//
// Why not std::filesystem::remove_all: with the pip LibTorch 2.x of the GPU hosts, libtorch.so
// exports its own std::filesystem symbols, calls bind to that copy and remove_all crashed
// there. These helpers use plain POSIX calls and behave the same on every host.

#include <string>

#include "absl/status/status.h"

namespace qatd {

// Removes `path` and everything below it (symlinks are removed, not followed). A missing
// path is OK. Errors name the entry that could not be removed.
absl::Status RemoveTree(const std::string& path);

}  // namespace qatd
