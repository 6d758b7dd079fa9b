// TokenStore: the tokens of one dataset of a BatchSource, as the objectives
// read them, held in memory or streamed from the shards.
//
//   documents (span corruption): "the stream", every document of every shard
//     followed by EOS, back to back in shard order; read by position range.
//   pairs (seq2seq): pair i of the dataset (shards in order), each side read
//     up to a number of tokens.
//
// Both kinds of store give the same tokens for the same shards, so batches
// do not depend on the choice (data.streaming). The in-memory store reads
// and validates every shard at start-up and holds the whole dataset; the
// streamed store (streamed_token_store.h) keeps a small index per shard and
// reads a sample's tokens when it is asked for, so a rank's memory does not
// grow with the corpus.
//
// Reads are const and thread-safe. Errors: TokenShardError or
// std::runtime_error with one line naming the shard (a shard found corrupt
// mid-run when streaming).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/data_config.h"
#include "data/token_shard.h"

namespace moetrain::data {

class TokenStore {
 public:
  virtual ~TokenStore() = default;

  virtual int64_t vocab_size() const = 0;

  // Documents: the stream's length and positions [begin, end) of it.
  virtual int64_t stream_length() const = 0;
  virtual std::vector<int64_t> stream(int64_t begin, int64_t end) const = 0;

  // Pairs: how many, and the first (at most) max_tokens tokens of one side.
  virtual int64_t num_pairs() const = 0;
  virtual std::vector<int64_t> pair_side(int64_t pair, bool target, int64_t max_tokens) const = 0;
};

// Throws naming the shard when its kind does not suit the objective.
void check_shard_kind(const std::string& path, ShardKind kind, Objective objective);

// Keeps the first shard's vocab size in `dataset_vocab` (0: none yet) and
// throws naming the shard when a later one of `label` has another.
void check_same_vocab(int64_t& dataset_vocab, const std::string& shard, int64_t vocab, const std::string& label);

// The store for `shards` (in order) under `objective`: streamed or in
// memory. `eos` ends every document of the stream; `label` names the dataset
// in errors (a shard of the wrong kind, differing vocab sizes).
std::unique_ptr<TokenStore> open_token_store(const std::vector<std::string>& shards, Objective objective, int64_t eos,
                                             const std::string& label, bool streamed);

}  // namespace moetrain::data
