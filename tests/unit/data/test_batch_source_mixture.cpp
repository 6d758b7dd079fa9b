// BatchSource over weighted mixtures of datasets: proportions, provenance,
// layout and resume independence, per-dataset epochs, a mixture of one, and
// clear errors.
#include "data/batch_source.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <numeric>
#include <set>

#include "data/token_shard.h"
#include "tests/unit/data/data_test_support.h"

namespace moetrain::data {
namespace {

using test_support::check_collation;
using test_support::expect_error_naming;
using test_support::expect_same_batches;
using test_support::expect_same_rows;
using test_support::kVocab;
using test_support::rows;
using test_support::span_config;
using test_support::specials;
using test_support::TempDir;
using test_support::write_document_shards;
using test_support::write_pair_shard_file;

// Document shards whose token ids lie in [lo, hi), so every sample tells which
// dataset it came from. Returns the dataset's stream (documents + EOS).
std::vector<int64_t> write_ranged_shards(const std::string& dir, int shards, int docs_per_shard, int32_t lo, int32_t hi,
                                         uint64_t seed, int64_t vocab = kVocab) {
  std::filesystem::create_directories(dir);
  std::mt19937_64 gen(seed);
  std::vector<int64_t> stream;
  for (int s = 0; s < shards; ++s) {
    std::vector<int32_t> tokens;
    std::vector<int64_t> offsets = {0};
    for (int d = 0; d < docs_per_shard; ++d) {
      const size_t len = 5 + gen() % 60;
      for (size_t i = 0; i < len; ++i) {
        tokens.push_back(static_cast<int32_t>(lo + static_cast<int32_t>(gen() % static_cast<uint64_t>(hi - lo))));
        stream.push_back(tokens.back());
      }
      stream.push_back(1);  // EOS
      offsets.push_back(static_cast<int64_t>(tokens.size()));
    }
    DocumentShard shard;
    shard.documents = make_token_sequences(tokens, offsets);
    shard.vocab_size = vocab;
    char name[32];
    std::snprintf(name, sizeof(name), "train-%05d.h5", s);
    write_document_shard((std::filesystem::path(dir) / name).string(), shard);
  }
  return stream;
}

// The raw window a span-corruption sample was cut from (sentinels undone).
std::vector<int64_t> uncorrupt(const Seq2SeqSample& s) {
  std::map<int64_t, std::vector<int64_t>> spans;
  int64_t current = -1;
  for (size_t i = 0; i + 1 < s.target.size(); ++i) {
    if (s.target[i] >= 4 && s.target[i] < 104)
      current = s.target[i];
    else
      spans[current].push_back(s.target[i]);
  }
  std::vector<int64_t> raw;
  for (size_t i = 0; i + 1 < s.source.size(); ++i) {
    if (s.source[i] >= 4 && s.source[i] < 104)
      raw.insert(raw.end(), spans[s.source[i]].begin(), spans[s.source[i]].end());
    else
      raw.push_back(s.source[i]);
  }
  return raw;
}

// Three datasets a, b, c with disjoint token ranges.
struct ThreeDatasets {
  TempDir dir;
  std::vector<std::vector<int64_t>> streams;
  DataConfig cfg;
  ThreeDatasets(double wa, double wb, double wc, std::vector<int> docs = {40, 30, 20}) {
    const std::vector<std::pair<int32_t, int32_t>> ranges = {{104, 400}, {400, 700}, {700, 1000}};
    const std::vector<std::string> names = {"a", "b", "c"};
    cfg = span_config("");
    const std::vector<double> weights = {wa, wb, wc};
    for (size_t d = 0; d < 3; ++d) {
      const std::string path = dir.file(names[d]);
      streams.push_back(write_ranged_shards(path, 2, docs[d], ranges[d].first, ranges[d].second, 11 + d));
      cfg.mixture.push_back({path, weights[d], ""});
    }
  }
};

TEST(BatchSourceMixture, ProportionsFollowTheWeightsAndSamplesComeFromTheirDataset) {
  ThreeDatasets data(6, 3, 1);
  BatchSource source(data.cfg, specials(), 21, "train");
  ASSERT_EQ(source.num_datasets(), 3);
  EXPECT_EQ(source.dataset_names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(source.dataset_weights(), (std::vector<double>{0.6, 0.3, 0.1}));
  EXPECT_EQ(source.shard_paths().size(), 6u);
  const int64_t raw = source.raw_length();
  int64_t total = 0;
  for (int64_t d = 0; d < 3; ++d) {
    EXPECT_EQ(source.num_samples(d), static_cast<int64_t>(data.streams[d].size()) / raw);
    total += source.num_samples(d);
  }
  EXPECT_EQ(source.num_samples(), total);

  const std::vector<std::pair<int64_t, int64_t>> ranges = {{104, 400}, {400, 700}, {700, 1000}};
  std::vector<int64_t> counts(3, 0);
  for (int64_t k = 0; k < 10000; ++k) {
    for (size_t d = 0; d < 3; ++d)
      ASSERT_LT(std::abs(static_cast<double>(counts[d]) - source.dataset_weights()[d] * static_cast<double>(k)), 1.0)
          << "dataset " << d << " after " << k << " samples";
    const SampleOrigin o = source.origin(k);
    ASSERT_EQ(o.draw, counts[static_cast<size_t>(o.dataset)]);
    ++counts[static_cast<size_t>(o.dataset)];
    EXPECT_EQ(o.epoch, o.draw / source.num_samples(o.dataset));
    // The sample is window `index` of its own dataset's stream.
    const std::vector<int64_t> raw_window = uncorrupt(source.sample(k));
    const auto& stream = data.streams[static_cast<size_t>(o.dataset)];
    ASSERT_EQ(raw_window, std::vector<int64_t>(stream.begin() + o.index * raw, stream.begin() + (o.index + 1) * raw))
        << "sample " << k;
    for (int64_t t : raw_window) {
      if (t == 1) continue;  // EOS between documents
      ASSERT_GE(t, ranges[static_cast<size_t>(o.dataset)].first) << "sample " << k;
      ASSERT_LT(t, ranges[static_cast<size_t>(o.dataset)].second) << "sample " << k;
    }
  }
  EXPECT_EQ(counts, (std::vector<int64_t>{6000, 3000, 1000}));
  // mixture_position is the count of each dataset before a step.
  EXPECT_EQ(source.mixture_position(0, 8), (std::vector<int64_t>{0, 0, 0}));
  EXPECT_EQ(source.mixture_position(1250, 8), (std::vector<int64_t>{6000, 3000, 1000}));
  EXPECT_EQ(source.mixture_position(3, 10), (std::vector<int64_t>{18, 9, 3}));
}

TEST(BatchSourceMixture, BatchesDoNotDependOnTheLayoutOrOnResuming) {
  ThreeDatasets data(0.5, 0.3, 0.2, {30, 12, 6});
  BatchSource walker(data.cfg, specials(), 4, "train");
  const int64_t global_batch = 8;
  std::vector<std::vector<Seq2SeqBatch>> walked;
  for (int64_t step = 0; step < 16; ++step) {
    walked.push_back(walker.step_batches(step, 0, 1, global_batch, 2));
    const auto reference = rows(walked.back());
    for (int64_t dp : {2, 4}) {
      for (int64_t micro : {1, 2}) {
        std::vector<Seq2SeqSample> joined;
        for (int64_t r = 0; r < dp; ++r) {
          auto batches = walker.step_batches(step, r, dp, global_batch, micro);
          for (const auto& b : batches) check_collation(b, specials());
          auto part = rows(batches);
          joined.insert(joined.end(), part.begin(), part.end());
        }
        expect_same_rows(joined, reference);
      }
    }
  }
  // A resumed run: a fresh source asked for step s directly, and out of order.
  for (int64_t step : {11, 5, 15, 0}) {
    BatchSource resumed(data.cfg, specials(), 4, "train");
    expect_same_batches(resumed.step_batches(step, 0, 1, global_batch, 2), walked[static_cast<size_t>(step)]);
    expect_same_batches(walker.step_batches(step, 0, 1, global_batch, 2), walked[static_cast<size_t>(step)]);
  }
  // Its recorded position agrees with the walk: counts of each dataset.
  BatchSource resumed(data.cfg, specials(), 4, "train");
  std::vector<int64_t> counts(3, 0);
  for (int64_t k = 0; k < 12 * global_batch; ++k) ++counts[static_cast<size_t>(walker.origin(k).dataset)];
  EXPECT_EQ(resumed.mixture_position(12, global_batch), counts);
  // Another seed gives other batches (so the comparisons above can fail).
  BatchSource other(data.cfg, specials(), 5, "train");
  EXPECT_FALSE(
      torch::equal(other.step_batches(0, 0, 1, 8, 8)[0].src_tokens, walker.step_batches(0, 0, 1, 8, 8)[0].src_tokens));
}

TEST(BatchSourceMixture, EachDatasetWalksItsOwnEpochs) {
  // b is small and as heavily weighted as a: it wraps many times while a is
  // still in its first epoch.
  ThreeDatasets data(1, 1, 0.1, {200, 3, 10});
  BatchSource source(data.cfg, specials(), 9, "train");
  const int64_t nb = source.num_samples(1);
  ASSERT_GE(nb, 3);
  ASSERT_GT(source.num_samples(0), 250);
  std::map<int64_t, std::vector<int64_t>> b_epochs;  // epoch -> indices in draw order
  std::set<int64_t> a_indices;
  for (int64_t k = 0; k < 400; ++k) {
    const SampleOrigin o = source.origin(k);
    if (o.dataset == 1) b_epochs[o.epoch].push_back(o.index);
    if (o.dataset == 0) {
      EXPECT_EQ(o.epoch, 0);
      EXPECT_TRUE(a_indices.insert(o.index).second) << "a repeats sample " << o.index << " within its epoch";
    }
  }
  ASSERT_GE(b_epochs.size(), 10u);
  std::vector<int64_t> all(static_cast<size_t>(nb));
  std::iota(all.begin(), all.end(), 0);
  std::set<std::vector<int64_t>> orders;
  for (const auto& [epoch, indices] : b_epochs) {
    if (static_cast<int64_t>(indices.size()) < nb) continue;  // the last, unfinished epoch
    std::vector<int64_t> sorted = indices;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, all) << "epoch " << epoch << " of b is a permutation";
    orders.insert(indices);
  }
  EXPECT_GT(orders.size(), 1u) << "b's epochs come in new orders";
  // The reported epoch is the furthest any dataset reached.
  const int64_t steps = 400 / 8;
  EXPECT_EQ(source.epoch_of(steps, 8), source.mixture_position(steps, 8)[1] / nb);
  EXPECT_GE(source.epoch_of(steps, 8), 10);

  // The same corpus twice under two names: two seed streams, two orders.
  DataConfig twice = span_config("");
  twice.mixture = {{data.cfg.mixture[0].path, 1, "first"}, {data.cfg.mixture[0].path, 1, "second"}};
  BatchSource doubled(twice, specials(), 9, "train");
  EXPECT_EQ(doubled.dataset_names(), (std::vector<std::string>{"first", "second"}));
  std::vector<int64_t> first, second;
  for (int64_t k = 0; k < 40; ++k) {
    const SampleOrigin o = doubled.origin(k);
    (o.dataset == 0 ? first : second).push_back(o.index);
  }
  EXPECT_EQ(first.size(), 20u);
  EXPECT_NE(first, second);
}

TEST(BatchSourceMixture, AMixtureOfOneIsThePlainPath) {
  TempDir dir;
  write_document_shards(dir.path().string(), 2, 25);
  write_pair_shard_file(dir.file("pairs.h5"), 37);
  for (Objective objective : {Objective::SpanCorruption, Objective::Seq2Seq}) {
    DataConfig plain = span_config(dir.path().string());
    if (objective == Objective::Seq2Seq) {
      plain.train = dir.file("pairs.h5");
      plain.objective = Objective::Seq2Seq;
      plain.src_len = 16;
      plain.tgt_len = 8;
    }
    DataConfig mixed = plain;
    mixed.mixture = {{plain.train, 2.5, "only"}};
    mixed.train.clear();
    BatchSource a(plain, specials(), 13, "train");
    BatchSource b(mixed, specials(), 13, "train");
    EXPECT_EQ(b.dataset_names(), std::vector<std::string>{"only"});
    EXPECT_EQ(b.dataset_weights(), std::vector<double>{1.0});
    EXPECT_EQ(a.dataset_names().size(), 1u);
    EXPECT_EQ(a.num_samples(), b.num_samples());
    for (int64_t step = 0; step < 12; ++step) {  // crosses epoch boundaries
      expect_same_batches(a.step_batches(step, 0, 1, 8, 4), b.step_batches(step, 0, 1, 8, 4));
      EXPECT_EQ(b.mixture_position(step, 8), std::vector<int64_t>{step * 8});
      EXPECT_EQ(a.epoch_of(step, 8), step * 8 / a.num_samples());
    }
  }
}

TEST(BatchSourceMixture, ClearErrorsAndTheTokenizerBesideTheFirstDataset) {
  TempDir dir;
  write_ranged_shards(dir.file("web"), 1, 30, 104, 1000, 1);
  write_ranged_shards(dir.file("code"), 1, 30, 104, 1000, 2, 2000);  // another tokenizer
  DataConfig cfg = span_config("");
  cfg.mixture = {{dir.file("web"), 1, ""}, {dir.file("code"), 1, ""}};
  expect_error_naming(
      [&] { BatchSource(cfg, specials(), 1, "train"); },
      "data.mixture dataset 'code' (" + dir.file("code") + ") has vocab_size 2000, dataset 'web' has 1000");
  cfg.mixture[1] = {dir.file("nowhere"), 1, "missing"};
  expect_error_naming([&] { BatchSource(cfg, specials(), 1, "train"); }, "'missing'");
  expect_error_naming([&] { BatchSource(cfg, specials(), 1, "train"); }, dir.file("nowhere"));
  cfg.mixture[1] = {dir.file("web"), 0, "zero"};
  EXPECT_THROW(BatchSource(cfg, specials(), 1, "train"), std::invalid_argument);
  cfg.mixture[1] = {dir.file("web"), 1, "again"};
  cfg.train = dir.file("web");
  EXPECT_THROW(BatchSource(cfg, specials(), 1, "train"), std::invalid_argument);  // both train and mixture
  cfg.train.clear();

  // The valid split stays one path, whatever the mixture.
  write_ranged_shards(dir.file("held"), 1, 10, 104, 1000, 3);
  std::filesystem::rename(dir.file("held/train-00000.h5"), dir.file("held/valid-00000.h5"));
  cfg.valid = dir.file("held");
  BatchSource valid(cfg, specials(), 1, "valid");
  EXPECT_EQ(valid.dataset_names(), std::vector<std::string>{"held"});
  EXPECT_EQ(valid.shard_paths(), std::vector<std::string>{dir.file("held/valid-00000.h5")});

  // The tokenizer: data.tokenizer, else tokenizer.model beside the first dataset.
  expect_error_naming([&] { resolve_tokenizer_path(cfg); }, dir.file("web/tokenizer.model"));
  test_support::write_file(dir.file("web/tokenizer.model"), "model");
  EXPECT_EQ(resolve_tokenizer_path(cfg), dir.file("web/tokenizer.model"));
  EXPECT_EQ(mixture_entry_name({dir.file("web") + "/", 1, ""}), "web");
  EXPECT_EQ(mixture_entry_name({dir.file("web/train-*.h5"), 1, ""}), "train-*.h5");
}

}  // namespace
}  // namespace moetrain::data
