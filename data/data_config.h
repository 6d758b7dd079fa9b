// DataConfig: where the token shards are and which objective turns them into
// batches. Filled by the trainer from the `data:` section of the YAML config.
#pragma once

#include <cstdint>
#include <string>

namespace moetrain::data {

enum class Objective {
  SpanCorruption,  // T5-style denoising over document shards
  Seq2Seq,         // source/target pair shards
};

struct DataConfig {
  // A directory written by `moetrain tokenize` (its train-*.h5 shards), a
  // single .h5 shard, or a glob such as "data/train-*.h5".
  std::string train;
  std::string valid;      // same forms; empty: no validation set
  std::string tokenizer;  // SentencePiece .model; empty: <train dir>/tokenizer.model
  Objective objective = Objective::SpanCorruption;
  int64_t src_len = 512;  // maximum encoder length (tokens, incl. EOS)
  int64_t tgt_len = 128;  // maximum decoder length (tokens, incl. EOS)
  double noise_density = 0.15;
  double mean_noise_span = 3.0;
  bool shuffle = true;
};

}  // namespace moetrain::data
