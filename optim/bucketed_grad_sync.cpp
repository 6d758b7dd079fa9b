#include "optim/bucketed_grad_sync.h"

#include "parallel/mpi_runtime.h"

namespace moetrain::optim {

BucketedGradSync::BucketedGradSync(FlatParameters& params, GradGroups groups, const GradSyncOptions& options)
    : params_(params), groups_(groups), zero_stage_(options.zero_stage) {
  if (zero_stage_ == 1) local_grads_ = torch::zeros({params_.local_numel()}, params_.master().options());
  // Buckets: whole units of at least bucket_mb for the all-reduce (ZeRO 0),
  // one unit each for the per-unit reduce-scatter (ZeRO 1/2).
  const int64_t bucket_elems = zero_stage_ == 0 ? static_cast<int64_t>(options.bucket_mb * 1024 * 1024 / 4) : 0;
  buckets_ = GradReducer::make_buckets(params_, bucket_elems);
  // Overlap needs a communication thread beside the backward (MPI, which
  // must then allow calls from several threads) or an asynchronous stream
  // (NCCL).
  auto& dp = *groups_.dp;
  const bool async_thread = !dp.asynchronous();  // MPI, or MPI staged through the host
  const bool threads_ok = !async_thread || parallel::mpi_thread_level() == MPI_THREAD_MULTIPLE;
  if (options.overlap_grad_reduce && dp.size() > 1 && threads_ok) {
    reducer_ = std::make_unique<GradReducer>(params_, buckets_, async_thread);
  }
}

void BucketedGradSync::begin_step() {
  params_.zero_grads();
  reduced_in_backward_ = false;
}

void BucketedGradSync::before_backward(bool last) {
  // Armed, the reducer's hooks add each parameter's gradient into the fp32
  // buffer as the backward produces it and reduce complete buckets
  // meanwhile: ZeRO 0/1 on the last micro-batch (after it the sum is final),
  // ZeRO 2 on every one.
  if (reducer_ && zero_stage_ == 2) {
    micro_grads_ = torch::zeros({params_.padded_numel()}, params_.grads().options());
    reducer_->arm(micro_grads_, bucket_reduction(micro_grads_, params_.grads(), /*accumulate=*/true));
  } else if (reducer_ && last) {
    reducer_->arm(params_.grads(), bucket_reduction(params_.grads(), local_grads_, /*accumulate=*/false));
    reduced_in_backward_ = true;
  }
}

void BucketedGradSync::after_backward(bool last) {
  if (reducer_ && (zero_stage_ == 2 || last)) {
    reducer_->finish();
    micro_grads_ = torch::Tensor();
  } else if (zero_stage_ == 2) {
    micro_grads_ = torch::zeros({params_.padded_numel()}, params_.grads().options());
    params_.accumulate_grads_into(micro_grads_);
    reduce_all(micro_grads_, params_.grads(), /*accumulate=*/true);
    micro_grads_ = torch::Tensor();
  } else {
    params_.accumulate_grads();
  }
}

torch::Tensor& BucketedGradSync::finish_step() {
  // ZeRO 2 reduced every micro-batch already; ZeRO 0/1 reduce now unless the
  // backward did.
  if (!reduced_in_backward_ && zero_stage_ <= 1) reduce_all(params_.grads(), local_grads_, /*accumulate=*/false);
  return zero_stage_ == 1 ? local_grads_ : params_.grads();
}

void BucketedGradSync::refresh_model() {
  torch::NoGradGuard no_grad;
  if (!params_.sharding().shard_master) {
    params_.copy_master_to_model();
    return;
  }
  // Each rank updated its shard: all-gather the units back into the model.
  auto& model = params_.model();
  for (const auto& u : params_.units()) {
    const auto piece = params_.master().narrow(0, u.local_offset, u.shard).to(model.scalar_type());
    auto full = model.narrow(0, u.offset, u.padded);
    auto& group = groups_.of(u);
    if (group.size() == 1) {
      full.copy_(piece);
    } else {
      group.all_gather(piece, full);
    }
  }
}

int64_t BucketedGradSync::extra_grad_bytes() const { return local_grads_.defined() ? local_grads_.numel() * 4 : 0; }

void BucketedGradSync::reduce_scatter_unit(const FlatUnit& u, const torch::Tensor& full_grads, torch::Tensor& shard,
                                           bool accumulate) {
  const auto input = full_grads.narrow(0, u.offset, u.padded);
  auto piece = shard.narrow(0, u.local_offset, u.shard);
  auto& group = groups_.of(u);
  if (group.size() == 1) {
    accumulate ? piece.add_(input) : piece.copy_(input);
  } else if (accumulate) {
    auto reduced = torch::empty_like(piece);
    group.reduce_scatter(input, reduced);
    piece.add_(reduced);
  } else {
    group.reduce_scatter(input, piece);
  }
}

void BucketedGradSync::reduce_all(torch::Tensor& full_grads, torch::Tensor& shard, bool accumulate) {
  if (zero_stage_ == 0 && groups_.dp->size() == 1) return;  // nothing to add up
  const auto reduce = bucket_reduction(full_grads, shard, accumulate);
  for (const auto& b : buckets_) reduce(b);
}

GradReducer::ReduceFn BucketedGradSync::bucket_reduction(torch::Tensor& full_grads, torch::Tensor& shard,
                                                         bool accumulate) {
  if (zero_stage_ == 0) {
    return [this, full_grads](const GradBucket& b) {
      auto& group = b.expert ? *groups_.edp : *groups_.dp;
      if (group.size() == 1) return;
      auto bucket = full_grads.narrow(0, b.begin, b.end - b.begin);
      group.all_reduce(bucket);
    };
  }
  return [this, full_grads, shard, accumulate](const GradBucket& b) mutable {
    for (size_t u = b.first_unit; u <= b.last_unit; ++u) {
      reduce_scatter_unit(params_.units()[u], full_grads, shard, accumulate);
    }
  };
}

}  // namespace moetrain::optim
