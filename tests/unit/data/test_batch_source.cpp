// BatchSource: determinism, layout independence over data-parallel ranks,
// per-epoch order, collation (masks, padding, BOS shift), both objectives and
// clear errors for bad paths. Mixtures of datasets are in
// test_batch_source_mixture.cpp.
#include "data/batch_source.h"

#include <gtest/gtest.h>

#include <map>
#include <numeric>

#include "data/token_shard.h"
#include "tests/unit/data/data_test_support.h"

namespace moetrain::data {
namespace {

using test_support::check_collation;
using test_support::expect_error_naming;
using test_support::expect_same_batches;
using test_support::expect_same_rows;
using test_support::kVocab;
using test_support::Pairs;
using test_support::rows;
using test_support::span_config;
using test_support::specials;
using test_support::TempDir;
using test_support::write_document_shards;
using test_support::write_pair_shard_file;

TEST(BatchSource, SpanCorruptionWindowsReconstructTheCorpus) {
  TempDir dir;
  auto docs = write_document_shards(dir.path().string(), 3, 20);
  DataConfig cfg = span_config(dir.path().string());
  cfg.shuffle = false;
  BatchSource source(cfg, specials(), 42, "train");
  EXPECT_EQ(source.shard_paths().size(), 3u);
  // The corpus as BatchSource sees it: documents + EOS, in shard order.
  std::vector<int64_t> stream;
  for (const auto& d : docs) {
    stream.insert(stream.end(), d.begin(), d.end());
    stream.push_back(1);
  }
  const int64_t raw = source.raw_length();
  EXPECT_EQ(raw, span_corruption_lengths(32, 12, 0.15, 3.0).raw_length);
  EXPECT_EQ(source.num_samples(), static_cast<int64_t>(stream.size()) / raw);
  const auto sentinels = specials().sentinels;
  for (int64_t k = 0; k < source.num_samples(); ++k) {
    Seq2SeqSample s = source.sample(k);
    EXPECT_LE(static_cast<int64_t>(s.source.size()), cfg.src_len);
    EXPECT_LE(static_cast<int64_t>(s.target.size()), cfg.tgt_len);
    // Undo the corruption and compare with window k of the stream.
    std::map<int64_t, std::vector<int64_t>> spans;
    int64_t current = -1;
    for (size_t i = 0; i + 1 < s.target.size(); ++i) {
      if (s.target[i] >= 4 && s.target[i] < 104)
        current = s.target[i];
      else
        spans[current].push_back(s.target[i]);
    }
    std::vector<int64_t> rebuilt;
    for (size_t i = 0; i + 1 < s.source.size(); ++i) {
      if (s.source[i] >= 4 && s.source[i] < 104)
        rebuilt.insert(rebuilt.end(), spans[s.source[i]].begin(), spans[s.source[i]].end());
      else
        rebuilt.push_back(s.source[i]);
    }
    std::vector<int64_t> window(stream.begin() + k * raw, stream.begin() + (k + 1) * raw);
    ASSERT_EQ(rebuilt, window) << "sample " << k;
  }
  // The same window is corrupted differently in the next epoch.
  const int64_t n = source.num_samples();
  EXPECT_NE(source.sample(0).source, source.sample(n).source);
  EXPECT_EQ(source.sample_index(n), 0);
}

TEST(BatchSource, SameSeedAndStepGiveIdenticalBatches) {
  TempDir dir;
  write_document_shards(dir.path().string(), 2, 30);
  DataConfig cfg = span_config(dir.path().string());
  BatchSource a(cfg, specials(), 7, "train");
  BatchSource b(cfg, specials(), 7, "train");
  BatchSource c(cfg, specials(), 8, "train");
  for (int64_t step : {0, 3, 11}) {
    auto ba = a.step_batches(step, 0, 1, 8, 4);
    ASSERT_EQ(ba.size(), 2u);
    expect_same_batches(ba, b.step_batches(step, 0, 1, 8, 4));
    for (const auto& batch : ba) check_collation(batch, specials());
  }
  // Another seed gives other batches (so the comparison above can fail).
  EXPECT_FALSE(torch::equal(a.step_batches(0, 0, 1, 8, 8)[0].src_tokens, c.step_batches(0, 0, 1, 8, 8)[0].src_tokens));
}

TEST(BatchSource, DataParallelRanksConcatenateToTheSingleRankBatch) {
  TempDir dir;
  write_document_shards(dir.path().string(), 2, 25);
  write_pair_shard_file(dir.file("pairs.h5"), 37);
  for (Objective objective : {Objective::SpanCorruption, Objective::Seq2Seq}) {
    DataConfig cfg = span_config(dir.path().string());
    if (objective == Objective::Seq2Seq) {
      cfg.train = dir.file("pairs.h5");
      cfg.objective = Objective::Seq2Seq;
      cfg.src_len = 16;
      cfg.tgt_len = 8;
    }
    BatchSource source(cfg, specials(), 5, "train");
    const int64_t global_batch = 8;
    // Steps that cross an epoch boundary.
    for (int64_t step = 0; step < 12; ++step) {
      auto reference = rows(source.step_batches(step, 0, 1, global_batch, 2));
      for (int64_t dp : {2, 4}) {
        for (int64_t micro : {1, 2}) {
          std::vector<Seq2SeqSample> joined;
          for (int64_t r = 0; r < dp; ++r) {
            auto batches = source.step_batches(step, r, dp, global_batch, micro);
            EXPECT_EQ(static_cast<int64_t>(batches.size()), global_batch / dp / micro);
            for (const auto& b : batches) check_collation(b, specials());
            auto part = rows(batches);
            joined.insert(joined.end(), part.begin(), part.end());
          }
          expect_same_rows(joined, reference);
        }
      }
    }
  }
}

TEST(BatchSource, EpochsVisitEverySampleInADifferentOrder) {
  TempDir dir;
  write_document_shards(dir.path().string(), 1, 40);
  DataConfig cfg = span_config(dir.path().string());
  BatchSource source(cfg, specials(), 3, "train");
  const int64_t n = source.num_samples();
  ASSERT_GT(n, 10);
  std::vector<int64_t> epoch0, epoch1, epoch2;
  for (int64_t k = 0; k < n; ++k) {
    epoch0.push_back(source.sample_index(k));
    epoch1.push_back(source.sample_index(n + k));
    epoch2.push_back(source.sample_index(2 * n + k));
  }
  std::vector<int64_t> all(n);
  std::iota(all.begin(), all.end(), 0);
  for (auto* e : {&epoch0, &epoch1, &epoch2}) {
    std::vector<int64_t> sorted = *e;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, all) << "each epoch is a permutation";
  }
  EXPECT_NE(epoch0, all) << "shuffled";
  EXPECT_NE(epoch0, epoch1);
  EXPECT_NE(epoch1, epoch2);
  EXPECT_EQ(source.epoch_of(0, 4), 0);
  EXPECT_EQ(source.epoch_of(n / 4 + 1, 4), (n / 4 + 1) * 4 / n);
  EXPECT_EQ(source.epoch_of(n, 4), 4);

