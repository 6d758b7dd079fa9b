// DataConfig: where the token shards are and which objective turns them into
// batches. Filled by config/ from the `data:` section of the YAML config.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moetrain::data {

enum class Objective {
  SpanCorruption,  // T5-style denoising over document shards
  Seq2Seq,         // source/target pair shards
};

// One dataset of a training mixture.
struct MixtureEntry {
  std::string path;     // same forms as DataConfig::train
  double weight = 1.0;  // positive; the mixture's weights are normalised to sum 1
  std::string name;     // label in logs and checkpoints; empty: mixture_entry_name()
};

// An entry's name: its `name`, else the last component of its path
// ("datasets/web/" -> "web", "data/train-*.h5" -> "train-*.h5").
inline std::string mixture_entry_name(const MixtureEntry& entry) {
  if (!entry.name.empty()) return entry.name;
  std::string path = entry.path;
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

struct DataConfig {
  // A directory written by `moetrain tokenize` (its train-*.h5 shards), a
  // single .h5 shard, or a glob such as "data/train-*.h5".
  std::string train;
  // Instead of `train`: several datasets sampled by weight (see BatchSource).
  // Exactly one of `train` and `mixture` is set for training.
  std::vector<MixtureEntry> mixture;
  std::string valid;      // same forms as `train` (one dataset); empty: no validation set
  std::string tokenizer;  // SentencePiece .model; empty: tokenizer.model beside the (first) train data
  Objective objective = Objective::SpanCorruption;
  int64_t src_len = 512;  // maximum encoder length (tokens, incl. EOS)
  int64_t tgt_len = 128;  // maximum decoder length (tokens, incl. EOS)
  double noise_density = 0.15;
  double mean_noise_span = 3.0;
  bool shuffle = true;
  // Read each sample's tokens from the shards when it is needed (true), or
  // load every shard into memory at start-up (false). Same batches either way.
  bool streaming = true;
  // Steps of micro-batches a background loader prepares ahead of training
  // (0: built on the training thread when needed).
  int64_t prefetch = 2;
};

}  // namespace moetrain::data
