// Zero3GradSync: ZeRO stage 3 (see grad_sync.h for the call order, and
// zero3_params.h for how units are gathered, freed and reduced). Layers
// gather their own weights through layer_runner() and reduce-scatter their
// gradients when their backward finishes; the other units (embeddings, final
// norms, lm_head) are gathered around each forward and each backward and
// reduced after the backward. The model has no resident weights, so there is
// nothing to refresh after the optimizer step.
#pragma once

#include "optim/grad_sync.h"
#include "optim/zero3_params.h"

namespace moetrain::optim {

class Zero3GradSync : public GradSync {
 public:
  Zero3GradSync(FlatParameters& params, GradGroups groups) : params_(params), zero3_(params, *groups.dp, groups.edp) {}

  void begin_step() override { params_.zero_grads(); }
  void before_forward() override { zero3_.gather_non_layer(); }
  void after_forward() override { zero3_.release_non_layer(); }
  void before_backward(bool) override { zero3_.gather_non_layer(); }
  void after_backward(bool) override { zero3_.reduce_non_layer_grads(); }
  torch::Tensor& finish_step() override { return params_.grads(); }
  void refresh_model() override {}
  models::LayerRunner layer_runner() override { return zero3_.layer_runner(); }

 private:
  FlatParameters& params_;
  Zero3Params zero3_;
};

}  // namespace moetrain::optim
