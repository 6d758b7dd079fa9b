#include "parallel/process_grid.h"

#include <string>

namespace moetrain::parallel {

ProcessGrid::ProcessGrid(int64_t world_size, int64_t rank, const ParallelConfig& config)
    : world_(world_size), rank_(rank), tp_(config.tp), pp_(config.pp), ep_(config.ep), cp_(config.cp) {
  if (world_ < 1 || rank_ < 0 || rank_ >= world_) {
    throw LayoutError("rank " + std::to_string(rank_) + " outside world of " + std::to_string(world_));
  }
  if (tp_ < 1 || pp_ < 1 || ep_ < 1 || cp_ < 1 || config.dp < 0) {
    throw LayoutError("parallel sizes must be positive (tp=" + std::to_string(tp_) + ", pp=" + std::to_string(pp_) +
                      ", ep=" + std::to_string(ep_) + ", cp=" + std::to_string(cp_) +
                      ", dp=" + std::to_string(config.dp) + ")");
  }
  const int64_t model_ranks = tp_ * pp_ * cp_;  // the ranks one sample's model spans
  const std::string model_names = cp_ > 1 ? "tp*pp*cp" : "tp*pp";
  if (world_ % model_ranks != 0) {
    throw LayoutError("world size " + std::to_string(world_) + " is not divisible by " + model_names + " = " +
                      std::to_string(model_ranks));
  }
  dp_ = config.dp == 0 ? world_ / model_ranks : config.dp;
  if (dp_ * model_ranks != world_) {
    throw LayoutError("dp*" + model_names + " = " + std::to_string(dp_) + "*" + std::to_string(model_ranks) + " = " +
                      std::to_string(dp_ * model_ranks) + " does not equal the world size " + std::to_string(world_));
  }
  if (dp_ % ep_ != 0) {
    throw LayoutError("ep = " + std::to_string(ep_) + " does not divide dp = " + std::to_string(dp_));
  }
  tp_rank_ = rank_ % tp_;
  cp_rank_ = (rank_ / tp_) % cp_;
  dp_rank_ = (rank_ / (tp_ * cp_)) % dp_;
  pp_rank_ = rank_ / (tp_ * cp_ * dp_);
}

int64_t ProcessGrid::rank_of(int64_t dp_rank, int64_t pp_rank, int64_t tp_rank, int64_t cp_rank) const {
  if (cp_rank < 0) cp_rank = cp_rank_;
  return ((pp_rank * dp_ + dp_rank) * cp_ + cp_rank) * tp_ + tp_rank;
}

std::vector<int64_t> ProcessGrid::tp_group() const {
  std::vector<int64_t> g;
  for (int64_t t = 0; t < tp_; ++t) g.push_back(rank_of(dp_rank_, pp_rank_, t));
  return g;
}

std::vector<int64_t> ProcessGrid::dp_group() const {
  std::vector<int64_t> g;
  for (int64_t d = 0; d < dp_; ++d) g.push_back(rank_of(d, pp_rank_, tp_rank_));
  return g;
}

std::vector<int64_t> ProcessGrid::cp_group() const {
  std::vector<int64_t> g;
  for (int64_t c = 0; c < cp_; ++c) g.push_back(rank_of(dp_rank_, pp_rank_, tp_rank_, c));
  return g;
}

std::vector<int64_t> ProcessGrid::replica_group() const {
  std::vector<int64_t> g;
  for (int64_t d = 0; d < dp_; ++d) {
    for (int64_t c = 0; c < cp_; ++c) g.push_back(rank_of(d, pp_rank_, tp_rank_, c));
  }
  return g;
}

std::vector<int64_t> ProcessGrid::pp_group() const {
  std::vector<int64_t> g;
  for (int64_t p = 0; p < pp_; ++p) g.push_back(rank_of(dp_rank_, p, tp_rank_));
  return g;
}

std::vector<int64_t> ProcessGrid::ep_group() const {
  std::vector<int64_t> g;
  const int64_t first = dp_rank_ - dp_rank_ % ep_;
  for (int64_t e = 0; e < ep_; ++e) g.push_back(rank_of(first + e, pp_rank_, tp_rank_));
  return g;
}

std::vector<int64_t> ProcessGrid::expert_dp_group() const {
  std::vector<int64_t> g;
  for (int64_t d = dp_rank_ % ep_; d < dp_; d += ep_) {
    for (int64_t c = 0; c < cp_; ++c) g.push_back(rank_of(d, pp_rank_, tp_rank_, c));
  }
  return g;
}

}  // namespace moetrain::parallel
