// TokenizeRanks: the ranks of a `moetrain tokenize` job and the two
// collectives it needs, as an interface so that data code never includes parallel/
// headers. app/tokenize_command.cpp implements it over MPI; LocalTokenizeRanks
// is the job of one process.
//
// Contract: every rank calls the collectives the same number of times, in the
// same order. A rank may wait in it for minutes (while rank 0 trains the
// tokenizer, or the slowest rank encodes its shards), so an implementation
// must not time out.
#pragma once

#include <string>
#include <vector>

namespace moetrain::data {

class TokenizeRanks {
 public:
  virtual ~TokenizeRanks() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Rank 0's `bytes` on every rank (what the others pass is ignored).
  virtual std::string broadcast_from_rank0(const std::string& bytes) = 0;
  // Every rank's `mine` (any bytes), by rank, on every rank.
  virtual std::vector<std::string> all_gather(const std::string& mine) = 0;
};

class LocalTokenizeRanks : public TokenizeRanks {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string broadcast_from_rank0(const std::string& bytes) override { return bytes; }
  std::vector<std::string> all_gather(const std::string& mine) override { return {mine}; }
};

}  // namespace moetrain::data
