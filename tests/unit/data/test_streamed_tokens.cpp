// Streaming the shards (data.streaming) against loading them: the same
// tokens for every window and pair (across shard, chunk and document
// boundaries, empty documents included), the same batches over several
// epochs for span corruption, pairs and a three-dataset mixture, and a shard
// damaged after start-up failing with one line naming it.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <random>

#include "data/raw_array.h"
#include "data/token_store.h"
#include "tests/unit/data/data_test_support.h"

namespace moetrain::data {
namespace {

using test_support::kVocab;
using test_support::specials;
using test_support::TempDir;

// A documents shard of `docs` documents of 0..max_len-1 tokens (empty ones
// included); big enough, it is stored in 1 MB chunks (16 KiB compressed).
void write_random_documents(const std::string& path, int docs, int max_len, uint64_t seed, int deflate_level = 0) {
  std::mt19937_64 gen(seed);
  std::vector<int32_t> tokens;
  std::vector<int64_t> offsets = {0};
  for (int d = 0; d < docs; ++d) {
    const int len = static_cast<int>(gen() % static_cast<uint64_t>(max_len));
    for (int i = 0; i < len; ++i) tokens.push_back(static_cast<int32_t>(104 + gen() % (kVocab - 104)));
    offsets.push_back(static_cast<int64_t>(tokens.size()));
  }
  DocumentShard shard;
  shard.documents = make_token_sequences(tokens, offsets);
  shard.vocab_size = kVocab;
  write_document_shard(path, shard, ShardWriteOptions{deflate_level});
}

// Shards whose arrays are contiguous and chunked, tokens and offsets alike
// (token arrays compressed at `deflate_level` when it is not 0).
std::vector<std::string> mixed_layout_shards(const TempDir& dir, int deflate_level = 0) {
  const std::vector<std::string> shards = {dir.file("train-00000.h5"), dir.file("train-00001.h5"),
                                           dir.file("train-00002.h5")};
  write_random_documents(shards[0], 300, 50, 1, deflate_level);    // small: contiguous (or one chunk)
  write_random_documents(shards[1], 20000, 60, 2, deflate_level);  // ~600k tokens: chunked tokens
  write_random_documents(shards[2], 150000, 3, 3, deflate_level);  // many tiny documents: chunked offsets
  return shards;
}

// Windows of the streamed and the loaded store agree: short, long, at the
// ends, across chunk boundaries, and many random ones.
void expect_same_windows(const std::vector<std::string>& shards) {
  const int64_t eos = specials().eos;
  const auto loaded = open_token_store(shards, Objective::SpanCorruption, eos, "test", /*streamed=*/false);
  const auto streamed = open_token_store(shards, Objective::SpanCorruption, eos, "test", /*streamed=*/true);
  ASSERT_EQ(streamed->stream_length(), loaded->stream_length());
  EXPECT_EQ(streamed->vocab_size(), kVocab);
  const int64_t n = loaded->stream_length();
  std::mt19937_64 gen(7);
  std::vector<std::pair<int64_t, int64_t>> windows = {{0, 1}, {0, 700}, {n - 1, n}, {n - 5000, n}, {0, n}};
  // Around the 1 MB chunk boundary of the second shard's tokens, and many random ones.
  const int64_t second = 300 * 25;  // roughly where shard 1 begins
  for (int64_t at : {second + 262144, second + 262144 + 20000}) windows.push_back({at - 100, at + 100});
  for (int i = 0; i < 400; ++i) {
    const int64_t a = static_cast<int64_t>(gen() % static_cast<uint64_t>(n));
    windows.push_back({a, std::min(n, a + 1 + static_cast<int64_t>(gen() % 3000))});
  }
  for (const auto& [a, b] : windows) ASSERT_EQ(streamed->stream(a, b), loaded->stream(a, b)) << a << ".." << b;
}

TEST(StreamedTokens, EveryWindowMatchesTheLoadedStream) {
  TempDir dir;
  expect_same_windows(mixed_layout_shards(dir));
}

// Compressed token arrays (shuffle + deflate in 16 KiB chunks) read by range
// give the same windows; the offsets stay uncompressed.
TEST(StreamedTokens, CompressedShardsMatchTheLoadedStream) {
  TempDir dir;
  const auto shards = mixed_layout_shards(dir, 1);
  const auto arrays = read_raw_arrays(shards[1], {{"tokens", 4}, {"doc_offsets", 8}});
  EXPECT_TRUE(arrays[0].compressed());
  EXPECT_GT(arrays[0].extents().size(), 100u);  // ~600k tokens in 4096-token chunks
  EXPECT_FALSE(arrays[1].compressed());
  expect_same_windows(shards);
}

TEST(StreamedTokens, EveryPairSideMatches) {
  TempDir dir;
  test_support::write_pair_shard_file(dir.file("train-00000.h5"), 57, 2);
  test_support::write_pair_shard_file(dir.file("train-00001.h5"), 31, 3);
  const std::vector<std::string> shards = {dir.file("train-00000.h5"), dir.file("train-00001.h5")};
  const auto loaded = open_token_store(shards, Objective::Seq2Seq, 1, "test", false);
  const auto streamed = open_token_store(shards, Objective::Seq2Seq, 1, "test", true);
  ASSERT_EQ(streamed->num_pairs(), 88);
  for (int64_t p = 0; p < 88; ++p) {
    for (bool target : {false, true}) {
      for (int64_t max : {1, 5, 100}) EXPECT_EQ(streamed->pair_side(p, target, max), loaded->pair_side(p, target, max));
    }
  }
}

// Steps covering several epochs of every dataset, streamed and loaded.
void expect_same_epochs(DataConfig cfg, int64_t steps, int64_t global_batch) {
  cfg.streaming = false;
  const BatchSource loaded(cfg, specials(), 42, "train");
  cfg.streaming = true;
  const BatchSource streamed(cfg, specials(), 42, "train");
  ASSERT_GT(steps * global_batch, 2 * loaded.num_samples());  // past at least one epoch boundary
  for (int64_t step = 0; step < steps; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    test_support::expect_same_batches(streamed.step_batches(step, 0, 1, global_batch, 4),
                                      loaded.step_batches(step, 0, 1, global_batch, 4));
  }
}

TEST(StreamedTokens, SpanCorruptionBatchesMatchOverSeveralEpochs) {
  TempDir dir;
  test_support::write_document_shards(dir.path().string(), 3, 12);
  expect_same_epochs(test_support::span_config(dir.path().string()), 12, 8);
}

TEST(StreamedTokens, PairBatchesMatchOverSeveralEpochs) {
  TempDir dir;
  test_support::write_pair_shard_file(dir.file("train-00000.h5"), 23);
  test_support::write_pair_shard_file(dir.file("train-00001.h5"), 18, 5);
  DataConfig cfg;
  cfg.train = dir.path().string();
  cfg.objective = Objective::Seq2Seq;
  cfg.src_len = 12;
  cfg.tgt_len = 8;
  expect_same_epochs(cfg, 14, 8);
}

TEST(StreamedTokens, ThreeDatasetMixtureMatchesAcrossEpochs) {
  TempDir dir;
  DataConfig cfg = test_support::span_config("");
  const std::vector<int> docs = {12, 8, 5};
  for (size_t d = 0; d < docs.size(); ++d) {
    const std::string path = dir.file("set" + std::to_string(d));
    std::filesystem::create_directories(path);
    test_support::write_document_shards(path, 2, docs[d], 20 + d);
    cfg.mixture.push_back({path, 1.0 + static_cast<double>(d), ""});
  }
  expect_same_epochs(cfg, 16, 8);
}

// Overwrites `bytes` of the file at `offset`.
void overwrite(const std::string& path, int64_t offset, const std::string& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), offset), static_cast<ssize_t>(bytes.size()));
  ::close(fd);
}

