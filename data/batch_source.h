// BatchSource: the deterministic micro-batches of one split (train or valid).
//
// The train split is one dataset (DataConfig::train) or a weighted mixture of
// several (DataConfig::mixture); valid is always one dataset. One dataset is
// a mixture of one, and gives exactly the batches it gave before mixtures.
//
// Every sample is a pure function of (seed, global sample index k), so the
// data position of a run is just its step, and the batches depend neither on
// the parallel layout nor on whether the run was resumed:
//   - global step s covers global sample indices k = s*global_batch + j,
//     j in [0, global_batch);
//   - k goes to dataset d of the mixture by the blended index of
//     MixtureIndex: the d maximising w_d*(k+1) - count_d(k), ties to the
//     lowest d, where w_d are the normalised weights and count_d(k) the
//     samples d gave to indices [0, k); k is dataset d's draw i = count_d(k)
//     (with one dataset, d = 0 and i = k);
//   - within dataset d, epoch = i / num_samples(d), and slot i % num_samples(d)
//     maps to sample perm_epoch(slot) when cfg.shuffle (a seeded pseudo-random
//     permutation of the dataset's samples, different every epoch), else to
//     itself. Each dataset walks its own epochs: a small one wraps into a
//     new permutation while a large one is still in its first epoch;
//   - dataset d has its own seed stream: the run's seed for d = 0, a seed
//     derived from (seed, d) for the others;
//   - data-parallel rank r of dp_size takes the contiguous j in
//     [r*global_batch/dp_size, (r+1)*global_batch/dp_size), cut into
//     micro-batches of micro_batch samples.
// Concatenating every rank's micro-batch rows for a step therefore gives the
// rows of dp_size = 1 for that step, in order. mixture_position(step) (the
// samples each dataset gave before `step`) is what a checkpoint records.
//
// Objectives:
//   SpanCorruption: a dataset's documents, each followed by EOS, concatenated
//     in shard order and cut into consecutive windows of raw_length() tokens
//     (span_corruption_lengths(src_len, tgt_len, ...)); the tail that does not
//     fill a window is dropped. Window w of epoch e is corrupted with seed
//     (dataset seed, e, w).
//   Seq2Seq: sample i is pair i; source cut to src_len-1 tokens + EOS, target
//     cut to tgt_len-1 tokens + EOS.
// In both, the decoder input is BOS + target[:-1]. Micro-batches are padded
// with pad to their longest row; masks are true on real tokens. The objective,
// lengths and tokenizer are the same for every dataset of a mixture, and every
// dataset's shards must have the same vocab_size.
//
// Each dataset's tokens are a TokenStore (token_store.h): streamed from the
// shards by default (cfg.streaming), a sample read when it is built, or
// loaded into memory at construction. The only other state is the blended
// index's memo (under a mutex), so step_batches is const and thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/batch.h"
#include "data/data_config.h"
#include "data/mixture_index.h"
#include "data/span_corruption.h"
#include "data/token_store.h"
#include "data/tokenizer.h"

namespace moetrain::data {

// One sample before padding.
struct Seq2SeqSample {
  std::vector<int64_t> source;  // encoder input, ends with EOS
  std::vector<int64_t> target;  // decoder target, ends with EOS
};

// Where one global sample comes from.
struct SampleOrigin {
  int64_t dataset = 0;  // index into dataset_names()
  int64_t draw = 0;     // the dataset's own sample counter (count_dataset(k))
  int64_t epoch = 0;    // draw / num_samples(dataset)
  int64_t index = 0;    // the dataset's sample it is (slot draw % num_samples, permuted)
};

class BatchSource {
 public:
  // Loads the shards of `split`: for "train", cfg.mixture when it is set,
  // else cfg.train; for "valid", cfg.valid. Each path is a directory written
  // by `moetrain tokenize` (the shards its dataset.json lists, or else
  // <split>-*.h5), a single .h5 file, or a glob. Throws std::runtime_error
  // naming the path (and the dataset, in a mixture) when it is missing, holds
  // the wrong kind of shard for cfg.objective, has too few tokens for a
  // sample, or has a vocab_size other than the other datasets'; throws
  // std::invalid_argument for a weight that is not positive, or when both
  // cfg.train and cfg.mixture are set. Movable, not copyable.
  BatchSource(const DataConfig& cfg, const SpecialTokens& special, uint64_t seed, const std::string& split);

