// BatchSource: the deterministic micro-batches of one split (train or valid).
//
// Every sample is a pure function of (seed, global sample index), so the data
// position of a run is just its step, and the batches do not depend on the
// parallel layout:
//   - global step s covers global sample indices k = s*global_batch + j,
//     j in [0, global_batch); epoch = k / num_samples();
//   - within an epoch, sample slot k % num_samples() maps to sample
//     perm_epoch(k % num_samples()) when cfg.shuffle (a seeded pseudo-random
//     permutation of [0, num_samples()), different every epoch), else itself;
//   - data-parallel rank r of dp_size takes the contiguous j in
//     [r*global_batch/dp_size, (r+1)*global_batch/dp_size), cut into
//     micro-batches of micro_batch samples.
// Concatenating every rank's micro-batch rows for a step therefore gives the
// rows of dp_size = 1 for that step, in order.
//
// Objectives:
//   SpanCorruption: the split's documents, each followed by EOS, concatenated
//     in shard order and cut into consecutive windows of raw_length() tokens
//     (span_corruption_lengths(src_len, tgt_len, ...)); the tail that does not
//     fill a window is dropped. Window w of epoch e is corrupted with seed
//     (seed, e, w).
//   Seq2Seq: sample i is pair i; source cut to src_len-1 tokens + EOS, target
//     cut to tgt_len-1 tokens + EOS.
// In both, the decoder input is BOS + target[:-1]. Micro-batches are padded
// with pad to their longest row; masks are true on real tokens.
//
// The split is loaded into memory at construction (the token arrays; nothing
// else is cached), so step_batches is const and thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/batch.h"
#include "data/data_config.h"
#include "data/span_corruption.h"
#include "data/tokenizer.h"

namespace moetrain::data {

// One sample before padding.
struct Seq2SeqSample {
  std::vector<int64_t> source;  // encoder input, ends with EOS
  std::vector<int64_t> target;  // decoder target, ends with EOS
};

class BatchSource {
 public:
  // Loads the shards of `split` ("train" or "valid": cfg.train or cfg.valid),
  // given as a directory written by `moetrain tokenize` (the shards its
  // dataset.json lists, or else <split>-*.h5), a single .h5 file, or a glob.
  // Throws std::runtime_error naming the path when it is missing, holds the
  // wrong kind of shard for cfg.objective, or has too few tokens for a sample.
  BatchSource(const DataConfig& cfg, const SpecialTokens& special, uint64_t seed,
              const std::string& split);

  // All micro-batches of data-parallel rank `dp_rank` (of dp_size) for global
  // step `step` (0-based). global_batch must be divisible by dp_size and
  // global_batch/dp_size by micro_batch.
  std::vector<Seq2SeqBatch> step_batches(int64_t step, int64_t dp_rank, int64_t dp_size,
                                         int64_t global_batch, int64_t micro_batch) const;

  // Samples per epoch.
  int64_t num_samples() const { return num_samples_; }
  int64_t epoch_of(int64_t step, int64_t global_batch) const;

  // The sample at global sample index k (k = step*global_batch + j).
  Seq2SeqSample sample(int64_t k) const;
  // Which sample of the epoch global index k visits (the permutation).
  int64_t sample_index(int64_t k) const;

  // Pads samples into one micro-batch.
  static Seq2SeqBatch collate(const std::vector<Seq2SeqSample>& samples, const SpecialTokens& special);

  // SpanCorruption: raw tokens per sample; Seq2Seq: 0.
  int64_t raw_length() const { return lengths_.raw_length; }
  const std::vector<std::string>& shard_paths() const { return shard_paths_; }

 private:
  Seq2SeqSample span_corruption_sample(int64_t epoch, int64_t window) const;
  Seq2SeqSample pair_sample(int64_t pair) const;

  DataConfig cfg_;
  SpecialTokens special_;
  uint64_t seed_;
  std::string split_;
  std::vector<std::string> shard_paths_;
  int64_t num_samples_ = 0;
  int64_t vocab_size_ = 0;

  // SpanCorruption: every document + EOS, back to back.
  std::vector<int32_t> stream_;
  SpanCorruptionLengths lengths_;

  // Seq2Seq: all pairs of all shards, back to back.
  std::vector<int32_t> source_tokens_, target_tokens_;
  std::vector<int64_t> source_offsets_, target_offsets_;
};

// The shard files a DataConfig path names for `split` (see the constructor),
// in order. Throws naming the path when there are none.
std::vector<std::string> resolve_shard_paths(const std::string& path, const std::string& split);

// The tokenizer model a config means: cfg.tokenizer when set, else
// tokenizer.model in the cfg.train directory (or beside the cfg.train file or
// glob). Throws naming the path when the file does not exist.
std::string resolve_tokenizer_path(const DataConfig& cfg);

}  // namespace moetrain::data