std::string failure_of(const TokenStore& store, int64_t a, int64_t b) {
  try {
    store.stream(a, b);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(StreamedTokens, AShardDamagedAfterStartUpFailsNamingIt) {
  TempDir dir;
  const std::string shard = dir.file("train-00000.h5");
  write_random_documents(shard, 400, 40, 9);
  const auto store = open_token_store({shard}, Objective::SpanCorruption, 1, "test", true);
  ASSERT_EQ(failure_of(*store, 0, store->stream_length()), "");
  // A token id outside the vocabulary, written over the first token.
  const auto arrays = read_raw_arrays(shard, {{"tokens", 4}});
  const int32_t bad = 5000;
  overwrite(shard, arrays[0].file_offset_of(0), std::string(reinterpret_cast<const char*>(&bad), sizeof bad));
  std::string line = failure_of(*store, 0, 10);
  EXPECT_NE(line.find("token shard " + shard + ": token 0 = 5000 is outside the vocabulary"), std::string::npos)
      << line;
  // A truncated file: reads past its new end fail naming the shard.
  ASSERT_EQ(::truncate(shard.c_str(), 4096), 0);
  line = failure_of(*store, store->stream_length() - 50, store->stream_length());
  EXPECT_NE(line.find("token shard " + shard), std::string::npos) << line;
  EXPECT_EQ(line.find('\n'), std::string::npos);
}

TEST(StreamedTokens, ADamagedCompressedChunkFailsNamingIt) {
  TempDir dir;
  const std::string shard = dir.file("train-00000.h5");
  write_random_documents(shard, 3000, 40, 9, 6);
  const auto store = open_token_store({shard}, Objective::SpanCorruption, 1, "test", true);
  ASSERT_EQ(failure_of(*store, 0, store->stream_length()), "");
  const auto arrays = read_raw_arrays(shard, {{"tokens", 4}});
  ASSERT_TRUE(arrays[0].compressed());
  const auto& second = arrays[0].extents().at(1);
  overwrite(shard, second.file_offset + second.stored_bytes / 2, std::string(16, '\x5a'));
  // The first chunk still reads; the damaged one fails with one line naming the shard and the chunk
  // (stream positions run ahead of token positions by one EOS per document: this window covers it).
  EXPECT_EQ(failure_of(*store, 0, 100), "");
  const std::string line = failure_of(*store, second.first, second.first + 2 * second.count);
  EXPECT_NE(line.find("token shard " + shard + ": tokens chunk at element " + std::to_string(second.first)),
            std::string::npos)
      << line;
  EXPECT_NE(line.find("damaged"), std::string::npos) << line;
  EXPECT_EQ(line.find('\n'), std::string::npos);
}

}  // namespace
}  // namespace moetrain::data
