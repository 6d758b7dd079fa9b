// GradSync: how one optimizer step's gradients are accumulated over the
// micro-batches and added up over the data-parallel ranks, and how the model
// gets its weights back from the fp32 master after the step (what Megatron
// calls the distributed optimizer). The ZeRO stage is read once, by
// make_grad_sync; the training step calls the same methods whatever it is:
//
//   begin_step()
//   per micro-batch:  before_forward()  forward  after_forward()
//                     before_backward(last)  backward  after_backward(last)
//   grads = finish_step()      the summed gradients this rank holds, laid
//                              out like params.master() (the whole flat
//                              space, or under ZeRO >= 1 this rank's shard)
//   optimizer step on params.master() with grads
//   refresh_model()
//
// Evaluation calls before_forward()/after_forward() around each forward.
//
// Implementations: BucketedGradSync (ZeRO 0-2: buckets reduced while the
// backward runs) and Zero3GradSync (ZeRO 3: units gathered and freed per
// use, their gradients reduce-scattered as each unit's backward finishes).
// Every method is collective over the groups the parameters are replicated
// over: every rank calls them in the same order.
#pragma once

#include <torch/torch.h>

#include <memory>

#include "models/transformer_layers.h"
#include "optim/flat_parameters.h"
#include "parallel/communicator.h"

namespace moetrain::optim {

class GradSync {
 public:
  virtual ~GradSync() = default;

  virtual void begin_step() = 0;
  virtual void before_forward() {}
  virtual void after_forward() {}
  virtual void before_backward(bool last_micro_batch) = 0;
  virtual void after_backward(bool last_micro_batch) = 0;
  virtual torch::Tensor& finish_step() = 0;
  virtual void refresh_model() = 0;

  // The hook the model's layers run through (Seq2SeqTransformer::
  // set_layer_runner), or an empty function when layers run as they are.
  virtual models::LayerRunner layer_runner() { return {}; }
  // Bytes of fp32 gradient buffers held besides params.grads() (ZeRO 1's
  // reduced shard).
  virtual int64_t extra_grad_bytes() const { return 0; }
};

// The groups gradients are reduced over: `dp` the data-parallel group,
// `edp` the expert-data-parallel group expert units are replicated over (dp
// itself while ep = 1). Both must outlive the GradSync.
struct GradGroups {
  parallel::Communicator* dp = nullptr;
  parallel::Communicator* edp = nullptr;
  parallel::Communicator& of(const FlatUnit& u) const { return u.expert ? *edp : *dp; }
};

struct GradSyncOptions {
  int64_t zero_stage = 0;
  double bucket_mb = 25;            // ZeRO 0: the all-reduce's bucket size
  bool overlap_grad_reduce = true;  // reduce buckets while the backward runs
};

// What FlatParameters shards at each ZeRO stage, over `shards` DP ranks.
ShardingOptions sharding_for_stage(int64_t zero_stage, int64_t shards, int64_t rank);

// The strategy for options.zero_stage. `params` must have been built with
// sharding_for_stage(options.zero_stage, ...) and outlive it.
std::unique_ptr<GradSync> make_grad_sync(FlatParameters& params, GradGroups groups, const GradSyncOptions& options);

// The part of parameter e's gradient this rank holds in `grads` (laid out
// like params.master()); undefined when it holds none.
torch::Tensor local_grad(const FlatParameters& params, const torch::Tensor& grads, const FlatParameterEntry& e);

}  // namespace moetrain::optim
