// BucketedGradSync: ZeRO stages 0-2 (see grad_sync.h for the call order).
//
//   ZeRO 0  gradients accumulate in the full fp32 buffer over the
//           micro-batches; after the last one every bucket (whole units of at
//           least bucket_mb) is all-reduced.
//   ZeRO 1  the same accumulation; after the last micro-batch each unit is
//           reduce-scattered into this rank's shard (the optimizer's piece).
//   ZeRO 2  each micro-batch's gradients are reduce-scattered into the
//           sharded accumulator as soon as its backward is done; the full
//           buffer is transient.
//
// With overlap (and a dp group of more than one rank), the reductions run
// while the backward is still producing gradients (GradReducer): on the last
// micro-batch for ZeRO 0/1, on every micro-batch for ZeRO 2. Over MPI that
// needs MPI_THREAD_MULTIPLE; without it the reductions run after the
// backward, with bitwise the same result.
#pragma once

#include <memory>
#include <vector>

#include "optim/grad_reducer.h"
#include "optim/grad_sync.h"

namespace moetrain::optim {

class BucketedGradSync : public GradSync {
 public:
  BucketedGradSync(FlatParameters& params, GradGroups groups, const GradSyncOptions& options);

  void begin_step() override;
  void before_backward(bool last_micro_batch) override;
  void after_backward(bool last_micro_batch) override;
  torch::Tensor& finish_step() override;
  void refresh_model() override;
  int64_t extra_grad_bytes() const override;

 private:
  // Reduction of one bucket: an all-reduce of full_grads' range (ZeRO 0), or
  // a reduce-scatter of each of its units into `shard` (ZeRO 1/2; added to
  // it when `accumulate`).
  GradReducer::ReduceFn bucket_reduction(torch::Tensor& full_grads, torch::Tensor& shard, bool accumulate);
  void reduce_scatter_unit(const FlatUnit& u, const torch::Tensor& full_grads, torch::Tensor& shard, bool accumulate);
  // Every bucket, after a backward.
  void reduce_all(torch::Tensor& full_grads, torch::Tensor& shard, bool accumulate);

  FlatParameters& params_;
  GradGroups groups_;
  int64_t zero_stage_;
  std::vector<GradBucket> buckets_;       // in reduction order
  std::unique_ptr<GradReducer> reducer_;  // overlapped reduction, when possible
  torch::Tensor local_grads_;             // ZeRO 1: this rank's reduced shard
  torch::Tensor micro_grads_;             // ZeRO 2: one micro-batch's full gradient, transient
  bool reduced_in_backward_ = false;
};

}  // namespace moetrain::optim
