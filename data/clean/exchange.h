// Exchange: the collective byte exchange the distributed stages need, as an
// interface so that data code never includes parallel/ headers. `moetrain
// clean` implements it over MPI (trainer/clean_command.cpp); LocalExchange is
// the world of one process.
//
// Contract: every rank of the job calls each function the same number of
// times in the same order (they are collectives).
#pragma once

#include <cstdint>
#include <vector>

namespace moetrain::data::clean {

using Bytes = std::vector<uint8_t>;

class Exchange {
 public:
  virtual ~Exchange() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // send[r] goes to rank r; returns what each rank sent to this one, by source.
  virtual std::vector<Bytes> all_to_all(const std::vector<Bytes>& send) = 0;
  // Every rank's `mine`, by rank, on every rank.
  virtual std::vector<Bytes> all_gather(const Bytes& mine) = 0;
};

class LocalExchange : public Exchange {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::vector<Bytes> all_to_all(const std::vector<Bytes>& send) override { return send; }
  std::vector<Bytes> all_gather(const Bytes& mine) override { return {mine}; }
};

}  // namespace moetrain::data::clean
