#pragma once
// Small POSIX file helpers shared by core, server and tests.
//
// Why not std::filesystem::remove_all: with the pip LibTorch 2.x of the GPU hosts, libtorch.so
// exports its own std::filesystem symbols, calls bind to that copy and remove_all crashed
// there. These helpers use plain POSIX calls and behave the same on every host.

#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace qatd {

// Removes `path` and everything below it (symlinks are removed, not followed). A missing
// path is OK. Errors name the entry that could not be removed.
absl::Status RemoveTree(const std::string& path);

// Writes `data` to "<path>.tmp-<pid>", fsyncs it and renames it over `path`: readers see the
// old file or the new one, never a torn write.
absl::Status WriteFileAtomically(const std::string& path, std::string_view data);

// Replaces directory `dst` by the complete directory `src` (same filesystem): `dst` is renamed
// aside to "<dst>.old-<pid>", `src` renamed to `dst`, then the old tree removed. A crash in
// between leaves either the old or the new directory under `dst` (or the old one aside).
absl::Status ReplaceDirectory(const std::string& src, const std::string& dst);

}  // namespace qatd
