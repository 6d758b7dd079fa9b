// Helpers shared by the data unit tests: a self-removing temporary directory,
// the shared corpora folder (tests skip when it is absent), small readers
// that pull real text out of it, file writers (plain and zstd), and the
// shards, configs and batch checks of the BatchSource tests.
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

#include "data/batch_source.h"
#include "data/token_shard.h"

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

#define MOETRAIN_REQUIRE_SHARED(relative)                                                                        \
  do {                                                                                                           \
    if (!::moetrain::data::test_support::shared_file_exists(relative))                                           \
      GTEST_SKIP() << "shared corpus " << ::moetrain::data::test_support::shared_data_dir() << "/" << (relative) \
                   << " is absent";                                                                              \
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

// ---- BatchSource tests (test_batch_source*.cpp) ----------------------------

// The vocabulary of the BatchSource tests' shards.
inline constexpr int64_t kVocab = 1000;

// The special tokens of a tokenizer with 100 sentinels.
inline SpecialTokens specials() {
  SpecialTokens s;  // pad 0, eos 1, unk 2, bos 3
  for (int64_t i = 0; i < 100; ++i) s.sentinels.push_back(4 + i);
  return s;
}

// Documents of varied lengths with ids in [104, kVocab), split over shards.
inline std::vector<std::vector<int32_t>> write_document_shards(const std::string& dir, int shards, int docs_per_shard,
                                                               uint64_t seed = 1) {
  std::mt19937_64 gen(seed);
  std::vector<std::vector<int32_t>> all;
  for (int s = 0; s < shards; ++s) {
    std::vector<int32_t> tokens;
    std::vector<int64_t> offsets = {0};
    for (int d = 0; d < docs_per_shard; ++d) {
      std::vector<int32_t> doc(5 + gen() % 60);
      for (auto& t : doc) t = static_cast<int32_t>(104 + gen() % (kVocab - 104));
      tokens.insert(tokens.end(), doc.begin(), doc.end());
      offsets.push_back(static_cast<int64_t>(tokens.size()));
      all.push_back(doc);
    }
    DocumentShard shard;
    shard.documents = make_token_sequences(tokens, offsets);
    shard.vocab_size = kVocab;
    char name[32];
    std::snprintf(name, sizeof(name), "train-%05d.h5", s);
    write_document_shard((std::filesystem::path(dir) / name).string(), shard);
  }
  return all;
}

// The sequences of a pairs shard written by write_pair_shard_file.
struct Pairs {
  std::vector<std::vector<int32_t>> source, target;
};

// `n` random source/target pairs with ids in [104, 604), written as one pairs shard.
inline Pairs write_pair_shard_file(const std::string& path, int n, uint64_t seed = 2) {
  std::mt19937_64 gen(seed);
  Pairs p;
  std::vector<int32_t> st, tt;
  std::vector<int64_t> so = {0}, to = {0};
  for (int i = 0; i < n; ++i) {
    std::vector<int32_t> s(1 + gen() % 20), t(1 + gen() % 12);
    for (auto& x : s) x = static_cast<int32_t>(104 + gen() % 500);
    for (auto& x : t) x = static_cast<int32_t>(104 + gen() % 500);
    st.insert(st.end(), s.begin(), s.end());
    tt.insert(tt.end(), t.begin(), t.end());
    so.push_back(static_cast<int64_t>(st.size()));
    to.push_back(static_cast<int64_t>(tt.size()));
    p.source.push_back(s);
    p.target.push_back(t);
  }
  PairShard shard;
  shard.source = make_token_sequences(st, so);
  shard.target = make_token_sequences(tt, to);
  shard.vocab_size = kVocab;
  write_pair_shard(path, shard);
  return p;
}

// A span-corruption config over `train` with short windows.
inline DataConfig span_config(const std::string& train) {
  DataConfig cfg;
  cfg.train = train;
  cfg.objective = Objective::SpanCorruption;
  cfg.src_len = 32;
  cfg.tgt_len = 12;
  return cfg;
}

// The real (unpadded) rows of a list of micro-batches, in order.
inline std::vector<Seq2SeqSample> rows(const std::vector<Seq2SeqBatch>& batches) {
  std::vector<Seq2SeqSample> out;
  for (const auto& b : batches) {
    for (int64_t i = 0; i < b.src_tokens.size(0); ++i) {
      Seq2SeqSample s;
      for (int64_t t = 0; t < b.src_tokens.size(1); ++t)
        if (b.src_mask[i][t].item<bool>()) s.source.push_back(b.src_tokens[i][t].item<int64_t>());
      for (int64_t t = 0; t < b.tgt_out.size(1); ++t)
        if (b.tgt_mask[i][t].item<bool>()) s.target.push_back(b.tgt_out[i][t].item<int64_t>());
      out.push_back(s);
    }
  }
  return out;
}

// Expects the same rows, in order.
inline void expect_same_rows(const std::vector<Seq2SeqSample>& a, const std::vector<Seq2SeqSample>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].source, b[i].source) << "row " << i;
    EXPECT_EQ(a[i].target, b[i].target) << "row " << i;
  }
}

