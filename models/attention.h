// Multi-head attention (self and cross) over torch::scaled_dot_product_attention,
// and the boolean masks it consumes (true = the query may attend to the key).
//
// Kinds (ModelConfig::attention), for self-attention:
//   - global:  every (unpadded, and for the decoder earlier-or-equal) key;
//   - local:   a sliding window of `local_window` positions:
//       causal decoder: query i sees keys j with i - local_window < j <= i
//                       (exactly local_window positions, itself included);
//       encoder:        query i sees keys j with |i - j| <= local_window / 2
//                       (integer division; local_window + 1 positions when it is
//                       even, local_window when odd) — symmetric, as in Longformer;
//   - dynamic: both of the above, mixed per token and per head by a learned gate,
//       out_h = g_h * local_h + (1 - g_h) * global_h, g = sigmoid(gate(x)),
//       applied to the head outputs before o_proj.
// Cross-attention is always global over the unpadded source keys.
//
// Under context parallelism each rank holds some positions of every sequence
// (parallel/context_parallel.h); the masks then say which positions those
// are instead of holding [B, 1, Tq, Tk] tensors, and attention runs across
// the CP group with exactly the visibility described here.
//
// Windows count positions, padded ones included. Every query row always sees
// at least one key (self-attention: itself; cross-attention with an empty
// source: all keys), so padded queries produce finite, meaningless output
// instead of NaN; unpadded rows are unchanged by this.
//
// Parameter names: q_proj, k_proj, v_proj, o_proj (and `gate` for dynamic).
// LoRA and tensor parallelism target these names.
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "models/linear.h"
#include "models/model_config.h"
#include "models/model_parallelism.h"
#include "parallel/context_parallel.h"

namespace moetrain::models {

// One attention call under context parallelism: this rank's positions, and
// the group the rest of the sequence lives on.
struct ContextParallelMasks {
  parallel::Communicator* group = nullptr;  // null: no context parallelism
  parallel::ContextParallelMode mode = parallel::ContextParallelMode::AllToAll;
  torch::Tensor key_mask;     // [B, Tk] bool: this rank's keys that may be seen
  torch::Tensor q_positions;  // [Tq] int64: global positions of this rank's queries
  torch::Tensor k_positions;  // [Tk] int64: of its keys
  bool causal = false;
  bool self = false;  // self-attention: a query always sees its own position
};

// Masks for one attention call, each [B, 1, Tq, Tk] bool, broadcast over heads.
// `global` is set for global and dynamic attention, `local` for local and
// dynamic; cross-attention uses `global` only. Under context parallelism
// neither is set and `cp` describes the call.
struct AttentionMasks {
  torch::Tensor global;
  torch::Tensor local;
  ContextParallelMasks cp;
};

// Self-attention mask from a key padding mask [B, T] bool (true = real token).
// causal: decoder masking; window <= 0: no window, otherwise the local window
// as defined above. Result [B, 1, T, T] bool with the diagonal always true.
torch::Tensor make_self_attention_mask(const torch::Tensor& padding_mask, bool causal, int64_t window);

// Cross-attention mask from the source padding mask [B, S] bool: [B, 1, tgt_len, S].
// A batch row whose source is entirely padding sees every key (finite output).
torch::Tensor make_cross_attention_mask(const torch::Tensor& src_padding_mask, int64_t tgt_len);

// The masks self-attention of `type` needs (see AttentionMasks).
AttentionMasks make_self_attention_masks(AttentionType type, int64_t local_window, const torch::Tensor& padding_mask,
                                         bool causal);

// The same under context parallelism: padding_mask [B, T] is this rank's
// tokens', at global positions `positions` [T].
AttentionMasks make_context_parallel_self_masks(const torch::Tensor& padding_mask, const torch::Tensor& positions,
                                                bool causal, parallel::Communicator* group,
                                                parallel::ContextParallelMode mode);
// Cross-attention under context parallelism: queries at q_positions [T],
// src_mask [B, S] this rank's source tokens at k_positions [S]. A row whose
// source is padding on every rank sees every key, as in
// make_cross_attention_mask (found by one all-reduce over the group).
AttentionMasks make_context_parallel_cross_masks(const torch::Tensor& src_mask, const torch::Tensor& q_positions,
                                                 const torch::Tensor& k_positions, parallel::Communicator* group,
                                                 parallel::ContextParallelMode mode);

// Keys and values of one attention kept for incremental decoding, each
// [B, H, T, head_dim] (this rank's heads): for self-attention the positions
// decoded so far (undefined before the first step), for cross-attention the
// projected source.
struct KeyValueCache {
  torch::Tensor k;
  torch::Tensor v;
  int64_t length() const { return k.defined() ? k.size(2) : 0; }
  // Keeps batch rows `index` [N] int64 (repeats allowed): beam search's reordering.
  void select_rows(const torch::Tensor& index);
};

class MultiHeadAttentionImpl : public torch::nn::Module {
 public:
  // type: the kind of this attention (cross-attention is built with Global);
  // rotary: rotate q and k by position (self-attention with rotary positions).
  MultiHeadAttentionImpl(const ModelConfig& cfg, AttentionType type, bool rotary);

