// ShardPlan: which records each shard of a tokenize job holds, and which rank
// writes it; RecordRouter: the shard of each record of the record stream.
//
// The plan depends only on the record counts of pass 1 and the options, never
// on the number of threads or ranks (except for the owner of each shard):
//   - the valid split is the input records that choose_valid_records picks
//     (seeded), then every record of valid_inputs; the train split is the
//     other input records; both keep stream order;
//   - shard j of a split holds split positions [j*K, (j+1)*K), K =
//     docs_per_shard (the last one may hold fewer);
//   - the job's shards are the train shards, then the valid shards; shard g
//     belongs to rank g % ranks.
// Every rank builds the same plan from the same counts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/tokenize_input.h"

namespace moetrain::data {

enum class TokenSplit { Train, Valid };

struct PlannedShard {
  TokenSplit split = TokenSplit::Train;
  int64_t index = 0;    // within its split
  std::string name;     // "train-00003.h5"
  int64_t first = 0;    // split position of its first record
  int64_t records = 0;  // records of its range (those that encode to nothing included)
  int owner = 0;        // the rank that writes it
};

// Exactly round(n * fraction) of n records (at least 1 when fraction > 0,
// never all; none when n < 2), picked by `seed` with Floyd's algorithm.
std::vector<bool> choose_valid_records(int64_t n, double fraction, uint64_t seed);

class ShardPlan {
 public:
  ShardPlan(const InputCounts& counts, double valid_fraction, uint64_t seed, int64_t docs_per_shard, int ranks);

  const std::vector<PlannedShard>& shards() const { return shards_; }
  int64_t train_records() const { return train_records_; }
  int64_t valid_records() const { return valid_records_; }
  const InputCounts& counts() const { return counts_; }
  // Whether input record i (0-based over `inputs`) is in the valid split.
  bool is_valid_input(int64_t i) const { return valid_[static_cast<size_t>(i)]; }
  // The index into shards() of split position `position`.
  int64_t shard_at(TokenSplit split, int64_t position) const;

 private:
  InputCounts counts_;
  std::vector<bool> valid_;
  int64_t per_shard_;
  int64_t train_records_ = 0, valid_records_ = 0, train_shards_ = 0;
  std::vector<PlannedShard> shards_;
};

// Follows the record stream through the plan.
class RecordRouter {
 public:
  explicit RecordRouter(const ShardPlan& plan) : plan_(plan) {}

  // The index into plan.shards() of the next record of the stream; throws
  // std::runtime_error naming `path` when the stream holds more records than
  // pass 1 counted (the inputs changed in between).
  int64_t next(bool from_valid_inputs, const std::string& path);
  // Throws when the stream ended before every planned record was seen.
  void check_complete() const;

 private:
  const ShardPlan& plan_;
  int64_t input_records_ = 0, valid_input_records_ = 0;
  int64_t train_position_ = 0, valid_position_ = 0;
};

}  // namespace moetrain::data
