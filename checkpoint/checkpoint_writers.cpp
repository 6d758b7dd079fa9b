#include "checkpoint/checkpoint_writers.h"

namespace moetrain::checkpoint {

bool CheckpointWriters::is_tied_copy(const std::string& name) const {
  const auto& grid = groups_.grid();
  return groups_.tied() && grid.pp_rank() == grid.pp_size() - 1 && name == "embed_tokens.weight";
}

bool CheckpointWriters::replicated_over_tp_and_not_first(const std::string& name) const {
  return groups_.tp() && groups_.tp()->rank() != 0 && !slices_.count(name);
}

bool CheckpointWriters::writes(const optim::FlatParameterEntry& e) const {
  if (is_tied_copy(e.name)) return false;  // the first stage writes it
  if (replicated_over_tp_and_not_first(e.name)) return false;
  if (params_.sharding().shard_master) return true;  // every rank writes its own shard
  return groups_.replicas(params_.units()[e.unit].expert).rank() == 0;
}

bool CheckpointWriters::writes_frozen(const std::string& name) const {
  if (is_tied_copy(name)) return false;
  if (replicated_over_tp_and_not_first(name)) return false;
  // Replicated over the data-parallel group (experts: the expert-data-parallel one).
  const bool expert = groups_.grid().ep_size() > 1 && optim::is_expert_parameter(name);
  return groups_.replicas(expert).rank() == 0;
}

}  // namespace moetrain::checkpoint