  // All micro-batches of data-parallel rank `dp_rank` (of dp_size) for global
  // step `step` (0-based). global_batch must be divisible by dp_size and
  // global_batch/dp_size by micro_batch.
  std::vector<Seq2SeqBatch> step_batches(int64_t step, int64_t dp_rank, int64_t dp_size, int64_t global_batch,
                                         int64_t micro_batch) const;

  // Samples per epoch, summed over the datasets.
  int64_t num_samples() const { return num_samples_; }
  // The epoch at global step `step`: with one dataset, step*global_batch /
  // num_samples(); in a mixture, the furthest epoch any dataset has reached.
  int64_t epoch_of(int64_t step, int64_t global_batch) const;

  // The sample at global sample index k (k = step*global_batch + j).
  Seq2SeqSample sample(int64_t k) const;
  // Which dataset, draw, epoch and sample global index k visits.
  SampleOrigin origin(int64_t k) const;
  // Which sample of its dataset's epoch global index k visits (the permutation).
  int64_t sample_index(int64_t k) const { return origin(k).index; }

  // The datasets: one for a plain path, else those of cfg.mixture, in order.
  int64_t num_datasets() const { return static_cast<int64_t>(datasets_.size()); }
  // Each dataset's name (MixtureEntry::name, else its path's last component).
  const std::vector<std::string>& dataset_names() const { return names_; }
  // The normalised weights (sum 1); {1} for one dataset.
  const std::vector<double>& dataset_weights() const { return index_->weights(); }
  // Samples per epoch of dataset d.
  int64_t num_samples(int64_t dataset) const;
  // The samples each dataset gave to the global steps before `step`, i.e. to
  // global sample indices [0, step*global_batch). Sums to step*global_batch.
  std::vector<int64_t> mixture_position(int64_t step, int64_t global_batch) const;

  // Pads samples into one micro-batch.
  static Seq2SeqBatch collate(const std::vector<Seq2SeqSample>& samples, const SpecialTokens& special);

  // SpanCorruption: raw tokens per sample; Seq2Seq: 0.
  int64_t raw_length() const { return lengths_.raw_length; }
  // The shard files of every dataset, in dataset order.
  const std::vector<std::string>& shard_paths() const { return shard_paths_; }

 private:
  // One dataset: its tokens and its seed stream.
  struct Dataset {
    std::string path;
    uint64_t seed = 0;  // its seed stream
    int64_t num_samples = 0;
    int64_t vocab_size = 0;
    std::unique_ptr<TokenStore> tokens;
  };

  // Opens `shards` as `ds`'s tokens; `label` names the dataset in errors.
  void load(Dataset& ds, const std::vector<std::string>& shards, const std::string& label) const;
  SampleOrigin origin_of(const MixtureIndex::Draw& draw) const;
  Seq2SeqSample sample_at(const SampleOrigin& origin) const;
  Seq2SeqSample span_corruption_sample(const Dataset& ds, int64_t epoch, int64_t window) const;
  Seq2SeqSample pair_sample(const Dataset& ds, int64_t pair) const;

  DataConfig cfg_;
  SpecialTokens special_;
  uint64_t seed_;
  std::string split_;
  std::vector<std::string> shard_paths_;
  int64_t num_samples_ = 0;
  SpanCorruptionLengths lengths_;
  std::vector<Dataset> datasets_;
  std::vector<std::string> names_;
  std::unique_ptr<MixtureIndex> index_;  // behind a pointer: it holds a mutex
};

// The shard files a DataConfig path names for `split` (see the constructor),
// in order. Throws naming the path when there are none.
std::vector<std::string> resolve_shard_paths(const std::string& path, const std::string& split);

// The tokenizer model a config means: cfg.tokenizer when set, else
// tokenizer.model in the train directory (or beside the train file or glob):
// cfg.train, or the first dataset of cfg.mixture. Throws naming the path when
// the file does not exist.
std::string resolve_tokenizer_path(const DataConfig& cfg);

}  // namespace moetrain::data