  // query_states [B, Tq, D], key_value_states [B, Tk, D] (the same tensor for
  // self-attention) -> [B, Tq, D]. masks must hold what `type` needs.
  torch::Tensor forward(const torch::Tensor& query_states, const torch::Tensor& key_value_states,
                        const AttentionMasks& masks);

  // Incremental decoding, for generation (the results equal forward()'s rows
  // for the same positions):
  //   - project_key_values: k and v of key_value_states [B, S, D], computed
  //     once per source for cross-attention (never rotated);
  //   - forward_cached: query_states [B, Tq, D] attending over such a cache,
  //     masks as for forward() with Tk = cache length;
  //   - forward_step: causal self-attention for one new position,
  //     query_states [B, 1, D] at position cache.length(): appends its k and v
  //     to `cache`, then attends over every cached position (global), the last
  //     local_window of them (local), or both mixed by the gate (dynamic).
  KeyValueCache project_key_values(const torch::Tensor& key_value_states);
  torch::Tensor forward_cached(const torch::Tensor& query_states, const KeyValueCache& cache,
                               const AttentionMasks& masks);
  torch::Tensor forward_step(const torch::Tensor& query_states, KeyValueCache& cache);

  AttentionType type() const { return type_; }

  // Tensor parallelism: this rank keeps n_heads / tp heads (q/k/v and the
  // dynamic gate column-parallel, o_proj row-parallel); attention dropout
  // draws from the tensor-parallel generator.
  ParameterSlices split_tensor_parallel(const ModelParallelism& mp);

  Linear q_proj{nullptr};
  Linear k_proj{nullptr};
  Linear v_proj{nullptr};
  Linear o_proj{nullptr};
  Linear gate{nullptr};  // dynamic only: d_model -> n_heads

 private:
  // [B, H, Tq, hd] per-head outputs under the global (local: the local)
  // mask of `masks`, across the CP group when masks.cp has one.
  torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                       const AttentionMasks& masks, bool local);
  // x [B, T, D] -> [B, H, T, hd] through `proj`.
  torch::Tensor project_heads(Linear& proj, const torch::Tensor& x);
  // q, k, v [B, H, T, hd] (rotated already) -> [B, Tq, D]: attention under
  // the masks `type` needs, the dynamic gate (from query_states), o_proj.
  torch::Tensor attend_and_project(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                   const AttentionMasks& masks, const torch::Tensor& query_states);

  AttentionType type_;
  bool rotary_;
  int64_t d_model_;
  int64_t n_heads_;
  int64_t head_dim_;
  double rope_theta_;
  int64_t max_positions_;
  double attention_dropout_;
  int64_t local_window_;
  parallel::TensorParallelRng* tp_rng_ = nullptr;
};
TORCH_MODULE(MultiHeadAttention);

}  // namespace moetrain::models
