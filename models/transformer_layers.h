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
#include <optional>

#include "models/attention.h"
#include "models/feed_forward.h"
#include "models/model_config.h"
#include "models/moe_layer.h"
#include "models/norm.h"

namespace moetrain::models {

struct LayerOutput {
  torch::Tensor hidden;               // [B, T, D]
  std::optional<MoELayerStats> moe;   // set by MoE layers only
};

class EncoderLayerImpl : public torch::nn::Module {
 public:
  EncoderLayerImpl(const ModelConfig& cfg, int64_t layer_index);

  // x [B, S, D]; self_masks from make_self_attention_masks(..., causal=false);
  // padding_mask [B, S] bool (padded tokens are not routed by the MoE).
  LayerOutput forward(const torch::Tensor& x, const AttentionMasks& self_masks,
                      const torch::Tensor& padding_mask);

  bool is_moe() const { return !moe.is_empty(); }

  Norm self_attn_norm{nullptr};
  MultiHeadAttention self_attn{nullptr};
  Norm ffn_norm{nullptr};
  FeedForward ffn{nullptr};  // dense layers
  MoELayer moe{nullptr};     // MoE layers

 private:
  double dropout_;
};
TORCH_MODULE(EncoderLayer);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const ModelConfig& cfg, int64_t layer_index);

  // y [B, T, D]; memory [B, S, D] (encoder output); self_masks from
  // make_self_attention_masks(..., causal=true); cross_mask
  // [B, 1, T, S] from make_cross_attention_mask; padding_mask [B, T] bool.
  LayerOutput forward(const torch::Tensor& y, const torch::Tensor& memory,
                      const AttentionMasks& self_masks, const torch::Tensor& cross_mask,
                      const torch::Tensor& padding_mask);

  bool is_moe() const { return !moe.is_empty(); }

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

// layer->forward(...), or the same under activation checkpointing when
// `checkpointed` and grad mode is on (without grad there is nothing to save).
LayerOutput run_layer(const EncoderLayer& layer, const torch::Tensor& x, const AttentionMasks& self_masks,
                      const torch::Tensor& padding_mask, bool checkpointed);
LayerOutput run_layer(const DecoderLayer& layer, const torch::Tensor& y, const torch::Tensor& memory,
                      const AttentionMasks& self_masks, const torch::Tensor& cross_mask,
                      const torch::Tensor& padding_mask, bool checkpointed);

}  // namespace moetrain::models
