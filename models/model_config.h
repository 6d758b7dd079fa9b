// ModelConfig: the architecture of the MoE encoder-decoder, as plain values.
// config/ fills it from the `model:` section of the YAML config and has
// already validated it (heads divide d_model, ...) before a model is built.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace moetrain::models {

enum class NormType { LayerNorm, RMSNorm };
// SinusoidalFairseq: the fairseq / M2M100 / NLLB table (see positions.h).
enum class PositionType { Sinusoidal, Learned, Rotary, SinusoidalFairseq };
// global: full attention; local: sliding window of `local_window` tokens;
// dynamic: a per-token sigmoid gate mixes the local and the global output.
enum class AttentionType { Global, Local, Dynamic };
enum class Activation { ReLU, GELU, SiLU };

struct MoEConfig {
  int64_t num_experts = 8;
  int64_t top_k = 2;
  // Expert capacity = ceil(capacity_factor * tokens * top_k / num_experts);
  // assignments beyond it are dropped. 0 means dropless.
  double capacity_factor = 1.25;
  // Every `every`-th layer (1-based: layers every-1, 2*every-1, ...) is MoE;
  // 0 disables MoE entirely (a dense model).
  int64_t every = 2;
  int64_t d_ff_expert = 0;      // 0: same as d_ff
  double aux_loss_coef = 0.01;  // Switch-style load-balancing loss weight
  double z_loss_coef = 0.001;   // router z-loss weight
  bool normalize_top_k = true;  // renormalise the k selected gates to sum 1
  // NLLB-MoE's moe_token_dropout: in training, dropout at this rate on the
  // MoE layer's output; in evaluation the output is scaled by 1 - rate, as
  // transformers' NllbMoe does. 0: off.
  double token_dropout = 0.0;
};

struct ModelConfig {
  int64_t vocab_size = 0;  // 0: taken from the tokenizer at start-up
  int64_t d_model = 512;
  int64_t n_heads = 8;
  int64_t d_ff = 2048;
  int64_t encoder_layers = 12;
  int64_t decoder_layers = 6;
  int64_t max_positions = 1024;  // learned positions table size / sanity bound
  // The tokenizer's pad id (train sets it from the tokenizer): fairseq-style
  // sinusoidal positions number a sequence from pad_id + 1, as NLLB and
  // M2M100 do. 0 in moetrain's layout, 1 in fairseq's.
  int64_t pad_id = 0;
  NormType norm = NormType::LayerNorm;
  double norm_eps = 1e-5;
  PositionType position = PositionType::Sinusoidal;
  double rope_theta = 10000.0;
  AttentionType attention = AttentionType::Global;
  int64_t local_window = 128;
  Activation activation = Activation::GELU;
  bool bias = true;              // biases in linear layers
  bool tie_embeddings = true;    // lm_head shares the token embedding
  bool scale_embeddings = true;  // multiply embeddings by sqrt(d_model)
  double dropout = 0.1;
  double attention_dropout = 0.0;
  double init_std = 0.02;
  bool activation_checkpointing = false;  // recompute each layer in backward
  MoEConfig moe;

  bool is_moe_layer(int64_t layer_index) const { return moe.every > 0 && (layer_index + 1) % moe.every == 0; }
  int64_t expert_ffn_dim() const { return moe.d_ff_expert > 0 ? moe.d_ff_expert : d_ff; }
  int64_t head_dim() const { return d_model / n_heads; }

  // The model as the sequence of units pipeline stages cut (see
  // Seq2SeqTransformer::forward_stage):
  //   0                embed
  //   1 .. E           encoder.layers.0 .. E-1
  //   E+1              encoder.final_norm
  //   E+2 .. E+D+1     decoder.layers.0 .. D-1
  //   E+D+2            decoder.final_norm
  //   E+D+3            lm_head
  int64_t num_pipeline_units() const { return encoder_layers + decoder_layers + 4; }
  // Whether pipeline unit `unit` is an MoE layer.
  bool is_moe_unit(int64_t unit) const {
    const int64_t e = encoder_layers, d = decoder_layers;
    if (unit >= 1 && unit <= e) return is_moe_layer(unit - 1);
    if (unit >= e + 2 && unit <= e + d + 1) return is_moe_layer(unit - e - 2);
    return false;
  }
  // Throws std::out_of_range outside [0, num_pipeline_units()).
  std::string pipeline_unit_name(int64_t unit) const {
    const int64_t e = encoder_layers, d = decoder_layers;
    if (unit < 0 || unit >= num_pipeline_units()) {
      throw std::out_of_range("pipeline unit " + std::to_string(unit) + " of " + std::to_string(num_pipeline_units()));
    }
    if (unit == 0) return "embed";
    if (unit <= e) return "encoder.layers." + std::to_string(unit - 1);
    if (unit == e + 1) return "encoder.final_norm";
    if (unit <= e + d + 1) return "decoder.layers." + std::to_string(unit - e - 2);
    if (unit == e + d + 2) return "decoder.final_norm";
    return "lm_head";
  }
};

}  // namespace moetrain::models