  cfg.shuffle = false;
  BatchSource ordered(cfg, specials(), 3, "train");
  for (int64_t k = 0; k < 2 * n; ++k) EXPECT_EQ(ordered.sample_index(k), k % n);
}

TEST(BatchSource, Seq2SeqPairsTruncatedWithEosAndShifted) {
  TempDir dir;
  Pairs pairs = write_pair_shard_file(dir.file("pairs.h5"), 23);
  DataConfig cfg;
  cfg.train = dir.file("pairs.h5");
  cfg.objective = Objective::Seq2Seq;
  cfg.src_len = 10;
  cfg.tgt_len = 6;
  cfg.shuffle = false;
  BatchSource source(cfg, specials(), 1, "train");
  EXPECT_EQ(source.num_samples(), 23);
  EXPECT_EQ(source.raw_length(), 0);
  for (int64_t i = 0; i < 23; ++i) {
    Seq2SeqSample s = source.sample(i);
    std::vector<int64_t> src(pairs.source[i].begin(),
                             pairs.source[i].begin() + std::min<size_t>(pairs.source[i].size(), 9));
    src.push_back(1);
    std::vector<int64_t> tgt(pairs.target[i].begin(),
                             pairs.target[i].begin() + std::min<size_t>(pairs.target[i].size(), 5));
    tgt.push_back(1);
    EXPECT_EQ(s.source, src);
    EXPECT_EQ(s.target, tgt);
  }
  // One micro-batch of 4 pairs: check the tensors entry by entry.
  auto batches = source.step_batches(0, 0, 1, 4, 4);
  ASSERT_EQ(batches.size(), 1u);
  const auto& b = batches[0];
  check_collation(b, specials());
  for (int64_t i = 0; i < 4; ++i) {
    Seq2SeqSample s = source.sample(i);
    for (size_t t = 0; t < s.target.size(); ++t) {
      EXPECT_EQ(b.tgt_out[i][t].item<int64_t>(), s.target[t]);
      EXPECT_EQ(b.tgt_in[i][t].item<int64_t>(), t == 0 ? 3 : s.target[t - 1]);
    }
  }
}

TEST(BatchSource, CollateHandcrafted) {
  SpecialTokens s = specials();
  auto b = BatchSource::collate({{{10, 11, 1}, {20, 1}}, {{12, 1}, {21, 22, 23, 1}}}, s);
  EXPECT_TRUE(torch::equal(b.src_tokens, torch::tensor({{10, 11, 1}, {12, 1, 0}}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(b.src_mask, torch::tensor({{true, true, true}, {true, true, false}})));
  EXPECT_TRUE(torch::equal(b.tgt_out, torch::tensor({{20, 1, 0, 0}, {21, 22, 23, 1}}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(b.tgt_in, torch::tensor({{3, 20, 0, 0}, {3, 21, 22, 23}}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(b.tgt_mask, torch::tensor({{true, true, false, false}, {true, true, true, true}})));
  EXPECT_EQ(b.num_source_tokens, 5);
  EXPECT_EQ(b.num_target_tokens, 6);
}

TEST(BatchSource, PathForms) {
  TempDir dir;
  write_document_shards(dir.path().string(), 3, 10);
  // Directory without dataset.json: its train-*.h5, sorted.
  auto from_dir = resolve_shard_paths(dir.path().string(), "train");
  ASSERT_EQ(from_dir.size(), 3u);
  EXPECT_EQ(from_dir[0], dir.file("train-00000.h5"));
  EXPECT_EQ(from_dir[2], dir.file("train-00002.h5"));
  // Glob and single file.
  EXPECT_EQ(resolve_shard_paths(dir.file("train-0000[12].h5"), "train").size(), 2u);
  EXPECT_EQ(resolve_shard_paths(dir.file("train-00001.h5"), "train"),
            std::vector<std::string>{dir.file("train-00001.h5")});
  // With dataset.json, only what it lists.
  test_support::write_file(dir.file("dataset.json"),
                           R"({"splits": {"train": {"shards": ["train-00002.h5", "train-00000.h5"]}}})");
  EXPECT_EQ(resolve_shard_paths(dir.path().string(), "train"),
            (std::vector<std::string>{dir.file("train-00002.h5"), dir.file("train-00000.h5")}));
  EXPECT_THROW(resolve_shard_paths(dir.path().string(), "valid"), std::runtime_error);
}

TEST(BatchSource, ClearErrors) {
  TempDir dir;
  const std::string missing = dir.file("nowhere");
  expect_error_naming([&] { BatchSource(span_config(missing), specials(), 1, "train"); }, missing);
  const std::string pattern = dir.file("nothing-*.h5");
  expect_error_naming([&] { BatchSource(span_config(pattern), specials(), 1, "train"); }, pattern);
  expect_error_naming([&] { BatchSource(span_config(dir.path().string()), specials(), 1, "train"); },
                      dir.path().string());
  expect_error_naming([&] { BatchSource(span_config(missing), specials(), 1, "valid"); }, "valid");

  // Too few tokens for one sample.
  DocumentShard tiny;
  tiny.documents = make_token_sequences({200, 201, 202}, {0, 3});
  tiny.vocab_size = kVocab;
  const std::string tiny_path = dir.file("tiny.h5");
  write_document_shard(tiny_path, tiny);
  expect_error_naming([&] { BatchSource(span_config(tiny_path), specials(), 1, "train"); }, tiny_path);

  // Pairs shard for span corruption, and the reverse.
  write_pair_shard_file(dir.file("pairs.h5"), 5);
  expect_error_naming([&] { BatchSource(span_config(dir.file("pairs.h5")), specials(), 1, "train"); }, "pairs.h5");
  DataConfig seq = span_config(tiny_path);
  seq.objective = Objective::Seq2Seq;
  expect_error_naming([&] { BatchSource(seq, specials(), 1, "train"); }, "tiny.h5");

  // A tokenizer whose specials do not fit the shards' vocabulary.
  write_document_shards(dir.path().string(), 1, 30);
  SpecialTokens wrong = specials();
  wrong.sentinels[50] = kVocab + 5;
  expect_error_naming([&] { BatchSource(span_config(dir.path().string()), wrong, 1, "train"); }, "do not match");
  // Too few sentinels for the spans of a sample.
  SpecialTokens few = specials();
  few.sentinels.resize(1);
  expect_error_naming([&] { BatchSource(span_config(dir.path().string()), few, 1, "train"); }, "sentinel");

  BatchSource ok(span_config(dir.path().string()), specials(), 1, "train");
  EXPECT_THROW(ok.step_batches(0, 0, 3, 8, 1), std::invalid_argument);  // 8 % 3
  EXPECT_THROW(ok.step_batches(0, 0, 2, 8, 3), std::invalid_argument);  // 4 % 3
  EXPECT_THROW(ok.step_batches(0, 2, 2, 8, 1), std::invalid_argument);  // rank out of range
}

}  // namespace
}  // namespace moetrain::data
