// ProcessGrid: the single source of truth for how the world of ranks is laid
// out as DP x CP x PP x TP, with EP dividing DP. Nothing else computes a rank
// by arithmetic.
//
// Order (as Megatron orders them): TP varies fastest (a TP group is
// contiguous, so it sits inside one node), then CP, then DP, then PP:
//   rank = ((pp_rank * dp + dp_rank) * cp + cp_rank) * tp + tp_rank.
// The CP ranks of one DP rank share its samples, each holding part of every
// sequence; they hold the same parameters, so a parameter's replicas are the
// DP x CP ranks of its (pp, tp) place (replica_group). Expert parallelism
// splits each DP group into consecutive blocks of `ep` DP ranks; the
// expert-data-parallel group of a rank is the DP x CP ranks that hold the
// same experts (same ep_rank).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <vector>

#include "parallel/parallel_config.h"

namespace moetrain::parallel {

// An impossible layout; the message says why (the CLI turns it into exit 2).
class LayoutError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class ProcessGrid {
 public:
  // Throws LayoutError when world_size does not factor as dp * cp * tp * pp,
  // when ep does not divide dp, or when a size is not positive.
  ProcessGrid(int64_t world_size, int64_t rank, const ParallelConfig& config);

  int64_t world_size() const { return world_; }
  int64_t rank() const { return rank_; }
  int64_t dp_size() const { return dp_; }
  int64_t tp_size() const { return tp_; }
  int64_t pp_size() const { return pp_; }
  int64_t ep_size() const { return ep_; }
  int64_t cp_size() const { return cp_; }
  int64_t cp_rank() const { return cp_rank_; }
  int64_t dp_rank() const { return dp_rank_; }
  int64_t tp_rank() const { return tp_rank_; }
  int64_t pp_rank() const { return pp_rank_; }
  int64_t ep_rank() const { return dp_rank_ % ep_; }

  // The rank at a place of the grid; cp_rank -1: this rank's.
  int64_t rank_of(int64_t dp_rank, int64_t pp_rank, int64_t tp_rank, int64_t cp_rank = -1) const;

  // Global ranks of this rank's groups, in group-rank order.
  std::vector<int64_t> tp_group() const;
  std::vector<int64_t> dp_group() const;       // the DP ranks of this rank's CP place
  std::vector<int64_t> cp_group() const;       // the ranks sharing this rank's samples
  std::vector<int64_t> replica_group() const;  // DP x CP: the ranks holding the same parameters
  std::vector<int64_t> pp_group() const;
  std::vector<int64_t> ep_group() const;         // ranks sharing an expert all-to-all
  std::vector<int64_t> expert_dp_group() const;  // ranks holding the same experts (over DP x CP)

 private:
  int64_t world_, rank_, dp_, tp_, pp_, ep_, cp_;
  int64_t dp_rank_, tp_rank_, pp_rank_, cp_rank_;
};

}  // namespace moetrain::parallel
