// Helpers for the cleaning-pipeline tests: a temporary folder, the shared
// corpora (tests skip when they are absent), and JSONL reading/writing.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/atomic_file.h"

namespace moetrain::data::clean::test {

namespace fs = std::filesystem;

inline std::string shared_data(const std::string& name) {
  const char* env = std::getenv("MOETRAIN_SHARED_DATA");
  return std::string(env != nullptr ? env : MOETRAIN_SHARED_DATA) + "/" + name;
}

#define CLEAN_NEED_SHARED(name)                                                         \
  do {                                                                                  \
    if (!std::filesystem::exists(::moetrain::data::clean::test::shared_data(name)))     \
      GTEST_SKIP() << ::moetrain::data::clean::test::shared_data(name) << " is absent"; \
  } while (0)

class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = "moetrain-clean-";
    if (info != nullptr) name += std::string(info->test_suite_name()) + "-" + info->name() + "-";
    path_ = (fs::temp_directory_path() / (name + std::to_string(::getpid()))).string();
    data::remove_tree(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { data::remove_tree(path_); }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The records of a JSONL file (at most `limit`).
inline std::vector<nlohmann::json> read_jsonl(const std::string& path, size_t limit = SIZE_MAX) {
  std::ifstream in(path);
  std::vector<nlohmann::json> out;
  std::string line;
  while (out.size() < limit && std::getline(in, line))
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

inline void write_jsonl(const std::string& path, const std::vector<nlohmann::json>& records) {
  std::ofstream out(path);
  for (const auto& r : records) out << r.dump() << "\n";
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Paragraphs (blank-line separated) of the Brown corpus with at least `min_words` words.
inline std::vector<std::string> brown_paragraphs(size_t min_words, size_t limit) {
  std::vector<std::string> out;
  for (const auto& rec : read_jsonl(shared_data("brown.jsonl"))) {
    const std::string text = rec.at("text");
    size_t start = 0;
    while (start < text.size() && out.size() < limit) {
      size_t end = text.find("\n\n", start);
      if (end == std::string::npos) end = text.size();
      std::string para = text.substr(start, end - start);
      size_t words = 0;
      std::istringstream ws(para);
      std::string w;
      while (ws >> w) ++words;
      if (words >= min_words) out.push_back(para);
      start = end + 2;
    }
    if (out.size() >= limit) break;
  }
  return out;
}

}  // namespace moetrain::data::clean::test
