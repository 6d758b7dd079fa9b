// Atomic file replacement via a temporary file and rename(2).
#include "data/atomic_file.h"

#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace moetrain::data {

std::string temporary_path_for(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  return path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

void commit_temporary(const std::string& temporary, const std::string& path) {
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    std::string reason = std::strerror(errno);
    std::error_code ignored;
    std::filesystem::remove(temporary, ignored);
    throw std::runtime_error("cannot rename " + temporary + " to " + path + ": " + reason);
  }
}

void write_file_atomically(const std::string& path, const std::string& bytes) {
  const std::string tmp = temporary_path_for(path);
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) throw std::runtime_error("cannot write " + tmp + ": " + std::strerror(errno));
  bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  ok = (std::fflush(f) == 0) && ok;
  std::string reason = ok ? "" : std::strerror(errno);
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    throw std::runtime_error("cannot write " + path + ": " + (reason.empty() ? "close failed" : reason));
  }
  commit_temporary(tmp, path);
}

}  // namespace moetrain::data

namespace moetrain::data {
namespace {
thread_local std::string g_remove_failure;
}  // namespace

void remove_tree(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return;  // nothing there
  g_remove_failure.clear();
  ::nftw(
      path.c_str(),
      [](const char* p, const struct stat*, int, struct FTW*) {
        if (std::remove(p) != 0 && g_remove_failure.empty()) g_remove_failure = p;
        return 0;
      },
      16, FTW_DEPTH | FTW_PHYS);
  if (!g_remove_failure.empty()) {
    throw std::runtime_error("cannot remove " + g_remove_failure + ": " + std::strerror(errno));
  }
}

}  // namespace moetrain::data
