// The shard plan of a tokenize job and the routing of records to its shards
// (tokenize_plan.h).
#include "data/tokenize_plan.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace moetrain::data {
namespace {

constexpr uint64_t kValidSplitTag = 0x76616c6964737031ULL;  // "validsp1"

std::string shard_name(TokenSplit split, int64_t index) {
  char name[64];
  std::snprintf(name, sizeof(name), "%s-%05lld.h5", split == TokenSplit::Train ? "train" : "valid",
                static_cast<long long>(index));
  return name;
}

}  // namespace

std::vector<bool> choose_valid_records(int64_t n, double fraction, uint64_t seed) {
  std::vector<bool> valid(static_cast<size_t>(n), false);
  if (fraction <= 0.0 || n < 2) return valid;
  int64_t k = static_cast<int64_t>(std::llround(static_cast<double>(n) * fraction));
  k = std::min(std::max<int64_t>(k, 1), n - 1);
  PortableRng rng(combine_seeds({seed, kValidSplitTag}));
  for (int64_t j = n - k; j < n; ++j) {
    int64_t t = static_cast<int64_t>(rng.uniform(static_cast<uint64_t>(j + 1)));
    if (valid[t])
      valid[j] = true;
    else
      valid[t] = true;
  }
  return valid;
}

ShardPlan::ShardPlan(const InputCounts& counts, double valid_fraction, uint64_t seed, int64_t docs_per_shard, int ranks)
    : counts_(counts), valid_(choose_valid_records(counts.records, valid_fraction, seed)), per_shard_(docs_per_shard) {
  if (docs_per_shard < 1) throw std::invalid_argument("tokenize: docs_per_shard must be >= 1");
  if (ranks < 1) throw std::invalid_argument("tokenize: the job needs at least one rank");
  const int64_t chosen = std::count(valid_.begin(), valid_.end(), true);
  train_records_ = counts.records - chosen;
  valid_records_ = chosen + counts.valid_input_records;
  train_shards_ = (train_records_ + per_shard_ - 1) / per_shard_;
  for (TokenSplit split : {TokenSplit::Train, TokenSplit::Valid}) {
    const int64_t n = split == TokenSplit::Train ? train_records_ : valid_records_;
    for (int64_t first = 0, index = 0; first < n; first += per_shard_, ++index) {
      PlannedShard s;
      s.split = split;
      s.index = index;
      s.name = shard_name(split, index);
      s.first = first;
      s.records = std::min(per_shard_, n - first);
      s.owner = static_cast<int>(static_cast<int64_t>(shards_.size()) % ranks);
      shards_.push_back(std::move(s));
    }
  }
}

int64_t ShardPlan::shard_at(TokenSplit split, int64_t position) const {
  const int64_t index = position / per_shard_;
  return split == TokenSplit::Train ? index : train_shards_ + index;
}

int64_t RecordRouter::next(bool from_valid_inputs, const std::string& path) {
  const InputCounts& counts = plan_.counts();
  bool valid = true;
  if (from_valid_inputs) {
    if (valid_input_records_ >= counts.valid_input_records)
      throw std::runtime_error(path + ": changed while being tokenized (more records than in pass 1)");
    ++valid_input_records_;
  } else {
    if (valid_input_records_ > 0 || input_records_ >= counts.records)
      throw std::runtime_error(path + ": changed while being tokenized (more records than in pass 1)");
    valid = plan_.is_valid_input(input_records_++);
  }
  return valid ? plan_.shard_at(TokenSplit::Valid, valid_position_++)
               : plan_.shard_at(TokenSplit::Train, train_position_++);
}

void RecordRouter::check_complete() const {
  const InputCounts& counts = plan_.counts();
  if (input_records_ != counts.records || valid_input_records_ != counts.valid_input_records)
    throw std::runtime_error("tokenize: the inputs changed while being tokenized (fewer records than in pass 1)");
}

}  // namespace moetrain::data
