#include "models/transformer_layers.h"

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "models/activation_checkpoint.h"

namespace moetrain::models {

namespace {

void check_hidden(const torch::Tensor& x, const torch::Tensor& padding_mask, int64_t d_model, const char* who) {
  if (x.dim() != 3 || x.size(2) != d_model) {
    throw std::invalid_argument(std::string(who) + ": expected hidden [B, T, " + std::to_string(d_model) + "], got " +
                                c10::str(x.sizes()));
  }
  if (padding_mask.scalar_type() != torch::kBool || padding_mask.dim() != 2 || padding_mask.size(0) != x.size(0) ||
      padding_mask.size(1) != x.size(1)) {
    throw std::invalid_argument(std::string(who) + ": expected padding_mask [" + std::to_string(x.size(0)) + ", " +
                                std::to_string(x.size(1)) + "] bool, got " +
                                c10::str(padding_mask.sizes(), " ", padding_mask.scalar_type()));
  }
}

// Dense FFN or MoE on h [B, T, D]; the MoE sees the flattened tokens.
torch::Tensor feed_forward(FeedForward ffn, MoELayer moe, const torch::Tensor& h, const torch::Tensor& padding_mask,
                           std::optional<MoELayerStats>& stats) {
  if (moe.is_empty()) return ffn->forward(h);
  const int64_t b = h.size(0);
  const int64_t t = h.size(1);
  MoEOutput out = moe->forward(h.reshape({b * t, h.size(2)}), padding_mask.reshape({b * t}));
  stats = std::move(out.stats);
  return out.hidden.view({b, t, h.size(2)});
}

// LayerOutput as a tensor list for checkpoint(): hidden, then for MoE layers
// aux, z, tokens_per_expert and the dropped count as an int64 scalar.
std::vector<torch::Tensor> pack(const LayerOutput& out) {
  if (!out.moe) return {out.hidden};
  return {out.hidden, out.moe->aux_loss, out.moe->z_loss, out.moe->tokens_per_expert,
          torch::tensor(out.moe->dropped, torch::kLong)};
}

LayerOutput unpack(const std::vector<torch::Tensor>& packed) {
  LayerOutput out;
  out.hidden = packed.at(0);
  if (packed.size() > 1) {
    MoELayerStats s;
    s.aux_loss = packed.at(1);
    s.z_loss = packed.at(2);
    s.tokens_per_expert = packed.at(3);
    s.dropped = packed.at(4).item<int64_t>();
    out.moe = std::move(s);
  }
  return out;
}

}  // namespace

EncoderLayerImpl::EncoderLayerImpl(const ModelConfig& cfg, int64_t layer_index) : dropout_(cfg.dropout) {
  const bool rotary = cfg.position == PositionType::Rotary;
  self_attn_norm = register_module("self_attn_norm", Norm(cfg.norm, cfg.d_model, cfg.norm_eps));
  self_attn = register_module("self_attn", MultiHeadAttention(cfg, cfg.attention, rotary));
  ffn_norm = register_module("ffn_norm", Norm(cfg.norm, cfg.d_model, cfg.norm_eps));
  if (cfg.is_moe_layer(layer_index)) {
    moe = register_module("moe", MoELayer(cfg));
  } else {
    ffn = register_module("ffn", FeedForward(cfg));
  }
}

LayerOutput EncoderLayerImpl::forward(const torch::Tensor& x, const AttentionMasks& self_masks,
                                      const torch::Tensor& padding_mask) {
  check_hidden(x, padding_mask, self_attn_norm->weight.size(0), "EncoderLayer");
  LayerOutput out;
  torch::Tensor h = self_attn_norm(x);
  torch::Tensor hidden = x + torch::dropout(self_attn(h, h, self_masks), dropout_, is_training());
  h = feed_forward(ffn, moe, ffn_norm(hidden), padding_mask, out.moe);
  out.hidden = hidden + torch::dropout(h, dropout_, is_training());
  return out;
}

ParameterSlices EncoderLayerImpl::parallelize(const ModelParallelism& mp) {
  ParameterSlices slices;
  add_slices(slices, "self_attn", self_attn->split_tensor_parallel(mp));
  if (is_moe()) {
    add_slices(slices, "moe", moe->parallelize(mp));
  } else {
    add_slices(slices, "ffn", ffn->split_tensor_parallel(mp));
  }
  return slices;
}

DecoderLayerImpl::DecoderLayerImpl(const ModelConfig& cfg, int64_t layer_index) : dropout_(cfg.dropout) {
  const bool rotary = cfg.position == PositionType::Rotary;
  self_attn_norm = register_module("self_attn_norm", Norm(cfg.norm, cfg.d_model, cfg.norm_eps));
  self_attn = register_module("self_attn", MultiHeadAttention(cfg, cfg.attention, rotary));
  cross_attn_norm = register_module("cross_attn_norm", Norm(cfg.norm, cfg.d_model, cfg.norm_eps));
  // Source and target positions are unrelated, so cross-attention is neither
  // rotated nor windowed.
  cross_attn = register_module("cross_attn", MultiHeadAttention(cfg, AttentionType::Global, false));
  ffn_norm = register_module("ffn_norm", Norm(cfg.norm, cfg.d_model, cfg.norm_eps));
  if (cfg.is_moe_layer(layer_index)) {
    moe = register_module("moe", MoELayer(cfg));
  } else {
    ffn = register_module("ffn", FeedForward(cfg));
  }
}

LayerOutput DecoderLayerImpl::forward(const torch::Tensor& y, const torch::Tensor& memory,
                                      const AttentionMasks& self_masks, const AttentionMasks& cross_masks,
                                      const torch::Tensor& padding_mask) {
  check_hidden(y, padding_mask, self_attn_norm->weight.size(0), "DecoderLayer");
  LayerOutput out;
  torch::Tensor h = self_attn_norm(y);
  torch::Tensor hidden = y + torch::dropout(self_attn(h, h, self_masks), dropout_, is_training());
  h = cross_attn(cross_attn_norm(hidden), memory, cross_masks);
  hidden = hidden + torch::dropout(h, dropout_, is_training());
  h = feed_forward(ffn, moe, ffn_norm(hidden), padding_mask, out.moe);
  out.hidden = hidden + torch::dropout(h, dropout_, is_training());
  return out;
}

DecoderLayerCache DecoderLayerImpl::start_cache(const torch::Tensor& memory) {
  return {KeyValueCache{}, cross_attn->project_key_values(memory)};
}

LayerOutput DecoderLayerImpl::forward_step(const torch::Tensor& y, DecoderLayerCache& cache,
                                           const torch::Tensor& cross_mask) {
  const auto padding_mask = torch::ones({y.size(0), 1}, torch::TensorOptions().dtype(torch::kBool).device(y.device()));
  check_hidden(y, padding_mask, self_attn_norm->weight.size(0), "DecoderLayer::forward_step");
  LayerOutput out;
  torch::Tensor hidden =
      y + torch::dropout(self_attn->forward_step(self_attn_norm(y), cache.self), dropout_, is_training());
  torch::Tensor h =
      cross_attn->forward_cached(cross_attn_norm(hidden), cache.cross, AttentionMasks{cross_mask, {}, {}});
  hidden = hidden + torch::dropout(h, dropout_, is_training());
  h = feed_forward(ffn, moe, ffn_norm(hidden), padding_mask, out.moe);
  out.hidden = hidden + torch::dropout(h, dropout_, is_training());
  return out;
}

LayerOutput run_layer(const EncoderLayer& layer, const torch::Tensor& x, const AttentionMasks& self_masks,
                      const torch::Tensor& padding_mask, bool checkpointed, const LayerRunner& runner,
                      const std::string& unit) {
  const std::shared_ptr<EncoderLayerImpl> impl = layer.ptr();
  const bool wrapped = runner || (checkpointed && torch::GradMode::is_enabled());
  if (!wrapped) return impl->forward(x, self_masks, padding_mask);
  auto fn = [impl, self_masks, padding_mask](const std::vector<torch::Tensor>& in) {
    return pack(impl->forward(in[0], self_masks, padding_mask));
  };
  if (runner) return unpack(runner(unit, fn, {x}));
  return unpack(checkpoint(fn, {x}, layer->parameters()));
}

LayerOutput run_layer(const DecoderLayer& layer, const torch::Tensor& y, const torch::Tensor& memory,
                      const AttentionMasks& self_masks, const AttentionMasks& cross_masks,
                      const torch::Tensor& padding_mask, bool checkpointed, const LayerRunner& runner,
                      const std::string& unit) {
  const std::shared_ptr<DecoderLayerImpl> impl = layer.ptr();
  const bool wrapped = runner || (checkpointed && torch::GradMode::is_enabled());
  if (!wrapped) return impl->forward(y, memory, self_masks, cross_masks, padding_mask);
  auto fn = [impl, self_masks, cross_masks, padding_mask](const std::vector<torch::Tensor>& in) {
    return pack(impl->forward(in[0], in[1], self_masks, cross_masks, padding_mask));
  };
  if (runner) return unpack(runner(unit, fn, {y, memory}));
  return unpack(checkpoint(fn, {y, memory}, layer->parameters()));
}

}  // namespace moetrain::models

namespace moetrain::models {

ParameterSlices DecoderLayerImpl::parallelize(const ModelParallelism& mp) {
  ParameterSlices slices;
  add_slices(slices, "self_attn", self_attn->split_tensor_parallel(mp));
  add_slices(slices, "cross_attn", cross_attn->split_tensor_parallel(mp));
  if (is_moe()) {
    add_slices(slices, "moe", moe->parallelize(mp));
  } else {
    add_slices(slices, "ffn", ffn->split_tensor_parallel(mp));
  }
  return slices;
}

}  // namespace moetrain::models
