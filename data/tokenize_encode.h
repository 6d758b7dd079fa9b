// Pass 2 of tokenize_corpus on one rank: encodes the records of the shards
// this rank owns (ShardPlan) and writes those shards.
//
// The rank reads the whole record stream (parsing is cheap next to encoding),
// routes each record to its shard, and hands the records of its own
// unfinished shards, in blocks, to its EncoderPool; encoded blocks come back
// in stream order and are appended to their shards, so each shard is the
// same whatever the number of threads. A shard is written (temporary file,
// rename) as soon as its last record is in, then marked finished in the
// resume state. Shards an earlier run finished (TokenizeState::finished) are
// skipped, and the rank stops reading once all of its shards are written.
// Only the calling thread touches HDF5.
#pragma once

#include <cstdint>
#include <vector>

#include "data/tokenize.h"
#include "data/tokenize_plan.h"
#include "data/tokenize_state.h"
#include "data/tokenizer.h"

namespace moetrain::data {

struct RankEncodeResult {
  std::vector<TokenizedShard> shards;  // every shard this rank owns, in plan order
  int64_t written = 0;                 // shards written by this run
  int64_t skipped = 0;                 // shards an earlier run finished
  int64_t encoded_bytes = 0;           // text bytes encoded
  double seconds = 0;                  // wall time of this pass on this rank
};

RankEncodeResult encode_rank_shards(const TokenizeOptions& options, const Tokenizer& tokenizer, const ShardPlan& plan,
                                    int rank, int ranks, const TokenizeState& state);

}  // namespace moetrain::data
