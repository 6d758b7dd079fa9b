// Helpers shared by the data unit tests: a self-removing temporary directory,
// the shared corpora folder (tests skip when it is absent), small readers
// that pull real text out of it, and file writers (plain and zstd).
#pragma once

#include <ftw.h>
#include <gtest/gtest.h>
#include <unistd.h>
#include <zstd.h>

#include <cstdio>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace moetrain::data::test_support {

namespace fs = std::filesystem;

// Removes `path` and everything under it. Not std::filesystem::remove_all:
// libtorch.so exports its own copy of the std::filesystem functions, which
// wins symbol resolution in any binary linked with it, and its remove_all
// crashes (a null function pointer) on a non-empty directory.
inline void remove_tree(const std::string& path) {
  ::nftw(
      path.c_str(),
      [](const char* p, const struct stat*, int, struct FTW*) {
        std::remove(p);  // best effort: keep walking on failure
        return 0;
      },
      16, FTW_DEPTH | FTW_PHYS);
}

// A fresh directory under the system temp dir, removed with its contents.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = "moetrain-data-";
    if (info != nullptr) name += std::string(info->test_suite_name()) + "-" + info->name() + "-";
    name += std::to_string(::getpid());
    path_ = fs::temp_directory_path() / name;
    remove_tree(path_.string());
    fs::create_directories(path_);
  }
  ~TempDir() { remove_tree(path_.string()); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

inline std::string shared_data_dir() { return MOETRAIN_SHARED_DATA; }

inline bool shared_file_exists(const std::string& relative) {
  return fs::exists(fs::path(shared_data_dir()) / relative);
}

#define MOETRAIN_REQUIRE_SHARED(relative)                                                    \
  do {                                                                                        \
    if (!::moetrain::data::test_support::shared_file_exists(relative))                             \
      GTEST_SKIP() << "shared corpus " << ::moetrain::data::test_support::shared_data_dir() << "/" \
                   << (relative) << " is absent";                                             \
  } while (0)

// The first `max_records` values of `field` in a shared JSONL file.
inline std::vector<std::string> read_jsonl_field(const std::string& relative, const std::string& field,
                                                 size_t max_records) {
  std::ifstream in(fs::path(shared_data_dir()) / relative);
  std::vector<std::string> out;
  std::string line;
  while (out.size() < max_records && std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    out.push_back(j.at(field).get<std::string>());
  }
  return out;
}

// Brown paragraphs (documents are split into paragraphs by blank lines).
inline std::vector<std::string> brown_paragraphs(size_t max_paragraphs, size_t max_docs = 40) {
  std::vector<std::string> out;
  for (const auto& doc : read_jsonl_field("brown.jsonl", "text", max_docs)) {
    size_t start = 0;
    while (start < doc.size() && out.size() < max_paragraphs) {
      size_t end = doc.find("\n\n", start);
      if (end == std::string::npos) end = doc.size();
      if (end > start) out.push_back(doc.substr(start, end - start));
      start = end + 2;
    }
    if (out.size() >= max_paragraphs) break;
  }
  return out;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

// `s` as one zstd frame.
inline std::string zstd_compress(const std::string& s, int level = 3) {
  std::string out(ZSTD_compressBound(s.size()), '\0');
  size_t n = ZSTD_compress(out.data(), out.size(), s.data(), s.size(), level);
  EXPECT_FALSE(ZSTD_isError(n));
  out.resize(n);
  return out;
}

}  // namespace moetrain::data::test_support
