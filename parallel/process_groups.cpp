#include "parallel/process_groups.h"

#include <string>
#include <utility>
#include <vector>

namespace moetrain::parallel {

ProcessGroups::ProcessGroups(std::shared_ptr<Communicator> world, const ParallelConfig& config, bool tied_embeddings,
                             std::unique_ptr<Communicator> data_world)
    : grid_(world->size(), world->rank(), config), world_(std::move(world)), data_world_(std::move(data_world)) {
  // Splits are collective: every rank takes part in each (with its own
  // group), in this order. DP and PP get groups of their own whenever the
  // world has more than one rank, so each group's traffic is counted apart.
  Communicator& data = data_world_ ? *data_world_ : *world_;
  dp_ = &data;
  if (grid_.tp_size() > 1) tp_comm_ = data.split(grid_.tp_group());
  if (data.size() > 1) {
    dp_comm_ = data.split(grid_.replica_group());
    dp_ = dp_comm_.get();
  }
  edp_ = dp_;
  if (grid_.ep_size() > 1) {
    ep_comm_ = data.split(grid_.ep_group());
    edp_comm_ = data.split(grid_.expert_dp_group());
    edp_ = edp_comm_.get();
  }
  pp_ = &data;
  if (data.size() > 1) {
    pp_comm_ = data.split(grid_.pp_group());
    pp_ = pp_comm_.get();
  }
  const int64_t pp = grid_.pp_size(), pp_rank = grid_.pp_rank();
  if (pp > 1 && tied_embeddings) {
    std::vector<int64_t> pair{grid_.rank_of(grid_.dp_rank(), 0, grid_.tp_rank()),
                              grid_.rank_of(grid_.dp_rank(), pp - 1, grid_.tp_rank())};
    if (pp_rank != 0 && pp_rank != pp - 1) pair = {world_->rank()};
    tied_comm_ = data.split(pair);
  }
  if (grid_.cp_size() > 1) cp_comm_ = data.split(grid_.cp_group());
  // Named for the watchdog's lines (the world keeps its plain op names).
  const std::pair<const char*, Communicator*> labels[] = {
      {"dp", dp_comm_.get()},   {"tp", tp_comm_.get()},     {"pp", pp_comm_.get()}, {"ep", ep_comm_.get()},
      {"edp", edp_comm_.get()}, {"tied", tied_comm_.get()}, {"cp", cp_comm_.get()}};
  for (const auto& [name, comm] : labels) {
    if (comm) comm->set_label(name);
  }
}

CommStats ProcessGroups::stats() const {
  CommStats all;
  const std::pair<const char*, const Communicator*> groups[] = {
      {"world", world_.get()}, {"dp", dp_comm_.get()},   {"tp", tp_comm_.get()},     {"pp", pp_comm_.get()},
      {"ep", ep_comm_.get()},  {"edp", edp_comm_.get()}, {"tied", tied_comm_.get()}, {"cp", cp_comm_.get()}};
  for (const auto& [name, comm] : groups) {
    if (!comm) continue;
    for (const auto& [op, op_stats] : comm->stats()) all[std::string(name) + " " + op] = op_stats;
  }
  if (data_world_) {
    for (const auto& [op, op_stats] : data_world_->stats()) {
      OpStats& s = all["world " + op];
      s.calls += op_stats.calls;
      s.bytes += op_stats.bytes;
      s.seconds += op_stats.seconds;
    }
  }
  return all;
}

void ProcessGroups::reset_stats() {
  for (auto* comm : {world_.get(), data_world_.get(), dp_comm_.get(), tp_comm_.get(), pp_comm_.get(), ep_comm_.get(),
                     edp_comm_.get(), tied_comm_.get(), cp_comm_.get()}) {
    if (comm) comm->reset_stats();
  }
}

}  // namespace moetrain::parallel
