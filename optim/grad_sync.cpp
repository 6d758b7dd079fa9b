#include "optim/grad_sync.h"

#include <stdexcept>
#include <string>

#include "optim/bucketed_grad_sync.h"
#include "optim/zero3_grad_sync.h"

namespace moetrain::optim {

ShardingOptions sharding_for_stage(int64_t zero_stage, int64_t shards, int64_t rank) {
  ShardingOptions sharding;
  sharding.shards = shards;
  sharding.rank = rank;
  sharding.shard_master = zero_stage >= 1;
  sharding.shard_grads = zero_stage >= 2;
  sharding.shard_params = zero_stage >= 3;
  return sharding;
}

std::unique_ptr<GradSync> make_grad_sync(FlatParameters& params, GradGroups groups, const GradSyncOptions& options) {
  if (options.zero_stage < 0 || options.zero_stage > 3) {
    throw std::invalid_argument("ZeRO stage must be 0, 1, 2 or 3, got " + std::to_string(options.zero_stage));
  }
  if (options.zero_stage == 3) return std::make_unique<Zero3GradSync>(params, groups);
  return std::make_unique<BucketedGradSync>(params, groups, options);
}

torch::Tensor local_grad(const FlatParameters& params, const torch::Tensor& grads, const FlatParameterEntry& e) {
  if (!params.sharding().shard_master) return params.view(grads, e);
  const auto piece = params.local_piece(e);
  if (piece.end == piece.begin) return {};
  return grads.narrow(0, piece.master_offset, piece.end - piece.begin);
}

}  // namespace moetrain::optim
