// Zero3Params: ZeRO stage 3, parameter sharding over the data-parallel group.
//
// Between uses a rank holds only its fp32 master shard (FlatParameters with
// shard_params); the model's trainable parameters are empty tensors. Weights
// reach the model one unit at a time:
//
//   layers (encoder.layers.N, decoder.layers.N): the model calls the
//     layer_runner() hook instead of the layer. With grad, a custom autograd
//     Function all-gathers the unit, runs the layer under no-grad, frees the
//     weights; its backward all-gathers again, recomputes the layer with grad
//     (replaying the forward's RNG state so dropout masks match), takes input
//     and weight gradients with torch::autograd::grad, frees the weights and
//     reduce-scatters the weight gradients into this rank's fp32 gradient
//     shard (accumulating over micro-batches). Without grad (evaluation) it
//     just gathers, runs and frees.
//   the rest (embed_tokens, tied with the output projection, embed_positions,
//     the final norms, lm_head): Zero3GradSync gathers them before a
//     micro-batch's forward, frees them after it, gathers them again before
//     the backward and, after it, reduce-scatters their .grad and frees them.
//     Gathering twice makes the traffic the ZeRO paper's 3 psi (the tied
//     embedding is a third of a small model, so gathering once would be
//     visibly less than 3 psi and keep it resident across the whole step).
//
// Collectives happen in the same order on every rank because every rank runs
// the same graph: forward layer by layer, backward in reverse. Stage 3 always
// recomputes layers in backward (it subsumes activation checkpointing): a
// kept graph would keep the gathered weights alive through its saved tensors.
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "models/transformer_layers.h"
#include "optim/flat_parameters.h"
#include "parallel/communicator.h"

namespace moetrain::optim {

class Zero3Params {
 public:
  // `params` must have shard_params set; `dp` is the data-parallel group
  // (params.sharding().shards ranks), `expert_dp` the expert-data-parallel
  // group expert units are sharded over (null: the same as dp). All must
  // outlive this object.
  Zero3Params(optim::FlatParameters& params, parallel::Communicator& dp, parallel::Communicator* expert_dp = nullptr);

  // The hook to install with Seq2SeqTransformer::set_layer_runner.
  models::LayerRunner layer_runner();

  // Non-layer units: bind them (all-gathered), release them, and reduce their
  // accumulated .grad into the gradient shard (then release).
  void gather_non_layer();
  void release_non_layer();
  void reduce_non_layer_grads();

  // All-gathers unit u into a fresh compute-dtype buffer and binds the
  // unit's parameters to it.
  void gather(size_t u);
  void release(size_t u) { params_.release_unit(u); }
  // Reduce-scatters unit u's parameter gradients (one per entry of the unit,
  // undefined = zero) into this rank's piece of the fp32 gradient shard,
  // adding to what is there.
  void reduce_grads(size_t u, const std::vector<torch::Tensor>& grads);

  optim::FlatParameters& params() { return params_; }
  // The units of the layer called `name` (its own, then its expert unit
  // under expert parallelism), or null (no trainable weights).
  const std::vector<size_t>* layer_units(const std::string& name) const;
  // The group unit u is sharded over.
  parallel::Communicator& group_of(size_t u);

 private:
  optim::FlatParameters& params_;
  parallel::Communicator& dp_;
  parallel::Communicator& expert_dp_;
  std::map<std::string, std::vector<size_t>> layer_units_;
  std::vector<size_t> non_layer_units_;
  // Makes every wrapped layer's output require grad, so its backward (which
  // carries the weight gradients) runs even when no input requires grad
  // (e.g. a frozen embedding).
  torch::Tensor anchor_;
};

}  // namespace moetrain::optim