// Expects identical micro-batches, tensor for tensor.
inline void expect_same_batches(const std::vector<Seq2SeqBatch>& a, const std::vector<Seq2SeqBatch>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::equal(a[i].src_tokens, b[i].src_tokens));
    EXPECT_TRUE(torch::equal(a[i].src_mask, b[i].src_mask));
    EXPECT_TRUE(torch::equal(a[i].tgt_in, b[i].tgt_in));
    EXPECT_TRUE(torch::equal(a[i].tgt_out, b[i].tgt_out));
    EXPECT_TRUE(torch::equal(a[i].tgt_mask, b[i].tgt_mask));
    EXPECT_EQ(a[i].num_target_tokens, b[i].num_target_tokens);
  }
}

// Checks the invariants every collated micro-batch must satisfy.
inline void check_collation(const Seq2SeqBatch& b, const SpecialTokens& s) {
  EXPECT_EQ(b.src_tokens.scalar_type(), torch::kInt64);
  EXPECT_EQ(b.src_mask.scalar_type(), torch::kBool);
  EXPECT_EQ(b.num_source_tokens, b.src_mask.sum().item<int64_t>());
  EXPECT_EQ(b.num_target_tokens, b.tgt_mask.sum().item<int64_t>());
  // Padding is pad and only pad.
  EXPECT_TRUE(b.src_tokens.masked_select(b.src_mask.logical_not()).eq(s.pad).all().item<bool>());
  EXPECT_TRUE(b.tgt_out.masked_select(b.tgt_mask.logical_not()).eq(s.pad).all().item<bool>());
  EXPECT_TRUE(b.tgt_in.masked_select(b.tgt_mask.logical_not()).eq(s.pad).all().item<bool>());
  // Masks are prefixes: real tokens first, then padding.
  auto src_len = b.src_mask.sum(1);
  for (int64_t i = 0; i < b.src_mask.size(0); ++i) {
    int64_t n = src_len[i].item<int64_t>();
    EXPECT_TRUE(b.src_mask[i].slice(0, 0, n).all().item<bool>());
    EXPECT_EQ(b.src_tokens[i][n - 1].item<int64_t>(), s.eos);
    int64_t t = b.tgt_mask[i].sum().item<int64_t>();
    EXPECT_TRUE(b.tgt_mask[i].slice(0, 0, t).all().item<bool>());
    EXPECT_EQ(b.tgt_out[i][t - 1].item<int64_t>(), s.eos);
    // Teacher forcing: decoder input is BOS + target[:-1].
    EXPECT_EQ(b.tgt_in[i][0].item<int64_t>(), s.decoder_start);
    EXPECT_TRUE(torch::equal(b.tgt_in[i].slice(0, 1, t), b.tgt_out[i].slice(0, 0, t - 1)));
  }
  // Padded to the longest row, no further.
  EXPECT_EQ(b.src_tokens.size(1), src_len.max().item<int64_t>());
  EXPECT_EQ(b.tgt_out.size(1), b.tgt_mask.sum(1).max().item<int64_t>());
}

// Expects a std::runtime_error whose message contains `fragment`.
template <typename Fn>
void expect_error_naming(Fn&& fn, const std::string& fragment) {
  try {
    fn();
    ADD_FAILURE() << "expected an error naming " << fragment;
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

}  // namespace moetrain::data::test_support
