// BatchSource: determinism, layout independence over data-parallel ranks,
// per-epoch order, collation (masks, padding, BOS shift), both objectives,
// clear errors for bad paths, and weighted mixtures of datasets (proportions,
// provenance, layout and resume independence, per-dataset epochs).
#include "data/batch_source.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <numeric>
#include <set>

#include "data/token_shard.h"
#include "tests/unit/data/data_test_support.h"

namespace moetrain::data {
namespace {

using test_support::TempDir;

constexpr int64_t kVocab = 1000;

SpecialTokens specials() {
  SpecialTokens s;  // pad 0, eos 1, unk 2, bos 3
  for (int64_t i = 0; i < 100; ++i) s.sentinels.push_back(4 + i);
  return s;
}

// Documents of varied lengths with ids in [104, kVocab), split over shards.
std::vector<std::vector<int32_t>> write_document_shards(const std::string& dir, int shards,
                                                        int docs_per_shard, uint64_t seed = 1) {
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

struct Pairs {
  std::vector<std::vector<int32_t>> source, target;
};

Pairs write_pair_shard_file(const std::string& path, int n, uint64_t seed = 2) {
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

DataConfig span_config(const std::string& train) {
  DataConfig cfg;
  cfg.train = train;
  cfg.objective = Objective::SpanCorruption;
  cfg.src_len = 32;
  cfg.tgt_len = 12;
  return cfg;
}

// The real (unpadded) rows of a list of micro-batches, in order.
std::vector<Seq2SeqSample> rows(const std::vector<Seq2SeqBatch>& batches) {
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

void expect_same_rows(const std::vector<Seq2SeqSample>& a, const std::vector<Seq2SeqSample>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].source, b[i].source) << "row " << i;
    EXPECT_EQ(a[i].target, b[i].target) << "row " << i;
  }
}

void expect_same_batches(const std::vector<Seq2SeqBatch>& a, const std::vector<Seq2SeqBatch>& b) {
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
void check_collation(const Seq2SeqBatch& b, const SpecialTokens& s) {
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
    EXPECT_EQ(b.tgt_in[i][0].item<int64_t>(), s.bos);
    EXPECT_TRUE(torch::equal(b.tgt_in[i].slice(0, 1, t), b.tgt_out[i].slice(0, 0, t - 1)));
  }
  // Padded to the longest row, no further.
  EXPECT_EQ(b.src_tokens.size(1), src_len.max().item<int64_t>());
  EXPECT_EQ(b.tgt_out.size(1), b.tgt_mask.sum(1).max().item<int64_t>());
}

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
  EXPECT_FALSE(torch::equal(a.step_batches(0, 0, 1, 8, 8)[0].src_tokens,
                            c.step_batches(0, 0, 1, 8, 8)[0].src_tokens));
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
  expect_error_naming([&] { BatchSource(span_config(dir.file("pairs.h5")), specials(), 1, "train"); },
                      "pairs.h5");
  DataConfig seq = span_config(tiny_path);
  seq.objective = Objective::Seq2Seq;
  expect_error_naming([&] { BatchSource(seq, specials(), 1, "train"); }, "tiny.h5");

  // A tokenizer whose specials do not fit the shards' vocabulary.
  write_document_shards(dir.path().string(), 1, 30);
  SpecialTokens wrong = specials();
  wrong.sentinels[50] = kVocab + 5;
  expect_error_naming([&] { BatchSource(span_config(dir.path().string()), wrong, 1, "train"); },
                      "do not match");
  // Too few sentinels for the spans of a sample.
  SpecialTokens few = specials();
  few.sentinels.resize(1);
  expect_error_naming([&] { BatchSource(span_config(dir.path().string()), few, 1, "train"); },
                      "sentinel");

  BatchSource ok(span_config(dir.path().string()), specials(), 1, "train");
  EXPECT_THROW(ok.step_batches(0, 0, 3, 8, 1), std::invalid_argument);  // 8 % 3
  EXPECT_THROW(ok.step_batches(0, 0, 2, 8, 3), std::invalid_argument);  // 4 % 3
  EXPECT_THROW(ok.step_batches(0, 2, 2, 8, 1), std::invalid_argument);  // rank out of range
}

// ---- Mixtures -------------------------------------------------------------

// Document shards whose token ids lie in [lo, hi), so every sample tells which
// dataset it came from. Returns the dataset's stream (documents + EOS).
std::vector<int64_t> write_ranged_shards(const std::string& dir, int shards, int docs_per_shard, int32_t lo,
                                         int32_t hi, uint64_t seed, int64_t vocab = kVocab) {
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
  EXPECT_FALSE(torch::equal(other.step_batches(0, 0, 1, 8, 8)[0].src_tokens,
                            walker.step_batches(0, 0, 1, 8, 8)[0].src_tokens));
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
  expect_error_naming([&] { BatchSource(cfg, specials(), 1, "train"); },
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
