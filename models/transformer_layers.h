// EncoderLayer and DecoderLayer: the pre-norm blocks of the encoder-decoder.
//   encoder: x += drop(self_attn(self_attn_norm(x)));  x += drop(ffn|moe(ffn_norm(x)))
//   decoder: y += drop(self_attn(self_attn_norm(y)))   (causal)
//            y += drop(cross_attn(cross_attn_norm(y), memory))
//            y += drop(ffn|moe(ffn_norm(y)))
// drop = residual dropout with p = cfg.dropout. Layer i holds `moe` instead of
// `ffn` when cfg.is_moe_layer(i), with i counted separately in encoder and
// decoder. run_layer() is the one place that applies activation checkpointing,
// so the model and (later) pipeline stages call layers the same way.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "models/attention.h"
#include "models/feed_forward.h"
#include "models/model_config.h"
#include "models/moe_layer.h"
#include "models/norm.h"

namespace moetrain::models {

struct LayerOutput {
  torch::Tensor hidden;              // [B, T, D]
  std::optional<MoELayerStats> moe;  // set by MoE layers only
};

class EncoderLayerImpl : public torch::nn::Module {
 public:
  EncoderLayerImpl(const ModelConfig& cfg, int64_t layer_index);

  // x [B, S, D]; self_masks from make_self_attention_masks(..., causal=false);
  // padding_mask [B, S] bool (padded tokens are not routed by the MoE).
  LayerOutput forward(const torch::Tensor& x, const AttentionMasks& self_masks, const torch::Tensor& padding_mask);

  bool is_moe() const { return !moe.is_empty(); }
  // Splits the layer for tensor and expert parallelism (see the sublayers).
  ParameterSlices parallelize(const ModelParallelism& mp);

  Norm self_attn_norm{nullptr};
  MultiHeadAttention self_attn{nullptr};
  Norm ffn_norm{nullptr};
  FeedForward ffn{nullptr};  // dense layers
  MoELayer moe{nullptr};     // MoE layers

 private:
  double dropout_;
};
TORCH_MODULE(EncoderLayer);

// A decoder layer's state during incremental decoding (generation).
struct DecoderLayerCache {
  KeyValueCache self;   // the target positions decoded so far
  KeyValueCache cross;  // the projected encoder output
};

class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const ModelConfig& cfg, int64_t layer_index);

  // y [B, T, D]; memory [B, S, D] (encoder output); self_masks from
  // make_self_attention_masks(..., causal=true); cross_masks: `global`
  // [B, 1, T, S] from make_cross_attention_mask (or the context-parallel
  // form); padding_mask [B, T] bool.
  LayerOutput forward(const torch::Tensor& y, const torch::Tensor& memory, const AttentionMasks& self_masks,
                      const AttentionMasks& cross_masks, const torch::Tensor& padding_mask);

  // Incremental decoding: start_cache projects memory [B, S, D] for
  // cross-attention once; forward_step runs y [B, 1, D], the next target
  // position, against the cache (extending its self-attention part) and
  // returns what forward() returns for that position. cross_mask [B, 1, 1, S].
  DecoderLayerCache start_cache(const torch::Tensor& memory);
  LayerOutput forward_step(const torch::Tensor& y, DecoderLayerCache& cache, const torch::Tensor& cross_mask);

  bool is_moe() const { return !moe.is_empty(); }
  // Splits the layer for tensor and expert parallelism (see the sublayers).
  ParameterSlices parallelize(const ModelParallelism& mp);

  Norm self_attn_norm{nullptr};
  MultiHeadAttention self_attn{nullptr};
  Norm cross_attn_norm{nullptr};
  MultiHeadAttention cross_attn{nullptr};
  Norm ffn_norm{nullptr};
  FeedForward ffn{nullptr};
  MoELayer moe{nullptr};

 private:
  double dropout_;
};
TORCH_MODULE(DecoderLayer);

// A layer as a function of its tensor inputs (the hidden state, then the
// encoder output for decoder layers), returning its packed outputs: hidden,
// then for MoE layers aux loss, z loss, tokens_per_expert and the dropped
// count (int64 scalar). It reads the layer's parameters as they are when
// called, and draws dropout masks from the default generator.
using LayerFunction = std::function<std::vector<torch::Tensor>(const std::vector<torch::Tensor>& inputs)>;

// A hook for code outside the model that must wrap every layer call without
// the model knowing why (ZeRO 3 gathers a layer's sharded weights around each
// use and reduces its gradients). `unit` names the layer as FlatParameters
// groups it ("encoder.layers.3"). The runner must return what fn(inputs)
// returns, computed however it likes; it replaces activation checkpointing.
using LayerRunner = std::function<std::vector<torch::Tensor>(const std::string& unit, const LayerFunction& fn,
                                                             const std::vector<torch::Tensor>& inputs)>;

// layer->forward(...), or the same under activation checkpointing when
// `checkpointed` and grad mode is on (without grad there is nothing to save),
// or through `runner` when one is given.
LayerOutput run_layer(const EncoderLayer& layer, const torch::Tensor& x, const AttentionMasks& self_masks,
                      const torch::Tensor& padding_mask, bool checkpointed, const LayerRunner& runner = {},
                      const std::string& unit = {});
LayerOutput run_layer(const DecoderLayer& layer, const torch::Tensor& y, const torch::Tensor& memory,
                      const AttentionMasks& self_masks, const AttentionMasks& cross_masks,
                      const torch::Tensor& padding_mask, bool checkpointed, const LayerRunner& runner = {},
                      const std::string& unit = {});

}  // namespace moetrain::models
