// MoELayer: the Mixture-of-Experts FFN that replaces the dense FFN in every
// `moe.every`-th layer. One forward is four steps, kept as separate functions
// because expert parallelism puts an all-to-all between them:
//   1. route_tokens:     fp32 router softmax, top-k, capacity (GShard priority);
//   2. permute_tokens:   copy each kept (token, choice) row, grouped by expert
//                        (kernels::permute_rows, fused on CUDA);
//   3. expert_forward:   each expert's FFN on its contiguous segment;
//   4. unpermute_tokens: scale by the gate and sum back to [N, D] in fp32
//                        (kernels::unpermute_rows, fused on CUDA).
// Dropped assignments contribute nothing: the residual connection around the
// layer carries the token unchanged.
//
// Causality caveat: with a finite capacity, a later token's first choice can
// take a slot an earlier token's second choice wanted (first choices of all
// tokens precede any second choice), so capacity dropping in a decoder lets
// later tokens affect earlier outputs. Dropless routing (capacity_factor 0) is
// strictly causal.
//
// Parameters: `router.weight` [E, D] (no bias) and the stacked experts
// `experts_fc1_weight` [E, F, D], `experts_fc1_bias` [E, F], `experts_fc2_weight`
// [E, D, F], `experts_fc2_bias` [E, D] (biases only with cfg.bias); expert
// parallelism keeps a block of the leading dim (see parallelize).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "models/linear.h"
#include "models/lora.h"
#include "models/model_config.h"
#include "models/model_parallelism.h"

namespace moetrain::models {

// Where each of the N tokens' top_k choices goes. Choice 0 is the most probable
// expert. Padded tokens (mask false) are never routed: expert_index -1, gate 0,
// kept false, and they count neither toward capacity nor toward the losses.
struct RoutingResult {
  torch::Tensor probs;                // [N, E] fp32 softmax of the logits (differentiable)
  torch::Tensor expert_index;         // [N, k] int64; -1 for padded tokens
  torch::Tensor gates;                // [N, k] fp32 (differentiable); renormalised over the k
                                      // choices when normalize_top_k; a dropped assignment keeps
                                      // its gate value here, `kept` says it is unused
  torch::Tensor kept;                 // [N, k] bool: routed and within capacity
  torch::Tensor assigned_per_expert;  // [E] int64 assignments before capacity dropping
  torch::Tensor tokens_per_expert;    // [E] int64 kept assignments
  // tokens_per_expert on the host (the split sizes the dispatch needs),
  // copied together with num_valid in one device-to-host transfer.
  std::vector<int64_t> tokens_per_expert_host;
  int64_t num_valid = 0;  // unpadded tokens
  int64_t capacity = -1;  // slots per expert; -1 when dropless
  int64_t dropped = 0;    // assignments of valid tokens over capacity
};

// logits_fp32 [N, E] float32, token_mask [N] bool. Capacity is
// ceil(capacity_factor * num_valid * top_k / E) when capacity_factor > 0
// (a 1e-9 slack keeps e.g. 1.1 * 10 from rounding up to the next integer),
// unlimited when 0. Slots are given GShard-style: every token's 1st choice
// before any token's 2nd choice; within one choice level, in token order.
RoutingResult route_tokens(const torch::Tensor& logits_fp32, const torch::Tensor& token_mask, int64_t top_k,
                           double capacity_factor, bool normalize_top_k);

// Switch / Megatron load-balancing loss, E * sum_e f_e * P_e, with
// f_e = assigned_per_expert[e] / (num_valid * top_k) (before dropping, no
// gradient) and P_e = mean over valid tokens of probs[:, e]. fp32 scalar,
// unweighted; 0 when there is no valid token. With a context-parallel
// `sequence_group` the counts and means run over the tokens of every rank of
// it (the whole sequences), so every rank gets the one-process value; its
// gradient then reaches every rank's probabilities (see
// parallel::all_reduce_context_parallel).
torch::Tensor load_balancing_loss(const torch::Tensor& probs, const torch::Tensor& assigned_per_expert,
                                  const torch::Tensor& token_mask, int64_t top_k,
                                  parallel::Communicator* sequence_group = nullptr);

// Router z-loss: mean over valid tokens of logsumexp(logits)^2. fp32 scalar,
// unweighted; over the tokens of every rank of `sequence_group` when given.
torch::Tensor router_z_loss(const torch::Tensor& logits_fp32, const torch::Tensor& token_mask,
                            parallel::Communicator* sequence_group = nullptr);

// Kept token copies grouped by expert (expert 0's segment first; token order
// within a segment, as a stable sort by expert gives).
struct PermutedTokens {
  torch::Tensor hidden;                    // [M, D], M = kept assignments
  torch::Tensor token_index;               // [M] int64: the row of x each copy came from
  torch::Tensor gates;                     // [M] fp32 (differentiable)
  std::vector<int64_t> tokens_per_expert;  // segment sizes, one per expert (host copy)
};

// x [N, D] -> its kept copies grouped by expert.
PermutedTokens permute_tokens(const torch::Tensor& x, const RoutingResult& routing);

// expert_output [M, D] (rows in permuted order) -> [N, D]: each row scaled by
// its gate and summed into its token's row, accumulated in fp32 and returned in
// expert_output's dtype. Tokens with no kept assignment get zeros.
torch::Tensor unpermute_tokens(const torch::Tensor& expert_output, const PermutedTokens& permuted, int64_t num_tokens);

// Per-layer statistics of one forward.
struct MoELayerStats {
  torch::Tensor aux_loss;           // fp32 scalar, differentiable
  torch::Tensor z_loss;             // fp32 scalar, differentiable
  torch::Tensor tokens_per_expert;  // int64 [E] kept assignments, detached
  int64_t dropped = 0;
};

struct MoEOutput {
  torch::Tensor hidden;  // [N, D], dtype of the input
  MoELayerStats stats;
};

class MoELayerImpl : public torch::nn::Module {
 public:
  explicit MoELayerImpl(const ModelConfig& cfg);

