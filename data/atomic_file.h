// Atomic file replacement: write to a temporary name beside the target, then
// rename(2) it over the target. A reader (or a rerun after a crash) sees either
// the old file or the complete new one, never a half-written one.
#pragma once

#include <string>

namespace moetrain::data {

// A fresh temporary name in the same directory as `path` (so the rename stays
// within one file system), unique per process and call.
std::string temporary_path_for(const std::string& path);

// Renames `temporary` to `path`, replacing it; throws std::runtime_error
// naming both on failure (and removes `temporary`).
void commit_temporary(const std::string& temporary, const std::string& path);

// Writes `bytes` to `path` through a temporary file.
void write_file_atomically(const std::string& path, const std::string& bytes);

// Removes `path` and everything under it (no error if it does not exist);
// throws std::runtime_error naming the first entry that cannot be removed.
// Use this, not std::filesystem::remove_all: libtorch.so exports its own copy
// of the std::filesystem functions, which wins symbol resolution in binaries
// linked with it, and that copy's remove_all crashes on non-empty directories.
void remove_tree(const std::string& path);

}  // namespace moetrain::data
