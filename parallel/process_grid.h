// ProcessGrid: the single source of truth for how the world of ranks is laid
// out as DP x PP x TP, with EP dividing DP. Nothing else computes a rank by
// arithmetic.
//
// Order: TP varies fastest (a TP group is contiguous, so it sits inside one
// node), then DP, then PP:  rank = pp_rank * (dp * tp) + dp_rank * tp + tp_rank.
// Expert parallelism splits each DP group into consecutive blocks of `ep` DP
// ranks; the expert-data-parallel group of a rank is the DP ranks that hold the
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
  // Throws LayoutError when world_size does not factor as dp * tp * pp, when ep
  // does not divide dp, or when a size is not positive.
  ProcessGrid(int64_t world_size, int64_t rank, const ParallelConfig& config);

  int64_t world_size() const { return world_; }
  int64_t rank() const { return rank_; }
  int64_t dp_size() const { return dp_; }
  int64_t tp_size() const { return tp_; }
  int64_t pp_size() const { return pp_; }
  int64_t ep_size() const { return ep_; }
  int64_t dp_rank() const { return dp_rank_; }
  int64_t tp_rank() const { return tp_rank_; }
  int64_t pp_rank() const { return pp_rank_; }
  int64_t ep_rank() const { return dp_rank_ % ep_; }

  int64_t rank_of(int64_t dp_rank, int64_t pp_rank, int64_t tp_rank) const;

  // Global ranks of this rank's groups, in group-rank order.
  std::vector<int64_t> tp_group() const;
  std::vector<int64_t> dp_group() const;
  std::vector<int64_t> pp_group() const;
  std::vector<int64_t> ep_group() const;         // ranks sharing an expert all-to-all
  std::vector<int64_t> expert_dp_group() const;  // ranks holding the same experts

 private:
  int64_t world_, rank_, dp_, tp_, pp_, ep_;
  int64_t dp_rank_, tp_rank_, pp_rank_;
};

}  // namespace moetrain::parallel