  // x [N, D] in the parameter dtype, token_mask [N] bool (true = real token).
  MoEOutput forward(const torch::Tensor& x, const torch::Tensor& token_mask);

  // Router logits in fp32 (input and weight cast to float): [N, E].
  torch::Tensor router_logits(const torch::Tensor& x);

  // Runs expert e on rows [sum(counts[:e]), sum(counts[:e+1])) of
  // permuted_hidden [M, D]; counts.size() must equal the number of experts this
  // module holds (the leading dim of the stacked weights). Experts with no rows
  // are skipped. Returns [M, D].
  torch::Tensor expert_forward(const torch::Tensor& permuted_hidden, const std::vector<int64_t>& tokens_per_expert);

  // Splits this (whole) layer as `mp` says; returns where the kept slices
  // sit in the whole tensors.
  // Expert parallelism: EP rank r keeps experts [r*L, (r+1)*L), L = E / ep.
  //   Every rank still routes its own tokens over all E experts; the kept
  //   copies travel to the experts' owners and back by all-to-all
  //   (parallel/expert_dispatch.h). The router stays whole.
  // Tensor parallelism: every (kept) expert's hidden width is split (fc1
  //   weight and bias by rows, fc2 weight by columns); the router and fc2 bias
  //   stay whole. Tokens are routed identically on every TP rank (replicated
  //   input); the expert outputs are all-reduced before the gates weigh them.
  // Dropout inside experts draws from mp.tp_rng when either is on.
  // Context parallelism: routing stays per token (each rank routes its own);
  // the load-balancing and z losses count every CP rank's tokens.
  ParameterSlices parallelize(const ModelParallelism& mp);

  // LoRA adapters (models/lora.h) on every expert's fc1 and/or fc2; call on
  // the whole layer, before parallelize (which splits them with the experts).
  void add_lora(const LoraConfig& lora, bool fc1, bool fc2);

  int64_t num_experts() const { return num_experts_; }  // all E, wherever they live
  int64_t num_local_experts() const { return experts_fc1_weight.size(0); }
  int64_t top_k() const { return top_k_; }

  Linear router{nullptr};
  torch::Tensor experts_fc1_weight;  // [E, F, D]
  torch::Tensor experts_fc1_bias;    // [E, F] or undefined
  torch::Tensor experts_fc2_weight;  // [E, D, F]
  torch::Tensor experts_fc2_bias;    // [E, D] or undefined
  // LoRA (undefined without): fc1 A [E, r, D], B [E, F, r]; fc2 A [E, r, F], B [E, D, r].
  torch::Tensor experts_fc1_lora_A, experts_fc1_lora_B, experts_fc2_lora_A, experts_fc2_lora_B;

 private:
  int64_t d_model_;
  int64_t num_experts_;
  int64_t top_k_;
  double capacity_factor_;
  bool normalize_top_k_;
  Activation activation_;
  double dropout_;
  double token_dropout_;                  // ModelConfig's moe.token_dropout
  parallel::Communicator* tp_ = nullptr;  // set when split across TP ranks
  parallel::Communicator* ep_ = nullptr;  // set when experts are split across EP ranks
  parallel::Communicator* cp_ = nullptr;  // set under context parallelism: the losses span it
  parallel::TensorParallelRng* tp_rng_ = nullptr;
  double lora_scale_ = 0;
  double lora_dropout_ = 0;
};
TORCH_MODULE(MoELayer);

}  // namespace moetrain::models
